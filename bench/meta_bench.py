"""Label correction's cost: time per inner step and peak memory, ``labels`` vs ``none``, same run.

Both modes go through the real training step (:func:`dreamprm_code.prm.train.inner_step`) with
the default :class:`CorrectionConfig` (a refresh of v every ``refresh`` steps, a one-sided JVP
for every batch, the sweep of every label seen at each refresh), on SmolLM2-135M + LoRA (the
embedded CPU PRM backbone) and real candidate solutions of the APPS pool
(``$DREAMPRM_DATA/pools/apps-mapcoder``). Each mode runs in its own subprocess on the same
batches, so its peak RSS is its own; steps are timed after one warm-up step over a whole number
of refresh periods. Prints the ratios next to the baseline, and how often each label took part
in an update if the run went on for two epochs over the labels it saw.

    python bench/meta_bench.py --steps 16
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from dreamprm_code.data import data_dir

DATA = data_dir()


def real_examples(n: int, fmt):
    """Training examples from real pool candidates (every step labelled, final = verdict) and a meta set."""
    from dreamprm_code.data import load_problems, load_solutions, recorded_verdict
    from dreamprm_code.prm.data import examples_from_solutions

    problems = {p.id: p for p in load_problems(f"apps:{DATA / 'apps-150' / 'problems.jsonl'}")}
    sols = load_solutions(DATA / "pools" / "apps-mapcoder", problems.values())
    random.Random(0).shuffle(sols)
    for s in sols:
        s.verdict = s.verdict or recorded_verdict(s)
    sols = [s for s in sols if s.verdict is not None and s.code.strip()][: 2 * n]
    train = examples_from_solutions(sols[:n], fmt, problems, with_verdicts=True)
    meta = examples_from_solutions(sols[n:], fmt, problems, final_only=True, with_verdicts=True)
    lid = 0
    rng = random.Random(1)
    for ex in train:
        ex.targets = [float(rng.random() < 0.5) if math.isnan(t) else t for t in ex.targets]
        ex.label_ids = list(range(lid, lid + len(ex.targets)))
        lid += len(ex.targets)
    return train, meta, lid


def _worker(mode: str, args: dict, queue) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(args["threads"])
    from dreamprm_code.meta.correction import CorrectionConfig, NoCorrection, make_correction
    from dreamprm_code.prm.data import collate, cycle_batches
    from dreamprm_code.prm.model import build_prm
    from dreamprm_code.prm.train import TrainConfig, inner_step

    config = TrainConfig(max_length=args["max_length"], meta=CorrectionConfig(mode=mode))
    prm, tok = build_prm(args["backbone"], lora_r=config.lora_r, precision=config.precision)
    fmt = prm.attach_format(tok, config.max_length)
    steps = args["steps"] + 1
    train, meta, n_labels = real_examples(config.per_device_train_batch_size * steps, fmt)
    init = torch.tensor([t for ex in train for t in ex.targets])
    if mode == "none":
        corr = NoCorrection(init)
    else:
        fixed = torch.tensor([f for ex in train for f in ex.is_final])
        corr = make_correction(mode, init, config.meta, fixed=fixed,
                               meta_batches=cycle_batches(meta, config.meta.batch_size, prm.pad_id, 0))
    opt = torch.optim.AdamW([p for _, p in prm.trainable_parameters()], lr=config.learning_rate)
    prm.train()
    times, tokens = [], []
    for step in range(steps):
        batch = collate(train[step * config.per_device_train_batch_size : (step + 1) * config.per_device_train_batch_size], prm.pad_id)
        t0 = time.perf_counter()
        inner_step(prm, prm, batch, opt, corr, config, step)
        if step:  # the first step warms up kernels and allocator
            times.append(time.perf_counter() - t0)
            print(f"{mode} step {step}: {times[-1]:.2f} s", flush=True)
            tokens.append(batch.num_tokens)
    out = {"mode": mode, "seconds": times, "tokens": tokens, "labels": n_labels,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if mode != "none":
        out["movement"] = corr.movement()
        out["refresh"] = config.meta.refresh
    queue.put(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--max-length", dest="max_length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8, help="timed steps (a multiple of the refresh interval)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = vars(ap.parse_args())
    if not (DATA / "pools" / "apps-mapcoder").exists():
        sys.exit(f"no data at {DATA} (set DREAMPRM_DATA)")
    ctx = mp.get_context("spawn")
    results = {}
    for mode in ("none", "labels"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(mode, args, queue))
        proc.start()
        results[mode] = queue.get()
        proc.join()
    base, corr = results["none"], results["labels"]
    # the baseline has no periodic cost: its median is robust to a load spike; the correction's
    # mean over whole refresh periods carries its refresh steps (a spike there counts against it)
    t_base, t_corr = statistics.median(base["seconds"]), statistics.mean(corr["seconds"])
    ratio_t = t_corr / t_base
    ratio_m = corr["peak_rss_mb"] / base["peak_rss_mb"]
    print(f"load: {os.getloadavg()[0]:.2f}; backbone {args['backbone']}, max_length {args['max_length']}, "
          f"{args['steps']} timed steps, refresh every {corr['refresh']}")
    print(f"time per inner step   none {t_base:.3f} s (median)   labels {t_corr:.3f} s (mean)   ratio {ratio_t:.2f}x "
          "(target <= 1.8x)")
    print(f"peak RSS              none {base['peak_rss_mb']:.0f} MB  labels {corr['peak_rss_mb']:.0f} MB  "
          f"ratio {ratio_m:.2f}x (target <= 1.25x)")
    print(f"label movement in this short run: {json.dumps(corr['movement'])}")
    if args["json"]:
        args["json"].write_text(json.dumps({"args": {k: str(v) for k, v in args.items()}, "results": results,
                                            "time_ratio": ratio_t, "memory_ratio": ratio_m}, indent=1))


if __name__ == "__main__":
    main()
