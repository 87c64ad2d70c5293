"""The correction inside the real PRM trainer (hook contract of docs/usage-prm.md), plots and CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from dreamprm_code.cli import app
from dreamprm_code.errors import UserError
from dreamprm_code.io import atomic_write_jsonl
from dreamprm_code.meta.metaset import split_meta_set
from dreamprm_code.meta.plots import label_change_stats, load_correction_summary, plot_correction
from dreamprm_code.prm.train import TrainConfig, train_prm
from dreamprm_code.records import Problem, Solution, Step, StepLabel
from tiny_models import save_tiny_backbone

GOOD = 'def solve(n):\n    """Sum."""\n    return n * (n + 1) // 2\n'
BAD = 'def solve(n):\n    """Sum."""\n    return n * (n - 1) // 2\n'
HEAD = 'def main():\n    """Read and print."""\n    print(solve(int(input())))\n\n\n'


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return str(save_tiny_backbone(tmp_path_factory.mktemp("tiny"), hidden_size=32))


def _candidate(pid: str, i: int, good: bool) -> tuple[str, list[Step]]:
    code = f"# {pid} {i}\n" + HEAD + (GOOD if good else BAD)
    a = len(f"# {pid} {i}\n" + HEAD)
    return code, [Step("main", "function", 0, a), Step("solve", "function", a, len(code))]


def _labels(problems: list[str], per: int = 4) -> list[StepLabel]:
    out = []
    for pid in problems:
        for i in range(per):
            good = i % 2 == 0
            code, steps = _candidate(pid, i, good)
            out.append(StepLabel(f"{pid}#{i}", pid, 0, 2, code[: steps[0].end], 4, 2, 0.5, 1))
            # every fourth final label flipped: the noise the correction should see
            y = float(good) if i != 3 else 1.0 - float(good)
            out.append(StepLabel(f"{pid}#{i}", pid, 1, 2, code, 1, int(y), y, int(y)))
    return out


def _solutions(problems: list[str], per: int = 4) -> list[Solution]:
    out = []
    for pid in problems:
        for i in range(per):
            code, steps = _candidate(pid, i, i % 2 == 0)
            out.append(Solution(pid, i, code, steps=steps, verdict="pass" if i % 2 == 0 else "wrong_answer"))
    return out


def _problems(ids: list[str]) -> list[Problem]:
    return [
        Problem(
            id=p, title=p, statement=f"Print the sum 1..n ({p}).", platform="x", difficulty="easy", tests=[]
        )
        for p in ids
    ]


def _config(backbone: str, out, **kw) -> TrainConfig:
    base = dict(
        backbone=backbone,
        output_dir=str(out),
        lora_r=4,
        learning_rate=3e-3,
        num_train_epochs=1,
        per_device_train_batch_size=2,
        max_length=256,
        warmup_steps=1,
        meta={"mode": "labels", "refresh": 2, "meta_lr": 0.2, "inner_lr": 0.5, "batch_size": 4},
        save_steps=2,
        val_fraction=0.0,
        eval_each_epoch=False,
    )
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_trainer_runs_outer_steps_logs_meta_loss_saves_labels_and_resumes(backbone, tmp_path):
    train_ids = ["t0", "t1"]
    meta_pool = _solutions(["m0", "m1", "m2", "m3"])
    split = split_meta_set(meta_pool, 0.5, seed=0, eval_problems=["e0"], train_problems=train_ids)
    labels = _labels(train_ids)
    problems = _problems(train_ids + ["m0", "m1", "m2", "m3"])
    out = tmp_path / "prm"
    train_prm(
        _config(backbone, out, max_steps=2), labels, meta_set=split.outer, problems=problems, progress=False
    )
    first = load_correction_summary(out)
    assert first["mode"] == "labels" and first["outer_steps"] == 1
    train_prm(
        _config(backbone, out, max_steps=4), labels, meta_set=split.outer, problems=problems, progress=False
    )
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    metas = [r for r in log if "meta_loss" in r]
    assert [r["step"] for r in metas] == [1, 3]  # refreshes after steps 1 and 3; resumed, not repeated
    corrected = [r for r in log if "batch_touched" in r]
    assert [r["step"] for r in corrected] == [2, 3, 4]  # every batch after the first v
    assert all(r["batch_touched"] > 0 and r["jvp_method"] == "head" for r in corrected)
    summary = load_correction_summary(out)
    assert summary["outer_steps"] == 3 and summary["refreshes"] == 2 and len(summary["trajectory"]) == 3
    rows = json.loads((out / "corrected_labels.json").read_text())
    assert len(rows) == len(labels) and rows[0]["key"] == labels[0].key
    moved = [abs(r["corrected"] - r["mc_value"]) for r in rows]
    assert max(moved) > 1e-3, "some labels must have moved"
    paths = plot_correction(out, tmp_path / "plots")
    assert [p.name for p in paths] == ["label_histogram.png", "label_trajectory.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert label_change_stats(summary)["labels"] == len(labels)

    res = CliRunner().invoke(app, ["meta-plot", str(out), "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "label_histogram.png").exists()


@pytest.mark.parametrize("mode", ["labels", "weights"])
def test_a_correction_reaches_the_model_within_one_epoch(backbone, tmp_path, mode):
    """The outer step runs before its batch's inner step, so one epoch trains on corrected values."""
    from safetensors.torch import load_file

    train_ids = ["t0", "t1"]
    meta = _solutions(["m0", "m1"])
    labels = _labels(train_ids)
    problems = _problems(train_ids + ["m0", "m1"])
    heads = {}
    for every in (1, 0):  # a refresh after every step, or no correction (same targets otherwise)
        out = tmp_path / f"every{every}"
        meta_cfg = {"mode": mode, "refresh": every, "meta_lr": 0.5} if every else {"mode": "none"}
        train_prm(_config(backbone, out, meta=meta_cfg), labels, meta_set=meta, problems=problems, progress=False)
        heads[every] = load_file(str(out / "head.safetensors"))
    moved = max(float((heads[1][k] - heads[0][k]).abs().max()) for k in heads[1])
    assert moved > 1e-6, "the corrected labels / weights must change what the model learns"


@pytest.mark.parametrize("mode", ["labels", "weights"])
def test_no_correction_yet_trains_exactly_like_none(backbone, tmp_path, mode):
    """No confound: before any label has been corrected, every mode trains on the same targets."""
    from safetensors.torch import load_file

    train_ids = ["t0", "t1"]
    labels, problems = _labels(train_ids), _problems(train_ids + ["m0", "m1"])
    heads = {}
    for m in (mode, "none"):
        out = tmp_path / m
        train_prm(_config(backbone, out, max_steps=1, meta={"mode": m, "refresh": 1}), labels,
                  meta_set=_solutions(["m0", "m1"]), problems=problems, progress=False)
        heads[m] = load_file(str(out / "head.safetensors"))
    assert all(torch.equal(heads[mode][k], heads["none"][k]) for k in heads["none"])


def test_plots_from_a_summary_file_and_clear_errors(tmp_path):
    summary = {
        "mode": "weights",
        "outer_steps": 2,
        "initial_labels": [0.1, 0.9, 0.5],
        "corrected_labels": [0.1, 0.9, 0.5],
        "trajectory_ids": [0, 2],
        "trajectory": [{"outer_step": 0, "values": [1.0, 1.0]}, {"outer_step": 1, "values": [1.1, 0.8]}],
    }
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "correction.json").write_text(json.dumps(summary))
    paths = plot_correction(tmp_path / "c")
    assert all(p.exists() and p.parent == tmp_path / "c" for p in paths)
    with pytest.raises(UserError, match="no correction.json"):
        load_correction_summary(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"mode": "labels"}))
    with pytest.raises(UserError, match="corrected_labels"):
        load_correction_summary(tmp_path / "bad.json")


def test_meta_split_cli_writes_both_parts_and_refuses_overlap(tmp_path):
    sols = _solutions(["a", "b", "c", "d"])
    atomic_write_jsonl(tmp_path / "sols.jsonl", [s.to_dict() for s in sols])
    runner = CliRunner()
    res = runner.invoke(
        app, ["meta-split", "--solutions", str(tmp_path / "sols.jsonl"), "--out", str(tmp_path / "m")]
    )
    assert res.exit_code == 0, res.output
    outer = (tmp_path / "m" / "meta_outer.jsonl").read_text().splitlines()
    select = (tmp_path / "m" / "meta_select.jsonl").read_text().splitlines()
    assert len(outer) == 8 and len(select) == 8
    atomic_write_jsonl(tmp_path / "eval.jsonl", [s.to_dict() for s in _solutions(["c"])])
    res = runner.invoke(
        app,
        [
            "meta-split",
            "--solutions",
            str(tmp_path / "sols.jsonl"),
            "--out",
            str(tmp_path / "m2"),
            "--eval-solutions",
            str(tmp_path / "eval.jsonl"),
        ],
    )
    assert res.exit_code != 0
    assert isinstance(res.exception, UserError) and "c" in str(res.exception)
