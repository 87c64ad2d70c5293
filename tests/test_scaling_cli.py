"""`dreamprm-code evaluate` end to end on files the test writes, and its user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dreamprm_code.io import atomic_write_jsonl
from dreamprm_code.records import PASS, WRONG_ANSWER, Problem, Solution, StepScores
from dreamprm_code.records import TestCase as Case


def _write_inputs(tmp_path):
    problems, solutions, scores = [], [], []
    for k in range(6):
        pid = f"T{k}"
        problems.append(Problem(pid, pid, "s", "t", ("easy", "medium", "hard")[k % 3], [Case("stdin", "1", "1")]))
        for i in range(4):
            ok = i == k % 4
            sol = Solution(pid, i, f"print({i})\n", verdict=PASS if ok else WRONG_ANSWER)
            solutions.append(sol)
            scores.append(StepScores(sol.id, pid, [0.9 if ok else 0.3]))
    atomic_write_jsonl(tmp_path / "problems.jsonl", [p.to_dict() for p in problems])
    atomic_write_jsonl(tmp_path / "solutions.jsonl", [s.to_dict() for s in solutions])
    atomic_write_jsonl(tmp_path / "labels.jsonl", [s.to_dict() for s in scores])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dreamprm_code", *args], capture_output=True, text=True, timeout=240
    )


@pytest.mark.slow
def test_evaluate_cli_writes_report_and_rejects_bad_scores(tmp_path):
    _write_inputs(tmp_path)
    out = tmp_path / "eval"
    base = ["evaluate", "--problems", str(tmp_path / "problems.jsonl"), "--solutions",
            str(tmp_path / "solutions.jsonl"), "--no-majority", "--resamples", "200", "--subsamples", "4"]
    proc = _cli(*base, "--scores", str(tmp_path / "labels.jsonl"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DreamPRM-Code (label correction)" in proc.stdout
    data = json.loads((out / "report.json").read_text())
    rows = {m["name"]: m for m in data["methods"]}
    assert rows["labels/min"]["cells"]["overall"]["value"] == 1.0
    assert rows["policy"]["cells"]["overall"]["value"] == 0.25
    assert (out / "report.html").is_file() and (out / "scaling.png").is_file()

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"solution_id": "T0#0", "problem_id": "T0", "scores": [0.5]}\n'
                   '{"solution_id": "T0#1", "problem_id": "T0", "scores": [1.7]}\n')
    proc = _cli(*base, "--scores", f"x={bad}", "--out", str(tmp_path / "eval2"))
    assert proc.returncode == 2
    assert f"{bad}:2: field 'scores'" in proc.stderr
    proc = _cli(*base, "--scores", f"x={tmp_path / 'missing.jsonl'}", "--out", str(tmp_path / "eval3"))
    assert proc.returncode == 2 and "file not found" in proc.stderr
    proc = _cli(*base, "--weighted-vote", "max", "--out", str(tmp_path / "eval4"))
    assert proc.returncode == 2 and "unknown weighted vote 'max'" in proc.stderr
