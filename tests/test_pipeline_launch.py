"""Training on several devices from the pipeline: the ``accelerate launch`` command it builds, and a
real two-process launch on CPUs (gloo) whose finished state the in-process trainer then takes over."""

from __future__ import annotations

import json

import pytest

from dreamprm_code.io import atomic_write_jsonl
from dreamprm_code.pipeline.config import load_config
from dreamprm_code.pipeline.run import RunDir, launch_training, train_launch_command
from dreamprm_code.prm.train import TrainConfig, train_prm
from dreamprm_code.records import Problem, StepLabel
from tiny_models import save_tiny_backbone

HEAD = "def main():\n    print(solve(int(input())))\n\n\n"


def _run_dir(tmp_path):
    run = RunDir(tmp_path / "run")
    labels, problems = [], []
    for p in "abcd":
        problems.append(Problem(id=p, title=p, statement="s", platform="x", difficulty="easy", tests=[]))
        for i in range(2):
            labels.append(StepLabel(f"{p}#{i}", p, 0, 2, HEAD, 4, 2, 0.5, 1))
            labels.append(StepLabel(f"{p}#{i}", p, 1, 2, HEAD + "def solve(n):\n    return n\n", 1, i, float(i), i))
    atomic_write_jsonl(run.labels, [x.to_dict() for x in labels])
    atomic_write_jsonl(run.problems_train, [p.to_dict() for p in problems])
    return run, labels, problems


def test_the_launch_command_runs_train_on_the_run_files(tmp_path):
    run, _, _ = _run_dir(tmp_path)
    tc = TrainConfig(backbone="b", output_dir=str(run.model("prm-labels")), meta={"mode": "labels"})
    cmd = train_launch_command(run, tc, 4, with_meta=True)
    joined = " ".join(cmd)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert "--num_processes 4" in joined and "--multi_gpu" in joined
    assert f"-m dreamprm_code train --labels {run.labels}" in joined
    assert f"--output-dir {run.model('prm-labels')}" in joined and f"--meta {run.solutions_meta}" in joined
    assert f"--config {run.models / 'prm-labels.train_config.json'}" in joined
    assert "--meta" not in train_launch_command(run, tc, 2, with_meta=False)
    # every setting travels in the config file, which the command reads whole
    assert "--lora-r" not in joined and "--correction" not in joined


def test_the_config_takes_processes_and_ray_without_changing_what_is_trained():
    cfg = load_config("demo", {"train.num_processes": 2, "ray": "auto"})
    assert cfg.train.num_processes == 2 and cfg.ray == "auto"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_cpu_processes_train_then_the_pipeline_takes_the_finished_state(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # gloo on CPUs even where a GPU is visible
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run, labels, problems = _run_dir(tmp_path)
    backbone = save_tiny_backbone(tmp_path / "backbone", hidden_size=32, layers=1)
    tc = TrainConfig(backbone=str(backbone), output_dir=str(run.model("prm")), meta={"mode": "none"}, lora_r=2, num_train_epochs=1,
                     per_device_train_batch_size=2, max_length=128)
    launch_training(run, tc, 2, with_meta=False)
    out = run.model("prm")
    assert (out / "train_log.rank1.jsonl").exists(), "a second process trained"
    steps = (out / "train_log.jsonl").read_text().splitlines()
    assert steps and json.loads((out / "train_config.json").read_text())["lora_r"] == 2
    # the pipeline's own call finds every epoch done: it trains no further step
    path = train_prm(tc, labels, eval_set=[], problems=problems, progress=False)
    assert (path / "prm.json").exists()
    assert (out / "train_log.jsonl").read_text().splitlines() == steps
