"""Execution throughput, each figure next to baselines measured in the same run.

    python bench/execution_bench.py throughput [--n 200] [--workers 2] [--bounds auto,off,...]
    python bench/execution_bench.py end2end --graded runs/execution-agreement [--wall S]

``throughput``: candidates/s on correct HumanEval pool candidates for
  ours  - the Executor (persistent bwrap workers, fork per candidate, host-side checking),
  (a)   - a fresh ``python3`` subprocess per candidate with rlimits only (program + test + check),
  (b)   - in-process ``exec`` with no isolation at all (the ceiling),
with (a) run over the same number of parallel workers as ours, (b) on one core; ours once per
``--bounds`` entry (the memory bound of each candidate's process tree; repeat entries to interleave).
``end2end``: statistics of a finished agreement run (experiments/execution_agreement.py): candidates,
tests run, candidates/s and tests/s over its wall time, and the share of candidate time spent
in timed-out candidates.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dreamprm_code.data import data_path, load_problems, load_solutions
from dreamprm_code.execution import Executor, Limits


def correct_humaneval(n: int) -> list[tuple]:
    problems = load_problems("humaneval")
    by_id = {p.id: p for p in problems}
    sols = load_solutions(data_path("pools", "humaneval-mapcoder"), problems=problems)
    good = [(by_id[s.problem_id], s.code) for s in sols if s.meta.get("recorded_is_solved") is True]
    return good[:n]


def program(problem, code: str) -> str:
    return f"{problem.setup_code}\n{code}\n\n{problem.tests[0].code}\n"


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2048 << 20, 2048 << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (7, 8))


def run_subprocess(item) -> bool:
    problem, code = item
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-I", "-c", program(problem, code)], cwd=tmp, env={}, timeout=6,
                           capture_output=True, preexec_fn=_limit)
    return r.returncode == 0


def run_inprocess(item) -> bool:
    problem, code = item
    ns = {"__name__": "__main__", "__builtins__": builtins}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(program(problem, code), ns)
        return True
    except Exception:
        return False


def throughput(n: int, workers: int, bounds: str = "auto") -> None:
    items = correct_humaneval(n)
    print(f"{len(items)} correct HumanEval candidates, {workers} workers")
    timed: list[tuple[str, float, int]] = []
    for bound in bounds.split(","):
        t = time.monotonic()
        with Executor(Limits(), workers=workers, memory_bound=bound) as ex:
            ex.start()
            t_start = time.monotonic() - t
            t = time.monotonic()
            res = ex.run_many(items, progress=False)
            timed.append((f"ours (bound {ex.bound})", time.monotonic() - t, sum(r.verdict == "pass" for r in res)))
    ours = min(secs for _, secs, _ in timed)
    t = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        ok_a = sum(pool.map(run_subprocess, items))
    base_a = time.monotonic() - t
    t = time.monotonic()
    ok_b = sum(map(run_inprocess, items))
    base_b = time.monotonic() - t
    breakdown(items)
    rows = [*timed, ("(a) subprocess+rlimits", base_a, ok_a), ("(b) in-process exec, 1 core", base_b, ok_b)]
    for name, secs, ok in rows:
        print(f"{name:30s} {len(items) / secs:8.1f} cand/s  ({secs:.2f} s, {ok} pass)")
    print(f"ratio ours (fastest)/(a) = {base_a / ours:.2f}x   ratio ours/(b) = {base_b / ours:.2f}x")
    print(f"workers started before the clock (persistent, once per run): {t_start:.2f} s for {workers}; "
          f"with it, ours/(a) = {base_a / (ours + t_start):.2f}x")


def breakdown(items: list[tuple], reps: int = 30) -> None:
    """Where a candidate's time goes, on one warm worker: the sandbox round trips."""
    from dreamprm_code.execution.calls import CallSession
    from dreamprm_code.execution.sandbox import SandboxWorker

    limits = Limits()
    wire = limits.wire()
    w = SandboxWorker("bwrap")
    info = w.start()
    try:
        def clock(fn) -> float:
            t = time.monotonic()
            for _ in range(reps):
                fn()
            return (time.monotonic() - t) / reps * 1000

        run_ms = clock(lambda: w.request({"op": "stdin", "code": "pass", "setup": "", "input": "", "limits": wire}, 30))
        open_ms = clock(lambda: CallSession(w, "def f(x):\n    return x", "", limits).close())
        s = CallSession(w, "def f(x):\n    return x", "", limits)
        call_ms = clock(lambda: s.call("f", [[1, 2, 3]], {}))
        s.close()
    finally:
        w.kill()
    calls = []
    for problem, _ in items:
        calls.append(problem.tests[0].code.count("candidate("))
    print(f"sandbox: {'one fork per candidate, own uid' if info.fast else 'shim + user/PID namespace per candidate'}")
    print(f"per run: fork+exit of an empty stdin program {run_ms:.1f} ms; "
          f"open+close of a call session {open_ms:.1f} ms; one proxied call round trip {call_ms:.2f} ms; "
          f"HumanEval checks make ~{sum(calls) / len(calls):.0f} candidate calls (static count)")


def end2end(graded: Path, wall: float | None, workers: int, peak_kb: float | None) -> None:
    report = json.loads((graded / "agreement.json").read_text()) if (graded / "agreement.json").exists() else {}
    wall = wall or report.get("wall_s")
    n = tests = 0
    cand_time = tle_time = 0.0
    n_tle = 0
    for path in sorted(p for p in graded.glob("*/*.jsonl") if p.parent.name != "cache"):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            res = rec.get("result") or {}
            n += 1
            tests += len(res.get("tests", []))
            cand_time += res.get("wall_time", 0.0)
            if rec.get("verdict") == "time_limit":
                n_tle += 1
                tle_time += res.get("wall_time", 0.0)
    print(f"candidates {n}, tests run {tests}, wall {wall:.0f} s")
    print(f"{n / wall:.2f} candidates/s, {tests / wall:.1f} tests/s")
    print(f"timed out: {n_tle} candidates, {100 * tle_time / max(cand_time, 1e-9):.1f}% of candidate time, "
          f"{100 * tle_time / workers / wall:.1f}% of wall time over {workers} workers")
    if peak_kb:
        print(f"peak RSS, host process + sandbox workers (sampled every 2 s): {peak_kb / 1024:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("throughput")
    a.add_argument("--n", type=int, default=200)
    a.add_argument("--workers", type=int, default=2)
    a.add_argument("--bounds", default="auto", help="comma-separated memory bounds for ours, in order")
    b = sub.add_parser("end2end")
    b.add_argument("--graded", type=Path, default=Path("runs/execution-agreement"))
    b.add_argument("--wall", type=float, default=None)
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--peak-rss-kb", type=float, default=None, help="sampled externally during the run")
    args = ap.parse_args()
    if args.cmd == "throughput":
        throughput(args.n, args.workers, args.bounds)
    else:
        end2end(args.graded, args.wall, args.workers, args.peak_rss_kb)


if __name__ == "__main__":
    main()
