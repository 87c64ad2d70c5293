"""The GPU paths, run and timed on one CUDA device: PRM training through the real trainer (LoRA and
full fine-tuning, fp32 and bf16, correction ``none`` / ``weights`` / ``labels``), then scoring.

The backbone is Qwen2.5-Coder-0.5B-Instruct's architecture and tokenizer (its ``config.json`` and
tokenizer files, from the embedded cache) with random weights: the device machine reaches no hub
and its 1 GB of weights cannot travel there. Time and memory do not depend on the weights'
values. Inputs are the real APPS candidates of ``pools/apps-mapcoder`` with their recorded
verdicts; every step of a candidate gets its verdict as label (a cost benchmark needs realistic
sequences, not good labels). Problems are split: 70% give training labels, the rest the meta set.

Per configuration: mean seconds per inner step (outer steps included, at the trainer's default
M; the first two steps left out as warm-up) and the peak of ``torch.cuda.max_memory_allocated``,
with ``labels`` and ``weights`` next to ``none`` as ratios (issue targets: <= 1.5x time,
<= 1.2x memory), and the JVP method the outer step used.

    python bench/gpu_paths.py --model-files DIR --data DIR --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from dreamprm_code.data import data_dir, data_path


def random_backbone(files: Path, out: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """A causal LM of ``files``' architecture with random weights, saved with its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(str(files))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(files)).save_pretrained(str(out))
    for name in ("generation_config.json", "chat_template.jinja"):
        if (files / name).exists():
            shutil.copy(files / name, out / name)
    return out


def pool_data(data: Path, max_candidates: int):
    """Training labels (every step labelled with its candidate's verdict), meta set, problems."""
    from dreamprm_code.cof import split_steps
    from dreamprm_code.data import load_problems, load_solutions, recorded_verdict
    from dreamprm_code.records import StepLabel

    problems = {p.id: p for p in load_problems(f"apps:{data_path('apps-150', 'problems.jsonl', root=data)}")}
    sols = load_solutions(data_path("pools", "apps-mapcoder", root=data), problems.values())
    for s in sols:
        s.verdict = s.verdict or recorded_verdict(s)
        s.steps = s.steps or split_steps(s.code)
    sols = [s for s in sols if s.verdict and s.code.strip() and s.steps]
    ids = sorted({s.problem_id for s in sols})
    random.Random(0).shuffle(ids)
    train_ids = set(ids[: int(0.7 * len(ids))])
    train = [s for s in sols if s.problem_id in train_ids][:max_candidates]
    meta = [s for s in sols if s.problem_id not in train_ids][: max_candidates // 2]
    labels = []
    for s in train:
        y = float(s.verdict == "pass")
        for k, st in enumerate(s.steps):
            labels.append(StepLabel(s.id, s.problem_id, k, len(s.steps), s.code[: st.end], 1, int(y), y, int(y)))
    return labels, meta, problems


def train_once(backbone: Path, out: Path, labels, meta, problems, *, correction: str, precision: str,
               lora_r: int, steps: int, batch: int, max_length: int) -> dict:
    from dreamprm_code.prm.train import TrainConfig, train_prm

    config = TrainConfig(
        backbone=str(backbone), output_dir=str(out), lora_r=lora_r, precision=precision, meta={"mode": correction},
        per_device_train_batch_size=batch, max_length=max_length, max_steps=steps, num_train_epochs=100, eval_each_epoch=False,
        save_steps=10_000, warmup_steps=2, learning_rate=1e-4 if lora_r else 1e-5,
    )
    shutil.rmtree(out, ignore_errors=True)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    train_prm(config, labels, meta if correction != "none" else None, eval_set=[], problems=problems, progress=False)
    wall = time.perf_counter() - t0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps_log = [r for r in log if "seconds" in r]
    return {
        "correction": correction, "precision": precision, "lora_r": lora_r,
        "step_s": statistics.mean(r["seconds"] for r in steps_log[2:]),
        "outer_s": [r["outer_seconds"] for r in steps_log if "outer_seconds" in r],
        "jvp": sorted({r["jvp_method"] for r in steps_log if "jvp_method" in r}),
        "meta_loss": [r["meta_loss"] for r in steps_log if "meta_loss" in r],
        "tokens_per_step": statistics.mean(r["tokens"] for r in steps_log),
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30,
        "wall_s": wall,
    }


def score_once(ckpt: Path, problems, sols) -> dict:
    from dreamprm_code.prm.checkpoint import load_prm
    from dreamprm_code.prm.score import score_solutions

    prm = load_prm(ckpt, device="cuda")
    score_solutions(prm, problems, sols[:8])  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    scored = score_solutions(prm, problems, sols)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"candidates": len(sols), "seconds": dt, "candidates_per_s": len(sols) / dt, "scored": len(scored)}


def step_costs(backbone: Path, labels, meta, problems, *, precision: str, lora_r: int, batch: int,
               max_length: int, micro_batches: list[int], profile_dir: Path | None) -> list[dict]:
    """Inner and outer step time (CUDA-synchronised) and peak memory, per outer-step micro-batch size.

    With ``profile_dir``: a ``torch.profiler`` table of one inner and one outer step (the first
    micro-batch size), the ops by GPU time and by CPU time, to see where the time goes.
    """
    from dreamprm_code.meta import make_correction
    from dreamprm_code.meta.hypergrad import default_meta_fn as meta_logits
    from dreamprm_code.meta.hypergrad import train_loss as step_loss
    from dreamprm_code.prm.data import collate, examples_from_labels, examples_from_solutions
    from dreamprm_code.prm.model import build_prm

    prm, tok = build_prm(str(backbone), lora_r=lora_r, precision=precision)
    prm.cuda().train()
    fmt = prm.attach_format(tok, max_length)
    train = examples_from_labels(labels, fmt, problems)
    meta_ex = examples_from_solutions(meta, fmt, problems, final_only=True, with_verdicts=True)
    init = torch.tensor([lab.mc_value for lab in labels])
    opt = torch.optim.AdamW([p for _, p in prm.trainable_parameters()], lr=1e-5)
    batches = [collate(train[k : k + batch], prm.pad_id).to("cuda") for k in range(0, 8 * batch, batch)]
    mbatch = collate(meta_ex[:8], prm.pad_id).to("cuda")

    def timed(fn) -> tuple[float, float]:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, torch.cuda.max_memory_allocated() / 2**30

    def inner(corr, b) -> None:
        targets, weights = corr.targets(b)
        step_loss(prm(b), targets, weights, "bce").backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def outer(corr, b) -> None:
        corr.outer_step(prm, b, mbatch, inner_lr=1e-3)

    rows = []
    for mb in micro_batches:
        corr = make_correction("labels", init, {"micro_batch": mb}, meta_fn=meta_logits)
        inner(corr, batches[0])
        outer(corr, batches[0])  # warm-up: kernels, allocator
        ins = [timed(lambda b=b, c=corr: inner(c, b)) for b in batches[1:4]]
        outs = [timed(lambda b=b, c=corr: outer(c, b)) for b in batches[4:7]]
        row = {"precision": precision, "lora_r": lora_r, "micro_batch": mb, "jvp": corr.last_log["jvp_method"],
               "inner_s": statistics.mean(t for t, _ in ins), "outer_s": statistics.mean(t for t, _ in outs),
               "inner_peak_gb": max(m for _, m in ins), "outer_peak_gb": max(m for _, m in outs)}
        row["outer_in_inner_steps"] = row["outer_s"] / row["inner_s"]
        row["per_step_at_M8"] = 1 + row["outer_in_inner_steps"] / 8
        rows.append(row)
        print(f"RESULT step costs {precision} lora_r={lora_r} micro_batch={mb} (jvp {row['jvp']}): inner "
              f"{row['inner_s']:.3f} s, outer {row['outer_s']:.3f} s = {row['outer_in_inner_steps']:.1f} inner steps; "
              f"labels vs none per inner step at M=8: {row['per_step_at_M8']:.2f}x time; peak memory outer "
              f"{row['outer_peak_gb']:.2f} vs inner {row['inner_peak_gb']:.2f} GiB = "
              f"{row['outer_peak_gb'] / row['inner_peak_gb']:.2f}x", flush=True)
        if profile_dir is not None and mb == micro_batches[0]:
            from torch.profiler import ProfilerActivity, profile

            for name, fn in (("inner", lambda c=corr: inner(c, batches[7])), ("outer", lambda c=corr: outer(c, batches[7]))):
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    fn()
                    torch.cuda.synchronize()
                table = prof.key_averages()
                text = (table.table(sort_by="self_cuda_time_total", row_limit=15)
                        + table.table(sort_by="self_cpu_time_total", row_limit=15))
                (profile_dir / f"profile_{precision}_{lora_r}_{name}.txt").write_text(text)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-files", type=Path, required=True, help="config.json + tokenizer of the architecture")
    ap.add_argument("--data", type=Path, default=data_dir(), help="the data folder (default: $DREAMPRM_DATA)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu-paths"))
    ap.add_argument("--steps", type=int, default=26)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--candidates", type=int, default=400)
    ap.add_argument("--configs", default="bf16:8,fp32:8,bf16:0", help="precision:lora_r, comma-separated")
    ap.add_argument("--skip-train", action="store_true", help="only the step costs (and profile)")
    ap.add_argument("--micro-batches", default="1,0", help="outer-step micro-batch sizes for the step costs ('' = skip them)")
    ap.add_argument("--profile-dir", type=Path, help="write torch.profiler tables of one inner and outer step here")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark checks the GPU paths")
    args.work.mkdir(parents=True, exist_ok=True)
    backbone = random_backbone(args.model_files, args.work / "backbone")
    labels, meta, problems = pool_data(args.data, args.candidates)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; backbone {args.model_files.name} "
          f"architecture, random weights; {len(labels)} training labels, {len(meta)} meta candidates; "
          f"batch {args.batch}, max_length {args.max_length}, {args.steps} steps, trainer defaults (M, micro-batch)",
          flush=True)
    costs = []
    for spec in args.configs.split(",") if args.micro_batches else []:
        precision, lora = spec.split(":")
        costs += step_costs(backbone, labels, meta, problems, precision=precision, lora_r=int(lora), batch=args.batch,
                            max_length=args.max_length, micro_batches=[int(m) for m in args.micro_batches.split(",")],
                            profile_dir=args.profile_dir)
        torch.cuda.empty_cache()
    results = []
    for spec in [] if args.skip_train else args.configs.split(","):
        precision, lora = spec.split(":")
        row = {}
        for correction in ("none", "weights", "labels"):
            r = train_once(backbone, args.work / f"prm-{precision}-{lora}-{correction}", labels, meta, problems,
                           correction=correction, precision=precision, lora_r=int(lora), steps=args.steps,
                           batch=args.batch, max_length=args.max_length)
            results.append(r)
            row[correction] = r
            print(f"{precision} lora_r={lora} {correction:7s}: {r['step_s']:.3f} s/step "
                  f"({r['tokens_per_step']:.0f} tokens), peak {r['peak_mem_gb']:.2f} GiB, jvp {r['jvp']}, "
                  f"outer {statistics.mean(r['outer_s']) if r['outer_s'] else 0:.3f} s", flush=True)
        for correction in ("weights", "labels"):
            r, base = row[correction], row["none"]
            print(f"RESULT {precision} lora_r={lora} {correction} vs none: time {r['step_s'] / base['step_s']:.2f}x "
                  f"(target <= 1.5), memory {r['peak_mem_gb'] / base['peak_mem_gb']:.2f}x (target <= 1.2)", flush=True)
    if args.skip_train:
        if args.json:
            args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "step_costs": costs}, indent=1))
        return
    from dreamprm_code.data import load_solutions

    sols = [s for s in load_solutions(data_path("pools", "apps-mapcoder", root=args.data), problems.values()) if s.code.strip()]
    scoring = score_once(args.work / "prm-bf16-8-labels", problems, sols[:400])
    print(f"RESULT scoring (bf16, LoRA merged): {scoring['candidates']} candidates in {scoring['seconds']:.1f} s = "
          f"{scoring['candidates_per_s']:.1f} candidates/s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "step_costs": costs,
                                         "train": results, "scoring": scoring}, indent=1))


if __name__ == "__main__":
    main()
