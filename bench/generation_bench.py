"""Generation benchmarks for the policy stage.

``throughput``: tokens/s of ``HFPolicy.generate`` (prompts batched, each prompt's KV cache
computed once and copied to its samples, per-prompt seeded sampling) against a bare
``model.generate`` with ``num_return_sequences`` on the same batch, and against bare
``model.generate`` one prompt per call (how the backend ran seeded prompts before); rounds
alternate and the medians are compared. Target: backend >= 80% of bare on the same batch.

``dtype``: bare ``model.generate`` tokens/s in float32 against bfloat16 on this CPU (why the
backend's CPU default is what it is).

``quantize``: the generate stage with the fp32 policy against int8 dynamic quantization
(``quantize="int8"``, the embedded default on CPU) on the first K HumanEval problems, greedy:
tokens/s and pass count of each.

``cof-vs-plain``: the embedded policy on the first K HumanEval problems and the first K Easy
LeetCode problems, N samples each, with the CoF prompt and with the plain prompt, through the
real ``generate`` stage with ``code_prefill`` (resumable: rerun to continue; ``--budget-min 0``
only summarises). Reports tokens/s, pass rate and CoF compliance (share of replies with >= 2
function steps), plain as the baseline.

Examples::

    python bench/generation_bench.py throughput --prompts 8 --n 2 --max-new-tokens 64 --rounds 2
    python bench/generation_bench.py dtype --n 4 --max-new-tokens 16 --threads 1
    python bench/generation_bench.py quantize --prompts 16 --max-new-tokens 160
    python bench/generation_bench.py cof-vs-plain --humaneval 20 --leetcode 20 --n 4 --out bench/out/cof
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _count(ids: list[int], eos: set[int], pad: int) -> int:
    for k, t in enumerate(ids):
        if t in eos or t == pad:
            return k + (t in eos)
    return len(ids)


def _prompt_text(policy, style: str = "cof"):
    from dreamprm_code.cof import build_prompt
    from dreamprm_code.data import load_problems

    problem = load_problems("humaneval")[0]
    return build_prompt(problem, style)


def _sync() -> None:
    """Wait for queued GPU work, so that a timer reads what it measures (no-op on a CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def throughput(args: argparse.Namespace) -> None:
    import torch

    from dreamprm_code.cof import build_prompt
    from dreamprm_code.data import load_problems
    from dreamprm_code.policy import SamplingParams
    from dreamprm_code.policy.hf import HFPolicy

    pol = HFPolicy(args.policy, threads=args.threads, dtype=args.dtype, batch_size=args.prompts * args.n)
    prompts = [build_prompt(p, "cof", open_fence=True) for p in load_problems("humaneval")[: args.prompts]]
    for i, pr in enumerate(prompts):
        pr.seed = 1000 + i
    sampling = SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=args.max_new_tokens)
    texts = [pol.render(pr) for pr in prompts]
    eos, pad = set(pol.eos_ids), pol.pad_id
    print(f"model {pol.name} dtype {pol.model.dtype} threads {torch.get_num_threads()}, {args.prompts} HumanEval "
          f"CoF prompts of {[len(pol.tokenizer(t)['input_ids']) for t in texts]} tokens, n={args.n}, "
          f"max_new_tokens={args.max_new_tokens}")

    def bare(batch: list[str]) -> tuple[float, int]:
        """``model.generate`` with ``num_return_sequences``: what the backend did before (one prompt per call)."""
        enc = pol.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(pol.device)
        _sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            seqs = pol.model.generate(
                **enc, do_sample=True, temperature=0.7, top_p=0.95, top_k=0, num_return_sequences=args.n,
                max_new_tokens=args.max_new_tokens, pad_token_id=pad, eos_token_id=sorted(eos),
            )
        _sync()
        dt = time.perf_counter() - t0
        return dt, sum(_count(g, eos, pad) for g in seqs[:, enc["input_ids"].shape[1]:].tolist())

    def per_prompt() -> tuple[float, int]:
        runs = [bare([t]) for t in texts]
        return sum(r[0] for r in runs), sum(r[1] for r in runs)

    def backend() -> tuple[float, int]:
        _sync()
        t0 = time.perf_counter()
        out = pol.generate(prompts, args.n, sampling)
        _sync()
        return time.perf_counter() - t0, sum(c.completion_tokens for cs in out for c in cs)

    runs = [("backend", backend), ("bare-batched", lambda: bare(texts)), ("bare-per-prompt", per_prompt)]
    if args.skip_per_prompt:
        runs.pop()
    rates: dict[str, list[float]] = {name: [] for name, _ in runs}
    if args.warmup:  # first calls pay for kernel selection and allocator growth (seconds on a GPU)
        backend()
        bare(texts)
    for r in range(args.rounds):
        for name, fn in runs:
            torch.manual_seed(r)
            dt, tok = fn()
            rates[name].append(tok / dt)
            print(f"round {r}: {name} {tok} tok in {dt:.1f}s = {tok / dt:.2f} tok/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    med.setdefault("bare-per-prompt", float("nan"))
    print(f"RESULT throughput ({pol.name}, {args.prompts} prompts x n={args.n}, {args.rounds} rounds, medians): "
          f"backend {med['backend']:.2f} tok/s; bare model.generate on the same batch {med['bare-batched']:.2f} "
          f"(ratio {med['backend'] / med['bare-batched']:.2f}, target >= 0.8); bare one prompt per call "
          f"{med['bare-per-prompt']:.2f} (ratio {med['backend'] / med['bare-per-prompt']:.2f})")


def quantize_compare(args: argparse.Namespace) -> None:
    """fp32 against int8 dynamic quantization: tokens/s and greedy pass count on the same prompts."""
    import torch

    from dreamprm_code.data import load_problems
    from dreamprm_code.generate.solutions import generate_solutions
    from dreamprm_code.policy import SamplingParams
    from dreamprm_code.policy.hf import HFPolicy

    problems = load_problems("humaneval")[: args.prompts]
    out = Path(args.out) / "quantize"
    out.mkdir(parents=True, exist_ok=True)
    sampling = SamplingParams(temperature=0, max_new_tokens=args.max_new_tokens, seed=0)
    rates = {}
    for scheme in ("int8", "fp32"):
        pol = HFPolicy(args.policy, threads=args.threads, quantize=None if scheme == "fp32" else scheme,
                       batch_size=args.prompts)
        path = out / f"{scheme}.jsonl"
        path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        sols = generate_solutions(problems, pol, 1, sampling, "cof", path, code_prefill=True, show_progress=False)
        dt = time.perf_counter() - t0
        tokens = sum(s.tokens["completion"] for s in sols)
        rates[scheme] = tokens / dt
        print(f"{scheme}: {tokens} tokens in {dt:.1f}s = {tokens / dt:.1f} tok/s (threads {torch.get_num_threads()}), "
              f"greedy pass {sum(s.passed for s in sols)}/{len(sols)}", flush=True)
        del pol
    print(f"RESULT quantize ({args.prompts} HumanEval prompts, greedy, {args.max_new_tokens} new tokens, "
          f"generation + execution): int8 {rates['int8']:.1f} tok/s vs fp32 {rates['fp32']:.1f} tok/s: "
          f"ratio {rates['int8'] / rates['fp32']:.2f}")


def dtype_sweep(args: argparse.Namespace) -> None:
    import torch

    from dreamprm_code.policy.hf import HFPolicy

    rates = {}
    for dt_name in ("float32", "bfloat16"):
        pol = HFPolicy(args.policy, threads=args.threads, dtype=dt_name)
        text = pol.render(_prompt_text(pol))
        enc = pol.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        got = []
        for _ in range(args.rounds):
            torch.manual_seed(0)
            t0 = time.perf_counter()
            with torch.inference_mode():
                pol.model.generate(**enc, do_sample=True, temperature=0.7, top_k=0, num_return_sequences=args.n,
                                   max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens,
                                   pad_token_id=pol.pad_id)
            got.append(args.n * args.max_new_tokens / (time.perf_counter() - t0))
            print(f"{dt_name}: {got[-1]:.2f} tok/s", flush=True)
        rates[dt_name] = statistics.median(got)
        del pol
    print(f"RESULT dtype: bfloat16 {rates['bfloat16']:.2f} tok/s vs float32 {rates['float32']:.2f} tok/s: "
          f"ratio {rates['bfloat16'] / rates['float32']:.2f} (n={args.n}, {args.max_new_tokens} new tokens, "
          f"threads {args.threads})")


class TimedPolicy:
    """Counts the wrapped policy's generation time and tokens (execution time excluded)."""

    def __init__(self, policy):
        self.inner, self.name = policy, policy.name
        self.seconds, self.tokens = 0.0, 0

    def generate(self, prompts, n, sampling):
        t0 = time.perf_counter()
        out = self.inner.generate(prompts, n, sampling)
        self.seconds += time.perf_counter() - t0
        self.tokens += sum(c.completion_tokens for cs in out for c in cs)
        return out


def cof_vs_plain(args: argparse.Namespace) -> None:
    from dreamprm_code.data import data_path, load_problems
    from dreamprm_code.execution import Executor, Limits
    from dreamprm_code.generate.solutions import generate_solutions
    from dreamprm_code.io import atomic_write_json, read_jsonl
    from dreamprm_code.policy import SamplingParams, load_policy

    he = load_problems("humaneval")[: args.humaneval]
    lc_path = args.leetcode_path or data_path("leetcode-180", "problems.jsonl")
    lc = [p for p in load_problems(f"leetcode:{lc_path}") if p.difficulty == "easy"][: args.leetcode]
    problems = [p for pair in zip(he, lc, strict=False) for p in pair] + he[len(lc):] + lc[len(he):]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pol = None  # loaded on first use, so a rerun with --budget-min 0 only summarises
    sampling = SamplingParams(temperature=args.temperature, top_p=0.95, max_new_tokens=args.max_new_tokens,
                              seed=args.seed)
    timing_file = out / "timing.json"
    timing = {"cof": [0.0, 0], "plain": [0.0, 0]}
    if timing_file.exists():
        import json

        timing = json.loads(timing_file.read_text())
    print(f"{len(problems)} problems ({len(he)} HumanEval, {len(lc)} LeetCode easy), n={args.n}, "
          f"max_new_tokens={args.max_new_tokens}, temperature={args.temperature}, threads={args.threads}", flush=True)
    with Executor(limits=Limits(timeout=6), workers=2) as ex:
        for style in ("cof", "plain"):
            if args.budget_min <= 0:
                break
            if pol is None:
                opts = {"threads": args.threads, "dtype": args.dtype}
                if args.quantize:
                    opts["quantize"] = args.quantize
                pol = TimedPolicy(load_policy(args.policy, **opts))  # embedded: int8 on a CPU, as users get it
            pol.seconds, pol.tokens = 0.0, 0
            sols = generate_solutions(problems, pol, args.n, sampling, style, out / f"{style}.jsonl", executor=ex,
                                      code_prefill=True, show_progress=True)
            timing[style][0] += pol.seconds
            timing[style][1] += pol.tokens
            atomic_write_json(timing_file, timing)
            print(f"{style}: {sum(s.passed for s in sols)}/{len(sols)} pass, "
                  f"{pol.tokens} new tokens in {pol.seconds:.0f}s", flush=True)

    recs = {s: {r["id"]: r for r in read_jsonl(out / f"{s}.jsonl")} for s in ("cof", "plain")}
    both = sorted({r["problem_id"] for r in recs["cof"].values()} & {r["problem_id"] for r in recs["plain"].values()})
    stats = {}
    for style in ("cof", "plain"):
        rs = [r for r in recs[style].values() if r["problem_id"] in both]
        funcs = [sum(1 for s in (r["steps"] or []) if s["kind"] in ("function", "method")) for r in rs]
        secs, toks = timing[style]
        stats[style] = {
            "samples": len(rs),
            "pass": sum(r["verdict"] == "pass" for r in rs) / max(1, len(rs)),
            "cof": sum(f >= 2 for f in funcs) / max(1, len(rs)),
            "tokens": sum(r["tokens"]["completion"] for r in rs) / max(1, len(rs)),
            "tok_s": toks / secs if secs else 0.0,
        }
    c, b = stats["cof"], stats["plain"]
    print(f"RESULT cof-vs-plain on {len(both)} problems ({', '.join(both)}), {c['samples']} samples per style:")
    for key, label in (("tok_s", "tokens/s"), ("pass", "pass rate"), ("cof", "CoF compliance (>=2 functions)"),
                       ("tokens", "completion tokens/sample")):
        ratio = f"{c[key] / b[key]:.2f}" if b[key] else "n/a"
        print(f"  {label}: CoF {c[key]:.3g} vs plain {b[key]:.3g} (ratio {ratio})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("throughput", "dtype", "cof-vs-plain", "quantize"))
    ap.add_argument("--policy", default="embedded")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--quantize", default=None, help="cof-vs-plain: int8 | none (default: the backend's own)")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=8, help="throughput: HumanEval prompts per batch")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", action="store_true", help="throughput: one untimed round first (use on a GPU)")
    ap.add_argument("--skip-per-prompt", action="store_true", help="throughput: leave out the one-prompt-per-call baseline")
    ap.add_argument("--humaneval", type=int, default=20)
    ap.add_argument("--leetcode", type=int, default=20)
    ap.add_argument("--leetcode-path", default=None, help="default: leetcode-180/problems.jsonl of $DREAMPRM_DATA")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-min", type=float, default=1e9)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "cof-vs-plain"))
    args = ap.parse_args()
    {"throughput": throughput, "dtype": dtype_sweep, "cof-vs-plain": cof_vs_plain, "quantize": quantize_compare}[
        args.what
    ](args)


if __name__ == "__main__":
    sys.exit(main())
