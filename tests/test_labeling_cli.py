"""``dreamprm-code label`` as a user runs it: a subprocess, real files, a tiny real HF policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamprm_code.io import atomic_write_jsonl
from test_labeling_support import PROBLEM, failing_solution, passing_solution

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory) -> Path:
    """A random-initialised Qwen2 causal LM with a chat template, saved where ``hf:PATH`` loads it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tiny_models import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    path = tmp_path_factory.mktemp("tiny-policy")
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dreamprm_code", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        # one torch thread: tiny models on a busy machine are 10x slower with spinning OpenMP threads
        env={**os.environ, "COLUMNS": "160", "OMP_NUM_THREADS": "1"},
        timeout=240,
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_label_command_writes_labels_summary_plot_and_resumes(tmp_path, tiny_policy_dir):
    problems = tmp_path / "problems.jsonl"
    solutions = tmp_path / "solutions.jsonl"
    atomic_write_jsonl(problems, [PROBLEM.to_dict()])
    atomic_write_jsonl(solutions, [passing_solution(0).to_dict(), failing_solution(1).to_dict()])
    out = tmp_path / "run" / "labels.jsonl"
    args = [
        "label",
        "--solutions", str(solutions),
        "--problems", str(problems),
        "--policy", f"hf:{tiny_policy_dir}",
        "--rollouts", "2",
        "--max-new-tokens", "8",
        "--strategy", "full",
        "--out", str(out),
    ]  # fmt: skip
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    labels = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["solution_id"], r["step_index"]) for r in labels) == [
        (f"sq/1#{i}", k) for i in (0, 1) for k in range(3)
    ]
    assert all(r["rollouts"] == (0 if r["step_index"] == 2 else 2) for r in labels)
    summary = json.loads((tmp_path / "run" / "labels.jsonl.summary.json").read_text())
    assert summary["labels"] == 6 and summary["rollouts"] == 8 and summary["run"]["policy"].startswith("hf:")
    assert (tmp_path / "run" / "labels.jsonl.mc_by_step.png").read_bytes()[:4] == b"\x89PNG"
    assert "step labels: 6 prefixes of 2 solutions" in first.stdout
    # the same command again: everything is resumed, nothing sampled
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 labels written, 6 resumed; 0 rollouts" in again.stderr.replace("\n", " ")
    assert out.read_text().count("\n") == 6


def test_label_command_user_errors_are_one_line(tmp_path):
    problems = tmp_path / "problems.jsonl"
    solutions = tmp_path / "solutions.jsonl"
    atomic_write_jsonl(problems, [PROBLEM.to_dict()])
    atomic_write_jsonl(solutions, [passing_solution(0).to_dict()])
    bad = cli(
        "label", "--solutions", str(solutions), "--problems", str(problems), "--strategy", "greedy",
        "--out", str(tmp_path / "l.jsonl"),
        cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2  # the generated option lists the choices
    assert "'--strategy'" in bad.stderr and "'greedy' is not one of 'full', 'search'" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = cli(
        "label", "--solutions", str(solutions), "--problems", str(problems), "--rollouts", "0",
        "--out", str(tmp_path / "l.jsonl"),
        cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2  # LabelConfig's own check, one line
    assert "field 'rollouts'" in bad.stderr and "Traceback" not in bad.stderr
