"""Frozen backbone vs LoRA, SmolLM2-135M vs Qwen2.5-Coder-0.5B, on a small real subset, on CPU.

Data: the MapCoder APPS pool (``$DREAMPRM_DATA/pools/apps-mapcoder``) with its recorded verdicts,
on problems that have both a passing and a failing candidate (so the harness artefact of the
all-unsolved call-based problems is left out). Outcome labels: every step of a candidate carries
its verdict (the final step is the verdict itself). ``--train-problems`` problems with one
passing and one failing candidate train, ``--eval-problems`` other problems with up to
``--per-eval`` candidates are held out. Every configuration trains on the same labels with the
same input cap (``--max-length``), is saved, loaded back with ``load_prm`` and scores the
held-out candidates (one pass per candidate):

- training tokens/s: candidate tokens the run processed (epochs x tokens) / training wall time;
  for frozen, also the one feature pass alone (its ``features`` record);
- scoring tokens/s: held-out tokens / scoring wall time (the loaded checkpoint, LoRA merged);
- held-out step AUC (every step labelled with its candidate's verdict) and best-of-N (min
  aggregate) next to random (mean pass rate) and the oracle.

Sizes are set by the CPU budget (each configuration a few minutes on 2 busy cores): LoRA on Qwen
does ``--qwen-lora-steps`` optimiser steps only (a throughput figure; its quality columns are
those of an adapter that saw 8 candidates).

    python bench/frozen_vs_lora.py [--train-problems 12] [--eval-problems 6] [--threads 2]
        [--configs smollm2:frozen,smollm2:lora,qwen:frozen,qwen:lora] [--out runs/bench-frozen]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import torch

from dreamprm_code.cof import split_steps
from dreamprm_code.data import load_problems, load_solutions, recorded_verdict
from dreamprm_code.io import atomic_write_json
from dreamprm_code.prm.checkpoint import load_prm
from dreamprm_code.prm.data import examples_from_labels
from dreamprm_code.prm.train import TrainConfig, train_prm, validate
from dreamprm_code.records import StepLabel

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DREAMPRM_DATA", ROOT.parent / "shared" / "data"))
BACKBONES = {"smollm2": "embedded:smollm2-135m-instruct", "qwen": "embedded:qwen2.5-coder-0.5b"}


def outcome_labels(solutions) -> list[StepLabel]:
    out = []
    for s in solutions:
        y = float(s.verdict == "pass")
        for k, st in enumerate(s.steps):
            out.append(StepLabel(s.id, s.problem_id, k, len(s.steps), s.code[: st.end], 1, int(y), y, int(y)))
    return out


def subset(train_problems: int, eval_problems: int, per_eval: int, seed: int):
    problems = {p.id: p for p in load_problems(f"apps:{DATA / 'apps-150' / 'problems.jsonl'}")}
    by_problem = defaultdict(list)
    for s in load_solutions(DATA / "pools" / "apps-mapcoder", problems.values()):
        s.verdict = s.verdict or recorded_verdict(s)
        if s.verdict and s.code.strip():
            s.steps = s.steps or split_steps(s.code)
            if s.steps:
                by_problem[s.problem_id].append(s)
    mixed = sorted(p for p, sols in by_problem.items() if len({s.verdict == "pass" for s in sols}) == 2)
    rng = random.Random(seed)
    rng.shuffle(mixed)
    train_ids, eval_ids = mixed[:train_problems], mixed[train_problems : train_problems + eval_problems]
    train = []
    for p in train_ids:
        sols = sorted(by_problem[p], key=lambda s: s.id)
        train += [next(s for s in sols if s.passed), next(s for s in sols if not s.passed)]
    held = []
    for p in eval_ids:
        sols = sorted(by_problem[p], key=lambda s: s.id)
        rng.shuffle(sols)
        pick = [next(s for s in sols if s.passed), next(s for s in sols if not s.passed)]
        held += pick + [s for s in sols if s not in pick][: max(0, per_eval - 2)]
    return outcome_labels(train), outcome_labels(held), problems


def run(name: str, mode: str, args, labels, held, problems) -> dict:
    out = Path(args.out) / f"{name}-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    frozen = mode == "frozen"
    config = TrainConfig(
        backbone=BACKBONES[name], output_dir=str(out), max_length=args.max_length, max_statement_tokens=args.statement_tokens,
        per_device_train_batch_size=4, warmup_steps=2, meta={"mode": "none"}, save_steps=10_000, eval_each_epoch=False,
        freeze_backbone=frozen, frozen_epochs=args.frozen_epochs, num_train_epochs=args.lora_epochs,
        learning_rate=args.frozen_lr if frozen else args.lora_lr, seed=args.seed,
        max_steps=args.qwen_lora_steps if (name, mode) == ("qwen", "lora") else 0,
    )
    t0 = time.perf_counter()
    train_prm(config, labels, eval_set=[], problems=problems, progress=False)
    train_s = time.perf_counter() - t0
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    trained_tokens = sum(r["tokens"] for r in log if "loss" in r)
    feats = next((r for r in log if r.get("phase") == "features"), None)
    prm = load_prm(out)
    val_ex = examples_from_labels(held, prm.prompt_format, problems)
    t1 = time.perf_counter()
    val = validate(prm, val_ex, "min")
    score_s = time.perf_counter() - t1
    held_tokens = sum(len(e.input_ids) for e in val_ex)
    size_mb = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 2**20
    shutil.rmtree(out, ignore_errors=True)  # a frozen checkpoint holds the whole base model
    return {
        "backbone": name, "mode": mode, "train_s": train_s, "train_tokens": trained_tokens,
        "train_tok_s": trained_tokens / train_s,
        "feature_pass_tok_s": feats["tokens_per_s"] if feats else None,
        "score_s": score_s, "score_tok_s": held_tokens / score_s, "checkpoint_mb": size_mb,
        **{k: v for k, v in val.items() if k.startswith("val_")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-problems", type=int, default=12)
    ap.add_argument("--eval-problems", type=int, default=6)
    ap.add_argument("--per-eval", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--statement-tokens", type=int, default=64)
    ap.add_argument("--frozen-epochs", type=int, default=20)
    ap.add_argument("--frozen-lr", type=float, default=1e-3)
    ap.add_argument("--lora-epochs", type=int, default=1)
    ap.add_argument("--lora-lr", type=float, default=2e-4)
    ap.add_argument("--qwen-lora-steps", type=int, default=2, help="cap on Qwen LoRA steps (0 = a whole epoch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default="smollm2:frozen,smollm2:lora,qwen:frozen,qwen:lora")
    ap.add_argument("--out", default="runs/bench-frozen")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    labels, held, problems = subset(args.train_problems, args.eval_problems, args.per_eval, args.seed)
    print(f"train: {len({lab.solution_id for lab in labels})} candidates / {len(labels)} step labels; held out: "
          f"{len({lab.solution_id for lab in held})} candidates on {len({lab.problem_id for lab in held})} problems",
          flush=True)
    rows = []
    for spec in args.configs.split(","):
        name, mode = spec.split(":")
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        row = {**run(name, mode, args, labels, held, problems), "uptime_before": load}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| backbone | mode | train tok/s | feature pass tok/s | score tok/s | step AUC | best-of-N (min) | random | oracle |"
          "\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fp = f"{r['feature_pass_tok_s']:.0f}" if r["feature_pass_tok_s"] else "-"
        print(f"| {r['backbone']} | {r['mode']} | {r['train_tok_s']:.0f} | {fp} | {r['score_tok_s']:.0f} | "
              f"{r['val_step_auc']:.3f} | {r['val_best_of_n_min']:.3f} | {r['val_random']:.3f} | {r['val_oracle']:.3f} |")
    atomic_write_json(Path(args.out) / "frozen_vs_lora.json", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
