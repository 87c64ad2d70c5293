"""Hostile candidates: each attack must fail, the host must see no effect, and the honest
candidates that run beside them (same run, same workers) must still get correct verdicts."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from dreamprm_code.execution import Executor, Limits
from dreamprm_code.records import Problem, TestCase

MARK = "dreamesc" + uuid.uuid4().hex[:6]  # process name an escaped child gives itself (<= 15 chars)
SECRET = "s3cr3t-" + uuid.uuid4().hex
EXPECTED = 987654321123  # a functional answer no candidate is told

STDIN = Problem("hs", "t", "s", "atcoder", "easy", [TestCase("stdin", "1 2\n", "3\n"), TestCase("stdin", "4 5\n", "9\n")])
FUNC = Problem("hf", "t", "s", "leetcode", "easy", [TestCase("functional", [5], EXPECTED)], entry_point="answer")
ASSERT = Problem("ha", "t", "s", "humaneval", "easy",
                 [TestCase("assert", code=f"def check(candidate):\n    assert candidate(5) == {EXPECTED}\n\ncheck(answer)\n")],
                 entry_point="answer")
FUNC_BIG = Problem("hfb", "t", "s", "leetcode", "easy", [TestCase("functional", [list(range(300000))], 1)],
                   entry_point="answer")
HONEST_STDIN = "a, b = map(int, input().split())\nprint(a + b)"
HONEST_FUNC = f"def answer(x):\n    return {EXPECTED} + x * 0"


def escaped_child(body: str) -> str:
    """Code that double-forks a child which renames itself MARK, ignores signals and lingers."""
    return (
        "import os, signal, ctypes, time\n"
        "def _linger():\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):\n"
        "            signal.signal(s, signal.SIG_IGN)\n"
        f"        ctypes.CDLL(None).prctl(15, b'{MARK}', 0, 0, 0)\n"
        "        time.sleep(120)\n"
        "    os._exit(0)\n"
        "if os.fork() == 0:\n"
        "    _linger()\n"
        f"{body}\n"
    )


def host_processes_named(name: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    out.append(int(entry))
            except OSError:
                pass
    return out


@pytest.fixture(scope="module")
def listener():
    """A TCP server on 127.0.0.1 that records every connection it accepts."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    seen: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, addr = srv.accept()
            except OSError:
                continue
            seen.append(str(addr))
            conn.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    yield srv.getsockname()[1], seen
    stop.set()
    th.join(2)
    srv.close()


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, listener):
    """One run of every attack interleaved with honest candidates, on two shared workers."""
    port, seen = listener
    host_dir = tmp_path_factory.mktemp("host")
    sentinel = host_dir / "sentinel.txt"
    sentinel.write_text("keep me")
    created = host_dir / "pwned.txt"
    home_secret = Path.home() / f".dreamprm-test-secret-{uuid.uuid4().hex[:8]}"
    home_secret.write_text(SECRET)
    os.environ["DREAMPRM_TEST_SECRET"] = SECRET
    hunt = (
        "import os, glob\n"
        "found = []\n"
        f"if '{SECRET}' in str(dict(os.environ)): found.append('env')\n"
        f"for path in [{str(home_secret)!r}, os.path.expanduser('~/{home_secret.name}')] + glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):\n"
        "    try:\n"
        "        data = open(path, 'rb').read()\n"
        "    except Exception:\n"
        "        continue\n"
        f"    if b'{SECRET}' in data: found.append(path)\n"
        "print('FOUND' if found else 'clean', found)\n"
    )
    probe_worker = (  # the candidate's parent is the worker (one fork per candidate)
        "import os, ctypes, signal\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "me, ppid = os.getpid(), os.getppid()\n"
        "res = []\n"
        "for pid in {ppid, 1} - {me, 0}:\n"
        "    res.append('ptrace-ok' if libc.ptrace(16, pid, 0, 0) == 0 else 'ptrace-denied')\n"
        "    for path in (f'/proc/{pid}/mem', f'/proc/{pid}/environ', f'/proc/{pid}/fd/0'):\n"
        "        try:\n"
        "            open(path, 'rb').read(1)\n"
        "            res.append('read-ok:' + path)\n"
        "        except OSError:\n"
        "            res.append('read-denied')\n"
        "    try:\n"
        "        os.listdir(f'/proc/{pid}/fd')\n"
        "        res.append('fdlist-ok')\n"
        "    except OSError:\n"
        "        res.append('fdlist-denied')\n"
        "    try:\n"
        "        os.kill(pid, 0)\n"
        "        res.append('signal-ok')\n"
        "    except OSError:\n"
        "        res.append('signal-denied')\n"
        "print(' '.join(res) or 'no-parent-visible')\n"
    )
    forged = f'{{"status": "ok", "value": {EXPECTED}}}'
    attacks = {
        # Leftover that keeps writing forged answers into every pipe it can open: the next
        # candidates' call channels must stay out of its reach (it is killed before they run).
        "channel_injector": (FUNC, (
            "import os, struct, time, glob\n"
            f"FRAME = struct.pack('>I', {len(forged)}) + {forged!r}.encode()\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    end = time.time() + 4\n"
            "    while time.time() < end:\n"
            "        for path in glob.glob('/proc/*/fd/*'):\n"
            "            try:\n"
            "                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)\n"
            "                os.write(fd, FRAME)\n"
            "                os.close(fd)\n"
            "            except OSError:\n"
            "                pass\n"
            "    os._exit(0)\n"
            "def answer(x):\n"
            "    return 0\n"
        )),
        "kill_group": (STDIN, "import os, signal\nos.kill(0, signal.SIGKILL)\nprint(3)"),
        "exit_holding_pipes": (ASSERT, (
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    time.sleep(60)\n"
            "    os._exit(0)\n"
            "def answer(x):\n"
            "    os._exit(0)\n"
        )),
        "stop_reading_calls": (FUNC_BIG, "import os\nkeep = os.dup(3)\nr, w = os.pipe()\nos.dup2(r, 3)\ndef answer(x):\n    return 1"),
        "fork_bomb": (STDIN, escaped_child("while True:\n    try:\n        os.fork()\n    except OSError:\n        pass")),
        "memory_bomb": (STDIN, "x = []\nwhile True:\n    x.append(bytearray(10 ** 9))"),
        "infinite_loop": (STDIN, escaped_child("while True:\n    pass")),
        "fs_write_delete": (STDIN, (
            "import os\n"
            f"for f in [lambda: os.remove({str(sentinel)!r}), lambda: open({str(created)!r}, 'w').write('x'),\n"
            "          lambda: open('/usr/pwned', 'w').write('x'), lambda: os.remove('/usr/bin/env')]:\n"
            "    try:\n        f()\n    except Exception:\n        pass\n"
            "a, b = map(int, input().split())\nprint(a + b)"  # behaves, so only the effects matter
        )),
        "secrets": (STDIN, hunt),
        "network": (STDIN, (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
            "    print('connected')\n"
            "except OSError as e:\n"
            "    print('blocked', e)\n"
        )),
        "kill_parent": (STDIN, (
            "import os, signal\n"
            "for pid in (os.getppid(), 1, -1):\n"
            "    try:\n        os.kill(pid, signal.SIGKILL)\n    except Exception:\n        pass\n"
            "print(3)"
        )),
        "huge_output": (STDIN, "while True:\n    print('x' * 100000)"),
        "ctypes": (STDIN, (
            "import ctypes\nlibc = ctypes.CDLL(None)\n"
            "libc.kill(-1, 9)\nlibc.syscall(62, 1, 9)\n"
            "ctypes.string_at(0)\n"  # segfault
        )),
        "subprocess": (STDIN, (
            "import subprocess, sys\n"
            f"subprocess.run(['/bin/sh', '-c', 'echo x > {created}'], check=False)\n"
            "subprocess.Popen([sys.executable, '-c', "
            f"\"import ctypes, time, os; ctypes.CDLL(None).prctl(15, b'{MARK}', 0, 0, 0); os.setsid(); time.sleep(120)\"], "
            "start_new_session=True)\n"
            "print(3)"
        )),
        "patch_time": (STDIN, (
            "import time\n"
            "time.time = time.monotonic = time.perf_counter = lambda: 0.0\n"
            "while True:\n    pass"
        )),
        "ignore_alarm": (STDIN, (
            "import signal\n"
            "for s in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGXCPU):\n"
            "    signal.signal(s, signal.SIG_IGN)\n"
            "while True:\n    pass"
        )),
        "exit0_stdin": (STDIN, "import sys\nsys.exit(0)"),
        "os_exit_func": (FUNC, "import os\nos._exit(0)\ndef answer(x):\n    return 0"),
        "sys_exit_func": (FUNC, "import sys\nsys.exit(0)\ndef answer(x):\n    return 0"),
        "os_exit_assert": (ASSERT, "import os\nos._exit(0)"),
        "exit_in_call": (ASSERT, "import os\ndef answer(x):\n    os._exit(0)"),
        "always_equal_func": (FUNC, "class Eq:\n    def __eq__(self, o):\n        return True\n    __hash__ = None\ndef answer(x):\n    return Eq()"),
        "always_equal_int": (FUNC, "class E(int):\n    def __eq__(self, o):\n        return True\ndef answer(x):\n    return E(0)"),
        "always_equal_assert": (ASSERT, "class Eq:\n    def __eq__(self, o):\n        return True\ndef answer(x):\n    return Eq()"),
        "dig_gc_frames_memory": (FUNC, (
            "import gc, sys, re\n"
            f"WANT = {EXPECTED - 1} + 1\n"  # the answer never appears in this source text
            "NEEDLE = b'%d' % WANT\n"
            "def _dig():\n"
            "    for o in gc.get_objects():\n"
            "        if isinstance(o, dict):\n"
            "            for k in ('output', 'expected', 'want'):\n"
            "                if o.get(k) == WANT:\n"
            "                    return o[k]\n"
            "    f = sys._getframe()\n"
            "    while f is not None:\n"
            "        for v in f.f_locals.values():\n"
            "            if v == WANT:\n"
            "                return v\n"
            "        f = f.f_back\n"
            "    import ctypes\n"  # read every readable mapping of our own memory
            "    for line in open('/proc/self/maps').read().splitlines():\n"
            "        m = re.match(r'([0-9a-f]+)-([0-9a-f]+) r', line)\n"
            "        if not m or '[v' in line:\n"
            "            continue\n"
            "        lo, hi = int(m.group(1), 16), int(m.group(2), 16)\n"
            "        data = ctypes.string_at(lo, min(hi - lo, 1 << 26))\n"
            "        if data.count(NEEDLE) > 1:\n"  # NEEDLE itself is one copy
            "            return WANT\n"
            "    return -1\n"
            "def answer(x):\n"
            "    return _dig()\n"
        )),
    }
    honest = {
        "honest_stdin": (STDIN, HONEST_STDIN),
        "honest_func": (FUNC, HONEST_FUNC),
        "honest_assert": (ASSERT, HONEST_FUNC),
        "honest_wrong": (STDIN, "print(0)"),
    }
    order = []
    for name, item in attacks.items():  # interleave: honest candidates share workers with attacks
        order.append((name, item))
        hname = list(honest)[len(order) % len(honest)]
        order.append((f"{hname}@{name}", honest[hname]))
    limits = Limits(timeout=2, memory_mb=512, processes=24, output_mb=4)
    try:
        with Executor(limits, workers=2) as ex:
            results = ex.run_many([item for _, item in order], progress=False)
            outputs = {
                "secrets": ex.run_outputs(STDIN, hunt),
                "network": ex.run_outputs(STDIN, attacks["network"][1]),
                "probe_worker": ex.run_outputs(STDIN, probe_worker),
            }
            fast = [w.info.fast for w in ex._all if w.info is not None]
            lingering = host_processes_named(MARK)
            workers_alive = all(w.proc is not None and w.proc.poll() is None for w in ex._all)
    finally:
        home_secret.unlink(missing_ok=True)
        os.environ.pop("DREAMPRM_TEST_SECRET", None)
    time.sleep(0.2)
    return {
        "results": {name: r for (name, _), r in zip(order, results, strict=False)},
        "outputs": outputs, "sentinel": sentinel, "created": created, "seen": seen,
        "lingering": lingering, "after_close": host_processes_named(MARK), "workers_alive": workers_alive,
        "fast": fast,
    }


def verdict(run, name: str) -> str:
    return run["results"][name].verdict


def test_honest_candidates_unaffected(hostile_run) -> None:
    for name, res in hostile_run["results"].items():
        if name.startswith("honest_wrong"):
            assert res.verdict == "wrong_answer", name
        elif name.startswith("honest_"):
            assert res.verdict == "pass", (name, res)


def test_fork_bomb_and_escaped_children_die(hostile_run) -> None:
    assert verdict(hostile_run, "fork_bomb") in ("time_limit", "runtime_error")
    assert hostile_run["lingering"] == [], "a double-forked, signal-ignoring child outlived its candidate"
    assert hostile_run["after_close"] == []
    assert hostile_run["workers_alive"]


def test_memory_bomb(hostile_run) -> None:
    assert verdict(hostile_run, "memory_bomb") == "memory_limit"


def test_infinite_loop_and_timer_tricks(hostile_run) -> None:
    for name in ("infinite_loop", "patch_time", "ignore_alarm"):
        res = hostile_run["results"][name]
        assert res.verdict == "time_limit", name
        assert res.wall_time < 3 * 2 + 2.0, name  # wall bound of the CPU-grace rule


def test_file_system_is_private(hostile_run) -> None:
    assert verdict(hostile_run, "fs_write_delete") == "pass"  # it ran; its writes went nowhere
    assert hostile_run["sentinel"].read_text() == "keep me"
    assert not hostile_run["created"].exists()
    assert not Path("/usr/pwned").exists()
    assert Path("/usr/bin/env").exists()


def test_secrets_are_not_visible(hostile_run) -> None:
    out = hostile_run["outputs"]["secrets"][0]
    assert out.startswith("clean"), out


def test_network_is_cut(hostile_run) -> None:
    assert hostile_run["outputs"]["network"][0].startswith("blocked")
    assert hostile_run["seen"] == []


def test_killing_the_parent_and_ctypes_do_not_reach_the_host(hostile_run) -> None:
    assert verdict(hostile_run, "kill_parent") == "wrong_answer"  # prints 3 for both tests; 2nd wants 9
    assert verdict(hostile_run, "ctypes") == "runtime_error"
    assert hostile_run["workers_alive"]


def test_huge_output_is_capped(hostile_run) -> None:
    res = hostile_run["results"]["huge_output"]
    assert res.verdict == "wrong_answer"
    assert "output limit" in res.tests[0].error
    assert len(res.tests[0].output) < 2000  # trimmed evidence, not megabytes


def test_subprocess_escape(hostile_run) -> None:
    assert not hostile_run["created"].exists()
    assert hostile_run["lingering"] == []


def test_exit_before_tests_is_not_a_pass(hostile_run) -> None:
    assert verdict(hostile_run, "exit0_stdin") == "wrong_answer"
    for name in ("os_exit_func", "sys_exit_func", "os_exit_assert", "exit_in_call"):
        assert verdict(hostile_run, name) in ("runtime_error", "compile_error"), name


def test_always_equal_objects_do_not_pass(hostile_run) -> None:
    for name in ("always_equal_func", "always_equal_int", "always_equal_assert"):
        assert verdict(hostile_run, name) == "wrong_answer", name


def test_expected_answer_is_not_in_candidate_memory(hostile_run) -> None:
    res = hostile_run["results"]["dig_gc_frames_memory"]
    assert res.verdict == "wrong_answer", res
    assert res.tests[0].output == "-1"


def test_one_fork_path_is_used_as_root(hostile_run) -> None:
    if os.geteuid() == 0:
        assert hostile_run["fast"] and all(hostile_run["fast"])


def test_candidate_cannot_trace_read_or_signal_the_worker(hostile_run) -> None:
    out = hostile_run["outputs"]["probe_worker"][0]
    assert "-ok" not in out, out
    assert hostile_run["workers_alive"]


def test_killing_its_own_group_hurts_only_itself(hostile_run) -> None:
    # A SIGKILL the sandbox did not send reads as the CPU hard limit (time_limit); under the
    # namespace path the candidate is its namespace's init and the signal does nothing.
    assert verdict(hostile_run, "kill_group") in ("time_limit", "runtime_error", "wrong_answer")
    assert hostile_run["workers_alive"]


def test_leftovers_cannot_inject_into_later_call_channels(hostile_run) -> None:
    assert verdict(hostile_run, "channel_injector") == "wrong_answer"
    # the honest candidates after it (same workers) kept their own verdicts
    test_honest_candidates_unaffected(hostile_run)


def test_exit_while_a_child_holds_the_pipes_does_not_hang(hostile_run) -> None:
    res = hostile_run["results"]["exit_holding_pipes"]
    assert res.verdict == "runtime_error", res
    assert res.wall_time < 2.0 + 1.5


def test_a_candidate_that_stops_reading_its_calls_times_out(hostile_run) -> None:
    res = hostile_run["results"]["stop_reading_calls"]
    assert res.verdict == "time_limit", res
    assert res.wall_time < 3 * 2 + 2.0


def test_rlimits_fallback_is_loud_and_still_contains_the_tree() -> None:
    """Without bwrap: a warning, limits, and (where user namespaces work) a PID namespace."""
    with pytest.warns(RuntimeWarning, match="NO FILE-SYSTEM SANDBOX"):
        import dreamprm_code.execution.sandbox as sb

        sb._DETECTED.pop("warned", None)
        ex = Executor(Limits(timeout=2, memory_mb=512, processes=24), workers=1, sandbox="rlimits")
    with ex:
        res = ex.run_many([(STDIN, escaped_child("while True:\n    pass")), (STDIN, HONEST_STDIN),
                           (FUNC, HONEST_FUNC), (STDIN, "x = bytearray(10 ** 10)")], progress=False)
        assert [r.verdict for r in res] == ["time_limit", "pass", "pass", "memory_limit"]
        assert host_processes_named(MARK) == []


def test_process_limit_is_exact_right_after_a_fork_bomb() -> None:
    """A call-mode candidate leaves a fork bomb behind; the next candidates on the same worker
    (started while the bomb may still be being torn down) get their whole process limit."""
    bomb = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    while True:\n"
        "        try:\n"
        "            os.fork()\n"
        "        except OSError:\n"
        "            pass\n"
        "def answer(x):\n"
        "    return 0\n"
    )
    forker = (
        "import os\n"
        "def answer(x):\n"
        "    pids = []\n"
        "    for _ in range(6):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            os._exit(0)\n"
        "        pids.append(pid)\n"
        "    for pid in pids:\n"
        "        os.waitpid(pid, 0)\n"
        f"    return {EXPECTED}\n"
    )
    with Executor(Limits(timeout=2, memory_mb=512, processes=8), workers=1) as ex:
        res = ex.run_many([(FUNC, bomb), (FUNC, forker), (FUNC, forker + "\n"), (FUNC, bomb + "\n"),
                           (FUNC, forker + "\n\n"), (FUNC, forker + "\n\n\n")], progress=False)
        assert [r.verdict for r in res] == ["wrong_answer", "pass", "pass", "wrong_answer", "pass", "pass"], res
        assert all(w.proc is not None and w.proc.poll() is None for w in ex._all)
