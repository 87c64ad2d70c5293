"""Several training processes (``torch.distributed.run``, gloo on this machine's CPUs): the trainer
runs under DDP, every rank ends with the same corrected labels, the ones saved, and only the main
process reports to the trackers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("multiprocess_train.py")


@pytest.mark.timeout(300)
def test_two_processes_share_one_set_of_corrected_labels(tmp_path):
    # gloo on CPUs, also where a GPU is visible (two NCCL ranks cannot share one GPU)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
           str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    saved = json.loads((tmp_path / "prm" / "corrected_labels.json").read_text())
    assert rank0 == rank1  # each rank stepped on its own batches; the summed hypergradient keeps them equal
    assert [r["corrected"] for r in saved] == rank0
    # every batch has an outer step and each epoch's batches cover all candidates across the two
    # ranks, so every first-step label (MC value 0.5) moved; one rank's copy alone misses some
    first = [r["corrected"] for r in saved if r["mc_value"] == 0.5]
    assert len(first) == 16 and all(abs(v - 0.5) > 1e-6 for v in first)
    logs = [json.loads(line) for line in (tmp_path / "prm" / "train_log.rank1.jsonl").read_text().splitlines()]
    assert logs and all("meta_loss" in r for r in logs)
    # the trackers run on the main process only: one event file, rank 0's records
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = tmp_path / "prm" / "runs" / "dreamprm-code"
    assert len(list(runs.glob("events.out.tfevents.*"))) == 1
    acc = EventAccumulator(str(runs), size_guidance={"scalars": 0})
    acc.Reload()
    rank0_log = [json.loads(line) for line in (tmp_path / "prm" / "train_log.jsonl").read_text().splitlines()]
    assert [e.step for e in acc.Scalars("meta_loss")] == [r["step"] for r in rank0_log if "meta_loss" in r]
    assert [e.value for e in acc.Scalars("loss")] == pytest.approx([r["loss"] for r in rank0_log if "loss" in r])
