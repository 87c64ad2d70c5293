"""Pipeline configs, the train/meta/val split and the stage markers: fast checks, no models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from dreamprm_code.errors import UserError
from dreamprm_code.io import atomic_write_jsonl
from dreamprm_code.pipeline.config import PRESETS, PipelineConfig, load_config
from dreamprm_code.pipeline.problems import split_training_problems
from dreamprm_code.pipeline.run import RunDir, Stages, fingerprint, stage_names
from dreamprm_code.records import Problem
from dreamprm_code.records import TestCase as Case


def _problems_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "problems.jsonl"
    atomic_write_jsonl(path, [
        Problem(id=i, title=i, statement="s", platform="t", difficulty="easy", entry_point="f",
                tests=[Case(kind="functional", input=[1], output=1)]).to_dict()
        for i in ids
    ])
    return path


def _config(tmp_path: Path, **top) -> dict:
    src = str(_problems_file(tmp_path, ["a", "b", "c", "d", "e"]))
    cfg = {
        "name": "t",
        "run_dir": str(tmp_path / "run"),
        "train_problems": [{"source": src, "ids": ["a", "b", "c"]}],
        "eval_problems": [{"source": src, "ids": ["d", "e"]}],
        "policy": {"spec": "openai:m@http://127.0.0.1:9/v1"},
    }
    cfg.update(top)
    return cfg


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the real CLI entry point in-process; returns the exit code and stderr."""
    from dreamprm_code.cli import main

    monkeypatch.setattr(sys, "argv", ["dreamprm-code", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_validate(preset):
    cfg = load_config(preset)
    assert cfg.name == preset and cfg.train.variants
    assert 0 <= cfg.train.meta_share < 1


def test_overrides_and_run_dir_substitution(tmp_path):
    cfg = load_config(str(_write(tmp_path, _config(tmp_path))), {"generate.n_eval": 8, "label.rollouts": 3})
    assert cfg.generate.n_eval == 8 and cfg.label.rollouts == 3
    assert PipelineConfig.model_validate({**_config(tmp_path), "run_dir": "runs/{name}"}).run_path == Path("runs/t")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"train": {"bogus": 1}}, "train.bogus"),
        ({"generate": {"n_eval": 0}}, "generate.n_eval"),
        ({"policy": {"style": "poetry"}}, "policy.style"),
        ({"train": {"variants": ["orm", "magic"]}}, "train.variants.1"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path, monkeypatch, capsys, change, key):
    code, err = _cli(monkeypatch, capsys, "run", str(_write(tmp_path, _config(tmp_path, **change))))
    assert code == 2
    assert f"field '{key}'" in err and "cfg.yaml" in err
    assert "Traceback" not in err


def test_overlapping_train_and_eval_problems_exit_2(tmp_path, monkeypatch, capsys):
    cfg = _config(tmp_path)
    cfg["eval_problems"][0]["ids"] = ["c", "d"]
    code, err = _cli(monkeypatch, capsys, "run", str(_write(tmp_path, cfg)))
    assert code == 2 and "field 'eval_problems'" in err and "'c'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "stages" / "problems.json").exists()


def test_bad_set_override_and_bad_yaml_exit_2(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path, _config(tmp_path))
    code, err = _cli(monkeypatch, capsys, "run", str(path), "--set", "label.rollout=3")
    assert code == 2 and "field 'label.rollout'" in err
    code, err = _cli(monkeypatch, capsys, "run", str(path), "--set", "label.rollouts")
    assert code == 2 and "KEY=VALUE" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain_problems: [\n  - {source: a\n", encoding="utf-8")
    code, err = _cli(monkeypatch, capsys, "run", str(bad))
    assert code == 2 and "bad.yaml:" in err and "YAML" in err
    code, err = _cli(monkeypatch, capsys, "run", "no-such-preset")
    assert code == 2 and "presets" in err


def test_training_split_is_disjoint_deterministic_and_keeps_something_labelled():
    ids = [f"p{i}" for i in range(20)]
    split = split_training_problems(ids, 0.25, seed=3)
    assert sorted(split["label"] + split["meta"]) == sorted(ids) and len(split["meta"]) == 5
    assert split == split_training_problems(list(reversed(ids)), 0.25, seed=3)
    assert split != split_training_problems(ids, 0.25, seed=4)
    assert split_training_problems(["a"], 0.5, 0) == {"label": ["a"], "meta": []}
    assert [len(v) for v in split_training_problems(["a", "b"], 0.9, 0).values()] == [1, 1]
    assert split_training_problems(ids, 0.0, 0) == {"label": sorted(ids), "meta": []}


def test_stage_markers_skip_redo_and_refuse_changed_settings(tmp_path):
    run = RunDir(tmp_path)
    calls: list[str] = []
    stages = Stages(run, 2)
    stages.run_stage("a", "fp1", lambda: calls.append("a"))
    marker = json.loads((tmp_path / "stages" / "a.json").read_text())
    assert marker["fingerprint"] == "fp1" and calls == ["a"]
    again = Stages(run, 2)
    again.run_stage("a", "fp1", lambda: calls.append("a"))
    assert calls == ["a"] and again.skipped == ["a"]
    with pytest.raises(UserError, match="stage 'a' used other settings"):
        Stages(run, 2).run_stage("a", "fp2", lambda: calls.append("a"))
    redo = Stages(run, 2)
    redo.run_stage("a", "fp2", lambda: calls.append("a2"), redo_on_change=True)
    assert calls == ["a", "a2"] and redo.ran == ["a"]

    def boom() -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        Stages(run, 2).run_stage("b", "fp", boom)
    assert not (tmp_path / "stages" / "b.json").exists()  # an interrupted stage is not marked done


def test_fingerprint_is_stable_and_sees_values(tmp_path):
    a = PipelineConfig.model_validate(_config(tmp_path))
    b = PipelineConfig.model_validate(_config(tmp_path))
    assert fingerprint(a.train, "x") == fingerprint(b.train, "x")
    b.train.learning_rate = 0.5
    assert fingerprint(a.train, "x") != fingerprint(b.train, "x")
    assert stage_names(a)[:4] == ["problems", "generate-train", "generate-eval", "label"]
    assert stage_names(a)[-1] == "evaluate" and "train-prm-labels" in stage_names(a)


def test_unknown_policy_option_is_a_user_error_naming_the_key(tmp_path, monkeypatch, capsys):
    cfg = _config(tmp_path)
    cfg["policy"]["options"] = {"concurrency": 4, "bogus_option": 1}
    code, err = _cli(monkeypatch, capsys, "run", str(_write(tmp_path, cfg)), "--no-progress")
    assert code == 2 and "field 'policy.options'" in err and "bogus_option" in err
    assert "Traceback" not in err
    assert (tmp_path / "run" / "stages" / "problems.json").exists()  # stages before it are done and kept


def test_old_train_keys_in_a_pipeline_yaml_load_with_a_warning(tmp_path):
    """``train.epochs`` / ``batch_size`` / ``lr`` of the release before the TrainingArguments names."""
    from dreamprm_code.options import RenamedOptionWarning

    path = tmp_path / "old.yaml"
    path.write_text(
        "name: old\ntrain_problems: [{source: humaneval, limit: 2}]\neval_problems: [{source: mbpp, limit: 2}]\n"
        "train: {epochs: 3, batch_size: 2, lr: 1.0e-3, meta: {refresh: 2}}\n", encoding="utf-8")
    with pytest.warns(RenamedOptionWarning) as caught:
        cfg = load_config(str(path))
    messages = [str(w.message) for w in caught]
    assert any("'train.epochs' is deprecated; use 'train.num_train_epochs'" in m and str(path) in m for m in messages)
    assert any("'train.lr' is deprecated; use 'train.learning_rate'" in m for m in messages)
    tc = cfg.train.build(output_dir="x")
    assert (tc.num_train_epochs, tc.per_device_train_batch_size, tc.learning_rate, tc.meta.refresh) == (3, 2, 1e-3, 2)
    # the stage model itself takes them too (a config validated without load_config)
    from dreamprm_code.pipeline.config import TrainStageConfig

    with pytest.warns(RenamedOptionWarning, match="'epochs' is deprecated; use 'num_train_epochs'"):
        assert TrainStageConfig.model_validate({"epochs": 5}).num_train_epochs == 5
