"""Problem loaders: exact counts on the real files, parsed tests against the raw records, errors."""

from __future__ import annotations

import ast
import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from dreamprm_code.data import data_path, load_problems
from dreamprm_code.data.apps import call_arguments
from dreamprm_code.data.humaneval import humaneval_path
from dreamprm_code.data.mbpp import parse_assert
from dreamprm_code.data.pools import mapcoder_pools
from dreamprm_code.errors import UserError
from dreamprm_code.records import Problem
from dreamprm_code.records import TestCase as Case


def _raw(path: Path, key: str, value) -> dict:
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec[key] == value:
            return rec
    raise AssertionError(f"{value!r} not in {path}")


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --- real files -------------------------------------------------------------------------------


def test_leetcode_real(shared_data: Path) -> None:
    problems = load_problems(f"leetcode:{shared_data / 'leetcode-180/problems.jsonl'}")
    assert len(problems) == 180
    assert Counter(p.difficulty for p in problems) == {"easy": 45, "medium": 91, "hard": 44}
    assert all(len(p.tests) == 100 for p in problems)
    assert min(p.date for p in problems) == "2023-07-02" and max(p.date for p in problems) == "2024-01-21"
    assert all(
        p.starter_code.startswith("class Solution") or "class ListNode" in p.starter_code for p in problems
    )
    # spot check: the first test of the first record, against the raw test script
    raw = _raw(shared_data / "leetcode-180/problems.jsonl", "task_id", problems[0].id)
    p = problems[0]
    assert p.entry_point == "minimumPushes" and p.platform == "leetcode"
    tree = ast.parse(raw["test"])
    assign, check = tree.body[1], tree.body[2]
    assert p.tests[0] == Case(
        kind="functional",
        input=[],
        kwargs=ast.literal_eval(assign.value),
        output=ast.literal_eval(check.test.comparators[0]),
    )
    assert p.tests[0].kwargs == {"word": "abcde"} and p.tests[0].output == 5
    assert not p.statement.startswith('"""') and "Please complete the code" not in p.statement
    # the two linked-list problems keep their helper-built tests as asserts with setup code
    linked = [p for p in problems if p.test_kind == "assert"]
    assert len(linked) == 2
    assert all("my_solution = Solution()" in p.setup_code and "_f1 = lambda" in p.setup_code for p in linked)
    assert "_f2(my_solution.doubleIt(**test_input)) == [3, 7, 8]" in linked[0].tests[0].code


def test_apps_real(shared_data: Path) -> None:
    path = shared_data / "apps-150/problems.jsonl"
    problems = load_problems(f"apps:{path}")
    assert len(problems) == 150
    assert Counter(p.difficulty for p in problems) == {"easy": 50, "medium": 52, "hard": 48}
    call = [p for p in problems if p.meta["call_based"]]
    assert len(call) == 98
    assert all(p.test_kind == "functional" and p.entry_point for p in call)
    assert all(p.test_kind == "stdin" and p.entry_point is None for p in problems if not p.meta["call_based"])
    # spot check a call-based problem: quotes restored, list args parsed
    p = next(p for p in problems if p.entry_point == "anagrams")
    raw = _raw(path, "id", int(p.id.split("/")[1]))
    extra = [t for t in raw["sample_io"] if t not in raw["test_list"]]
    first_private = p.tests[len(extra)]  # samples not among the hidden tests come first
    assert p.meta["sample_only_tests"] == len(extra)
    assert raw["test_list"][0]["input"] == "abba\n['aabb', 'abcd', 'bbaa', 'dada']"
    assert first_private.input == ["abba", ["aabb", "abcd", "bbaa", "dada"]]
    assert first_private.output == raw["test_list"][0]["output"][0] == ["aabb", "bbaa"]
    assert sum(t.public for t in p.tests) == len(raw["sample_io"])
    # samples that repeat a hidden test are not run twice: the hidden test is marked public
    assert (
        sum(len(p.tests) for p in problems) == 1951
        and sum(t.public for p in problems for t in p.tests) == 437
    )
    assert len(p.tests) == len(extra) + len(raw["test_list"])
    # spot check a stdin problem
    s = next(p for p in problems if not p.meta["call_based"])
    raw = _raw(path, "id", int(s.id.split("/")[1]))
    hidden = s.tests[s.meta["sample_only_tests"] :]
    assert [(t.input, t.output) for t in hidden] == [(t["input"], t["output"][0]) for t in raw["test_list"]]


def test_apps_stdin_real(shared_data: Path) -> None:
    problems = load_problems(f"apps-stdin:{shared_data / 'apps-150/problems.jsonl'}")
    assert len(problems) == 150 and all(p.test_kind == "stdin" for p in problems)
    assert load_problems("apps", as_stdin=True)[0].tests == problems[0].tests
    p = next(p for p in problems if p.title and p.meta["call_based"])
    assert p.starter_code == "" and p.entry_point is None
    by_id = {q.id: q for q in problems}
    get_score = by_id["apps/3554"]
    first = next(t for t in get_score.tests if not t.public)
    assert first.input == "[1]\n" and first.output == "100\n"
    # the statement says how the arguments arrive, since there is no starter code to show it
    assert "arguments of `get_score`, one per line" in get_score.statement
    assert all(
        "Input/output: write a complete program" not in q.statement
        for q in problems
        if not q.meta["call_based"]
    )
    # printed values are what print() shows: booleans, lists and dicts in Python's repr
    outputs = {t.output for q in problems if q.meta["call_based"] for t in q.tests}
    assert "True\n" in outputs and "[2, 5]\n" in outputs


def test_mbpp_real(shared_data: Path) -> None:
    path = shared_data / "mbpp/mbpp.jsonl"
    problems = load_problems(f"mbpp:{path}")
    assert len(problems) == 974
    assert all(p.difficulty == "easy" and p.platform == "mbpp" for p in problems)
    p = problems[0]
    raw = _raw(path, "task_id", 1)
    assert p.id == "mbpp/1" and p.entry_point == "min_cost"
    assert "def min_cost(cost, m, n):" in p.statement and raw["text"] in p.statement
    # the first test is shown as MBPP's own prompt shows it: the only word on the return type
    assert p.statement.endswith(raw["test_list"][0].strip()) and raw["test_list"][1] not in p.statement
    assert p.tests[0] == Case(kind="functional", input=[[[1, 2, 3], [4, 8, 2], [1, 5, 3]], 2, 2], output=8)
    assert len(p.tests) == len(raw["test_list"])
    # tuple-valued tests stay asserts (JSON would turn tuples into lists and compare loosely)
    p2 = next(q for q in problems if q.id == "mbpp/2")
    assert all(t.kind == "assert" for t in p2.tests)
    assert p2.tests[0].code.strip() == _raw(path, "task_id", 2)["test_list"][0].strip()
    # test_setup_code is carried over
    with_setup = [q for q in problems if q.setup_code]
    assert len(with_setup) == 2 and all("Node(" in q.setup_code for q in with_setup)


def test_humaneval_installed() -> None:
    problems = load_problems("humaneval")
    assert len(problems) == 164
    assert all(p.difficulty == "easy" for p in problems)
    with gzip.open(humaneval_path(), "rt", encoding="utf-8") as fh:
        raw = [json.loads(line) for line in fh]
    p, r = problems[0], raw[0]
    assert p.id == "HumanEval/0" and p.entry_point == "has_close_elements"
    assert len(p.tests) == 1 and p.tests[0].kind == "assert"
    assert p.tests[0].code.startswith(r["test"].rstrip()) and p.tests[0].code.endswith(
        "check(has_close_elements)\n"
    )
    assert p.starter_code == r["prompt"]
    # helpers the tests call (HumanEval/38's encode_cyclic) are in the trusted setup code
    p38 = problems[38]
    assert "def encode_cyclic" in p38.setup_code and "def decode_cyclic" not in p38.setup_code


def test_humaneval_reference_passes_its_own_check() -> None:
    """The test code we build is runnable: the canonical solution passes it (trusted code)."""
    for p in load_problems("humaneval")[:10]:
        env: dict = {}
        exec(p.meta["reference_solution"], env)  # noqa: S102 (trusted dataset code)
        exec(p.setup_code, env)  # noqa: S102
        exec(p.tests[0].code, env)  # noqa: S102


def test_our_problems_roundtrip(tmp_path: Path, shared_data: Path) -> None:
    problems = (
        load_problems("apps", as_stdin=False)[:5]
        + load_problems("humaneval")[:3]
        + load_problems("mbpp")[:5]
        + [p for p in load_problems("leetcode") if p.test_kind == "assert"][:1]
    )
    path = _write_jsonl(tmp_path / "p.jsonl", [p.to_dict() for p in problems])
    again = load_problems(str(path))
    assert again == problems


# --- pieces -----------------------------------------------------------------------------------


def test_parse_assert_kinds() -> None:
    assert parse_assert("assert f([1, 2], 'a') == {'x': 1}") == (
        "f",
        Case(kind="functional", input=[[1, 2], "a"], output={"x": 1}),
    )
    name, t = parse_assert("assert f((1, 2)) == (2, 1)")
    assert name == "f" and t.kind == "assert"
    name, t = parse_assert("assert set(g(3)) == {1, 2}")
    assert name == "g" and t.kind == "assert" and t.code == "assert set(g(3)) == {1, 2}\n"
    name, t = parse_assert("assert math.isclose(h(1.0/3), 0.5)")
    assert t.kind == "assert"
    # a builtin on the left is not the function under test
    name, t = parse_assert("assert sorted(k([3, 1])) == [1, 3]")
    assert name == "k" and t.kind == "assert"
    with pytest.raises(UserError, match="test_list"):
        parse_assert("x = 1")


def test_call_arguments_rebuilds_quotes() -> None:
    starter = "\ndef solution(string, markers):\n\t"
    args = call_arguments(["a #b\nc\nd $e f g\n['#', '$']", "x\n['!']"], starter)
    assert args == [["a #b\nc\nd $e f g", ["#", "$"]], ["x", ["!"]]]
    # a position with number-like strings ('098765') is a string everywhere
    pins = call_arguments(["1234", "098765", "a234"], "def validate_pin(pin):\n\t")
    assert pins == [["1234"], ["098765"], ["a234"]]
    # a lone invalid-input case among numbers keeps the numbers typed
    assert call_arguments(["100", "a", "1.5"], "def f(n):\n\t") == [[100], ["a"], [1.5]]
    # the statement's quoted call decides a digit-only string position
    stmt = 'is_polydivisible("1232", 10) # => True'
    assert call_arguments(["123\n10"], "def is_polydivisible(s, b):\n\t", stmt) == [["123", 10]]
    # default parameters: fewer lines than the full arity are fine
    assert call_arguments(["13", "13\n3"], "def converter(n, decimals=0, base=pi):\n\t") == [[13], [13, 3]]
    # a huge multi-line string: no exhaustive search, the first argument takes the surplus
    big = "\n".join(f"line {i}" for i in range(2000)) + "\n7\n[1]"
    assert call_arguments([big], "def f(text, k, xs):\n\t") == [[big.rsplit("\n", 2)[0], 7, [1]]]
    # stray spaces mean the text was a string
    assert call_arguments([" ", "5", "6"], "def f(s):\n\t") == [[" "], [5], [6]]


# --- errors -----------------------------------------------------------------------------------


def test_errors_name_file_line_field(tmp_path: Path) -> None:
    good = {
        "name": "x",
        "description": "d",
        "difficulty": "interview",
        "id": 1,
        "sample_io": [],
        "test_list": [{"input": "1\n", "output": ["1\n"]}],
        "starter_code": "",
    }
    path = _write_jsonl(tmp_path / "apps.jsonl", [good, {**good, "id": 2, "difficulty": "galaxy"}])
    with pytest.raises(UserError) as err:
        load_problems(f"apps:{path}")
    assert err.value.path == str(path) and err.value.line == 2 and err.value.field == "difficulty"

    bad = {k: v for k, v in good.items() if k != "description"}
    path = _write_jsonl(tmp_path / "apps2.jsonl", [bad])
    with pytest.raises(UserError) as err:
        load_problems(f"apps:{path}")
    assert (err.value.line, err.value.field) == (1, "description")

    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"broken.jsonl:2: not valid JSON"):
        load_problems(f"apps:{path}")

    lc = {
        "task_id": "t",
        "prompt": '"""\nS\n"""\nclass Solution:\n    def f(self, a: int) -> int:\n        ',
        "meta": {"difficulty": "Easy"},
        "test": "my_solution = Solution()\nassert my_solution.f(1) == 2\n",
    }
    path = _write_jsonl(tmp_path / "lc.jsonl", [lc])
    with pytest.raises(UserError) as err:
        load_problems(f"leetcode:{path}")
    assert (err.value.line, err.value.field) == (1, "test")

    path = _write_jsonl(
        tmp_path / "mbpp.jsonl", [{"task_id": 1, "text": "t", "code": "", "test_list": ["assert (1"]}]
    )
    with pytest.raises(UserError) as err:
        load_problems(f"mbpp:{path}")
    assert (err.value.line, err.value.field) == (1, "test_list")

    ours = Problem(
        id="a",
        title="a",
        statement="s",
        platform="p",
        difficulty="easy",
        tests=[Case(kind="stdin", input="1", output="1")],
    ).to_dict()
    path = _write_jsonl(tmp_path / "ours.jsonl", [ours, {**ours, "id": "b", "tests": [{"kind": "weird"}]}])
    with pytest.raises(UserError) as err:
        load_problems(str(path))
    assert (err.value.line, err.value.field) == (2, "tests[0].kind")


def test_unknown_source_and_options(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown problem source"):
        load_problems("nope")
    with pytest.raises(UserError, match="do not apply"):
        load_problems("humaneval", release="release_v1")
    with pytest.raises(UserError, match="file not found"):
        load_problems(f"mbpp:{tmp_path / 'missing.jsonl'}")


def test_leetcode_meta_as_string(tmp_path: Path) -> None:
    rec = {
        "task_id": "weekly-1-x",
        "title": "x",
        "prompt": '"""\nDo it.\n"""\nclass Solution:\n    def f(self, a: List[int]) -> int:\n        ',
        "meta": "{'difficulty': 'Hard', 'title': 'X'}",
        "test": '\nmy_solution = Solution()\n\ntest_input = { "a": [1, 2] }\nassert my_solution.f(**test_input) == 3\n',
        "start_time": 1688265000,
    }
    (p,) = load_problems(f"leetcode:{_write_jsonl(tmp_path / 'l.jsonl', [rec])}")
    assert p.difficulty == "hard" and p.title == "X" and p.date == "2023-07-02"
    assert p.statement == "Do it." and p.starter_code.startswith("class Solution:")
    assert p.tests == [Case(kind="functional", input=[], kwargs={"a": [1, 2]}, output=3)]


def test_leetcode_fast_path_matches_ast(shared_data: Path) -> None:
    """The line-by-line reader gives exactly the syntax-tree reader's tests (types included)."""
    from dreamprm_code.data.leetcode import _ast_tests, _fast_tests

    lines = (shared_data / "leetcode-180/problems.jsonl").read_text(encoding="utf-8").splitlines()
    fast_used = 0
    for line in lines[::9]:
        script = json.loads(line)["test"]
        fast, slow = _fast_tests(script), _ast_tests(script)
        if fast is None:
            continue
        fast_used += 1
        assert fast[0] == slow[0] and fast[1] == slow[1]
        for a, b in zip(fast[1], slow[1], strict=True):
            assert repr(a.kwargs) == repr(b.kwargs) and repr(a.output) == repr(b.output)
    assert fast_used >= 18
    # anything unusual falls back: a non-literal expected value, a stray statement
    assert _fast_tests("test_input = {'a': 1}\nassert my_solution.f(**test_input) == g(1)\n") is None
    assert _fast_tests("x = 1\ntest_input = {'a': 1}\nassert my_solution.f(**test_input) == 1\n") is None
    assert _fast_tests("test_input = {'a': (1, 2)}\nassert my_solution.f(**test_input) == 1\n") is None
    method, tests, _ = _fast_tests("test_input = {'a': True}\nassert my_solution.f(**test_input) == None\n")
    assert method == "f" and tests[0].kwargs == {"a": True} and tests[0].output is None


def test_data_dir_from_environment(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "mbpp").mkdir()
    rec = {
        "task_id": 5,
        "text": "Add.",
        "code": "def add(a, b):\n    return a + b",
        "test_list": ["assert add(1, 2) == 3"],
    }
    _write_jsonl(tmp_path / "mbpp" / "mbpp.jsonl", [rec])
    monkeypatch.setenv("DREAMPRM_DATA", str(tmp_path))
    (p,) = load_problems("mbpp")
    assert p.id == "mbpp/5" and p.tests == [Case(kind="functional", input=[1, 2], output=3)]
    with pytest.raises(UserError, match="DREAMPRM_DATA") as err:
        load_problems("leetcode")
    assert err.value.path == str(tmp_path / "leetcode-180" / "problems.jsonl")


def test_data_path_names_the_missing_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "pools").mkdir()
    monkeypatch.setenv("DREAMPRM_DATA", str(tmp_path))
    assert data_path("pools") == tmp_path / "pools"
    assert data_path("pools", root=tmp_path) == tmp_path / "pools"
    with pytest.raises(UserError, match="DREAMPRM_DATA") as err:
        data_path("pools", "apps-mapcoder")
    assert err.value.path == str(tmp_path / "pools" / "apps-mapcoder")
    with pytest.raises(UserError):
        data_path("pools", root=tmp_path / "elsewhere")


def test_mapcoder_pools_grade_on_the_tests_the_labels_used(shared_data: Path) -> None:
    by_mode = {mode: mapcoder_pools(shared_data, mode) for mode in ("all", "auto", "hidden")}
    problems, folder = by_mode["auto"]["humaneval"]
    assert len(problems) == 164 and folder == shared_data / "pools" / "humaneval-mapcoder"
    assert by_mode["auto"]["apps"][1] == shared_data / "pools" / "apps-mapcoder"
    apps = {mode: {p.id: p for p in sets["apps"][0]} for mode, sets in by_mode.items()}
    call_based = [pid for pid, p in apps["all"].items() if p.meta.get("call_based")]
    stdin = [pid for pid, p in apps["all"].items() if not p.meta.get("call_based")]
    assert call_based and stdin
    public = lambda mode, pid: sum(t.public for t in apps[mode][pid].tests)  # noqa: E731
    hidden = lambda mode, pid: sum(not t.public for t in apps[mode][pid].tests)  # noqa: E731
    # auto: call-based problems lose their samples when they have hidden tests; stdin ones keep all
    assert any(public("all", pid) for pid in call_based)
    for pid in call_based:
        assert public("auto", pid) == (0 if hidden("all", pid) else public("all", pid))
        assert hidden("auto", pid) == hidden("all", pid)
    for pid in stdin:
        assert apps["auto"][pid].tests == apps["all"][pid].tests
        assert public("hidden", pid) == (0 if hidden("all", pid) else public("all", pid))
