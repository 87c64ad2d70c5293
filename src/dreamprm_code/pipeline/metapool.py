"""The meta set from solutions outside the run (``train.meta_solutions``): a pool, an export, our JSONL.

Label correction only needs whole solutions with unit-test verdicts on problems apart from the
training labels; a real solution pool of another policy is such a set. The solutions are read by
:func:`~dreamprm_code.data.load_solutions` against their own problem source
(``train.meta_problems``); a problem that is also a training or an evaluation problem of the run
is dropped (training: the labels would meet their own problems in the outer step; evaluation: its
verdicts would leak into training), and candidates without a verdict run on their problem's
tests, with the run's limits and execution cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamprm_code.errors import UserError
from dreamprm_code.execution.limits import Limits
from dreamprm_code.records import Problem, Solution


@dataclass
class MetaPool:
    """The solutions the meta set is drawn from, their problems, and what was kept and dropped."""

    problems: list[Problem]
    solutions: list[Solution]
    summary: dict[str, Any] = field(default_factory=dict)


def source_files(solutions: str | Path) -> list[Path]:
    """The files a solutions path stands for (a file, or a folder's files), for a content fingerprint."""
    path = Path(solutions)
    if not path.exists():
        raise UserError("no such solutions file or folder", path=path, field="train.meta_solutions")
    return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]


def draw_meta_pool(
    solutions: str,
    problems: str,
    *,
    training: Sequence[Problem],
    evaluation: Sequence[Problem],
    limits: Limits | None = None,
    workers: int = 2,
    cache_dir: Path | None = None,
    show_progress: bool = True,
) -> MetaPool:
    """Load ``solutions`` (of the problem source ``problems``), drop the run's own problems, fill verdicts."""
    from dreamprm_code.data import load_solutions
    from dreamprm_code.pipeline.config import ProblemSet
    from dreamprm_code.pipeline.problems import select_problems
    from dreamprm_code.scaling.behaviour import fill_verdicts

    source_files(solutions)
    try:
        pool_problems = select_problems([ProblemSet(source=problems)])
    except UserError as exc:
        raise UserError(exc.message, path=exc.path, line=exc.line, field=exc.field or "train.meta_problems") from None
    try:
        loaded = load_solutions(solutions, pool_problems)
    except UserError as exc:
        raise UserError(f"{exc.message} (train.meta_problems: {problems})", path=exc.path, line=exc.line,
                        field=exc.field or "train.meta_solutions") from None
    train_ids = {p.id for p in training}
    eval_ids = {p.id for p in evaluation}
    pool_ids = {s.problem_id for s in loaded}
    kept = [s for s in loaded if s.problem_id not in train_ids | eval_ids]
    if not kept:
        raise UserError(f"none of its {len(pool_ids)} problems is left once the run's training and evaluation "
                        "problems are dropped", path=solutions, field="train.meta_solutions")
    kept_ids = {s.problem_id for s in kept}
    executed = fill_verdicts(pool_problems, kept, cache_dir=cache_dir, workers=workers, limits=limits,
                             show_progress=show_progress)
    summary = {
        "solutions_file": str(solutions), "problems_source": problems,
        "solutions": len(kept), "problems": len(kept_ids), "passing": sum(s.passed for s in kept),
        "executed": executed,
        "dropped_training_problems": len(pool_ids & train_ids),
        "dropped_evaluation_problems": len(pool_ids & eval_ids),
        "dropped_solutions": len(loaded) - len(kept),
    }
    return MetaPool([p for p in pool_problems if p.id in kept_ids], kept, summary)
