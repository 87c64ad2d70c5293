"""Verdicts, LiveCodeBench comparison rules, the plain-data codec, the cache and run_outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamprm_code.errors import UserError
from dreamprm_code.execution import Executor, Limits, cache_key, calls, run_program, sandbox, verdicts
from dreamprm_code.execution.worker import codec, compare
from dreamprm_code.records import Problem, TestCase


def stdin_problem(pid: str = "sum", tests: list[tuple[str, str]] | None = None) -> Problem:
    tests = tests or [("1 2\n", "3\n"), ("10 5\n", "15\n")]
    return Problem(pid, "t", "s", "atcoder", "easy", [TestCase("stdin", i, o) for i, o in tests])


def func_problem(entry: str = "total", tests: list[tuple[list, object]] | None = None) -> Problem:
    tests = tests or [([[1, 2, 3]], 6), ([[5]], 5)]
    return Problem("f-" + entry, "t", "s", "leetcode", "easy", [TestCase("functional", a, o) for a, o in tests],
                   entry_point=entry)


def assert_problem(test_code: str, entry: str = "add", setup: str = "") -> Problem:
    return Problem("a-" + entry, "t", "s", "humaneval", "easy", [TestCase("assert", code=test_code)],
                   entry_point=entry, setup_code=setup)


@pytest.fixture(scope="module")
def ex():
    with Executor(Limits(timeout=2, memory_mb=512), workers=2) as e:
        yield e


def test_the_worker_package_needs_only_the_standard_library() -> None:
    """The sandbox has the standard library alone: every worker module imports with no
    site-packages (``-S``) and no project on the path, as the sandbox starts it."""
    modules = ["wire", "codec", "compare", "messages", "harness", "process"]
    code = (f"import sys; sys.path.insert(0, {str(sandbox.WORKER_DIR.parent)!r}); "
            + "; ".join(f"import worker.{m}" for m in modules)
            + "; print(sorted(m for m in sys.modules if m.startswith(('worker', 'dreamprm'))))")
    out = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == ["worker", *sorted(f"worker.{m}" for m in modules)]


# -- comparison rules ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("actual", "expected", "same"),
    [
        ("3\n", "3", True),
        ("  3  \n\n", "3\n", True),  # the whole text and each line are stripped
        ("1 2\n3", "1 2\n3\n", True),
        ("1.50", "1.5", True),  # equal as Decimals
        ("1.0 2", "1 2.00", True),
        ("0.333", "0.3333", False),  # no tolerance: exact Decimal equality, like LCB
        ("1e2", "100", True),
        ("abc", "abd", False),
        ("1\n2", "1 2", False),  # line counts differ
        ("1\n\n2", "1\n2", False),  # inner blank lines count
        ("Yes", "yes", False),
        ("nan", "nan", True),
    ],
)
def test_compare_stdout_follows_livecodebench(actual: str, expected: str, same: bool) -> None:
    assert compare.compare_stdout(actual, expected) is same


def test_compare_return_tuple_counts_as_list_at_top_level_only() -> None:
    assert compare.compare_return((1, 2), [1, 2])
    assert not compare.compare_return([(1, 2)], [[1, 2]])
    assert compare.compare_return(1.0, 1)
    assert not compare.compare_return("1", 1)


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
    | st.frozensets(st.integers(), max_size=3),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(plain)
def test_codec_round_trips_exact_types(value: object) -> None:
    wire = json.loads(json.dumps(codec.encode_value(value)))
    back = codec.decode_value(wire)
    assert back == value
    assert type(back) is type(value)


def test_codec_rejects_objects_and_converts_builtin_subclasses() -> None:
    class Liar:
        def __eq__(self, other: object) -> bool:
            return True

    with pytest.raises(codec.NotPlainData):
        codec.encode_value(Liar())
    with pytest.raises(codec.NotPlainData):
        codec.encode_value([1, {"a": Liar()}])

    class SneakyInt(int):
        def __eq__(self, other: object) -> bool:
            return True

    assert type(codec.encode_value(SneakyInt(4))) is int
    with pytest.raises(codec.NotPlainData):
        codec.decode_value({"evil": 1})
    with pytest.raises(codec.NotPlainData):
        codec.decode_value({"tuple": 3})


# -- verdicts: stdin ---------------------------------------------------------------------------

def test_stdin_verdicts(ex: Executor) -> None:
    p = stdin_problem()
    codes = {
        "pass": "a, b = map(int, input().split())\nprint(a + b)",
        "main_guard": "def main():\n    a, b = map(int, input().split())\n    print(a + b)\nif __name__ == '__main__':\n    main()",
        "wrong": "a, b = map(int, input().split())\nprint(a - b)",
        "runtime": "a, b = map(int, input().split())\nprint(a // 0)",
        "compile": "def f(:\n  pass",
        "tle": "input()\nwhile True:\n    pass",
        "mle": "x = [0] * (10 ** 10)",
        "exit_ok": "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(0)",
        "prelude": "a, b = map(int, input().split())\nprint(gcd(a, b) * 0 + a + b)",  # LCB's imports
        "open0": "a, b = map(int, open(0).read().split())\nprint(a + b)",
    }
    res = dict(zip(codes, ex.run_many([(p, c) for c in codes.values()], progress=False), strict=False))
    assert res["pass"].verdict == "pass" and res["pass"].passed == 2
    assert res["main_guard"].verdict == "pass"
    assert res["wrong"].verdict == "wrong_answer"
    assert res["wrong"].tests[0].output.strip() == "-1" and res["wrong"].tests[0].expected.strip() == "3"
    assert len(res["wrong"].tests) == 1  # stop at the first failure
    assert res["runtime"].verdict == "runtime_error" and "ZeroDivisionError" in res["runtime"].tests[0].error
    assert res["compile"].verdict == "compile_error"
    assert res["tle"].verdict == "time_limit"
    # CPU grace (default): past 2 s of wall clock a starved loop may run until it has used 2 s
    # of CPU, but never past 3x the limit.
    assert res["tle"].wall_time < 3 * 2 + 1.5
    assert res["mle"].verdict == "memory_limit"
    assert res["exit_ok"].verdict == "pass"
    assert res["prelude"].verdict == "pass"
    assert res["open0"].verdict == "pass"


def test_strict_wall_clock_mode_stops_at_the_limit() -> None:
    p = stdin_problem(tests=[("", "")])
    r = run_program(p, "while True:\n    pass", Limits(timeout=1, cpu_grace=False))
    assert r.verdict == "time_limit"
    assert r.wall_time < 1 + 1.5  # the core is free right after the limit, loaded machine or not
    f = func_problem("spin", [([1], 1)])
    r = run_program(f, "def spin(x):\n    while True:\n        pass", Limits(timeout=1, cpu_grace=False))
    assert r.verdict == "time_limit" and r.wall_time < 1 + 1.5


def test_many_calls_share_one_process_without_hitting_the_cpu_rlimit(ex: Executor) -> None:
    # 12 calls of ~0.3 s CPU each: more than one test's CPU limit in total, each within it.
    p = func_problem("burn", [([i], i) for i in range(12)])
    code = "def burn(x):\n    t = 0\n    for i in range(1_500_000):\n        t += i\n    return x"
    r = ex.run(p, code)
    assert r.verdict == "pass", r


def test_stop_at_first_failure_off_runs_every_test() -> None:
    p = stdin_problem(tests=[("1 2\n", "0\n"), ("1 1\n", "2\n"), ("2 2\n", "4\n")])
    r = run_program(p, "a, b = map(int, input().split())\nprint(a + b)", Limits(timeout=2, stop_at_first_failure=False))
    assert [t.status for t in r.tests] == ["wrong_answer", "pass", "pass"]
    assert r.verdict == "wrong_answer" and r.passed == 2 and r.total == 3


# -- verdicts: functional --------------------------------------------------------------------------

def test_functional_verdicts(ex: Executor) -> None:
    p = func_problem()
    codes = {
        "method": "class Solution:\n    def total(self, nums: List[int]) -> int:\n        return sum(nums)",
        "function": "def total(nums):\n    return sum(nums)",
        "tuple_top": "def total(nums):\n    return sum(nums)",
        "wrong": "def total(nums):\n    return len(nums)",
        "wrong_type": "def total(nums):\n    return str(sum(nums))",
        "raises": "def total(nums):\n    raise KeyError('x')",
        "tle": "def total(nums):\n    while True:\n        pass",
        "compile": "def total(nums) return 1",
        "load_error": "import nonexistent_module_xyz\ndef total(nums):\n    return sum(nums)",
        "missing": "def other(nums):\n    return sum(nums)",
    }
    res = dict(zip(codes, ex.run_many([(p, c) for c in codes.values()], progress=False), strict=False))
    assert res["method"].verdict == "pass"
    assert res["function"].verdict == "pass"
    assert res["wrong"].verdict == "wrong_answer" and res["wrong"].tests[0].output == "3"
    assert res["wrong_type"].verdict == "wrong_answer"
    assert res["raises"].verdict == "runtime_error" and "KeyError" in res["raises"].tests[0].error
    assert res["tle"].verdict == "time_limit"
    assert res["compile"].verdict == "compile_error"
    assert res["load_error"].verdict == "compile_error"
    assert res["missing"].verdict == "runtime_error"
    pt = func_problem("pair", [([3], [3, 4])])
    r = ex.run(pt, "def pair(x):\n    return (x, x + 1)")
    assert r.verdict == "pass", r  # LCB: tuple == list
    pk = Problem("kw", "t", "s", "x", "easy", [TestCase("functional", [2], 8, kwargs={"e": 3})], entry_point="pw")
    assert ex.run(pk, "def pw(b, e=1):\n    return b ** e").verdict == "pass"


def test_functional_needs_entry_point(ex: Executor) -> None:
    p = Problem("noentry", "t", "s", "x", "easy", [TestCase("functional", [1], 1)])
    with pytest.raises(UserError):
        ex.run(p, "def f(x): return x")


# -- verdicts: assert ------------------------------------------------------------------------------

HE_TEST = (
    "def check(candidate):\n"
    "    assert candidate(1, 2) == (3, -1)\n"
    "    assert candidate(5, 5) == (10, 0)\n"
    "    assert double(4) == 8\n\n"
    "check(add)\n"
)


def test_assert_verdicts(ex: Executor) -> None:
    p = assert_problem(HE_TEST)
    good = "def double(x):\n    return 2 * x\n\ndef add(a, b):\n    return (a + b, a - b)"
    codes = {
        "pass": good,
        "list_not_tuple": "def double(x):\n    return 2 * x\n\ndef add(a, b):\n    return [a + b, a - b]",
        "helper_wrong": "def double(x):\n    return 3 * x\n\ndef add(a, b):\n    return (a + b, a - b)",
        "raises": "def double(x):\n    return 2 * x\n\ndef add(a, b):\n    return (a + b) / 0",
        "tle": "def double(x):\n    return 2 * x\n\ndef add(a, b):\n    while True:\n        pass",
        "compile": "def add(a, b) return 1",
    }
    res = dict(zip(codes, ex.run_many([(p, c) for c in codes.values()], progress=False), strict=False))
    assert res["pass"].verdict == "pass"
    assert res["list_not_tuple"].verdict == "wrong_answer"  # tuples survive the trip exactly
    assert "candidate(1, 2)" in res["list_not_tuple"].tests[0].error
    assert res["helper_wrong"].verdict == "wrong_answer"
    assert res["raises"].verdict == "runtime_error"
    assert res["tle"].verdict == "time_limit"
    assert res["compile"].verdict == "compile_error"


def test_assert_mbpp_style_with_setup_and_caught_exception(ex: Executor) -> None:
    test = (
        "assert math.isclose(area(2), 12.566, rel_tol=1e-3)\n"
        "try:\n    area(-1)\n    raise AssertionError('no error')\nexcept ValueError:\n    pass\n"
    )
    p = assert_problem(test, entry="area", setup="import math")
    code = "def area(r):\n    if r < 0:\n        raise ValueError('negative')\n    return math.pi * r * r"
    assert ex.run(p, code).verdict == "pass"


def test_literal_assert_calls_go_ahead_in_one_batch(ex: Executor, monkeypatch) -> None:
    test = ("def check(candidate):\n    \"\"\"doc\"\"\"\n    assert candidate(1, 2) == 3\n"
            "    assert abs(candidate(-1, b=0.5) + 0.5) < 1e-9, 'message'\n    assert candidate(2, 2) == 4\n"
            "    for x in range(3):\n        assert candidate(x, 1) == x + 1\n")
    plan = calls.planned_calls(test, "add")
    assert [json.loads(text)["args"] for text, _ in plan] == [[1, 2], [-1], [2, 2]]  # up to the loop
    sent = []
    real, real_ahead = calls.write_frame_by, calls.CallSession._send_ahead
    monkeypatch.setattr(calls, "write_frame_by", lambda fd, obj, deadline: (sent.append(obj), real(fd, obj, deadline)))
    monkeypatch.setattr(calls.CallSession, "_send_ahead",
                        lambda self, plan: (sent.append({"batch": plan}), real_ahead(self, plan)))
    p = assert_problem(test)
    assert ex.run(p, "def add(a, b=0):\n    return a + b").verdict == "pass"
    assert len(sent[0]["batch"]) == 3 and len(sent) == 4  # one batch, then the loop's calls one by one
    # State carried from call to call and a failure mid-batch: the same verdicts as one by one.
    counting = "n = [0]\ndef add(a, b=0):\n    n[0] += 1\n    return a + b if n[0] != 3 else -1"
    res = ex.run(p, counting)
    assert res.verdict == "wrong_answer" and "candidate(2, 2)" in res.tests[0].error
    raising = "n = [0]\ndef add(a, b=0):\n    n[0] += 1\n    if n[0] == 2:\n        raise KeyError(n[0])\n    return a + b"
    assert ex.run(p, raising).verdict == "runtime_error"
    hangs = "def add(a, b=0):\n    while b == 0.5:\n        pass\n    return a + b"
    assert ex.run(p, hangs).verdict == "time_limit"


def test_a_wrong_batch_guess_reruns_call_by_call(ex: Executor, monkeypatch) -> None:
    # The ``check`` the harness calls is not the one the plan was read from: it makes one of
    # the three planned calls, so the candidate ran two the test never asked for.
    test = ("def check(candidate):\n    assert candidate(1) == 1\n    assert candidate(2) == 2\n"
            "    assert candidate(3) == 3\n\ndef _other(c):\n    assert c(1) == 1\n\ncheck = _other\n")
    assert len(calls.planned_calls(test, "add")) == 3
    runs = []
    real = verdicts._run_tests_once
    monkeypatch.setattr(verdicts, "_run_tests_once", lambda *a, **k: (runs.append(k["plan"]), real(*a, **k))[1])
    p = assert_problem(test)
    # Counts its calls: only a rerun from a fresh process sees its single call as the first.
    res = ex.run(p, "n = [0]\ndef add(a):\n    n[0] += 1\n    return a if n[0] == 1 else -1")
    assert res.verdict == "pass"
    assert runs == [True, False]


def test_candidate_set_up(ex: Executor) -> None:
    """What every candidate starts with, on both kinds of run: the limits, the environment, no
    privileges, and no file descriptor but its own (checked from inside)."""
    probe = (
        "import os, resource, tempfile\n"
        "def facts():\n"
        "    status = open('/proc/self/status').read()\n"
        "    nnp = [l.split()[1] for l in status.splitlines() if l.startswith('NoNewPrivs')]\n"
        "    return {'fds': sorted(int(f) for f in os.listdir('/proc/self/fd')),\n"
        "            'nnp': nnp, 'home': os.environ.get('HOME') == os.getcwd() == os.environ.get('TMPDIR')\n"
        "            == tempfile.gettempdir(), 'env': sorted(os.environ),\n"
        "            'limits': [resource.getrlimit(getattr(resource, 'RLIMIT_' + n)) for n in\n"
        "                       ('AS', 'DATA', 'FSIZE', 'NPROC', 'CORE', 'NOFILE')]}\n"
    )
    mb = 1024 * 1024
    want_limits = [[512 * mb] * 2, [512 * mb] * 2, [64 * mb] * 2, [32, 32], [0, 0], [256, 256]]
    f = func_problem("facts", [([], None)])
    (out,) = ex.run_outputs(f, probe)
    got = json.loads(out)
    assert got["nnp"] == ["1"] and got["home"] and got["env"] == ["HOME", "LANG", "PATH", "TMPDIR"]
    assert got["limits"] == want_limits
    assert [fd for fd in got["fds"] if fd > 4] in ([], [got["fds"][-1]])  # 0-4, + the listdir's own
    s = stdin_problem(tests=[("", "")])
    (out,) = ex.run_outputs(s, probe + "import json\nprint(json.dumps(facts()))")
    got = json.loads(out)
    assert got["nnp"] == ["1"] and got["home"] and got["limits"] == want_limits
    assert [fd for fd in got["fds"] if fd > 2] in ([], [got["fds"][-1]])


# -- run_outputs, cache ----------------------------------------------------------------------------

def test_run_outputs_gives_behaviour_without_comparing(ex: Executor) -> None:
    p = stdin_problem(tests=[("1 2\n", "x"), ("oops\n", "x")])
    outs = ex.run_outputs(p, "a, b = map(int, input().split())\nprint(a + b)")
    assert outs == ["3", "<ValueError>"]
    f = func_problem("pair", [([1], None), ([2], None)])
    assert ex.run_outputs(f, "def pair(x):\n    return {'k': (x, x)}") == ['{"k": [1, 1]}', '{"k": [2, 2]}']
    a = assert_problem(HE_TEST)
    outs = ex.run_outputs(a, "def double(x):\n    return 2 * x\n\ndef add(a, b):\n    return (a + b, 0)")
    assert outs == ["[[3, 0]]"]  # the values of the calls made before the first failed assert


def test_cache_makes_rerun_free_and_survives_restart(tmp_path, monkeypatch) -> None:
    p = stdin_problem()
    code = "a, b = map(int, input().split())\nprint(a + b)"
    limits = Limits(timeout=2)
    with Executor(limits, workers=1, cache_dir=tmp_path) as e:
        first = e.run_many([(p, code), (p, "print(0)")], progress=False)
    assert [r.verdict for r in first] == ["pass", "wrong_answer"]
    log = tmp_path / "exec-cache.jsonl"
    assert len(log.read_text().splitlines()) == 2

    def boom(*a, **k):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(verdicts, "_run_tests", boom)
    with Executor(limits, workers=1, cache_dir=tmp_path) as e:
        again = e.run_many([(p, code), (p, "print(0)")], progress=False)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in first]
    assert cache_key(p, code, limits) != cache_key(p, code, Limits(timeout=3))
    assert cache_key(p, code, limits) != cache_key(stdin_problem(tests=[("1 2\n", "4\n")]), code, limits)


def test_limits_validation() -> None:
    with pytest.raises(UserError):
        Limits(timeout=0)


def test_warm_workers_are_fast(ex: Executor) -> None:
    p = func_problem()
    items = [(p, f"def total(nums):\n    return sum(nums) + {i} * 0") for i in range(30)]
    t = time.monotonic()
    res = ex.run_many(items, progress=False)
    assert all(r.verdict == "pass" for r in res)
    assert time.monotonic() - t < 20  # ~0.02 s each when warm; generous for a loaded machine


def test_a_dead_worker_is_replaced_not_blamed_on_the_candidate() -> None:
    import os
    import signal

    p = stdin_problem()
    code = "a, b = map(int, input().split())\nprint(a + b)"
    with Executor(Limits(timeout=2), workers=1) as e:
        assert e.run(p, code).verdict == "pass"
        (worker,) = e._all
        os.killpg(worker.proc.pid, signal.SIGKILL)  # the sandbox dies between two programs
        worker.proc.wait()
        r = e.run(p, code + "\n")
        assert r.verdict == "pass", r


def test_start_brings_up_every_worker_before_the_first_candidate() -> None:
    with Executor(Limits(timeout=2), workers=2) as e:
        e.start()
        started = list(e._all)
        assert len(started) == 2 and all(w.proc is not None and w.proc.poll() is None for w in started)
        e.start()  # idempotent: nothing more to start
        assert e._all == started
        assert e.run(stdin_problem(), "a, b = map(int, input().split())\nprint(a + b)").verdict == "pass"
        assert e._all == started  # the run took a started worker, it did not start one
