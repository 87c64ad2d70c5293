"""Execution behaviour of candidates, for majority voting.

A candidate's behaviour is the tuple of its outputs on a few tests' *inputs* (the public tests,
else the first ``max_tests`` tests); expected outputs are never looked at, so the vote uses no
labels. A candidate that produced no output on any of them (compile error, crash, timeout
everywhere) has behaviour ``None`` and joins no cluster.

Runs are cached in an append-only JSONL log keyed by (solution id, code hash, tests), so an
interrupted evaluation resumes without re-running finished candidates.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamprm_code.io import JsonlAppender
from dreamprm_code.progress import make_progress
from dreamprm_code.records import Problem, Solution, TestCase

if TYPE_CHECKING:
    from dreamprm_code.execution.limits import Limits


def vote_tests(problem: Problem, max_tests: int = 3) -> list[TestCase]:
    """The tests whose inputs define behaviour: public ones (at most ``max_tests``), else the first few."""
    public = [t for t in problem.tests if t.public]
    return (public or list(problem.tests))[:max_tests]


_FAILURE = re.compile(r"^<[A-Za-z_][\w.]*>$")


def is_failure(output: Any) -> bool:
    """The execution stage marks a test that raised or timed out as ``<ExceptionType>`` / ``<time_limit>``."""
    return output is None or (isinstance(output, str) and bool(_FAILURE.match(output)))


def behaviour_key(outputs: Sequence[Any]) -> Hashable | None:
    """A hashable summary of per-test outputs; ``None`` when every test failed (no cluster)."""
    if not outputs or all(is_failure(o) for o in outputs):
        return None
    return json.dumps([None if o is None else _normalise(o) for o in outputs], sort_keys=True, default=repr)


def _normalise(o: Any) -> Any:
    """Trailing whitespace of printed output does not make two programs behave differently."""
    if isinstance(o, str):
        return "\n".join(line.rstrip() for line in o.strip().splitlines())
    return o


def _cache_key(sol: Solution, tests: Sequence[TestCase]) -> str:
    h = hashlib.sha256(sol.code.encode("utf-8"))
    h.update(json.dumps([t.to_dict() for t in tests], sort_keys=True, default=repr).encode("utf-8"))
    return f"{sol.id}:{h.hexdigest()[:20]}"


def compute_behaviours(
    problems: Sequence[Problem],
    solutions: Sequence[Solution],
    *,
    max_tests: int = 3,
    cache: str | Path | None = None,
    workers: int = 2,
    show_progress: bool = True,
) -> dict[str, Hashable | None]:
    """Run every candidate on its problem's vote tests in the sandbox; solution id -> behaviour."""
    from dreamprm_code.execution import Executor

    by_id = {p.id: p for p in problems}
    jobs = [(s, vote_tests(by_id[s.problem_id], max_tests)) for s in solutions if s.problem_id in by_id]
    log = JsonlAppender(cache, key=lambda r: r["key"]) if cache is not None else None
    known = {r["key"]: r["behaviour"] for r in log.records} if log else {}
    out: dict[str, Hashable | None] = {}
    todo = []
    for sol, tests in jobs:
        key = _cache_key(sol, tests)
        if key in known:
            out[sol.id] = known[key]
        else:
            todo.append((sol, tests, key))
    if not todo:
        if log is not None:
            log.close()
        return out
    executor = Executor(workers=max(1, workers))

    def run(job: tuple[Solution, list[TestCase], str]) -> tuple[Solution, str, Hashable | None]:
        sol, tests, key = job
        return sol, key, behaviour_key(executor.run_outputs(by_id[sol.problem_id], sol.code, tests))

    try:
        with make_progress(disable=not show_progress) as progress, ThreadPoolExecutor(max(1, workers)) as pool:
            task = progress.add_task("behaviour (majority vote)", total=len(todo), info=f"{len(out)} cached")
            for sol, key, beh in pool.map(run, todo):
                out[sol.id] = beh
                if log is not None:
                    log.append({"key": key, "solution_id": sol.id, "behaviour": beh})
                progress.advance(task)
    finally:
        executor.close()
        if log is not None:
            log.close()
    return out


def fill_verdicts(
    problems: Sequence[Problem],
    solutions: Sequence[Solution],
    *,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    limits: Limits | None = None,
    show_progress: bool = True,
) -> int:
    """Run candidates that have no verdict on all their problem's tests; returns how many ran.

    The execution stage's cache (``cache_dir/exec-cache.jsonl``) makes a re-run free and a killed
    run resumable. Verdicts and results are set on the solution records in place. ``limits``:
    the execution stage's (default: ``Limits()``), so verdicts agree with the candidates' own.
    """
    from dreamprm_code.execution import Executor

    by_id = {p.id: p for p in problems}
    todo = [s for s in solutions if s.verdict is None and s.problem_id in by_id]
    if not todo:
        return 0
    with Executor(limits=limits, workers=max(1, workers), cache_dir=cache_dir) as ex:
        results = ex.run_many([(by_id[s.problem_id], s.code) for s in todo], progress=show_progress)
    for sol, res in zip(todo, results, strict=True):
        sol.verdict = res.verdict
        sol.result = res
    return len(todo)
