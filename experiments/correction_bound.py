"""How much can label correction recover at all, through a given backbone's step features?

The meta-learned correction moves a label along the hypergradient ``<v, dz_i/dtheta>``: with a
frozen backbone and a linear head that is a linear function of the label's step feature (plus the
label itself, through the update rule). So no such correction can tell a flipped label from a clean
one better than the best probe on those features can tell a good prefix from a bad one. This
script measures that ceiling on the data of ``meta_correction_experiment.py`` (same pool, split,
reference labels and share of flips; frozen features of ``--backbone``, extracted once and cached):

- **oracle probe**: an L2 logistic regression trained on the *clean reference* labels of the other
  training problems (5 folds by problem), scored out of fold; it sees more than any correction can
  (the clean labels themselves, of the same distribution);
- **meta probe**: the same regression trained on what the correction sees, the meta set's
  final-step verdicts (other problems), applied to the training prefixes;
- **same-problem probe**: trained on the verdicts of the training problems' *other* candidates
  (those of the pool not among the training candidates): what a meta set drawn from the same
  problems could teach.

Each probe is fitted at every L2 strength of ``--l2`` and the best one reported (in favour of the
ceiling).

For each probe: its AUC on the non-final training labels against the reference, and for each noise
draw the most flipped labels any threshold rule on the probe's score can put back (noisy 1 -> 0
below t0, noisy 0 -> 1 above t1) while breaking at most ``--max-broken`` of the clean ones, the
thresholds chosen *with the reference* (an optimistic ceiling, not a method).

    python -u experiments/correction_bound.py --backbone embedded:smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dreamprm_code.prm.data import examples_from_labels, examples_from_solutions  # noqa: E402
from dreamprm_code.prm.frozen import FeatureStore, extract_features, sequence_key  # noqa: E402
from dreamprm_code.prm.model import build_prm  # noqa: E402
from dreamprm_code.prm.train import step_auc  # noqa: E402
from meta_correction_experiment import DATA, load_inputs, pick_per_problem, split_problems  # noqa: E402


def bound_data(pool: Path, train_problems: int, meta_problems: int, per_problem: int, split_seed: int) -> tuple:
    """The experiment's data: (problems, training problem ids, training candidate ids, their reference
    labels, the meta set (other problems), the training problems' other candidates, a description)."""
    problems, sols, reference, what = load_inputs(argparse.Namespace(labels=None, pool=pool, few=0))
    tr, me, _ = split_problems([s.problem_id for s in sols], (train_problems, meta_problems, 0), split_seed)
    train_ids = {s.id for s in pick_per_problem([s for s in sols if s.problem_id in tr], "problem_id", per_problem, 0)}
    train_ref = [lab for lab in reference if lab.solution_id in train_ids]
    meta_sols = [s for s in sols if s.problem_id in me]
    same_sols = [s for s in sols if s.problem_id in tr and s.id not in train_ids]
    return problems, tr, train_ids, train_ref, meta_sols, same_sols, what


def feature_rows(examples: list[Any], store: FeatureStore) -> tuple[torch.Tensor, list[float], list[bool], list[str]]:
    """Features, targets, final flags and problem ids of every scored step, in example order."""
    feats, targets, final, pids = [], [], [], []
    for ex in examples:
        key = sequence_key(ex.input_ids)
        for pos, t, fin in zip(ex.step_token_index, ex.targets, ex.is_final, strict=True):
            feats.append(store.matrix[store.index[(key, pos)]])
            targets.append(float(t))
            final.append(bool(fin))
            pids.append(ex.problem_id)
    return torch.stack(feats), targets, final, pids


def fit_probe(x: torch.Tensor, y: torch.Tensor, l2: float) -> Any:
    """Class-balanced L2 logistic regression on standardised features (L-BFGS); returns a scorer."""
    mu, sd = x.mean(0), x.std(0) + 1e-4
    z = (x - mu) / sd
    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    share = y.mean().clamp(0.05, 0.95)
    weight = torch.where(y >= 0.5, 0.5 / share, 0.5 / (1 - share))
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none")).mean()
        loss = loss + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda xb: torch.sigmoid(((xb - mu) / sd) @ w + b).detach()


def out_of_fold(x: torch.Tensor, y: torch.Tensor, pids: list[str], l2: float) -> torch.Tensor:
    """Scores of a probe trained on the labels of the other problems (5 folds by problem)."""
    problems = sorted(set(pids))
    score = torch.zeros(len(y))
    for k in range(5):
        hold = set(problems[k::5])
        a = [i for i, p in enumerate(pids) if p not in hold]
        b = [i for i, p in enumerate(pids) if p in hold]
        score[b] = fit_probe(x[a], y[a], l2)(x[b])
    return score


def noise_draws(ref: np.ndarray, noise: float, seeds: int) -> list[np.ndarray]:
    """Noisy copies of 0/1 labels: a seeded ``noise`` share flipped per seed, as in the experiment."""
    draws = []
    for seed in range(seeds):
        rng = random.Random(10_000 + seed)
        flip = set(rng.sample(range(len(ref)), round(noise * len(ref))))
        draws.append(np.array([1 - ref[i] if i in flip else ref[i] for i in range(len(ref))]))
    return draws


def best_recovery(score: np.ndarray, noisy: np.ndarray, ref: np.ndarray, max_broken: float) -> tuple[float, float]:
    """Most flipped labels put back by a two-threshold rule with clean broken <= max_broken."""
    flipped = noisy != ref
    n_flip, n_clean = flipped.sum(), (~flipped).sum()

    def curve(group: np.ndarray, below: bool) -> tuple[np.ndarray, np.ndarray]:
        # acting on the k most extreme scores of the group, k = 0..n: (flipped put back, clean broken)
        idx = np.where(group)[0]
        order = idx[np.argsort(score[idx] if below else -score[idx], kind="stable")]
        rec = np.concatenate([[0], np.cumsum(flipped[order])])
        brk = np.concatenate([[0], np.cumsum(~flipped[order])])
        return rec, brk

    r1, b1 = curve(noisy == 1, below=True)
    r0, b0 = curve(noisy == 0, below=False)
    rec = r1[:, None] + r0[None, :]
    brk = b1[:, None] + b0[None, :]
    ok = brk <= max_broken * n_clean
    i, j = np.unravel_index(np.where(ok, rec, -1).argmax(), rec.shape)
    return float(rec[i, j] / n_flip), float(brk[i, j] / n_clean)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, default=DATA / "pools" / "humaneval-mapcoder")
    ap.add_argument("--backbone", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--split-seed", dest="split_seed", type=int, default=0)
    ap.add_argument("--train-problems", dest="train_problems", type=int, default=20)
    ap.add_argument("--meta-problems", dest="meta_problems", type=int, default=30)
    ap.add_argument("--per-problem", dest="per_problem", type=int, default=3)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-broken", dest="max_broken", type=float, default=0.10)
    ap.add_argument("--l2", type=lambda v: [float(x) for x in v.split(",")], default=[0.01, 0.1, 1.0, 10.0],
                    help="L2 strengths tried (comma-separated); the best is reported")
    ap.add_argument("--max-length", dest="max_length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/correction-bound"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    problems, tr, train_ids, train_ref, meta_sols, same_sols, what = bound_data(
        args.pool, args.train_problems, args.meta_problems, args.per_problem, args.split_seed)

    prm, tokenizer = build_prm(args.backbone, lora_r=0)
    fmt = prm.attach_format(tokenizer, args.max_length, 0)
    train_ex = examples_from_labels(train_ref, fmt, problems)
    meta_ex = examples_from_solutions(meta_sols, fmt, problems, final_only=True, with_verdicts=True)
    same_ex = examples_from_solutions(same_sols, fmt, problems, final_only=True, with_verdicts=True)
    store = FeatureStore(args.workdir / args.backbone.replace(":", "_").replace("/", "_"),
                         {"backbone": args.backbone, "max_length": args.max_length})
    extraction = extract_features(prm, [*train_ex, *meta_ex, *same_ex], store, progress=True)
    x, targets, final, pids = feature_rows(train_ex, store)
    xm, tm, _, _ = feature_rows(meta_ex, store)
    xs, ts, _, _ = feature_rows(same_ex, store)
    ref = np.array([t >= 0.5 for t in targets], dtype=np.int64)
    open_ = np.array([not f for f in final])
    print(f"data: {what}; {len(tr)} train problems ({len(train_ids)} candidates, {open_.sum()} non-final labels, "
          f"{ref[open_].mean():.0%} positive), meta {len(meta_sols)} solutions, same-problem {len(same_sols)}; backbone {args.backbone}, "
          f"features {extraction['seconds']:.0f} s", flush=True)

    y = torch.tensor(ref, dtype=torch.float32)

    def verdict_probe(xv: torch.Tensor, tv: list[float], l2: float) -> torch.Tensor:
        return fit_probe(xv, torch.tensor([float(t >= 0.5) for t in tv]), l2)(x)

    probes = {
        "oracle probe (clean labels, out of fold)": lambda l2: out_of_fold(x, y, pids, l2),
        "meta probe (meta-set verdicts, other problems)": lambda l2: verdict_probe(xm, tm, l2),
        "same-problem probe (other candidates' verdicts)": lambda l2: verdict_probe(xs, ts, l2),
    }
    r = ref[open_]
    draws = noise_draws(r, args.noise, args.seeds)
    results: dict[str, Any] = {"backbone": args.backbone, "non_final_labels": int(open_.sum()), "probes": {}}
    lines = []
    for name, probe in probes.items():
        best: dict[str, Any] = {}
        for l2 in args.l2:
            s = probe(l2).numpy()[open_]
            per_seed = [best_recovery(s, noisy, r, args.max_broken) for noisy in draws]
            rec = float(np.mean([a for a, _ in per_seed]))
            if not best or rec > best["recovered"]:
                best = {"l2": l2, "auc": step_auc(s.tolist(), (r == 1).tolist()), "recovered": rec,
                        "per_seed": per_seed}
        results["probes"][name] = best
        lines.append(f"| {name} | {best['l2']:g} | {best['auc']:.3f} | {best['recovered']:.0%} ("
                     + " / ".join(f"{a:.0%}" for a, _ in best["per_seed"]) + ") | "
                     + " / ".join(f"{b:.0%}" for _, b in best["per_seed"]) + " |")
    print(f"\n| probe on {args.backbone} features | L2 | AUC, non-final labels | flipped recovered, best rule with "
          f"clean broken <= {args.max_broken:.0%} (per seed) | clean broken |\n|---|---|---|---|---|")
    print("\n".join(lines))
    print(f"\n{time.perf_counter() - t0:.0f} s in all", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
