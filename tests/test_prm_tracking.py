"""``report_to``: the training log's numbers also go to accelerate's experiment trackers (tensorboard here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dreamprm_code.errors import UserError
from dreamprm_code.prm.config import TRACKER_PACKAGES, TrainConfig
from dreamprm_code.prm.tracking import report_targets
from dreamprm_code.prm.train import train_prm
from test_prm_train import _config, _labels, _problems
from tiny_models import save_tiny_backbone

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TRAIN, EVAL = [f"t{i}" for i in range(4)], ["e0", "e1"]
TRACKER_DIRS = {"runs", "wandb", "mlruns", "dvclive", "aim", ".aim"}


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return str(save_tiny_backbone(tmp_path_factory.mktemp("tiny")))


def _train(config: TrainConfig):
    return train_prm(config, _labels(TRAIN), eval_set=_labels(EVAL), problems=_problems(TRAIN + EVAL), progress=False)


def _log(out) -> list[dict]:
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]


def _scalars(out) -> EventAccumulator:
    acc = EventAccumulator(str(out / "runs" / "dreamprm-code"), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def _series(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _logged(log: list[dict], tag: str) -> list[tuple[int, float]]:
    return [(r.get("step", 0), r[tag]) for r in log if tag in r]


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    """The same steps in the same order with the same values (tensorboard keeps float32)."""
    return [s for s, _ in a] == [s for s, _ in b] and all(
        math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7) or (math.isnan(x) and math.isnan(y))
        for (_, x), (_, y) in zip(a, b, strict=True))


def test_tensorboard_gets_the_log_at_its_steps_and_a_resumed_run_logs_on(backbone, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "prm"
    _train(_config(backbone, out, num_train_epochs=2, max_steps=3, report_to=["tensorboard"]))
    assert [s for s, _ in _series(_scalars(out), "loss")] == [1, 2, 3]
    # resumed from the state at step 3 (max_steps may change on resume), on to the end of epoch 2
    _train(_config(backbone, out, num_train_epochs=2, report_to=["tensorboard"]))
    log = _log(out)
    acc = _scalars(out)
    losses = _series(acc, "loss")
    assert [s for s, _ in losses] == list(range(1, 9))  # 16 candidates / 4, 2 epochs; no step twice
    assert _same(losses, _logged(log, "loss"))
    for tag in ("lr", "tokens", "tokens_per_s", "epoch", "val_step_auc", "val_best_of_n_min", "val_oracle"):
        assert _same(_series(acc, tag), _logged(log, tag)), tag
    assert [s for s, _ in _logged(log, "val_step_auc")] == [3, 4, 8]  # at max_steps' stop, then after each epoch
    assert "step" not in acc.Tags()["scalars"]  # the x axis, not a series
    assert len(list((out / "runs" / "dreamprm-code").glob("events.out.tfevents.*"))) == 2  # one per run, same dir
    assert not TRACKER_DIRS & {p.name for p in tmp_path.iterdir()}  # nothing in the working directory
    hparams = yaml.safe_load(next((out / "runs" / "dreamprm-code").glob("*/hparams.yml")).read_text())
    assert hparams["report_to"] == "tensorboard" and hparams["meta.mode"] == "none"  # the settings, flattened


def test_frozen_backbone_run_reports_too(backbone, tmp_path):
    out = tmp_path / "frozen"
    _train(_config(backbone, out, freeze_backbone=True, frozen_epochs=2, report_to="tensorboard"))
    log, acc = _log(out), _scalars(out)
    assert _same(_series(acc, "loss"), _logged(log, "loss")) and len(_logged(log, "loss")) == 8
    extraction = next(r for r in log if r.get("phase") == "features")
    assert _series(acc, "cached_rows") == [(0, extraction["cached_rows"])]  # a record without a step: step 0
    assert "phase" not in acc.Tags()["scalars"] and not acc.Tags()["tensors"]  # numbers only


def test_report_to_none_writes_no_tracker_files(backbone, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "prm"
    _train(_config(backbone, out, num_train_epochs=1, max_steps=2))
    assert TrainConfig().report_to == "none"
    assert not TRACKER_DIRS & ({p.name for p in out.iterdir()} | {p.name for p in tmp_path.iterdir()})
    assert len(_logged(_log(out), "loss")) == 2


def test_report_to_names(tmp_path):
    assert report_targets(TrainConfig(report_to="none")) == [] == report_targets(TrainConfig(report_to=[]))
    assert report_targets(TrainConfig(report_to="tensorboard,tensorboard")) == ["tensorboard"]
    assert "tensorboard" in report_targets(TrainConfig(report_to="all"))
    with pytest.raises(UserError, match="unknown tracker 'tensorbored'") as err:
        TrainConfig(report_to=["tensorbored"])
    assert err.value.field == "report_to"
    with pytest.raises(UserError, match="stand alone") as err:
        TrainConfig(report_to=["none", "tensorboard"])
    assert err.value.field == "report_to"
    from dreamprm_code.pipeline.config import TrainStageConfig  # the pipeline's train.report_to

    assert TrainStageConfig.model_validate({"report_to": ["tensorboard"]}).build(output_dir="x").report_to == ["tensorboard"]


def test_a_tracker_not_installed_is_refused_before_training(backbone, tmp_path):
    from accelerate.tracking import get_available_trackers

    installed = {str(t) for t in get_available_trackers()}
    missing = next((t for t in TRACKER_PACKAGES if t not in installed), None)
    if missing is None:
        pytest.skip("every tracker accelerate knows is installed")
    out = tmp_path / "prm"
    with pytest.raises(UserError, match=f"pip install {TRACKER_PACKAGES[missing]}") as err:
        _train(_config(backbone, out, report_to=["tensorboard", missing]))
    assert err.value.field == "report_to"
    assert not (out / "train_log.jsonl").exists() and not (out / "runs").exists()


def test_cli_report_to(backbone, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import dreamprm_code.prm.train as train_module
    from dreamprm_code.cli import app

    labels, problems = tmp_path / "labels.jsonl", tmp_path / "problems.jsonl"
    labels.write_text("".join(json.dumps(lab.to_dict()) + "\n" for lab in _labels(TRAIN)))
    problems.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in _problems(TRAIN)))
    args = ["train", "--labels", str(labels), "--problems", str(problems), "--output-dir", str(tmp_path / "o"),
            "--backbone", backbone]
    seen = {}
    monkeypatch.setattr(train_module, "train_prm", lambda config, *a, **k: seen.setdefault("config", config))
    assert "--report-to" in CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    CliRunner().invoke(app, [*args, "--report-to", "tensorboard"])
    assert report_targets(seen.pop("config")) == ["tensorboard"]
    CliRunner().invoke(app, args)
    assert report_targets(seen.pop("config")) == []
    done = subprocess.run([sys.executable, "-m", "dreamprm_code", *args, "--report-to", "bogus"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "report_to" in lines[0] and "unknown tracker 'bogus'" in lines[0], done.stderr
