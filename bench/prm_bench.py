"""PRM benchmark: one-pass vs prefix-by-prefix scoring, scoring vs a bare backbone, training speed.

Real candidates (MapCoder APPS pool, steps from ``cof.split_steps``), the embedded SmolLM2-135M
backbone with a LoRA adapter. Every figure is printed next to its baseline measured in the
same run, and the ratio. Timings interleave the two sides (A B A B ...) and take the median,
so load from other jobs on a shared machine hits both alike.

    python bench/prm_bench.py --candidates 24 --threads 2 [--skip-train | --skip-score] [--grad-ckpt]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from dreamprm_code.cof import split_steps
from dreamprm_code.data import data_path, load_problems, load_solutions
from dreamprm_code.prm.checkpoint import load_prm, save_prm
from dreamprm_code.prm.data import (
    collate,
    epoch_batches,
    examples_from_labels,
    examples_from_solutions,
    token_batches,
)
from dreamprm_code.prm.model import build_prm
from dreamprm_code.prm.score import prefix_examples, score_examples
from dreamprm_code.prm.train import TrainConfig, train_prm
from dreamprm_code.records import StepLabel

BACKBONE = "embedded:smollm2-135m-instruct"


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def interleaved(fns: dict[str, callable], reps: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds of each function, run in alternation ``reps`` times, and its last result."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    last: dict[str, object] = {}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            last[k] = fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}, last


def candidates(n: int, pool: str):
    problems = load_problems(f"apps:{data_path('apps-150', 'problems.jsonl')}")
    sols = load_solutions(data_path("pools", "apps-mapcoder", pool), problems)
    picked = []
    for s in sols:
        s.steps = split_steps(s.code)
        if len(s.steps) >= 2 and len(s.code) < 4000:
            picked.append(s)
        if len(picked) == n:
            break
    return {p.id: p for p in problems}, picked


def row(name: str, value: float, base_name: str, base: float, unit: str, note: str = "") -> dict:
    ratio = value / base if base else float("nan")
    print(f"{name:<34} {value:>10.2f} {unit:<8} | {base_name:<34} {base:>10.2f} {unit:<8} | ratio {ratio:6.3f} {note}")
    return {"name": name, "value": value, "baseline": base_name, "baseline_value": base, "unit": unit, "ratio": ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=24)
    ap.add_argument("--pool", default="GPT4-Turbo-MapCoder-3-5-APPS-Python3-0-1.jsonl")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--grad-ckpt", action="store_true", help="train with gradient checkpointing")
    ap.add_argument("--backbone", default=BACKBONE, help="embedded:NAME or a model directory")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-score", action="store_true")
    ap.add_argument("--skip-prefix", action="store_true", help="scoring: only one-pass vs the bare backbone")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pmap, sols = candidates(args.candidates, args.pool)
    print(f"# {args.backbone}: {len(sols)} candidates from {args.pool}, {sum(len(s.steps) for s in sols)} steps; "
          f"torch threads {args.threads}; {sys.platform}")
    results = [] if args.skip_train else bench_train(args, pmap, sols)
    if not args.skip_score:
        results += bench_score(args, pmap, sols)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))


def bench_train(args: argparse.Namespace, pmap: dict, sols: list) -> list[dict]:
    """train_prm's tokens/s and peak memory vs the LoRA backbone alone on the same batches."""
    results = []
    rss_before = rss_mib()
    labels = [
        StepLabel(s.id, s.problem_id, k, len(s.steps), s.code[: st.end], 1, 0,
                  float(bool(s.meta.get("recorded_is_solved"))), 0)
        for s in sols for k, st in enumerate(s.steps)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(backbone=args.backbone, output_dir=str(Path(tmp) / "prm"), max_steps=args.train_steps, per_device_train_batch_size=4,
                          max_length=args.max_length, meta={"mode": "none"}, eval_each_epoch=False, val_fraction=0.0,
                          save_steps=10**6, num_train_epochs=1, gradient_checkpointing=args.grad_ckpt)
        out = train_prm(cfg, labels, problems=pmap, progress=False)
        log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if '"loss"' in x]
    rss_train = rss_mib()
    steady = log[1:] or log
    train_tps = sum(r["tokens"] for r in steady) / sum(r["seconds"] for r in steady)

    # baseline: the same batches through the LoRA backbone alone (fwd + bwd + AdamW), no head
    prm, tok = build_prm(args.backbone, lora_r=8, gradient_checkpointing=args.grad_ckpt)
    fmt = prm.attach_format(tok, args.max_length)
    ex = examples_from_labels(labels, fmt, pmap)
    batches = epoch_batches([len(e.input_ids) for e in ex], 4, 0, 0)[1 : args.train_steps]
    opt = torch.optim.AdamW([p for _, p in prm.backbone.named_parameters() if p.requires_grad], lr=2e-4)
    prm.train()
    tokens, secs = 0, 0.0
    for b in batches:
        batch = collate([ex[i] for i in b], prm.pad_id)
        t = time.perf_counter()
        mask = None if bool(batch.attention_mask.all()) else batch.attention_mask  # as hidden_states does
        h = prm.backbone(input_ids=batch.input_ids, attention_mask=mask, use_cache=False).last_hidden_state
        h.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        secs += time.perf_counter() - t
        tokens += batch.num_tokens
    print(f"# training: {len(steady)} steps timed (first step excluded), batch 4, max_length {args.max_length}, "
          f"gradient checkpointing {args.grad_ckpt}")
    results.append(row("train tokens/s (train_prm)", train_tps, "bare LoRA fwd+bwd+AdamW", tokens / secs, "tok/s"))
    results.append(row("peak RSS after training", rss_train, "RSS before loading", rss_before, "MiB",
                       "(process peak: model, optimizer, activations)"))
    return results


def bench_score(args: argparse.Namespace, pmap: dict, sols: list) -> list[dict]:
    """One-pass vs prefix-by-prefix scoring, and scoring vs a bare backbone forward."""
    results = []
    prm, tok = build_prm(args.backbone, lora_r=8)
    prm.attach_format(tok, args.max_length)
    prm.spec = {"backbone": args.backbone, "precision": "fp32"}
    with tempfile.TemporaryDirectory() as tmp:
        save_prm(prm, Path(tmp) / "ckpt")  # scoring runs on a saved LoRA checkpoint, loaded merged
        del prm
        model = load_prm(Path(tmp) / "ckpt")
    one = examples_from_solutions(sols, model.prompt_format, pmap)
    pre = prefix_examples(model, pmap, sols)
    tok_one = sum(len(e.input_ids) for e in one)
    tok_pre = sum(len(e.input_ids) for e in pre)
    ceiling = tok_pre / tok_one
    score_examples(model, one[:1])  # warm-up
    # steps whose one-pass view starts at the first code token: there, one pass must equal prefixes
    whole = {s.id for s in sols if all(v.code_start == 0 for v in model.prompt_format.encode_solution(
        pmap.get(s.problem_id), s.code, s.steps))}
    bare_batches = [collate([one[i] for i in idx], model.pad_id)
                    for idx in token_batches([len(e.input_ids) for e in one], args.batch_tokens)]

    @torch.inference_mode()
    def bare() -> None:
        for b in bare_batches:
            mask = None if bool(b.attention_mask.all()) else b.attention_mask  # as hidden_states does
            model.backbone(input_ids=b.input_ids, attention_mask=mask, use_cache=False)

    sides = {
        "one": lambda: score_examples(model, one, batch_tokens=args.batch_tokens),
        "prefix": lambda: score_examples(model, pre, batch_tokens=args.batch_tokens),
        "bare": bare,
    }
    if args.skip_prefix:
        del sides["prefix"]
    t, last = interleaved(sides, args.reps)
    if args.skip_prefix:
        results.append(row("scoring tokens/s (score_examples)", tok_one / t["one"], "bare backbone forward",
                           tok_one / t["bare"], "tok/s", "(target >= 0.9)"))
        return results
    flat_one = {(e.solution_id, k): p for e, ps in zip(one, last["one"], strict=True)
                for k, p in zip(e.step_index, ps, strict=True)}
    flat_pre = {(e.solution_id, e.step_index[0]): ps[0] for e, ps in zip(pre, last["prefix"], strict=True)}
    max_diff = max((abs(flat_one[k] - flat_pre[k]) for k in flat_pre if k[0] in whole), default=float("nan"))
    speedup = t["prefix"] / t["one"]
    print(f"# tokens: one-pass {tok_one}, prefix-by-prefix {tok_pre}; token-ratio ceiling {ceiling:.2f}x; "
          f"max |one-pass - prefix| score difference {max_diff:.2e} over the {len(whole)} candidates that fit "
          f"max_length {args.max_length} in one view; {args.reps} interleaved reps, median")
    results.append(row("one-pass scoring s", t["one"], "prefix-by-prefix s", t["prefix"], "s"))
    results.append(row("one-pass speed-up x", speedup, "token-ratio ceiling x", ceiling, "x", "(target >= 0.8)"))
    results.append(row("scoring tokens/s (score_examples)", tok_one / t["one"], "bare backbone forward", tok_one / t["bare"],
                       "tok/s", "(target >= 0.9)"))
    return results


if __name__ == "__main__":
    main()
