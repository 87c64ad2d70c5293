"""Checkpoints that plain transformers / peft load with the trained head, scoring as we do."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from dreamprm_code.errors import UserError
from dreamprm_code.prm.checkpoint import load_prm, save_prm
from dreamprm_code.prm.data import examples_from_solutions
from dreamprm_code.prm.model import build_prm
from dreamprm_code.prm.score import score_solutions
from dreamprm_code.prm.train import TrainConfig, train_prm
from dreamprm_code.records import Problem, Solution, Step, StepLabel
from tiny_models import save_tiny_backbone

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CODE = "def solve(n):\n    return n * (n + 1) // 2\n\n\ndef main():\n    print(solve(int(input())))\n"


def _problems(ids):
    return [Problem(id=p, title=p, statement=f"Sum 1..n ({p}).", platform="x", difficulty="easy", tests=[]) for p in ids]


def _solutions():
    out = []
    for pid in ("p0", "p1"):
        for i, code in enumerate((CODE, CODE.replace("+ 1", "- 1"))):
            cut = code.index("def main")
            out.append(Solution(pid, i, code, steps=[Step("solve", "function", 0, cut), Step("main", "function", cut, len(code))]))
    return out


def _labels():
    out = []
    for sol in _solutions():
        good = sol.sample_index == 0
        first = sol.steps[0].end
        out.append(StepLabel(sol.id, sol.problem_id, 0, 2, sol.code[:first], 4, 3 if good else 1, 0.75 if good else 0.25, 1))
        out.append(StepLabel(sol.id, sol.problem_id, 1, 2, sol.code, 4, 4 * good, float(good), int(good)))
    return out


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return str(save_tiny_backbone(tmp_path_factory.mktemp("tiny")))


def _train(backbone, out, **kw):
    cfg = TrainConfig(backbone=backbone, output_dir=str(out), learning_rate=1e-2, num_train_epochs=2, per_device_train_batch_size=2, max_length=256,
                      warmup_steps=1, meta={"mode": "none"}, val_fraction=0.0, **kw)
    return train_prm(cfg, _labels(), eval_set=_labels(), problems=_problems(["p0", "p1"]), progress=False)


def _hf_scores(model, ckpt):
    """Step scores the way a transformers user reads them: softmax label 1 at step-end tokens."""
    prm = load_prm(ckpt)
    examples = examples_from_solutions(_solutions(), prm.prompt_format, {p.id: p for p in _problems(["p0", "p1"])})
    out = []
    model.eval()
    with torch.no_grad():
        for ex in examples:
            logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0]
            out.append(torch.softmax(logits.float(), -1)[ex.step_token_index, 1].tolist())
    return out


def _our_scores(ckpt):
    prm = load_prm(ckpt)
    return [s.scores for s in score_solutions(prm, _problems(["p0", "p1"]), _solutions())]


def _flat(scores):
    return [x for s in scores for x in s]


def _no_missing(caplog):
    assert "MISSING" not in caplog.text and "newly initialized" not in caplog.text, caplog.text


def test_full_checkpoint_loads_as_token_classification(backbone, tmp_path, caplog):
    from transformers import AutoModelForTokenClassification

    ckpt = _train(backbone, tmp_path / "full", lora_r=0)
    config = json.loads((ckpt / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForTokenClassification"]
    assert config["id2label"] == {"0": "step_wrong", "1": "step_right"}
    caplog.set_level("WARNING")
    model, info = AutoModelForTokenClassification.from_pretrained(ckpt, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    _no_missing(caplog)
    ours, theirs = _our_scores(ckpt), _hf_scores(model, ckpt)
    assert _flat(ours) == pytest.approx(_flat(theirs), abs=1e-4)
    assert max(abs(a - 0.5) for s in ours for a in s) > 1e-3  # the head is trained, not zeros


def test_lora_checkpoint_loads_with_auto_peft(backbone, tmp_path, caplog):
    from peft import AutoPeftModelForTokenClassification

    ckpt = _train(backbone, tmp_path / "lora", lora_r=4)
    adapter = json.loads((ckpt / "adapter_config.json").read_text())
    assert adapter["task_type"] == "TOKEN_CLS" and adapter["modules_to_save"] == ["score"]
    assert adapter["base_model_name_or_path"] == backbone
    assert "all-linear" not in json.dumps(adapter["target_modules"])
    keys = load_file(ckpt / "adapter_model.safetensors")
    assert {"base_model.model.score.weight", "base_model.model.score.bias"} <= set(keys)
    caplog.set_level("WARNING")
    model = AutoPeftModelForTokenClassification.from_pretrained(ckpt)
    assert torch.equal(model.base_model.model.score.modules_to_save["default"].weight[1].float(),
                       load_file(ckpt / "head.safetensors")["net.weight"][0])
    ours, theirs = _our_scores(ckpt), _hf_scores(model, ckpt)
    assert _flat(ours) == pytest.approx(_flat(theirs), abs=1e-4)
    card = (ckpt / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: peft" in card
    assert "training step labels: 8" in card and "step_auc" in card and "`lora_r`: 4" in card


def test_loads_unmerged_and_saves_again_identically(backbone, tmp_path):
    ckpt = _train(backbone, tmp_path / "lora", lora_r=4)
    prm = load_prm(ckpt, merge=False)
    assert prm.is_lora
    again = save_prm(prm, tmp_path / "again")
    assert _flat(_our_scores(again)) == pytest.approx(_flat(_our_scores(ckpt)), abs=1e-6)


def test_old_layout_still_loads_and_converts(backbone, tmp_path):
    """A checkpoint from before the export (AutoModel weights + head.safetensors) scores as it did."""
    prm, tok = build_prm(backbone, lora_r=0)
    prm.attach_format(tok, 256)
    prm.spec = {"backbone": backbone}
    old = tmp_path / "old"
    old.mkdir()
    prm.backbone.save_pretrained(old)
    tok.save_pretrained(old)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in prm.head.state_dict().items()}, old / "head.safetensors")
    meta = {**prm.prompt_format.describe(), "backbone": backbone, "lora": False, "head": {"in_features": 64, "hidden": 0}}
    (old / "prm.json").write_text(json.dumps(meta))
    before = _our_scores(old)
    new = save_prm(load_prm(old), tmp_path / "new")
    assert json.loads((new / "prm.json").read_text())["layout"] == "token-classification"
    assert _flat(_our_scores(new)) == pytest.approx(_flat(before), abs=1e-5)


def test_mlp_head_keeps_own_layout_and_says_so(backbone, tmp_path):
    prm, tok = build_prm(backbone, lora_r=0, head_hidden=8)
    prm.attach_format(tok, 256)
    prm.spec = {"backbone": backbone}
    out = save_prm(prm, tmp_path / "mlp")
    meta = json.loads((out / "prm.json").read_text())
    assert meta["layout"] == "backbone+head"
    assert "only linear heads are exported" in (out / "README.md").read_text()
    assert _flat(_our_scores(out))


def test_embedded_base_is_named_by_hub_id(tmp_path):
    from dreamprm_code.embedded import hub_id

    assert hub_id("embedded:smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id("/cache/hub/models--Qwen--Qwen2.5-0.5B/snapshots/abc") == "Qwen/Qwen2.5-0.5B"
    assert hub_id("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    assert hub_id(str(tmp_path)) is None


def test_export_command_converts_and_merges(backbone, tmp_path):
    from typer.testing import CliRunner

    from dreamprm_code.cli import app

    ckpt = _train(backbone, tmp_path / "lora", lora_r=4)
    res = CliRunner().invoke(app, ["export-prm", str(ckpt), "--out", str(tmp_path / "merged"), "--merge"])
    assert res.exit_code == 0, res.output
    merged = tmp_path / "merged"
    assert (merged / "model.safetensors").exists() and not (merged / "adapter_config.json").exists()
    assert _flat(_our_scores(merged)) == pytest.approx(_flat(_our_scores(ckpt)), abs=1e-5)
    res = CliRunner().invoke(app, ["export-prm", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert isinstance(res.exception, UserError) and "not a PRM checkpoint" in str(res.exception)


def test_embedded_lora_loads_by_hub_id_from_a_hub_cache(tmp_path, monkeypatch):
    """The adapter names HuggingFaceTB/SmolLM2-135M-Instruct; with that id in the (offline) hub
    cache, AutoPeftModelForTokenClassification needs nothing else and scores as we do."""
    from peft import AutoPeftModelForTokenClassification

    from dreamprm_code.embedded import resolve_model

    try:
        local = resolve_model("embedded:smollm2-135m-instruct")
    except UserError as exc:
        pytest.skip(str(exc))
    prm, tok = build_prm("embedded:smollm2-135m-instruct", lora_r=2)
    prm.attach_format(tok, 256)
    prm.spec = {"backbone": "embedded:smollm2-135m-instruct", "backbone_path": str(local)}
    with torch.no_grad():  # a non-trivial adapter, as after training
        for name, p in prm.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    ckpt = save_prm(prm, tmp_path / "ckpt")
    adapter = json.loads((ckpt / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert json.loads((ckpt / "prm.json").read_text())["backbone_path"] == str(local)
    card = (ckpt / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "Q4_1" in card
    snap = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("0" * 40)
    shutil.copytree(local, snap / "snapshots" / ("0" * 40))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read at import, so patch the values
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # the conversion is stored in bf16 and transformers loads it as stored; the PRM ran in fp32
    model = AutoPeftModelForTokenClassification.from_pretrained(ckpt, dtype=torch.float32)
    ours, theirs = _our_scores(ckpt), _hf_scores(model, ckpt)
    assert _flat(ours) == pytest.approx(_flat(theirs), abs=1e-4)


def test_head_only_checkpoint_loads_on_its_named_base(backbone, tmp_path, monkeypatch):
    """A frozen-backbone PRM saved as its head alone (what ships as embedded:NAME) loads on the
    base its spec names and scores exactly as the full checkpoint does."""
    from dreamprm_code.prm import checkpoint

    full = _train(backbone, tmp_path / "frozen", freeze_backbone=True, frozen_epochs=3)
    prm = load_prm(full)
    prm.spec["backbone"] = "embedded:tiny-test-base"  # a name, not this machine's directory
    monkeypatch.setattr(checkpoint, "_base_dir", lambda meta: backbone)
    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", tmp_path / "shipped")
    out = checkpoint.save_head_only(prm, tmp_path / "shipped" / "prm-test", card="# prm-test\n")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "head.safetensors", "prm.json"]
    assert sum(p.stat().st_size for p in out.iterdir()) < 100_000
    assert checkpoint.shipped_prms() == ["prm-test"]
    again = load_prm("embedded:prm-test")
    sols, probs = _solutions(), _problems(["p0", "p1"])
    a = [x for r in score_solutions(load_prm(full), probs, sols) for x in r.scores]
    b = [x for r in score_solutions(again, probs, sols) for x in r.scores]
    assert a == pytest.approx(b, abs=1e-6)
    with pytest.raises(UserError, match="no shipped PRM named 'nope'; shipped: prm-test"):
        load_prm("embedded:nope")
