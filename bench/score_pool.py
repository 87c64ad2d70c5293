"""Scoring at pool scale: every candidate of the HumanEval MapCoder pool with the CPU backbone.

Ours: ``score_solutions`` as ``dreamprm-code score`` runs it (LoRA merged at load; one pass per
distinct candidate; each problem's statement header run once and its key/value cache shared by
its candidates; length-bucketed batches). Baseline, same run: a bare fp32 forward pass of the
same model over the same candidates' full sequences in length-bucketed batches (what scoring did
before), on a seeded sample of ``--baseline-problems`` problems (the whole pool takes ~40 min
that way); ours runs on that sample too, for the ratio, then on the whole pool for the figure.
Agreement: the largest difference of a step score between the two. ``--int8`` adds
``torch.ao`` dynamic int8 quantisation of the linear layers and its agreement (rejected as a
default: see docs/benchmarks.md).

    python bench/score_pool.py [--prm CHECKPOINT] [--baseline-problems 16] [--int8] [--threads 2]

Without ``--prm``, the model is the default backbone with a fresh LoRA adapter (r 8, B
initialised non-zero so it takes part) merged, and a head scaled so that logits spread like a
trained head's (std 2); with ``--prm``, a trained checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import random
import time

import torch
from torch import nn

from dreamprm_code.data import data_path, load_problems, load_solutions
from dreamprm_code.prm.checkpoint import load_prm
from dreamprm_code.prm.data import collate, examples_from_solutions, token_batches
from dreamprm_code.prm.model import build_prm, step_feature_batches
from dreamprm_code.prm.score import score_examples

BACKBONE = "embedded:smollm2-135m-instruct"


def fresh_model(max_length: int):
    prm, tok = build_prm(BACKBONE, lora_r=8)
    with torch.no_grad():
        for name, p in prm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    prm.backbone = prm.backbone.merge_and_unload()  # as load_prm does
    prm.attach_format(tok, max_length)
    return prm.eval()


@torch.inference_mode()
def spread_head(prm, examples, seed: int) -> None:
    """A random head direction, scaled and centred so that logits have std 2 on these examples
    (a random unscaled head saturates the sigmoid and would hide score differences)."""
    feats = torch.cat([f for _, f, _ in step_feature_batches(prm, examples)])
    w = torch.randn(feats.shape[1], generator=torch.Generator().manual_seed(seed))
    z = feats @ w
    linear = prm.head.net
    linear.weight.copy_((w * 2 / z.std())[None])
    linear.bias.fill_(float(-z.mean() * 2 / z.std()))


@torch.inference_mode()
def bare_forward(prm, examples, batch_tokens: int) -> list[list[float]]:
    """The baseline: full sequences, length-bucketed, one forward pass per batch."""
    out: list[list[float]] = [[] for _ in examples]
    for idx in token_batches([len(e.input_ids) for e in examples], batch_tokens):
        batch = collate([examples[i] for i in idx], prm.pad_id)
        probs = torch.sigmoid(prm.step_logits(batch)).tolist()
        pos = 0
        for i in idx:
            n = len(examples[i].step_token_index)
            out[i] = probs[pos : pos + n]
            pos += n
    return out


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for u, v in zip(a, b, strict=True) for x, y in zip(u, v, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prm", help="a trained checkpoint (default: the backbone with a fresh merged adapter)")
    ap.add_argument("--baseline-problems", type=int, default=16)
    ap.add_argument("--batch-tokens", type=int, default=16384)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    prm = load_prm(args.prm) if args.prm else fresh_model(args.max_length)
    problems = load_problems("humaneval")
    pmap = {p.id: p for p in problems}
    solutions = [s for s in load_solutions(data_path("pools", "humaneval-mapcoder"), problems) if s.code.strip()]
    examples = examples_from_solutions(solutions, prm.prompt_format, pmap)
    sample = set(random.Random(args.seed).sample(sorted(pmap), args.baseline_problems))
    part = [e for e in examples if e.problem_id in sample]
    if not args.prm:
        spread_head(prm, part[:24], args.seed)
    tokens_all = sum(len(e.input_ids) for e in examples)
    tokens_part = sum(len(e.input_ids) for e in part)
    print(f"# score_pool: {len(solutions)} non-empty candidates of {len(pmap)} HumanEval problems, "
          f"{tokens_all:,} tokens; sample {len(sample)} problems, {len(part)} candidates, {tokens_part:,} tokens; "
          f"{args.threads} threads; model: {args.prm or 'default backbone + fresh merged LoRA'}", flush=True)

    score_examples(prm, part[:2])  # warm-up
    t = time.perf_counter()
    base = bare_forward(prm, part, args.batch_tokens)
    t_base = time.perf_counter() - t
    t = time.perf_counter()
    ours = score_examples(prm, part, batch_tokens=args.batch_tokens)
    t_ours = time.perf_counter() - t
    print(f"sample: ours {t_ours:7.1f} s ({tokens_part / t_ours:6.0f} tok/s)   bare fp32 forward {t_base:7.1f} s "
          f"({tokens_part / t_base:6.0f} tok/s)   ratio {t_base / t_ours:5.2f}x   max |score diff| "
          f"{max_diff(ours, base):.1e}", flush=True)
    if args.int8:
        q = copy.copy(prm)
        q.backbone = torch.ao.quantization.quantize_dynamic(copy.deepcopy(prm.backbone), {nn.Linear},
                                                            dtype=torch.qint8)
        t = time.perf_counter()
        quant = score_examples(q, part, batch_tokens=args.batch_tokens)
        t_q = time.perf_counter() - t
        diffs = sorted(abs(x - y) for u, v in zip(quant, base, strict=True) for x, y in zip(u, v, strict=True))
        print(f"sample: ours + int8 {t_q:7.1f} s   ratio to bare {t_base / t_q:5.2f}x   |score diff| "
              f"max {diffs[-1]:.2e}, median {diffs[len(diffs) // 2]:.2e}", flush=True)
    t = time.perf_counter()
    score_examples(prm, examples, batch_tokens=args.batch_tokens)
    t_all = time.perf_counter() - t
    print(f"whole pool: ours {t_all / 60:6.1f} min for {len(solutions)} candidates ({tokens_all / t_all:6.0f} tok/s); "
          f"bare fp32 forward at the sample's rate: {tokens_all / (tokens_part / t_base) / 60:6.1f} min (estimate)")


if __name__ == "__main__":
    main()
