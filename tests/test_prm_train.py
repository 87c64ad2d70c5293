"""PRM training on a tiny random backbone: it learns, validates, checkpoints, resumes, reloads."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from dreamprm_code.data.split import held_out
from dreamprm_code.errors import UserError
from dreamprm_code.meta.hypergrad import train_loss as step_loss
from dreamprm_code.prm.checkpoint import load_prm
from dreamprm_code.prm.score import score_solutions
from dreamprm_code.prm.train import TrainConfig, step_auc, train_prm
from dreamprm_code.records import Problem, Solution, Step, StepLabel
from tiny_models import save_tiny_backbone

GOOD = "def solve(n):\n    \"\"\"Sum.\"\"\"\n    return n * (n + 1) // 2\n"
BAD = "def solve(n):\n    \"\"\"Sum.\"\"\"\n    return n * (n - 1) // 2\n"
HEAD = "def main():\n    \"\"\"Read and print.\"\"\"\n    print(solve(int(input())))\n\n\n"


def _candidate(pid: str, i: int, good: bool) -> tuple[str, list[Step]]:
    code = f"# {pid} {i}\n" + HEAD + (GOOD if good else BAD)
    a = len(HEAD)
    return code, [Step("main", "function", 0, a), Step("solve", "function", a, len(code))]


def _labels(problems: list[str], per: int = 4) -> list[StepLabel]:
    out = []
    for pid in problems:
        for i in range(per):
            good = i % 2 == 0
            code, steps = _candidate(pid, i, good)
            out.append(StepLabel(f"{pid}#{i}", pid, 0, 2, code[: steps[0].end], 4, 2, 0.5, 1))
            out.append(StepLabel(f"{pid}#{i}", pid, 1, 2, code, 1, int(good), float(good), int(good)))
    return out


def _solutions(problems: list[str], per: int = 4) -> list[Solution]:
    out = []
    for pid in problems:
        for i in range(per):
            code, steps = _candidate(pid, i, i % 2 == 0)
            out.append(Solution(pid, i, code, steps=steps, verdict="pass" if i % 2 == 0 else "wrong_answer"))
    return out


def _problems(ids: list[str]) -> list[Problem]:
    return [Problem(id=p, title=p, statement=f"Print the sum 1..n ({p}).", platform="x", difficulty="easy", tests=[])
            for p in ids]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return str(save_tiny_backbone(tmp_path_factory.mktemp("tiny")))


def _config(backbone: str, out, **kw) -> TrainConfig:
    base = dict(backbone=backbone, output_dir=str(out), lora_r=4, learning_rate=3e-3, num_train_epochs=3, per_device_train_batch_size=4, max_length=256,
                warmup_steps=1, meta={"mode": "none"}, save_steps=1, val_fraction=0.0)
    return TrainConfig(**{**base, **kw})


def test_trains_validates_checkpoints_and_reloads(backbone, tmp_path):
    train_ids = [f"t{i}" for i in range(4)]
    eval_ids = ["e0", "e1"]
    cfg = _config(backbone, tmp_path / "prm", num_train_epochs=8)
    out = train_prm(cfg, _labels(train_ids), eval_set=_labels(eval_ids), problems=_problems(train_ids + eval_ids),
                    progress=False)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 8 * 4  # 16 candidates / batch 4, 8 epochs
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4]), losses
    vals = [r for r in log if "val_step_auc" in r]
    assert len(vals) == 8
    assert vals[-1]["val_problems"] == 2
    assert vals[-1]["val_step_auc"] > 0.9  # good vs bad final step is learnable
    assert vals[-1]["val_best_of_n_min"] == 1.0
    meta = json.loads((out / "prm.json").read_text())
    assert meta["format_version"] == 1 and meta["max_length"] == 256 and meta["lora"] is True
    assert (out / "adapter_model.safetensors").exists() and (out / "head.safetensors").exists()
    assert (out / "tokenizer.json").exists()
    loaded = load_prm(out)
    sols = _solutions(eval_ids)
    scores = score_solutions(loaded, _problems(eval_ids), sols)
    assert all(len(s.scores) == 2 for s in scores)
    good = [s.scores[-1] for s, sol in zip(scores, sols, strict=True) if sol.passed]
    bad = [s.scores[-1] for s, sol in zip(scores, sols, strict=True) if not sol.passed]
    assert min(good) > max(bad)


def test_resume_after_stop_equals_uninterrupted(backbone, tmp_path):
    ids = [f"t{i}" for i in range(3)]
    labels, problems = _labels(ids), _problems(ids)
    full = train_prm(_config(backbone, tmp_path / "full", max_steps=5), labels, problems=problems, progress=False)
    part = tmp_path / "part"
    train_prm(_config(backbone, part, max_steps=2), labels, problems=problems, progress=False)
    train_prm(_config(backbone, part, max_steps=5), labels, problems=problems, progress=False)
    a = load_file(full / "train_state" / "trainable.safetensors")
    b = load_file(part / "train_state" / "trainable.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    steps = [json.loads(x)["step"] for x in (part / "train_log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == [1, 2, 3, 4, 5]
    with pytest.raises(UserError, match="learning_rate"):
        train_prm(_config(backbone, part, max_steps=6, learning_rate=1e-4), labels, problems=problems, progress=False)


def test_a_checkpoint_saved_with_the_old_names_still_resumes_and_describes_itself(backbone, tmp_path):
    """Checkpoints of the release before the TrainingArguments names: ``lr``, ``epochs``, ``out`` ..."""
    from dreamprm_code.prm.hub import model_card

    ids = [f"t{i}" for i in range(3)]
    labels, problems = _labels(ids), _problems(ids)
    part = tmp_path / "part"
    train_prm(_config(backbone, part, max_steps=2), labels, problems=problems, progress=False)
    old = {"out": "output_dir", "lr": "learning_rate", "epochs": "num_train_epochs",
           "batch_size": "per_device_train_batch_size", "save_every": "save_steps"}
    state_file = part / "train_state" / "state.pt"
    state = torch.load(state_file, weights_only=False)
    state["config"] = {k: state["config"][old.get(k, k)] for k in [*old, *state["config"]] if old.get(k, k) in state["config"]
                       and k not in old.values()}
    assert "lr" in state["config"] and "learning_rate" not in state["config"]
    torch.save(state, state_file)
    train_prm(_config(backbone, part, max_steps=3), labels, problems=problems, progress=False)
    steps = [json.loads(x)["step"] for x in (part / "train_log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == [1, 2, 3]
    meta = json.loads((part / "prm.json").read_text())
    meta["train"] = {**{k: meta["train"].pop(v) for k, v in old.items()}, **meta["train"]}
    card = model_card(part, meta)
    assert "- `learning_rate`: 0.003" in card and "- `num_train_epochs`: 3" in card


def test_outcome_only_trains_on_final_steps(backbone, tmp_path):
    ids = ["t0", "t1"]
    cfg = _config(backbone, tmp_path / "orm", outcome_only=True, num_train_epochs=1)
    out = train_prm(cfg, _labels(ids), problems=_problems(ids), progress=False)
    assert json.loads((out / "prm.json").read_text())["train"]["outcome_only"] is True


def test_label_correction_hook_runs_and_saves_labels(backbone, tmp_path):
    pytest.importorskip("dreamprm_code.meta")
    train_ids, meta_ids = ["t0", "t1", "t2"], ["m0", "m1"]
    cfg = _config(backbone, tmp_path / "meta", num_train_epochs=1, meta={"mode": "labels", "refresh": 1, "batch_size": 4, "jvp": "fd"})
    labels = _labels(train_ids)
    out = train_prm(cfg, labels, meta_set=_solutions(meta_ids), problems=_problems(train_ids + meta_ids),
                    progress=False)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    outer = [r for r in log if "meta_loss" in r]
    assert len(outer) == 3  # 12 candidates / 4, a refresh of v after each step
    corrected = json.loads((out / "corrected_labels.json").read_text())
    assert [c["key"] for c in corrected] == [lab.key for lab in labels]
    assert any(abs(c["corrected"] - c["mc_value"]) > 1e-6 for c in corrected)
    summary = json.loads((out / "correction.json").read_text())
    assert summary["refreshes"] == 3 and summary["outer_steps"] == 2  # the first batch has no v yet


def test_meta_set_may_share_problems_but_not_solutions(backbone, tmp_path):
    cfg = _config(backbone, tmp_path / "x", meta={"mode": "labels"})
    with pytest.raises(UserError, match="also training solutions") as exc:
        train_prm(cfg, _labels(["t0"]), meta_set=_solutions(["t0"]), progress=False)
    assert exc.value.field == "meta"
    others = [s for s in _solutions(["t0", "t1"], per=6) if s.sample_index >= 4]  # not labelled
    cfg = _config(backbone, tmp_path / "y", num_train_epochs=1, meta={"mode": "labels", "refresh": 1, "batch_size": 4})
    out = train_prm(cfg, _labels(["t0", "t1"]), meta_set=others, problems=_problems(["t0", "t1"]), progress=False)
    assert json.loads((out / "correction.json").read_text())["refreshes"] > 0


def test_config_validation():
    with pytest.raises(UserError) as exc:
        TrainConfig(loss="hinge")
    assert exc.value.field == "loss"
    with pytest.raises(UserError, match="unknown option") as exc:
        TrainConfig.from_dict({"lrr": 1})
    assert exc.value.field == "lrr"
    with pytest.raises(UserError) as exc:
        TrainConfig.from_dict({"meta": {"meta_lr": 0}})
    assert exc.value.field == "meta.meta_lr"


def test_step_auc_and_loss():
    assert step_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert step_auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    z = torch.tensor([0.0, 2.0])
    t = torch.tensor([0.5, 1.0])
    assert step_loss(z, t, None, "bce").item() == pytest.approx(
        (torch.nn.functional.binary_cross_entropy_with_logits(z, t)).item())
    w = torch.tensor([0.0, 2.0])
    assert step_loss(z, t, w, "mse").item() == pytest.approx(((torch.sigmoid(z[1]) - 1) ** 2).item())


def test_held_out_is_stable():
    ids = [f"p{i}" for i in range(200)]
    held = held_out(ids, 0.2, seed=1)
    assert held == held_out(list(reversed(ids)), 0.2, seed=1)
    assert 20 < len(held) < 60


@pytest.mark.slow
def test_kill_minus_9_then_resume(backbone, tmp_path):
    """A training process killed at a random point resumes to the same weights as a clean run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    ids = [f"t{i}" for i in range(3)]
    labels, problems = _labels(ids), _problems(ids)
    labels_file = tmp_path / "labels.jsonl"
    labels_file.write_text("".join(json.dumps(lab.to_dict()) + "\n" for lab in labels))
    problems_file = tmp_path / "problems.jsonl"
    problems_file.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in problems))
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "dreamprm_code", "train", "--labels", str(labels_file), "--problems",
            str(problems_file), "--output-dir", str(out), "--backbone", backbone, "--lora-r", "4", "--learning-rate",
            "3e-3", "--num-train-epochs", "30", "--max-steps", "40", "--per-device-train-batch-size", "4",
            "--max-length", "256", "--correction", "none"]
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps({"save_steps": 1, "val_fraction": 0.0, "warmup_steps": 1}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*args, "--config", str(cfg_file)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = out / "train_log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count('"loss"') >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run([*args, "--config", str(cfg_file)], env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    clean = train_prm(_config(backbone, tmp_path / "clean", num_train_epochs=30, max_steps=40), labels, problems=problems,
                      progress=False)
    a = load_file(clean / "train_state" / "trainable.safetensors")
    b = load_file(out / "train_state" / "trainable.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lora_r", [0, 4])
def test_checkpoint_roundtrip_scores_the_same(backbone, tmp_path, lora_r):
    from dreamprm_code.prm.checkpoint import save_prm
    from dreamprm_code.prm.model import build_prm

    torch.manual_seed(1)
    prm, tok = build_prm(backbone, lora_r=lora_r, head_hidden=8)
    with torch.no_grad():
        for n, p in prm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    prm.attach_format(tok, 256, max_statement_tokens=64)
    prm.spec = {"backbone": backbone, "precision": "fp32"}
    out = save_prm(prm, tmp_path / "ckpt")
    meta = json.loads((out / "prm.json").read_text())
    assert meta["lora"] is bool(lora_r) and meta["max_statement_tokens"] == 64 and meta["head"]["hidden"] == 8
    assert (out / ("adapter_model.safetensors" if lora_r else "model.safetensors")).exists()
    ids = ["e0", "e1"]
    want = score_solutions(prm.eval(), _problems(ids), _solutions(ids))
    for merge in (True, False):
        got = score_solutions(load_prm(out, merge=merge), _problems(ids), _solutions(ids))
        for a, b in zip(want, got, strict=True):
            assert a.scores == pytest.approx(b.scores, abs=1e-5)


def test_checkpoint_of_another_format_version_is_refused(backbone, tmp_path):
    from dreamprm_code.prm.checkpoint import read_meta

    (tmp_path / "prm.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(UserError, match="format 99"):
        read_meta(tmp_path)
