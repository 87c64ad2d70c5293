"""Frozen-backbone training on a tiny random backbone: it learns from cached features, scores
through the ordinary checkpoint, resumes (weights and feature cache), and corrects labels."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from dreamprm_code.errors import UserError
from dreamprm_code.prm.checkpoint import load_prm
from dreamprm_code.prm.data import examples_from_solutions
from dreamprm_code.prm.frozen import FeatureStore, extract_features, sequence_key
from dreamprm_code.prm.model import build_prm
from dreamprm_code.prm.score import score_solutions
from dreamprm_code.prm.train import train_prm
from test_prm_train import _config, _labels, _problems, _solutions
from tiny_models import save_tiny_backbone

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return str(save_tiny_backbone(tmp_path_factory.mktemp("tiny")))


def _frozen(backbone: str, out, **kw):
    return _config(backbone, out, **{"freeze_backbone": True, "frozen_epochs": 40, "learning_rate": 3e-2, **kw})


def _log(out) -> list[dict]:
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]


def test_frozen_trains_on_cached_features_and_scores_through_the_checkpoint(backbone, tmp_path):
    train_ids, eval_ids = [f"t{i}" for i in range(4)], ["e0", "e1"]
    out = train_prm(_frozen(backbone, tmp_path / "prm"), _labels(train_ids), eval_set=_labels(eval_ids),
                    problems=_problems(train_ids + eval_ids), progress=False)
    log = _log(out)
    feats = [r for r in log if r.get("phase") == "features"]
    assert len(feats) == 1 and feats[0]["sequences"] == 16 + 8  # one backbone pass per candidate, train + eval
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 40 * 4
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4]), losses[:4] + losses[-4:]
    vals = [r for r in log if "val_step_auc" in r]
    # random tiny features: the final steps separate (best-of-N, and good > bad below), the 0.5-labelled
    # first steps do not settle between them, so the step AUC is not asserted
    assert len(vals) == 40 and vals[-1]["val_best_of_n_min"] == 1.0
    meta = json.loads((out / "prm.json").read_text())
    assert meta["lora"] is False and meta["frozen_backbone"] is True and meta["train"]["freeze_backbone"] is True
    assert not (out / "adapter_model.safetensors").exists()
    # the saved backbone is the base model, untouched
    base, _ = build_prm(backbone, lora_r=0)
    loaded = load_prm(out)
    for (name, a), (_, b) in zip(base.backbone.state_dict().items(), loaded.backbone.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    # scoring runs the backbone again; it must agree with the head on the cached rows
    sols = _solutions(eval_ids)
    scores = score_solutions(loaded, _problems(eval_ids), sols)
    store = FeatureStore(out / "features", json.loads((out / "features" / "fingerprint.json").read_text()))
    examples = examples_from_solutions(sols, loaded.prompt_format, {p.id: p for p in _problems(eval_ids)})
    for ex, s in zip(examples, scores, strict=True):
        rows = torch.stack([store.matrix[store.index[(sequence_key(ex.input_ids), t)]] for t in ex.step_token_index])
        with torch.no_grad():
            cached = torch.sigmoid(loaded.head(rows)).tolist()
        assert s.scores == pytest.approx(cached, abs=1e-5)
    good = [s.scores[-1] for s, sol in zip(scores, sols, strict=True) if sol.passed]
    bad = [s.scores[-1] for s, sol in zip(scores, sols, strict=True) if not sol.passed]
    assert min(good) > max(bad)


def test_frozen_resume_equals_uninterrupted_and_reuses_the_cache(backbone, tmp_path):
    ids = [f"t{i}" for i in range(3)]
    labels, problems = _labels(ids), _problems(ids)
    full = train_prm(_frozen(backbone, tmp_path / "full", max_steps=7), labels, problems=problems, progress=False)
    part = tmp_path / "part"
    train_prm(_frozen(backbone, part, max_steps=2), labels, problems=problems, progress=False)
    train_prm(_frozen(backbone, part, max_steps=7), labels, problems=problems, progress=False)
    a = load_file(full / "train_state" / "trainable.safetensors")
    b = load_file(part / "train_state" / "trainable.safetensors")
    assert a.keys() == b.keys() == {"head.net.weight", "head.net.bias"}
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    log = _log(part)
    assert [r["sequences"] for r in log if r.get("phase") == "features"] == [12, 0]  # the second run: all cached
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(UserError, match="learning_rate"):
        train_prm(_frozen(backbone, part, max_steps=8, learning_rate=1e-4), labels, problems=problems, progress=False)


def test_runs_sharing_a_feature_cache_extract_once(backbone, tmp_path):
    ids = [f"t{i}" for i in range(3)]
    labels, problems = _labels(ids), _problems(ids)
    cache = tmp_path / "shared"
    for name in ("a", "b"):
        train_prm(_frozen(backbone, tmp_path / name, max_steps=2, feature_cache=str(cache)), labels,
                  problems=problems, progress=False)
    assert [r["sequences"] for r in _log(tmp_path / "a") if r.get("phase") == "features"] == [12]
    assert [r["sequences"] for r in _log(tmp_path / "b") if r.get("phase") == "features"] == [0]
    assert (cache / "fingerprint.json").exists() and not (tmp_path / "b" / "features").exists()


def test_feature_cache_survives_a_lost_shard_and_refuses_another_backbone(backbone, tmp_path):
    prm, tok = build_prm(backbone, lora_r=0)
    fmt = prm.attach_format(tok, 256)
    ids = ["a", "b", "c"]
    examples = examples_from_solutions(_solutions(ids), fmt, {p.id: p for p in _problems(ids)})
    fp = {"backbone": backbone, "precision": "fp32"}
    store = FeatureStore(tmp_path / "f", fp)
    first = extract_features(prm, examples, store, batch_tokens=128, shard_sequences=2)
    assert first["sequences"] == 12 and len(store) == 24
    shards = sorted((tmp_path / "f").glob("shard-*.safetensors"))
    assert len(shards) >= 3
    want = store.matrix.clone(), dict(store.index)
    shards[-1].unlink()  # as if killed while writing it: the temporary file is left, the shard is not
    (tmp_path / "f" / f".{shards[-1].name}.999.tmp").write_bytes(b"torn")
    again = FeatureStore(tmp_path / "f", fp)
    assert 0 < len(again) < 24 and not list((tmp_path / "f").glob(".shard-*"))
    redo = extract_features(prm, examples, again, batch_tokens=128, shard_sequences=2)
    assert 0 < redo["sequences"] < 12 and len(again) == 24
    for key, row in want[1].items():
        torch.testing.assert_close(again.matrix[again.index[key]], want[0][row], rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="different 'backbone'"):
        FeatureStore(tmp_path / "f", {**fp, "backbone": "other"})


def test_frozen_label_correction_touches_every_label_many_times(backbone, tmp_path):
    train_ids, meta_ids = ["t0", "t1", "t2"], ["m0", "m1"]
    labels = _labels(train_ids)
    cfg = _frozen(backbone, tmp_path / "meta", frozen_epochs=10, head_hidden=8, meta={"mode": "labels"})
    out = train_prm(cfg, labels, meta_set=_solutions(meta_ids), problems=_problems(train_ids + meta_ids),
                    progress=False)
    summary = json.loads((out / "correction.json").read_text())
    learnable = [i for i, f in enumerate(summary["fixed"]) if not f]
    assert len(learnable) == 12 and summary["refreshes"] == 8  # 30 steps, a refresh every 4
    assert min(summary["touches"][i] for i in learnable) >= 10
    assert all(summary["touches"][i] == 0 for i, f in enumerate(summary["fixed"]) if f)  # verdicts never move
    sweeps = [r for r in _log(out) if "sweep_touched" in r]
    assert sweeps and all(r["sweep_touched"] == 12 for r in sweeps)  # the sweep reaches every label, from the first
    corrected = json.loads((out / "corrected_labels.json").read_text())
    assert any(abs(c["corrected"] - c["mc_value"]) > 1e-3 for c in corrected)
    head = load_prm(out).head  # an MLP head: the backbone+head layout
    assert (head.in_features, head.hidden) == (64, 8)


def test_frozen_epochs_must_be_positive(backbone, tmp_path):
    with pytest.raises(UserError) as exc:
        train_prm(_frozen(backbone, tmp_path / "x", frozen_epochs=0), _labels(["t0"]), progress=False)
    assert exc.value.field == "frozen_epochs"


def test_cli_freeze_backbone(backbone, tmp_path):
    from typer.testing import CliRunner

    from dreamprm_code.cli import app

    ids = ["t0", "t1"]
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(lab.to_dict()) + "\n" for lab in _labels(ids)))
    (tmp_path / "problems.jsonl").write_text("".join(json.dumps(p.to_dict()) + "\n" for p in _problems(ids)))
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, [
        "train", "--labels", str(tmp_path / "labels.jsonl"), "--problems", str(tmp_path / "problems.jsonl"),
        "--output-dir", str(out), "--backbone", backbone, "--max-length", "256", "--correction", "none",
        "--freeze-backbone", "--frozen-epochs", "3"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "prm.json").read_text())
    assert meta["train"]["freeze_backbone"] is True and meta["epochs_done"] == 3
