"""``dreamprm-code train`` / ``score`` end to end on a tiny backbone, and their input errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dreamprm_code.errors import UserError
from dreamprm_code.labeling import load_labels as load_step_labels
from dreamprm_code.records import Problem, Solution, Step, StepLabel
from tiny_models import save_tiny_backbone

HEAD = "def main():\n    \"\"\"Read and print.\"\"\"\n    print(solve(int(input())))\n\n\n"
TAIL = "def solve(n):\n    \"\"\"Sum.\"\"\"\n    return n * (n {} 1) // 2\n"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    backbone = save_tiny_backbone(d / "backbone")
    pids = ["a", "b", "c"]
    problems = [Problem(id=p, title=p, statement=f"Sum 1..n ({p})", platform="x", difficulty="easy", tests=[]).to_dict()
                for p in pids]
    labels, sols = [], []
    for p in pids:
        for i, sign in enumerate("+-"):
            code = HEAD + TAIL.format(sign)
            ok = sign == "+"
            labels.append(StepLabel(f"{p}#{i}", p, 0, 2, HEAD, 4, 2, 0.5, 1).to_dict())
            labels.append(StepLabel(f"{p}#{i}", p, 1, 2, code, 1, int(ok), float(ok), int(ok)).to_dict())
            steps = [Step("main", "function", 0, len(HEAD)), Step("solve", "function", len(HEAD), len(code))]
            sols.append(Solution(p, i, code, steps=steps, verdict="pass" if ok else "wrong_answer").to_dict())
    return {
        "dir": d,
        "backbone": str(backbone),
        "problems": str(_write_jsonl(d / "problems.jsonl", problems)),
        "labels": str(_write_jsonl(d / "labels.jsonl", labels)),
        "solutions": str(_write_jsonl(d / "solutions.jsonl", sols)),
    }


def _run(args):
    from dreamprm_code.cli import app

    result = CliRunner().invoke(app, args, catch_exceptions=True)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def test_train_then_score_then_resume(files, tmp_path):
    out = tmp_path / "prm"
    _run(["train", "--labels", files["labels"], "--problems", files["problems"], "--output-dir", str(out),
          "--backbone", files["backbone"], "--lora-r", "4", "--learning-rate", "3e-3", "--num-train-epochs", "1",
          "--per-device-train-batch-size", "2",
          "--max-length", "256", "--correction", "none"])
    assert (out / "prm.json").exists()
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["lora_r"] == 4 and cfg["per_device_train_batch_size"] == 2 and cfg["learning_rate"] == 3e-3
    scores = tmp_path / "scores.jsonl"
    _run(["score", "--prm", str(out), "--solutions", files["solutions"], "--problems", files["problems"],
          "--out", str(scores), "--chunk", "4", "--device", "cpu"])
    rows = [json.loads(x) for x in scores.read_text().splitlines()]
    assert [r["solution_id"] for r in rows] == [f"{p}#{i}" for p in "abc" for i in range(2)]
    assert all(len(r["scores"]) == 2 and all(0 < s < 1 for s in r["scores"]) for r in rows)
    # a killed run left a torn line and missed the last candidates: rerunning completes it
    lines = scores.read_text().splitlines(keepends=True)
    scores.write_text("".join(lines[:3]) + lines[3][:10])
    _run(["score", "--prm", str(out), "--solutions", files["solutions"], "--problems", files["problems"],
          "--out", str(scores), "--device", "cpu"])
    again = [json.loads(x) for x in scores.read_text().splitlines()]
    assert sorted(r["solution_id"] for r in again) == sorted(r["solution_id"] for r in rows)
    by_id = {r["solution_id"]: r["scores"] for r in rows}
    for r in again:
        assert r["scores"] == pytest.approx(by_id[r["solution_id"]], abs=1e-5)


def test_bad_labels_name_file_line_and_field(tmp_path):
    good = StepLabel("a#0", "a", 0, 1, "x = 1\n", 1, 1, 1.0, 1).to_dict()
    bad = {**good, "mc_value": 1.5}
    path = _write_jsonl(tmp_path / "labels.jsonl", [good, bad])
    with pytest.raises(UserError) as exc:
        load_step_labels(path)
    assert exc.value.line == 2 and exc.value.field == "mc_value" and str(path) in str(exc.value)
    missing = {k: v for k, v in good.items() if k != "prefix"}
    _write_jsonl(path, [missing])
    with pytest.raises(UserError) as exc:
        load_step_labels(path)
    assert exc.value.line == 1 and exc.value.field == "prefix"


def test_score_of_a_non_checkpoint_is_a_user_error(files, tmp_path):
    from dreamprm_code.prm.checkpoint import load_prm

    with pytest.raises(UserError, match="not a PRM checkpoint"):
        load_prm(tmp_path)


@pytest.mark.parametrize(("typed", "want_lora", "want_refresh"), [([], 2, 3), (["--lora-r", "4", "--meta-refresh", "5"], 4, 5)])
def test_config_file_fills_what_the_command_line_does_not_type(files, tmp_path, monkeypatch, typed, want_lora, want_refresh):
    """--config values win over the options' defaults; options typed on the command line win over both."""
    import dreamprm_code.prm.train as train_module

    seen = {}

    def fake_train(config, *args, **kwargs):
        seen["config"] = config
        return tmp_path / "never"

    monkeypatch.setattr(train_module, "train_prm", fake_train)
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"lora_r": 2, "learning_rate": 5e-4, "meta": {"refresh": 3}}))
    _run(["train", "--labels", files["labels"], "--problems", files["problems"], "--output-dir", str(tmp_path / "o"),
          "--config", str(cfg), *typed])
    config = seen["config"]
    assert config.lora_r == want_lora and config.learning_rate == 5e-4 and config.meta.refresh == want_refresh


def _fake_train(monkeypatch, tmp_path):
    import dreamprm_code.prm.train as train_module

    seen = {}

    def fake_train(config, *args, **kwargs):
        seen["config"] = config
        return tmp_path / "never"

    monkeypatch.setattr(train_module, "train_prm", fake_train)
    return seen


def test_training_arguments_names_are_the_flags(files, tmp_path, monkeypatch):
    seen = _fake_train(monkeypatch, tmp_path)
    result = _run(["train", "--labels", files["labels"], "--problems", files["problems"],
                   "--output-dir", str(tmp_path / "o"), "--learning-rate", "1e-3", "--num-train-epochs", "3",
                   "--per-device-train-batch-size", "2", "--save-steps", "7"])
    config = seen["config"]
    assert (config.output_dir, config.learning_rate, config.num_train_epochs, config.per_device_train_batch_size,
            config.save_steps) == (str(tmp_path / "o"), 1e-3, 3, 2, 7)
    assert "deprecated" not in result.output
    help_text = _run(["train", "--help"]).output
    assert "--learning-rate" in help_text and "--lr " not in help_text  # the old flags are hidden


def test_old_flags_still_work_and_name_their_replacement(files, tmp_path, monkeypatch):
    seen = _fake_train(monkeypatch, tmp_path)
    result = _run(["train", "--labels", files["labels"], "--problems", files["problems"],
                   "--out", str(tmp_path / "o"), "--lr", "1e-3", "--epochs", "3", "--batch-size", "2",
                   "--save-every", "7"])
    config = seen["config"]
    assert (config.output_dir, config.learning_rate, config.num_train_epochs, config.per_device_train_batch_size,
            config.save_steps) == (str(tmp_path / "o"), 1e-3, 3, 2, 7)
    for old, new in [("--out", "--output-dir"), ("--lr", "--learning-rate"), ("--epochs", "--num-train-epochs"),
                     ("--batch-size", "--per-device-train-batch-size"), ("--save-every", "--save-steps")]:
        assert f"warning: {old} is deprecated; use {new}" in result.output
    # the current flag wins over its old name
    _run(["train", "--labels", files["labels"], "--problems", files["problems"], "--lr", "1e-3",
          "--learning-rate", "2e-3"])
    assert seen["config"].learning_rate == 2e-3


def test_old_keys_in_a_config_file_load_with_a_warning(files, tmp_path, monkeypatch):
    from dreamprm_code.options import RenamedOptionWarning

    seen = _fake_train(monkeypatch, tmp_path)
    cfg = tmp_path / "old.json"
    cfg.write_text(json.dumps({"lr": 5e-4, "epochs": 4, "batch_size": 3, "out": str(tmp_path / "o"),
                               "correction": "none"}))
    with pytest.warns(RenamedOptionWarning) as caught:
        _run(["train", "--labels", files["labels"], "--problems", files["problems"], "--config", str(cfg)])
    messages = {str(w.message).removeprefix(f"{cfg}: ") for w in caught}
    assert messages == {"'lr' is deprecated; use 'learning_rate'", "'epochs' is deprecated; use 'num_train_epochs'",
                        "'batch_size' is deprecated; use 'per_device_train_batch_size'",
                        "'out' is deprecated; use 'output_dir'", "'correction' is deprecated; use 'meta.mode'"}
    config = seen["config"]
    assert (config.learning_rate, config.num_train_epochs, config.per_device_train_batch_size) == (5e-4, 4, 3)
    assert config.output_dir == str(tmp_path / "o") and config.meta.mode == "none"


def test_the_command_line_prints_an_old_config_key_as_one_line(files, tmp_path):
    """Through the real entry point (``main``): the deprecation is one ``warning:`` line on stderr."""
    import subprocess
    import sys

    cfg = tmp_path / "old.json"
    cfg.write_text(json.dumps({"lr": 0}))  # refused after the rename: the message names the new key
    done = subprocess.run([sys.executable, "-m", "dreamprm_code", "train", "--labels", files["labels"],
                           "--problems", files["problems"], "--config", str(cfg)], capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert any(line.startswith("warning:") and "'lr' is deprecated; use 'learning_rate'" in line for line in lines)
    assert lines[-1].startswith("error:") and "learning_rate" in lines[-1]
