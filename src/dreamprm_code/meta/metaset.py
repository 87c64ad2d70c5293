"""The meta set: whole solutions with unit-test verdicts, split by problem (decision 4).

Its first part drives the outer step of the label correction; the second part is kept apart
for choosing the checkpoint, so the data that moved the labels does not also judge them.
Splitting by problem keeps every candidate of a problem on one side. No problem may be both in
the meta set and in an evaluation set: that would leak the test verdicts into training.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dreamprm_code.data.split import order_by_hash
from dreamprm_code.errors import UserError
from dreamprm_code.records import Solution


@dataclass
class MetaSplit:
    """``outer``: solutions the outer step reads; ``select``: solutions for checkpoint choice."""

    outer: list[Solution]
    select: list[Solution]
    outer_problems: list[str] = field(default_factory=list)
    select_problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int | float]:
        """Sizes and pass rates, for logs and reports."""

        def rate(sols: list[Solution]) -> float:
            return sum(s.passed for s in sols) / len(sols) if sols else float("nan")

        return {
            "outer_solutions": len(self.outer),
            "outer_problems": len(self.outer_problems),
            "outer_pass_rate": rate(self.outer),
            "select_solutions": len(self.select),
            "select_problems": len(self.select_problems),
            "select_pass_rate": rate(self.select),
        }


def _problem_ids(items: Iterable[object]) -> set[str]:
    out = set()
    for item in items:
        pid = (
            item if isinstance(item, str) else getattr(item, "problem_id", None) or getattr(item, "id", None)
        )
        if pid is None:
            raise TypeError(f"cannot read a problem id from {type(item).__name__}")
        out.add(str(pid))
    return out


def assert_disjoint(
    meta: Iterable[Solution], evaluation: Iterable[object], *, what: str = "evaluation set"
) -> None:
    """Raise a :class:`UserError` naming the problems that are both in the meta set and in ``evaluation``.

    ``evaluation`` may hold problem ids, :class:`~dreamprm_code.records.Problem`,
    :class:`~dreamprm_code.records.Solution` or :class:`~dreamprm_code.records.StepLabel` records.
    """
    both = sorted(_problem_ids(meta) & _problem_ids(evaluation))
    if both:
        shown = ", ".join(both[:5]) + (f" and {len(both) - 5} more" if len(both) > 5 else "")
        raise UserError(
            f"{len(both)} problem(s) are in both the meta set and the {what}: {shown}", field="meta"
        )


def split_meta_set(
    solutions: Sequence[Solution],
    fraction: float,
    seed: int = 0,
    *,
    eval_problems: Iterable[object] | None = None,
    train_problems: Iterable[object] | None = None,
) -> MetaSplit:
    """Split whole solutions BY PROBLEM: ``fraction`` of the problems drive the outer step.

    The order of problems is a hash of ``(seed, problem id)``, so the split does not depend on
    the input order and a rerun agrees. With at least two problems each side gets at least one.
    ``eval_problems`` / ``train_problems``: problems (ids or records) that must not appear in the
    meta set at all; overlap is a :class:`UserError`. Every solution needs a verdict.
    """
    if not 0 < fraction <= 1:
        raise UserError(f"must be in (0, 1], got {fraction!r}", field="meta_fraction")
    for sol in solutions:
        if sol.verdict is None:
            raise UserError(
                f"solution {sol.id} has no verdict (run the execution stage first)", field="verdict"
            )
    if eval_problems is not None:
        assert_disjoint(solutions, eval_problems, what="evaluation set")
    if train_problems is not None:
        assert_disjoint(solutions, train_problems, what="training labels")
    problems = order_by_hash((s.problem_id for s in solutions), seed)
    if not problems:
        raise UserError("the meta set is empty", field="meta")
    k = round(fraction * len(problems))
    if len(problems) >= 2:
        k = min(max(k, 1), len(problems) - 1) if fraction < 1 else len(problems)
    else:
        k = len(problems)
    outer_p = set(problems[:k])
    outer = [s for s in solutions if s.problem_id in outer_p]
    select = [s for s in solutions if s.problem_id not in outer_p]
    return MetaSplit(
        outer=outer,
        select=select,
        outer_problems=sorted(outer_p),
        select_problems=sorted(set(problems) - outer_p),
    )
