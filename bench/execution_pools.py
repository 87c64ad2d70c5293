"""End to end on every pool with LiveCodeBench's limits, ours next to baselines (a) and (b).

    python bench/execution_pools.py [--workers 2] [--timeout 6] [--limit N] [--every K] [--out FILE.json]
                                    [--bounds auto,off,...]

Every candidate of the data folder's ``pools`` (HumanEval pools against ``humaneval``, APPS pools
against ``apps-stdin`` with the tests their labels were made on; see ``dreamprm_code.data.pools``),
6 s per test, stop at a candidate's first failing test, graded three ways in the same run:

  ours - the Executor (persistent bwrap workers, fork per candidate), no result cache; once per
         ``--bounds`` entry (the memory bound of each candidate's process tree: auto, cgroup2,
         cgroup1, watchdog or off; repeat entries, e.g. off,auto,off,auto, to interleave them);
  (a)  - a fresh ``python3 -I`` per test with rlimits only (``subprocess.run``, its timeout);
  (b)  - ``exec`` inside W plain long-lived processes, no isolation at all, ``SIGALRM`` for the
         time limit (a process a candidate kills or hangs is restarted): the ceiling.

Each runs over W parallel workers. Stdin programs get LiveCodeBench's import block in all three
(ours executes it once per worker, the baselines once per test: that is their cost). Printed
and written: wall time, candidates/s, tests/s, peak RSS of the benchmark's process tree
(sampled every 0.25 s), the time-limit candidates' share of the workers' time, and the longest
any time-limit test held a worker (the limit a core is held for).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from dreamprm_code.data import data_dir, load_solutions
from dreamprm_code.data.pools import mapcoder_pools
from dreamprm_code.execution import Executor, Limits
from dreamprm_code.execution.verdicts import expected_text
from dreamprm_code.execution.worker.compare import compare_stdout
from dreamprm_code.execution.worker.harness import LCB_PRELUDE
from dreamprm_code.io import atomic_write_json
from execution_bench import program

MEMORY_MB = Limits().memory_mb


class PeakRss:
    """Peak summed RSS of this process and all its descendants, sampled in a thread."""

    def __init__(self, every: float = 0.25) -> None:
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _program(problem, code: str) -> str:
    """What one test runs: assert tests are prompt preamble + candidate + test code (its check
    call included); stdin programs get LiveCodeBench's import block first."""
    if problem.tests[0].kind == "assert":
        return program(problem, code)
    return f"{LCB_PRELUDE}\n{code}\n"


def _limit() -> None:
    mem = MEMORY_MB << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))


def grade_subprocess(item, timeout: float) -> dict:
    """(a): a fresh interpreter per test, rlimits only, stop at the first failure."""
    problem, code = item
    program = _program(problem, code)
    tests = problem.tests[:1] if problem.tests[0].kind == "assert" else problem.tests
    run = 0
    with tempfile.TemporaryDirectory() as tmp:
        for test in tests:
            run += 1
            t = time.monotonic()
            try:
                r = subprocess.run([sys.executable, "-I", "-c", program], cwd=tmp, env={}, timeout=timeout,
                                   input=(test.input or "") if test.kind == "stdin" else "", capture_output=True,
                                   text=True, errors="replace", preexec_fn=_limit)
            except subprocess.TimeoutExpired:
                return {"verdict": "time_limit", "tests": run, "tle_s": time.monotonic() - t}
            if r.returncode != 0:
                return {"verdict": "error", "tests": run}
            if test.kind == "stdin" and not compare_stdout(r.stdout, expected_text(test)):
                return {"verdict": "wrong_answer", "tests": run}
    return {"verdict": "pass", "tests": run}


SERVER = r'''
import builtins, contextlib, io, json, os, signal, sys
proto_in = os.fdopen(os.dup(0), "rb")
proto_out = os.fdopen(os.dup(1), "wb")
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)
class TimeLimit(BaseException):
    pass
def _alarm(*_):
    raise TimeLimit
signal.signal(signal.SIGALRM, _alarm)
for line in proto_in:
    req = json.loads(line)
    out, status = io.StringIO(), "ok"
    sys.stdin = io.StringIO(req["input"])
    signal.setitimer(signal.ITIMER_REAL, req["timeout"])
    try:
        with contextlib.redirect_stdout(out):
            exec(req["program"], {"__name__": "__main__", "__builtins__": builtins})
    except TimeLimit:
        status = "time_limit"
    except SystemExit as exc:
        status = "ok" if exc.code in (None, 0) else "error"
    except BaseException:
        status = "error"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    proto_out.write((json.dumps({"status": status, "out": out.getvalue()[: 1 << 22]}) + "\n").encode())
    proto_out.flush()
'''


class InProcess:
    """(b): one plain long-lived interpreter that ``exec``s programs in itself."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.buf = b""
        self.restarts = 0

    def _start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={})
        self.buf = b""

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.restarts += 1

    def run(self, program: str, stdin: str, timeout: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write((json.dumps({"program": program, "input": stdin, "timeout": timeout}) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.kill()
            return {"status": "error"}
        fd, deadline = self.proc.stdout.fileno(), time.monotonic() + timeout + 2.0
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.kill()  # ignored SIGALRM or caught the exception: the baseline's only defence
                return {"status": "time_limit"}
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self.kill()  # the candidate killed its host process
                return {"status": "error"}
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


def grade_inprocess(server: InProcess, item, timeout: float) -> dict:
    """(b): the same tests ``exec``-ed in a process without isolation, stop at the first failure."""
    problem, code = item
    program = _program(problem, code)
    tests = problem.tests[:1] if problem.tests[0].kind == "assert" else problem.tests
    for run, test in enumerate(tests, 1):
        t = time.monotonic()
        r = server.run(program, (test.input or "") if test.kind == "stdin" else "", timeout)
        if r["status"] == "time_limit":
            return {"verdict": "time_limit", "tests": run, "tle_s": time.monotonic() - t}
        if r["status"] != "ok":
            return {"verdict": "error", "tests": run}
        if test.kind == "stdin" and not compare_stdout(r["out"], expected_text(test)):
            return {"verdict": "wrong_answer", "tests": run}
    return {"verdict": "pass", "tests": len(tests)}


def over_workers(fn, items: list, workers: int, label: str) -> tuple[list[dict], float, int]:
    """Run ``fn(worker_index, item)`` over a pool of threads; results in order, wall, peak RSS."""
    from dreamprm_code.progress import make_progress

    out: list = [None] * len(items)
    local = threading.local()
    slots = iter(range(workers))
    lock = threading.Lock()
    with PeakRss() as rss, make_progress() as bar:
        task = bar.add_task(label, total=len(items), info="")
        t = time.monotonic()

        def one(i: int) -> None:
            if not hasattr(local, "slot"):
                with lock:
                    local.slot = next(slots)
            out[i] = fn(local.slot, items[i])
            bar.update(task, advance=1)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(len(items))))
        wall = time.monotonic() - t
    return out, wall, rss.peak


def summary(name: str, results: list[dict], wall: float, peak: int, workers: int) -> dict:
    tle = [r for r in results if r["verdict"] == "time_limit"]
    tle_s = sum(r.get("tle_s", 0.0) for r in tle)
    return {
        "method": name, "candidates": len(results), "pass": sum(r["verdict"] == "pass" for r in results),
        "tests": sum(r["tests"] for r in results), "wall_s": wall, "cand_per_s": len(results) / wall,
        "tests_per_s": sum(r["tests"] for r in results) / wall, "peak_rss_mb": peak / 2**20,
        "time_limit": len(tle), "tle_share_of_worker_time": tle_s / (workers * wall),
        "longest_tle_test_s": max((r.get("tle_s", 0.0) for r in tle), default=0.0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=data_dir(), help="the data folder (default: $DREAMPRM_DATA)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=6.0)
    ap.add_argument("--limit", type=int, default=0, help="only the first N candidates (a smoke run)")
    ap.add_argument("--every", type=int, default=1, help="only every K-th candidate (a sample of every pool)")
    ap.add_argument("--only", default="ours,a,b", help="comma-separated subset of ours,a,b")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    ap.add_argument("--bounds", default="auto", help="comma-separated memory bounds to run ours with, in order "
                    "(auto, cgroup2, cgroup1, watchdog, off)")
    args = ap.parse_args()
    items = []
    for problems, folder in mapcoder_pools(args.data).values():
        for path in sorted(folder.glob("*.jsonl")):
            by_id = {p.id: p for p in problems}
            items += [(by_id[s.problem_id], s.code) for s in load_solutions(path, problems=problems)
                      if s.problem_id in by_id]
    items = items[:: max(1, args.every)]
    items = items[: args.limit] if args.limit else items
    only = set(args.only.split(","))
    print(f"{len(items)} candidates, {sum(len(p.tests) for p, _ in items)} tests in all, {args.workers} workers, "
          f"{args.timeout:g} s per test, stop at the first failure")
    rows = []
    if "ours" in only:
        limits = Limits(timeout=args.timeout)
        for bound in args.bounds.split(","):
            with Executor(limits, workers=args.workers, memory_bound=bound) as ex:
                ex.start()
                with PeakRss() as rss:
                    t = time.monotonic()
                    res = ex.run_many(items)
                    wall = time.monotonic() - t
            ours = [{"verdict": r.verdict, "tests": len(r.tests),
                     "tle_s": max((x.time for x in r.tests if x.status == "time_limit"), default=0.0)} for r in res]
            rows.append(summary(f"ours (bound {ex.bound})", ours, wall, rss.peak, args.workers))
    if "a" in only:
        res, wall, peak = over_workers(lambda _slot, it: grade_subprocess(it, args.timeout), items, args.workers,
                                       "(a) subprocess")
        rows.append(summary("(a) subprocess + rlimits", res, wall, peak, args.workers))
    if "b" in only:
        servers = [InProcess() for _ in range(args.workers)]
        res, wall, peak = over_workers(lambda slot, it: grade_inprocess(servers[slot], it, args.timeout), items,
                                       args.workers, "(b) in-process")
        for s in servers:
            s.kill()
        row = summary("(b) in-process exec", res, wall, peak, args.workers)
        row["restarts"] = sum(s.restarts for s in servers) - len(servers)
        rows.append(row)
    base = next((r for r in rows if r["method"].startswith("(a)")), None)
    print(f"{'method':28s} {'wall s':>8s} {'cand/s':>8s} {'tests/s':>8s} {'peak MB':>8s} {'pass':>6s} "
          f"{'TLE':>5s} {'TLE share':>9s} {'max TLE s':>9s} {'vs (a)':>7s}")
    for r in rows:
        ratio = f"{base['wall_s'] / r['wall_s']:.2f}x" if base else ""
        print(f"{r['method']:28s} {r['wall_s']:8.0f} {r['cand_per_s']:8.2f} {r['tests_per_s']:8.1f} "
              f"{r['peak_rss_mb']:8.0f} {r['pass']:6d} {r['time_limit']:5d} {100 * r['tle_share_of_worker_time']:8.1f}% "
              f"{r['longest_tle_test_s']:9.2f} {ratio:>7s}")
    if args.out:
        atomic_write_json(args.out, {"workers": args.workers, "timeout": args.timeout, "rows": rows})


if __name__ == "__main__":
    main()
