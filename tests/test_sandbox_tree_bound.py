"""The memory bound over a candidate's whole process tree: children or threads each under the
per-process limit but together over the tree's are killed, with the verdict memory_limit; the
candidate cannot lift the bound; nothing of it stays behind; the next candidates are unharmed."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from dreamprm_code.errors import UserError
from dreamprm_code.execution import Executor, Limits
from dreamprm_code.execution.bound import PREFIX, CgroupBound, WatchdogBound, detect_bound
from dreamprm_code.records import Problem, TestCase

STDIN = Problem("ts", "t", "s", "atcoder", "easy", [TestCase("stdin", "1 2\n", "3\n")])
FUNC = Problem("tf", "t", "s", "leetcode", "easy", [TestCase("functional", [5], 5)], entry_point="answer")
# 6 x 60 MiB: each far under the 768 MiB per-process limit, together over the 200 MiB tree limit
LIMITS = Limits(timeout=3, memory_mb=768, tree_memory_mb=200, processes=24)
TOUCH = "    b = bytearray(60 << 20)\n    for j in range(0, len(b), 4096):\n        b[j] = 1\n"
CHILDREN = (
    "import os, time\n"
    "def hog():\n" + TOUCH + "    time.sleep(30)\n"
    "pids = []\n"
    "for _ in range(6):\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        hog()\n"
    "        os._exit(0)\n"
    "    pids.append(pid)\n"
    "for pid in pids:\n"
    "    os.waitpid(pid, 0)\n"
    "print(3)\n"
)
THREADS = (
    "import threading, time\n"
    "keep = []\n"
    "def hog():\n" + TOUCH + "    keep.append(b)\n    time.sleep(30)\n"
    "ts = [threading.Thread(target=hog) for _ in range(6)]\n"
    "[t.start() for t in ts]\n"
    "[t.join() for t in ts]\n"
    "print(3)\n"
)
FUNC_CHILDREN = "def answer(x):\n" + "".join(f"    {line}\n" for line in CHILDREN.replace("print(3)", "return 5").splitlines())
# Tries every way to lift the bound before it hogs: write the limits of any cgroup it can
# find, move itself to the parent cgroups, write "0" into every descriptor it holds.
LIFT = (  # os only: in rlimits mode as root the candidate (nobody) may not read the stdlib
    "import os\n"
    "files = [os.path.join(d, f) for d, _, fs in os.walk('/sys/fs/cgroup') for f in fs]\n"
    "for path in files:\n"
    "    name = os.path.basename(path)\n"
    "    value = {'memory.limit_in_bytes': str(1 << 40), 'memory.memsw.limit_in_bytes': str(1 << 40),\n"
    "             'memory.max': 'max', 'pids.max': 'max'}.get(name)\n"
    f"    if value is None and not (name == 'cgroup.procs' and '{PREFIX}' not in path):\n"
    "        continue\n"
    "    try:\n"
    "        with open(path, 'w') as fh:\n"
    "            fh.write(value or '0')\n"
    "        print('LIFTED' if value else 'MOVED', path)\n"
    "    except OSError:\n"
    "        pass\n"
    "for fd in range(3, 1024):\n"
    "    try:\n"
    "        os.write(fd, b'0')\n"
    "    except OSError:\n"
    "        pass\n"
) + CHILDREN
HONEST = "a, b = map(int, input().split())\nprint(a + b)"


def _usable(mode: str) -> str:
    try:
        detect_bound(mode)
    except UserError as exc:
        return str(exc)
    return ""


BOUNDS = [pytest.param(m, marks=pytest.mark.skipif(bool(_usable(m)), reason=_usable(m) or m))
          for m in ("cgroup2", "cgroup1", "watchdog")]


def _left_behind(ex: Executor) -> list[int]:
    """Candidate processes still alive in the workers' cgroups or under the workers."""
    out: list[int] = []
    for w in ex._all:
        if isinstance(w.bound, CgroupBound):
            for dirs in w.bound.dirs.values():
                for d in dirs:
                    out += [int(p) for p in (d / "cgroup.procs").read_text().split()]
        elif isinstance(w.bound, WatchdogBound):  # zombies (reaped at the next request) hold nothing
            out += [p for p in w.bound.candidates() if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    return out


def _charged(ex: Executor) -> int:
    """Memory still charged to the workers' cgroups (0 for the watchdog)."""
    total = 0
    for w in ex._all:
        if isinstance(w.bound, CgroupBound):
            for ctrl, dirs in w.bound.dirs.items():
                for d in dirs:
                    name = "memory.current" if ctrl == "" else "memory.usage_in_bytes" if ctrl == "memory" else None
                    if name:
                        total += int((d / name).read_text())
    return total


def _settle(ex: Executor, timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while _left_behind(ex) and time.monotonic() < end:
        time.sleep(0.02)


@pytest.mark.parametrize("mode", BOUNDS)
def test_children_and_threads_together_over_the_tree_limit(mode: str) -> None:
    with Executor(LIMITS, workers=1, memory_bound=mode) as ex:
        assert ex.bound == mode and mode in ex.describe()
        items = [(STDIN, CHILDREN), (STDIN, HONEST), (STDIN, THREADS), (STDIN, HONEST + "\n"),
                 (FUNC, FUNC_CHILDREN), (FUNC, "def answer(x):\n    return 5")]
        start = time.monotonic()
        res = ex.run_many(items, progress=False)
        took = time.monotonic() - start
        assert [r.verdict for r in res] == ["memory_limit", "pass"] * 3, [(r.verdict, r.tests) for r in res]
        assert "process tree" in res[0].tests[0].error
        # killed as soon as it went over, not when the 3 s limit (or the 30 s sleep) ran out
        assert max(r.wall_time for r in res[::2]) < 2.5, [r.wall_time for r in res]
        assert took < 10
        _settle(ex)
        assert _left_behind(ex) == []
        assert _charged(ex) < 16 << 20, "the tree's memory was not given back"


@pytest.mark.parametrize("mode", BOUNDS)
def test_the_same_candidates_pass_without_the_bound(mode: str) -> None:
    """The attacks really are over the tree limit only: unbound, each passes."""
    with Executor(LIMITS, workers=1, memory_bound="off") as ex:
        res = ex.run_many([(STDIN, CHILDREN.replace("time.sleep(30)", "pass")),
                           (STDIN, THREADS.replace("time.sleep(30)", "pass"))], progress=False)
        assert [r.verdict for r in res] == ["pass", "pass"], [(r.verdict, r.tests) for r in res]


@pytest.mark.parametrize("sandbox", ["bwrap", "rlimits"])
@pytest.mark.parametrize("mode", [m for m in BOUNDS if m.values[0] != "watchdog"])
def test_the_candidate_cannot_lift_or_leave_its_cgroup(mode: str, sandbox: str) -> None:
    with pytest.warns(RuntimeWarning) if sandbox == "rlimits" else contextlib.nullcontext():
        import dreamprm_code.execution.sandbox as sb

        sb._DETECTED.pop("warned", None)
        ex = Executor(LIMITS, workers=1, sandbox=sandbox, memory_bound=mode)  # type: ignore[arg-type]
    with ex:
        res = ex.run_many([(STDIN, LIFT), (STDIN, HONEST)], progress=False)
        assert [r.verdict for r in res] == ["memory_limit", "pass"], [(r.verdict, r.tests) for r in res]
        out = ex.run_outputs(STDIN, LIFT.split("for fd in")[0] + "print('tried')\n")[0]
        assert "LIFTED" not in out and "MOVED" not in out, out
        limits = {Path(d).name: (Path(d) / ("memory.max" if c == "" else "memory.limit_in_bytes")).read_text().strip()
                  for w in ex._all for c, dirs in w.bound.dirs.items() if c in ("", "memory") for d in dirs}
        assert set(limits.values()) == {str(200 << 20)}, limits


def test_cgroups_are_removed_on_close_and_a_named_unusable_bound_is_a_user_error() -> None:
    mode, _ = detect_bound("auto")
    if mode in ("cgroup1", "cgroup2"):
        with Executor(LIMITS, workers=1, memory_bound=mode) as ex:
            ex.run(STDIN, HONEST)
            dirs = [d for w in ex._all for ds in w.bound.dirs.values() for d in ds]
            assert dirs and all(d.is_dir() for d in dirs)
        assert not any(d.exists() for d in dirs)
    with pytest.raises(UserError, match="memory_bound|memory bound"):
        detect_bound("cgroup3")
    for other in ("cgroup2", "cgroup1"):
        why = _usable(other)
        if why:
            assert "not usable here" in why


def test_process_count_is_bounded_for_the_tree() -> None:
    """Threads count as processes (pids.max and RLIMIT_NPROC alike): 40 threads under a
    limit of 8 fail to start, and the candidate sees it."""
    code = (
        "import threading, time\n"
        "n = 0\n"
        "for _ in range(40):\n"
        "    try:\n"
        "        threading.Thread(target=time.sleep, args=(1,), daemon=True).start()\n"
        "        n += 1\n"
        "    except RuntimeError:\n"
        "        break\n"
        "print(n)\n"
    )
    with Executor(Limits(timeout=3, memory_mb=768, processes=8), workers=1) as ex:
        n = int(ex.run_outputs(STDIN, code)[0])
    assert n < 8, n
