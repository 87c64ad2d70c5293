"""Label correction: what it costs per inner step, and whether it corrects noisy labels.

``cost``: wall time and peak memory per training step with ``labels`` vs ``none`` (the baseline),
in the same run, on SmolLM2-135M + LoRA (the embedded CPU PRM backbone) with real candidate
solutions from ``../shared/data/pools/apps-mapcoder`` as inputs. Each mode runs in its own
subprocess so that peak RSS is its own. Prints the outer step's cost and the smallest M
(outer step every M inner steps) that keeps the overhead within 1.5x time, and three memory
figures: the whole process's peak RSS (``none`` process vs ``labels`` process), the peak RSS of
each step in the ``labels`` process (VmHWM reset before every inner and outer step: inner steps
alone are what a ``none`` run does, so their peak is the baseline in the same process), and with
``--live`` the peak bytes of live tensors created during each step (no allocator slack; slows
every op, so a ``--live`` run's times are not comparable). ``--micro-batch 0`` runs the outer
step on whole batches (the behaviour before micro-batching).

``correct``: a controlled experiment on a tiny random backbone: sequences whose class is set by
their last token, a known share of training labels flipped, a meta set of other sequences with
true verdicts, a held-out test set. Per mode (``labels``, ``weights``, ``none``) and seed: MAE of
the training labels against the truth before/after, mean weight of flipped vs clean examples,
and held-out AUC; mean and 95% t-interval over seeds.

    python bench/meta_bench.py cost --steps 8 --every 4
    python bench/meta_bench.py correct --seeds 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny_models lives with the tests

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


# --- cost ----------------------------------------------------------------------------------
def _status_mb(key: str) -> float:
    """A ``/proc/self/status`` figure (VmRSS, VmHWM) in MB; NaN where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so that the next peak is one step's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _LiveTensorPeak:
    """Peak bytes of tensor storages created inside the ``with`` block and still alive.

    A ``TorchDispatchMode`` sees every op's outputs (backward included: CPU autograd runs on this
    thread); storages that already existed (parameters, optimizer state) and views of them are
    not counted. What it measures is what any allocator must hold at least, free of malloc slack.
    Adds Python overhead to every op: times taken under it are not reported.
    """

    def __init__(self, known: set[int]) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        outer = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                out = func(*args, **(kwargs or {}))
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor):
                        outer._see(t)
                return out

        self._mode = _Mode()
        self.known = known
        self.live = 0
        self.peak = 0
        self._alive: dict[int, int] = {}
        self._refs: list = []

    def _see(self, t: torch.Tensor) -> None:
        import weakref

        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr in self.known or ptr in self._alive or st.nbytes() == 0:
            return
        self._alive[ptr] = st.nbytes()
        self.live += st.nbytes()
        self.peak = max(self.peak, self.live)
        self._refs.append(weakref.ref(st, lambda _r, p=ptr: self._free(p)))

    def _free(self, ptr: int) -> None:
        self.live -= self._alive.pop(ptr, 0)

    def __enter__(self) -> _LiveTensorPeak:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)


def _real_examples(n: int, max_length: int, fmt):
    """Training-like examples from real pool candidates (steps from cof), targets = verdict."""
    from dreamprm_code.data import load_problems, load_solutions, recorded_verdict
    from dreamprm_code.prm.data import examples_from_solutions

    problems = {p.id: p for p in load_problems(f"apps:{DATA / 'apps-150' / 'problems.jsonl'}")}
    sols = load_solutions(DATA / "pools" / "apps-mapcoder", problems.values())
    rng = random.Random(0)
    rng.shuffle(sols)
    for s in sols:  # the pools' recorded outcome (the bench needs inputs, not exact verdicts)
        s.verdict = s.verdict or recorded_verdict(s)
    sols = [s for s in sols if s.verdict is not None and s.code.strip()][: 2 * n]
    train = examples_from_solutions(sols[:n], fmt, problems, with_verdicts=True)
    meta = examples_from_solutions(sols[n:], fmt, problems, final_only=True, with_verdicts=True)
    lid = 0
    for ex in train:
        final = ex.targets[-1] if ex.is_final[-1] else 0.0
        ex.targets = [final if math.isnan(t) else t for t in ex.targets]
        ex.label_ids = list(range(lid, lid + len(ex.targets)))
        lid += len(ex.targets)
    return train, meta, lid


def _cost_worker(mode: str, args: dict, queue) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(args["threads"])
    from dreamprm_code.meta import make_correction
    from dreamprm_code.prm.data import collate
    from dreamprm_code.prm.model import build_prm
    from dreamprm_code.prm.train import meta_logits, step_loss

    prm, tok = build_prm(args["backbone"], lora_r=8, precision=args["precision"])
    fmt = prm.attach_format(tok, args["max_length"])
    train, meta, n_labels = _real_examples(args["batch"] * args["steps"] + 8, args["max_length"], fmt)
    init = torch.rand(n_labels)
    # labels mode: two corrections on the same model, one per JVP method, timed at the same steps
    methods = tuple(args["methods"].split(",")) if mode != "none" else ()
    corrs = {
        m: make_correction(
            mode,
            init,
            {"every": args["every"], "meta_lr": 0.1, "jvp": m, "micro_batch": args["micro_batch"]},
            meta_fn=meta_logits,
        )
        for m in methods
    }
    plain = make_correction("none", init)
    params = [p for _, p in prm.trainable_parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    inner, tokens, inner_hwm, inner_live = [], [], [], []
    outer: dict[str, list[float]] = {m: [] for m in methods}
    outer_hwm: dict[str, list[float]] = {m: [] for m in methods}
    outer_live: dict[str, list[float]] = {m: [] for m in methods}
    known = {p.untyped_storage().data_ptr() for p in prm.parameters()}
    known |= {b.untyped_storage().data_ptr() for b in prm.buffers()}

    def live() -> _LiveTensorPeak | contextlib.nullcontext:
        return _LiveTensorPeak(known) if args["live"] else contextlib.nullcontext()

    prm.train()
    rss_start = _status_mb("VmRSS")
    for step in range(1, args["steps"] + 1):
        batch = collate(train[(step - 1) * args["batch"] : step * args["batch"]], prm.pad_id)
        lo = (step - 1) * args["meta_batch"] % max(1, len(meta) - args["meta_batch"])
        mbatch = collate(meta[lo : lo + args["meta_batch"]], prm.pad_id)
        _reset_peak_rss()
        t0 = time.perf_counter()
        with live() as tracker:
            targets, weights = (next(iter(corrs.values())) if corrs else plain).targets(batch)
            loss = step_loss(prm.step_logits(batch), targets, weights, "bce")
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            del loss
        inner.append(time.perf_counter() - t0)
        inner_hwm.append(_status_mb("VmHWM"))
        inner_live.append(tracker.peak / 2**20 if tracker else float("nan"))
        known |= {s["exp_avg"].untyped_storage().data_ptr() for s in opt.state.values() if "exp_avg" in s}
        known |= {
            s["exp_avg_sq"].untyped_storage().data_ptr() for s in opt.state.values() if "exp_avg_sq" in s
        }
        tokens.append(batch.num_tokens)
        if step % args["every"] == 0:
            for m, corr in corrs.items():
                _reset_peak_rss()
                t1 = time.perf_counter()
                with live() as tracker:
                    log = corr.outer_step(prm, batch, mbatch, inner_lr=1e-3)
                outer[m].append(time.perf_counter() - t1)
                outer_hwm[m].append(_status_mb("VmHWM"))
                outer_live[m].append(tracker.peak / 2**20 if tracker else float("nan"))
                assert log["jvp_method"] == m
    queue.put(
        {
            "mode": mode,
            "inner_s": inner,
            "outer_s": outer,
            "tokens": tokens,
            "rss_before_steps_mb": rss_start,
            "inner_peak_rss_mb": inner_hwm,
            "outer_peak_rss_mb": outer_hwm,
            "inner_live_mb": inner_live,
            "outer_live_mb": outer_live,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def bench_cost(args: argparse.Namespace) -> dict:
    ctx = mp.get_context("spawn")
    res = {}
    opts = {
        k: getattr(args, k)
        for k in (
            "backbone",
            "precision",
            "max_length",
            "batch",
            "meta_batch",
            "steps",
            "every",
            "threads",
            "methods",
            "micro_batch",
            "live",
        )
    }
    for mode in ("none", "labels"):
        q = ctx.Queue()
        p = ctx.Process(target=_cost_worker, args=(mode, opts, q))
        p.start()
        try:
            res[mode] = q.get(timeout=1800)
        finally:
            p.join(timeout=60)
        if p.exitcode not in (0, None):
            raise SystemExit(f"{mode} worker failed with exit code {p.exitcode}")
    base, lab = res["none"], res["labels"]
    # the first step warms up allocators and kernels; leave it out. Time ratios use the inner and
    # outer steps of the SAME process, interleaved, so both see the same load on a shared machine.
    t_inner = statistics.mean(lab["inner_s"][1:])
    t_none = statistics.mean(base["inner_s"][1:])
    ratio_mem = lab["peak_rss_mb"] / base["peak_rss_mb"]
    print(
        f"backbone {args.backbone} LoRA r=8 {args.precision}; batch {args.batch} seqs <= {args.max_length} tok, "
        f"meta batch {args.meta_batch} (final steps); {args.steps} steps, outer every M={args.every}, {args.threads} thread(s)"
    )
    print(f"tokens per batch (mean): {statistics.mean(base['tokens']):.0f}")
    print(
        f"inner step (baseline, labels process): {t_inner:.3f} s   (none process: {t_none:.3f} s, other load)"
    )
    m_min = {}
    for m, ts in lab["outer_s"].items():
        t_outer = statistics.mean(ts)
        per = t_inner + t_outer / args.every
        m_min[m] = math.ceil(t_outer / (0.5 * t_inner))
        print(
            f"outer step, JVP {m:7s}: {t_outer:.3f} s = {t_outer / t_inner:.2f} inner steps; per inner step at "
            f"M={args.every}: {per:.3f} s vs {t_inner:.3f} s  ratio {per / t_inner:.2f}x (target <= 1.5x); "
            f"smallest M for 1.5x: {m_min[m]}"
        )
    print(
        f"peak RSS of the whole process (JVP {args.methods} in the labels process): labels "
        f"{lab['peak_rss_mb']:.0f} MB vs none {base['peak_rss_mb']:.0f} MB  ratio {ratio_mem:.2f}x (target <= 1.2x)"
    )
    inner_peak = max(lab["inner_peak_rss_mb"])
    res = {"none": base, "labels": lab, "ratio_mem": ratio_mem, "m_min": m_min}
    for m, peaks in lab["outer_peak_rss_mb"].items():
        step_peak = max([inner_peak, *peaks])
        print(
            f"peak RSS per step, labels process (RSS before the first step {lab['rss_before_steps_mb']:.0f} MB): "
            f"inner steps {inner_peak:.0f} MB, outer steps (JVP {m}) {max(peaks):.0f} MB; "
            f"with labels {step_peak:.0f} vs none (its inner steps) {inner_peak:.0f} MB = {step_peak / inner_peak:.2f}x"
        )
        res[f"ratio_step_rss_{m}"] = step_peak / inner_peak
    if args.live:
        inner_live = max(lab["inner_live_mb"])
        for m, peaks in lab["outer_live_mb"].items():
            print(
                f"live-tensor peak of the step (new storages, no malloc slack): inner {inner_live:.0f} MB, "
                f"outer (JVP {m}) {max(peaks):.0f} MB = {max(peaks) / inner_live:.2f}x of the inner step's"
            )
    return res


# --- correct -------------------------------------------------------------------------------
def _toy(rng: random.Random, n: int, vocab: int, first_id: int, learnable: bool):
    from dreamprm_code.prm.data import Example

    out, truth = [], []
    for s in range(n):
        positive = rng.random() < 0.5
        ids = [rng.randrange(20, vocab) for _ in range(10)]
        ids[-1] = rng.choice((5, 6, 7, 8) if positive else (9, 10, 11, 12))
        truth.append(float(positive))
        lid = first_id + s if learnable else -1
        out.append(
            Example(ids, [9], [0], [float(positive)], [lid], [True], f"s{first_id + s}#0", f"p{first_id + s}")
        )
    return out, truth


def _auc(scores: list[float], labels: list[float]) -> float:
    from dreamprm_code.prm.train import step_auc

    return step_auc(scores, [y > 0.5 for y in labels])


def _one_run(mode: str, seed: int, args: argparse.Namespace, tok) -> dict:
    from dreamprm_code.meta import make_correction
    from dreamprm_code.prm.data import collate
    from dreamprm_code.prm.model import wrap_backbone
    from tiny_models import tiny_backbone

    rng = random.Random(seed)
    vocab = len(tok)
    train, truth = _toy(rng, args.n_train, vocab, 0, True)
    meta, _ = _toy(rng, args.n_meta, vocab, 10_000, False)
    test, test_truth = _toy(rng, args.n_test, vocab, 20_000, False)
    flipped = set(rng.sample(range(len(train)), int(args.noise * len(train))))
    noisy = [1.0 - y if i in flipped else y for i, y in enumerate(truth)]
    for i, ex in enumerate(train):
        ex.targets = [noisy[i]]
    torch.manual_seed(seed)
    prm, _ = wrap_backbone(tiny_backbone(tok, hidden_size=32, layers=2, seed=seed), tok, lora_r=0)
    opt = torch.optim.Adam([p for p in prm.parameters() if p.requires_grad], lr=args.lr)
    corr = make_correction(
        mode, torch.tensor(noisy), {"meta_lr": args.meta_lr, "every": args.every, "seed": seed}
    )
    mb = collate(meta, 0)
    step = 0
    for epoch in range(args.epochs):
        order = list(range(len(train)))
        random.Random(seed * 1000 + epoch).shuffle(order)
        for b in range(0, len(order), args.batch):
            batch = collate([train[i] for i in order[b : b + args.batch]], 0)
            prm.train()
            loss = corr.train_loss(prm.step_logits(batch), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            opt.zero_grad()
            step += 1
            if corr.should_step(step):
                corr.outer_step(prm, batch, mb, inner_lr=args.inner_lr)
    prm.eval()
    with torch.no_grad():
        scores = prm.step_logits(collate(test, 0)).tolist()
    after = corr.corrected_labels()
    w = corr.sample_weights()
    fl = sorted(flipped)
    cl = [i for i in range(len(train)) if i not in flipped]
    return {
        "mae_before": statistics.mean(abs(a - b) for a, b in zip(noisy, truth, strict=True)),
        "mae_after": statistics.mean(abs(a - b) for a, b in zip(after, truth, strict=True)),
        "mae_flipped_after": statistics.mean(abs(after[i] - truth[i]) for i in fl),
        "mae_clean_after": statistics.mean(abs(after[i] - truth[i]) for i in cl),
        "weight_flipped": statistics.mean(w[i] for i in fl),
        "weight_clean": statistics.mean(w[i] for i in cl),
        "test_auc": _auc(scores, test_truth),
        "outer_steps": corr.outer_steps,
    }


def _ci(xs: list[float]) -> str:
    n = len(xs)
    m = statistics.mean(xs)
    if n < 2:
        return f"{m:.3f}"
    t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}.get(n, 2.0)
    h = t * statistics.stdev(xs) / math.sqrt(n)
    return f"{m:.3f} [{m - h:.3f}, {m + h:.3f}]"


def bench_correct(args: argparse.Namespace) -> dict:
    from tiny_models import tiny_tokenizer

    torch.set_num_threads(args.threads)
    tok = tiny_tokenizer()
    results: dict[str, list[dict]] = {m: [] for m in ("none", "weights", "labels")}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        for mode in results:
            results[mode].append(_one_run(mode, seed, args, tok))
    print(
        f"toy: {args.n_train} train / {args.n_meta} meta / {args.n_test} test sequences, {args.noise:.0%} of train labels flipped, "
        f"{args.epochs} epochs of batch {args.batch}, outer step every {args.every}, meta_lr {args.meta_lr}, inner_lr {args.inner_lr}; "
        f"{args.seeds} seeds, tiny Qwen2 (32 hidden, 2 layers); {time.perf_counter() - t0:.0f} s"
    )
    keys = [
        "mae_before",
        "mae_after",
        "mae_flipped_after",
        "mae_clean_after",
        "weight_flipped",
        "weight_clean",
        "test_auc",
    ]
    print("| mode | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for mode, runs in results.items():
        print(f"| {mode} | " + " | ".join(_ci([r[k] for r in runs]) for k in keys) + " |")
    base = statistics.mean(r["test_auc"] for r in results["none"])
    for mode in ("weights", "labels"):
        diffs = [a["test_auc"] - b["test_auc"] for a, b in zip(results[mode], results["none"], strict=True)]
        print(f"test AUC {mode} - none (paired over seeds): {_ci(diffs)}   (none: {base:.3f})")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--backbone", default="embedded:smollm2-135m-instruct")
    c.add_argument("--precision", default="fp32")
    c.add_argument("--max-length", dest="max_length", type=int, default=256)
    c.add_argument("--batch", type=int, default=4)
    c.add_argument("--meta-batch", dest="meta_batch", type=int, default=4)
    c.add_argument("--steps", type=int, default=9)
    c.add_argument("--every", type=int, default=8)
    c.add_argument(
        "--methods", default="fd", help="JVP methods timed in the labels process (comma-separated)"
    )
    c.add_argument("--threads", type=int, default=2)
    c.add_argument(
        "--micro-batch",
        dest="micro_batch",
        type=int,
        default=1,
        help="sequences per forward in the outer step",
    )
    c.add_argument(
        "--live",
        action="store_true",
        help="also track live tensor bytes per step (slows every op: no timings)",
    )
    c.add_argument("--json", type=Path)
    k = sub.add_parser("correct")
    k.add_argument("--seeds", type=int, default=3)
    k.add_argument("--n-train", dest="n_train", type=int, default=64)
    k.add_argument("--n-meta", dest="n_meta", type=int, default=32)
    k.add_argument("--n-test", dest="n_test", type=int, default=64)
    k.add_argument("--noise", type=float, default=0.25)
    k.add_argument("--epochs", type=int, default=6)
    k.add_argument("--batch", type=int, default=16)
    k.add_argument("--every", type=int, default=1)
    k.add_argument("--lr", type=float, default=3e-3)
    k.add_argument("--meta-lr", dest="meta_lr", type=float, default=1.0)
    k.add_argument("--inner-lr", dest="inner_lr", type=float, default=1.0)
    k.add_argument("--threads", type=int, default=1)
    k.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = bench_cost(args) if args.what == "cost" else bench_correct(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
