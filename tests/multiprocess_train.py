"""Run by ``test_prm_multiprocess.py`` under ``torch.distributed.run``: one PRM training with label
correction on a tiny backbone, several processes (gloo on CPUs, NCCL on GPUs).

Each rank writes the label values it ends with to ``OUT/rank{R}.json``, so the test can check
that every process holds the same corrected labels and that the saved file is that copy.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/multiprocess_train.py OUT [bf16]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from dreamprm_code.prm import train as train_module
from dreamprm_code.prm.train import TrainConfig, make_correction_for, train_prm
from dreamprm_code.records import Problem, Solution, Step, StepLabel
from tiny_models import save_tiny_backbone

HEAD = 'def main():\n    """Read and print."""\n    print(solve(int(input())))\n\n\n'
GOOD = 'def solve(n):\n    """Sum."""\n    return n * (n + 1) // 2\n'
BAD = 'def solve(n):\n    """Sum."""\n    return n * (n - 1) // 2\n'


def candidate(pid: str, i: int, good: bool) -> tuple[str, list[Step]]:
    head = f"# {pid} {i}\n" + HEAD
    code = head + (GOOD if good else BAD)
    return code, [Step("main", "function", 0, len(head)), Step("solve", "function", len(head), len(code))]


def main() -> None:
    out = Path(sys.argv[1])
    precision = sys.argv[2] if len(sys.argv) > 2 else "fp32"
    rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(1)
    backbone = out / "tiny"
    if rank == 0:
        save_tiny_backbone(backbone, hidden_size=32)
        (out / "tiny.done").write_text("")
    while not (out / "tiny.done").exists():  # rank 0 writes the backbone
        time.sleep(0.1)
    train_ids, meta_ids = [f"t{k}" for k in range(4)], [f"m{k}" for k in range(2)]
    labels, meta = [], []
    for pid in train_ids:
        for i in range(4):
            code, steps = candidate(pid, i, i % 2 == 0)
            labels.append(StepLabel(f"{pid}#{i}", pid, 0, 2, code[: steps[0].end], 4, 2, 0.5, 1))
            labels.append(StepLabel(f"{pid}#{i}", pid, 1, 2, code, 1, i % 2 == 0, float(i % 2 == 0), i % 2 == 0))
    for pid in meta_ids:
        for i in range(4):
            code, steps = candidate(pid, i, i % 2 == 0)
            meta.append(Solution(pid, i, code, steps=steps, verdict="pass" if i % 2 == 0 else "wrong_answer"))
    problems = [
        Problem(id=p, title=p, statement="Print the sum 1..n.", platform="x", difficulty="easy", tests=[])
        for p in train_ids + meta_ids
    ]
    config = TrainConfig(
        backbone=str(backbone), output_dir=str(out / "prm"), lora_r=4, learning_rate=3e-3, num_train_epochs=2, per_device_train_batch_size=2,
        max_length=256, warmup_steps=1, meta={"mode": "labels", "refresh": 1, "meta_lr": 0.2,
        "batch_size": 4}, precision=precision, eval_each_epoch=False, report_to=["tensorboard"],
    )
    made = []  # this rank's Correction, to read its own copy of the labels after training

    def keep(*args, **kwargs):
        made.append(make_correction_for(*args, **kwargs))
        return made[-1]

    train_module.make_correction_for = keep
    train_prm(config, labels, meta, eval_set=[], problems=problems, progress=False)
    (out / f"rank{rank}.json").write_text(json.dumps(made[0].corrected_labels()))


if __name__ == "__main__":
    main()
