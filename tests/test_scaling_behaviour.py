"""Majority-vote behaviour through the real sandboxed execution stage."""

from __future__ import annotations

from dreamprm_code.records import PASS, WRONG_ANSWER, Problem, Solution
from dreamprm_code.records import TestCase as Case
from dreamprm_code.scaling.behaviour import behaviour_key, compute_behaviours, is_failure, vote_tests
from dreamprm_code.scaling.evaluate import EvalOptions, evaluate

PROBLEM = Problem(
    "sum",
    "sum",
    "print a+b",
    "test",
    "easy",
    [Case("stdin", "1 2\n", "3\n", public=True), Case("stdin", "5 5\n", "10\n"), Case("stdin", "0 7\n", "7\n")],
)


def test_vote_tests_prefers_public():
    assert [t.input for t in vote_tests(PROBLEM)] == ["1 2\n"]
    hidden = Problem("h", "h", "s", "t", "easy", [Case("stdin", str(i), "x") for i in range(5)])
    assert len(vote_tests(hidden, max_tests=3)) == 3


def test_behaviour_key():
    assert behaviour_key(["3\n", "10  \n"]) == behaviour_key(["3", "10"])
    assert behaviour_key(["<ZeroDivisionError>", "<time_limit>"]) is None
    assert behaviour_key(["<ValueError>", "4"]) is not None
    assert is_failure("<time_limit>") and not is_failure("<b>bold</b>")


def test_compute_behaviours_with_real_sandbox_and_cache(tmp_path):
    codes = [
        "a, b = map(int, input().split())\nprint(a + b)\n",
        "x = input().split()\nprint(int(x[0]) + int(x[1]))\n",
        "a, b = map(int, input().split())\nprint(a * b)\n",
        "print(1 / 0)\n",
    ]
    verdicts = [PASS, PASS, WRONG_ANSWER, WRONG_ANSWER]
    sols = [Solution("sum", i, c, verdict=v) for i, (c, v) in enumerate(zip(codes, verdicts, strict=True))]
    beh = compute_behaviours([PROBLEM], sols, cache=tmp_path / "beh.jsonl", workers=2, show_progress=False)
    assert beh["sum#0"] == beh["sum#1"] != beh["sum#2"]
    assert beh["sum#3"] is None
    # Resumed: everything comes from the cache, no sandbox run needed.
    again = compute_behaviours([PROBLEM], sols, cache=tmp_path / "beh.jsonl", workers=1, show_progress=False)
    assert again == beh
    rep = evaluate([PROBLEM], sols, {}, EvalOptions(resamples=20), behaviours=beh)
    assert rep.method("majority").per_problem["sum"] == 1.0
