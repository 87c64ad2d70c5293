"""Is sending an assert test's literal calls ahead in one batch worth its code? A/B in one run.

    python bench/execution_batching.py [--n 400] [--workers 2] [--rounds 4]

Correct HumanEval pool candidates (assert tests, where the batch applies) through a fresh
Executor per arm and round, workers started before the clock, the arms interleaved
(with, without, with, ...). "without" is the same code with no call planned, so every call
is one round trip. Printed per arm: candidates/s (wall) and CPU per candidate, split into
the host process and the sandbox (bwrap, workers and their candidates, from /proc), medians
over the rounds, and the ratios of the two arms paired by round.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import psutil

from dreamprm_code.execution import Executor, Limits, verdicts
from execution_bench import correct_humaneval


def _tree_cpu() -> float:
    """CPU seconds of every descendant of this process, with the children each has reaped."""
    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _host_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one_run(items: list[tuple], workers: int) -> tuple[float, float, float, int]:
    """Wall seconds, host CPU s, sandbox CPU s, passes for one pass over ``items``."""
    with Executor(Limits(), workers=workers) as ex:
        ex.start()
        host0, tree0, t0 = _host_cpu(), _tree_cpu(), time.monotonic()
        res = ex.run_many(items, progress=False)
        wall = time.monotonic() - t0
        host, tree = _host_cpu() - host0, _tree_cpu() - tree0
    return wall, host, tree, sum(r.verdict == "pass" for r in res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    items = correct_humaneval(args.n)
    planned = verdicts.planned_calls
    arms = {"with batch": planned, "without": lambda code, entry: ()}
    rows: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in arms}
    print(f"{len(items)} correct HumanEval candidates, {args.workers} workers, {args.rounds} rounds, "
          f"load {os.getloadavg()[0]:.2f}")
    one_run(items[:20], args.workers)  # warm the host (imports, prelude) outside the clock
    for r in range(args.rounds):
        for name, fn in (arms.items() if r % 2 == 0 else reversed(arms.items())):
            verdicts.planned_calls = fn
            rows[name].append(one_run(items, args.workers))
    verdicts.planned_calls = planned
    for name, runs in rows.items():
        n = len(items)
        rate = [n / w for w, _, _, _ in runs]
        host = statistics.median(h for _, h, _, _ in runs) / n * 1000
        tree = statistics.median(t for _, _, t, _ in runs) / n * 1000
        print(f"{name:11s} {statistics.median(rate):7.1f} cand/s (runs {', '.join(f'{x:.0f}' for x in rate)}); "
              f"CPU per candidate: host {host:.2f} ms + sandbox {tree:.2f} ms = {host + tree:.2f} ms; "
              f"pass {runs[0][3]}/{n}")
    # Paired by round (the two arms ran back to back), so that load drifting between rounds cancels.
    speed = [w0 / w1 for (w1, _, _, _), (w0, _, _, _) in zip(rows["with batch"], rows["without"], strict=True)]
    cpu = [(h1 + t1) / (h0 + t0) for (_, h1, t1, _), (_, h0, t0, _) in zip(rows["with batch"], rows["without"],
                                                                          strict=True)]
    print(f"with/without, per round: throughput x{statistics.median(speed):.3f} (median; higher in "
          f"{sum(x > 1 for x in speed)}/{len(speed)} rounds), CPU per candidate x{statistics.median(cpu):.3f} "
          f"(lower in {sum(x < 1 for x in cpu)}/{len(cpu)} rounds)")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
