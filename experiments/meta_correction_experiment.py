"""Does label correction correct? A controlled experiment on real solutions with real verdicts.

Data (default): the MapCoder HumanEval pools in ``../shared/data/pools/humaneval-mapcoder``
(164 problems x 10 real LLM candidates, verdicts = the pools' recorded ``is_solved``), steps from
``dreamprm_code.cof.split_steps``. Problems are split once (seeded shuffle, ``--split-seed``)
into train / meta / held-out eval parts; no problem is in two parts. Identical candidates of a
problem are kept once.

Reference step labels (the "clean" labels; without policy rollouts):

- every prefix of a passing candidate: 1 (the candidate itself completes it to a pass);
- the final step of a failing candidate: 0 (its verdict);
- a non-final prefix of a failing candidate: 1 if some passing candidate of the same problem
  starts with exactly the same steps (same text of steps 1..k, trailing whitespace ignored),
  else 0.

Limits, plainly: the 0 of a failing candidate's early prefix means "no passing candidate in this
pool of <= 10 shares it", not "no completion passes": many of those prefixes are in fact fine
(a real MC label would be > 0), so the reference under-counts good prefixes of failing
solutions. HumanEval candidates are short: about half are one step (the final step, whose
label is the verdict), so most labels are outcome labels.

Noisy input: a known share (``--noise``, default 30%) of the training labels flipped
(y -> 1 - y), a fresh draw per seed. The PRM is trained by ``dreamprm_code.prm.train_prm``
(SmolLM2-135M + LoRA, the embedded CPU backbone) on the noisy labels with each correction mode,
the meta set being the meta problems' candidates with their verdicts. Reported per mode:

- label MAE against the reference, before (noisy) and after (the trainer's corrected labels),
  over all training labels, the flipped ones and the clean ones, and the share of labels the
  outer steps touched; for ``weights``, the mean weight of flipped vs clean labels;
- held-out step AUC (PRM step probability vs reference step label, eval problems) and best-of-N
  (candidate with the highest min-step score; pass rate over eval problems), next to random
  choice and the oracle; 95% bootstrap intervals over eval problems (and over seeds when there
  are several), and the paired difference to ``none``.

Alternative input: ``--labels FILE --solutions FILE --problems FILE`` (e.g. the MC labels and
solutions of a pipeline run): the labels are the reference; the noisy input is either the same
labels with ``--noise`` flipped (after rounding to 0/1 at 0.5) or, with ``--few K``, each
non-final label re-drawn from K of its rollouts (hypergeometric: K of the R rollouts without
replacement), i.e. a few-rollout estimate of the same prefix.

    python -u experiments/meta_correction_experiment.py --seeds 1 --json /tmp/corr.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import shutil
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from dreamprm_code.data import data_dir

DATA = data_dir()
MODES = ("none", "weights", "labels")

# --- data -----------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def pool_solutions(pool: Path) -> tuple[dict[str, Any], list[Any]]:
    """HumanEval problems and the pool's unique candidates with their recorded verdicts and steps."""
    from dreamprm_code.cof import split_steps
    from dreamprm_code.data import load_problems, load_solutions, recorded_verdict

    problems = {p.id: p for p in load_problems("humaneval")}
    seen: set[tuple[str, str]] = set()
    out = []
    for s in load_solutions(pool, problems.values()):
        key = (s.problem_id, _norm(s.code))
        verdict = recorded_verdict(s)
        if not s.code.strip() or key in seen or verdict is None:
            continue
        seen.add(key)
        s.verdict = verdict
        s.steps = split_steps(s.code)
        out.append(s)
    return problems, out


def reference_labels(solutions: Sequence[Any]) -> list[Any]:
    """Step labels by the construction in the module docstring (one StepLabel per prefix)."""
    from dreamprm_code.records import StepLabel

    passing_prefixes: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for s in solutions:
        if s.passed:
            texts = tuple(_norm(s.code[st.start : st.end]) for st in s.steps)
            for k in range(1, len(texts) + 1):
                passing_prefixes[s.problem_id].add(texts[:k])
    out = []
    for s in solutions:
        texts = tuple(_norm(s.code[st.start : st.end]) for st in s.steps)
        n = len(s.steps)
        for k, st in enumerate(s.steps):
            if s.passed:
                y = 1
            elif k == n - 1:
                y = 0
            else:
                y = int(texts[: k + 1] in passing_prefixes[s.problem_id])
            out.append(
                StepLabel(
                    solution_id=s.id,
                    problem_id=s.problem_id,
                    step_index=k,
                    num_steps=n,
                    prefix=s.code[: st.end] if k < n - 1 else s.code,
                    rollouts=1,
                    passed=y,
                    mc_value=float(y),
                    hard_label=y,
                    meta={"reference": "pool-prefix-match"},
                )
            )
    return out


def split_problems(pids: Sequence[str], sizes: tuple[int, int, int], seed: int) -> tuple[set[str], ...]:
    """Disjoint train / meta / eval problem sets of the given sizes (seeded shuffle)."""
    order = sorted(set(pids))
    random.Random(seed).shuffle(order)
    a, b, c = sizes
    if a + b + c > len(order):
        raise SystemExit(f"asked for {a + b + c} problems, the data has {len(order)}")
    return set(order[:a]), set(order[a : a + b]), set(order[a + b : a + b + c])


def noisy_labels(
    reference: Sequence[Any], args: argparse.Namespace, seed: int
) -> tuple[list[Any], list[bool]]:
    """The noisy training input and which labels were changed (flipped, or re-drawn from K rollouts)."""
    rng = random.Random(10_000 + seed)
    out, changed = [], []
    if args.few:
        for lab in reference:
            final = lab.step_index == lab.num_steps - 1
            if final or lab.rollouts <= args.few:
                out.append(lab)
                changed.append(False)
                continue
            draws = rng.sample([1] * lab.passed + [0] * (lab.rollouts - lab.passed), args.few)
            v = sum(draws) / args.few
            out.append(replace(lab, mc_value=v, rollouts=args.few, passed=sum(draws), hard_label=int(v > 0)))
            changed.append(abs(v - lab.mc_value) > 1e-9)
        return out, changed
    # only the non-final labels are MC estimates; a final step's label is its verdict (fixed, clean)
    open_ = [i for i, lab in enumerate(reference) if lab.step_index < lab.num_steps - 1]
    flip = set(rng.sample(open_, round(args.noise * len(open_))))
    for i, lab in enumerate(reference):
        y = float(lab.mc_value >= 0.5)
        v = 1.0 - y if i in flip else y
        out.append(replace(lab, mc_value=v, hard_label=int(v > 0.5)))
        changed.append(i in flip)
    return out, changed


def load_inputs(args: argparse.Namespace) -> tuple[dict[str, Any], list[Any], list[Any], str]:
    """(problems, solutions with verdicts, reference labels, a description of the data)."""
    if args.labels:
        from dreamprm_code.data import load_problems, load_solutions
        from dreamprm_code.io import read_jsonl
        from dreamprm_code.records import StepLabel

        if not (args.solutions and args.problems):
            raise SystemExit("--labels needs --solutions and --problems")
        problems = {p.id: p for p in load_problems(str(args.problems))}
        sols = [s for s in load_solutions(args.solutions, problems.values()) if s.verdict is not None]
        labels = [StepLabel.from_dict(r) for r in read_jsonl(args.labels)]
        known = {s.id for s in sols}
        labels = [lab for lab in labels if lab.solution_id in known]
        return problems, sols, labels, f"labels {args.labels}, solutions {args.solutions}"
    problems, sols = pool_solutions(args.pool)
    return (
        problems,
        sols,
        reference_labels(sols),
        f"pool {args.pool} (recorded verdicts), reference by prefix match",
    )


def pick_per_problem(items: Sequence[Any], key: str, cap: int, seed: int) -> list[Any]:
    """At most ``cap`` solutions per problem, failing ones first (they carry the non-trivial labels)."""
    by: dict[str, list[Any]] = defaultdict(list)
    for s in items:
        by[getattr(s, key)].append(s)
    out = []
    rng = random.Random(seed)
    for pid in sorted(by):
        group = by[pid][:]
        rng.shuffle(group)
        group.sort(key=lambda s: s.passed)
        out.extend(group[:cap])
    return out


# --- one run --------------------------------------------------------------------------------


def evaluate(out_dir: Path, eval_labels: Sequence[Any], problems: dict[str, Any],
             features: Path | None = None) -> dict[str, Any]:
    """Per eval problem: step probabilities vs reference labels, and the best-of-N pick's verdict."""
    from dreamprm_code.prm.checkpoint import load_prm
    from dreamprm_code.prm.data import examples_from_labels
    from dreamprm_code.prm.score import aggregate, score_examples

    prm = load_prm(out_dir)
    assert prm.prompt_format is not None
    examples = examples_from_labels(eval_labels, prm.prompt_format, problems)
    with torch.no_grad():
        probs = cached_probabilities(prm, examples, features) or score_examples(prm, examples, batch_tokens=4096)
    per_problem: dict[str, dict[str, list]] = defaultdict(lambda: {"p": [], "y": [], "cands": []})
    for ex, ps in zip(examples, probs, strict=True):
        rec = per_problem[ex.problem_id]
        rec["p"].extend(ps)
        rec["y"].extend(t >= 0.5 for t in ex.targets)
        final = [t for t, f in zip(ex.targets, ex.is_final, strict=True) if f]
        if final:
            rec["cands"].append((aggregate(ps, "min"), final[0] >= 0.5))
    return dict(per_problem)


def cached_probabilities(prm: Any, examples: Sequence[Any], root: Path | None) -> list[list[float]] | None:
    """With a frozen backbone, the step probabilities from the feature cache ``root`` (the held-out
    examples were extracted with the training ones); None when a step is not in it."""
    from dreamprm_code.prm.frozen import FINGERPRINT, FeatureStore, sequence_key

    if root is None or not (root / FINGERPRINT).exists():
        return None
    store = FeatureStore(root, json.loads((root / FINGERPRINT).read_text()))
    try:
        rows = [[store.index[(sequence_key(ex.input_ids), pos)] for pos in ex.step_token_index] for ex in examples]
    except KeyError:
        return None
    return [torch.sigmoid(prm.head(store.matrix[r])).tolist() for r in rows]


def run_one(
    mode: str,
    seed: int,
    train_labels: list[Any],
    meta_sols: list[Any],
    eval_labels: list[Any],
    problems: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    from dreamprm_code.prm.train import TrainConfig, train_prm

    out = args.workdir / f"{mode}-s{seed}"
    if out.exists():
        shutil.rmtree(out)  # a leftover directory would make train_prm resume
    # frozen: the backbone pass is the same for every mode and seed, so one cache serves them all
    features = args.workdir / "features-cache" if args.frozen_epochs > 0 else None
    meta = {"mode": mode, **{k: v for k, v in (("refresh", args.refresh), ("meta_lr", args.meta_lr),
                                                ("scope", args.scope)) if v is not None}}
    for item in args.meta_set:  # KEY=VALUE, a JSON value (or a bare string)
        key, _, value = item.partition("=")
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    config = TrainConfig(
        backbone=args.backbone,
        output_dir=str(out),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch,
        max_length=args.max_length,
        learning_rate=args.lr,
        meta=meta,
        seed=seed,
        eval_each_epoch=False,
        save_steps=10_000,
        freeze_backbone=args.frozen_epochs > 0,
        frozen_epochs=max(1, args.frozen_epochs),
        feature_cache=str(features or ""),
    )
    t0 = time.perf_counter()
    # the held-out labels as the validation set: a frozen run caches their features with the rest
    train_prm(config, train_labels, meta_sols, eval_set=eval_labels if args.frozen_epochs > 0 else [],
              problems=problems, progress=False)
    t_train = time.perf_counter() - t0
    gc.collect()
    corrected = {r["key"]: r["corrected"] for r in json.loads((out / "corrected_labels.json").read_text())}
    summary = json.loads((out / "correction.json").read_text()) if (out / "correction.json").exists() else {}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line.strip()]
    per_problem = evaluate(out, eval_labels, problems, features)
    return {
        "mode": mode,
        "seed": seed,
        "corrected": corrected,
        "weights": summary.get("weights"),
        "outer_steps": summary.get("outer_steps", 0),
        "refreshes": summary.get("refreshes", 0),
        "movement": summary.get("movement", {}),
        "steps": max((r.get("step", 0) for r in log), default=0),
        "meta_loss": [r["meta_loss"] for r in log if "meta_loss" in r],
        "train_seconds": t_train,
        "eval": per_problem,
    }


# --- statistics -----------------------------------------------------------------------------


def auc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    from dreamprm_code.prm.train import step_auc

    return step_auc(list(scores), list(positives))


def eval_figures(per_problem: dict[str, Any], pids: Sequence[str]) -> dict[str, float]:
    p = [x for pid in pids for x in per_problem[pid]["p"]]
    y = [x for pid in pids for x in per_problem[pid]["y"]]
    bon, rnd, ora = [], [], []
    for pid in pids:
        cands = per_problem[pid]["cands"]
        if not cands:
            continue
        best = max(range(len(cands)), key=lambda i: cands[i][0])
        bon.append(float(cands[best][1]))
        rnd.append(sum(c[1] for c in cands) / len(cands))
        ora.append(float(any(c[1] for c in cands)))
    return {
        "step_auc": auc(p, y),
        "best_of_n": statistics.mean(bon) if bon else float("nan"),
        "random": statistics.mean(rnd) if rnd else float("nan"),
        "oracle": statistics.mean(ora) if ora else float("nan"),
    }


def bootstrap(
    runs: Sequence[dict], base: Sequence[dict] | None, key: str, reps: int, seed: int
) -> tuple[float, float, float]:
    """Mean over seeds, and a 95% interval resampling eval problems (and seeds); paired to ``base``."""
    rng = random.Random(seed)
    pids = sorted(runs[0]["eval"])

    def value(sample: Sequence[str], idx: Sequence[int]) -> float:
        vals = []
        for i in idx:
            v = eval_figures(runs[i]["eval"], sample)[key]
            if base is not None:
                v -= eval_figures(base[i]["eval"], sample)[key]
            vals.append(v)
        return statistics.mean(vals)

    point = value(pids, range(len(runs)))
    draws = []
    for _ in range(reps):
        sample = [pids[rng.randrange(len(pids))] for _ in pids]
        idx = [rng.randrange(len(runs)) for _ in runs]
        v = value(sample, idx)
        if not math.isnan(v):
            draws.append(v)
    draws.sort()
    if not draws:
        return point, float("nan"), float("nan")
    return point, draws[int(0.025 * len(draws))], draws[min(len(draws) - 1, int(0.975 * len(draws)))]


def label_figures(
    run: dict, train_labels: Sequence[Any], reference: dict[str, float], changed: Sequence[bool]
) -> dict[str, float]:
    after = [run["corrected"][lab.key] for lab in train_labels]
    before = [lab.mc_value for lab in train_labels]
    ref = [reference[lab.key] for lab in train_labels]
    idx_c = [i for i, c in enumerate(changed) if c]
    idx_k = [i for i, c in enumerate(changed) if not c]

    def mae(vals: Sequence[float], idx: Sequence[int]) -> float:
        return statistics.mean(abs(vals[i] - ref[i]) for i in idx) if idx else float("nan")

    allidx = range(len(ref))
    final = [lab.step_index == lab.num_steps - 1 for lab in train_labels]
    flipped = [i for i in idx_c if not final[i]]
    clean = [i for i in idx_k if not final[i]]
    side = [float(a >= 0.5) for a in after]
    out = {
        "recovered": sum(side[i] == ref[i] for i in flipped) / len(flipped) if flipped else float("nan"),
        "broken": sum(side[i] != ref[i] for i in clean) / len(clean) if clean else float("nan"),
        "crossed": sum((after[i] >= 0.5) != (before[i] >= 0.5) for i in range(len(ref)) if not final[i]),
        "mae_before": mae(before, allidx),
        "mae_after": mae(after, allidx),
        "mae_noisy_before": mae(before, idx_c),
        "mae_noisy_after": mae(after, idx_c),
        "mae_clean_after": mae(after, idx_k),
        "touched": sum(abs(a - b) > 1e-6 for a, b in zip(after, before, strict=True)) / len(ref),
    }
    if run["weights"]:
        w = run["weights"]
        out["touched"] = sum(abs(x - 1.0) > 1e-6 for x in w) / len(w)
        out["weight_noisy"] = statistics.mean(w[i] for i in idx_c) if idx_c else float("nan")
        out["weight_clean"] = statistics.mean(w[i] for i in idx_k) if idx_k else float("nan")
    return out


def _fmt(t: tuple[float, float, float]) -> str:
    return f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, default=DATA / "pools" / "humaneval-mapcoder")
    ap.add_argument(
        "--labels", type=Path, help="reference step labels (JSONL of StepLabel), e.g. many-rollout MC labels"
    )
    ap.add_argument("--solutions", type=Path, help="the labelled solutions, with verdicts (for the meta set)")
    ap.add_argument("--problems", help="problems of --labels (a JSONL path or a source name)")
    ap.add_argument("--noise", type=float, default=0.3, help="share of training labels flipped")
    ap.add_argument("--few", type=int, default=0, help="instead of flipping: re-draw labels from K rollouts")
    ap.add_argument("--split-seed", dest="split_seed", type=int, default=0)
    ap.add_argument("--train-problems", dest="train_problems", type=int, default=20)
    ap.add_argument("--meta-problems", dest="meta_problems", type=int, default=30)
    ap.add_argument("--meta-from", dest="meta_from", choices=("other-problems", "same-problems"),
                    default="other-problems", help="the meta set: the meta problems' candidates, or the "
                    "training problems' candidates that are not training candidates")
    ap.add_argument("--eval-problems", dest="eval_problems", type=int, default=25)
    ap.add_argument(
        "--per-problem", dest="per_problem", type=int, default=3, help="training candidates per problem"
    )
    ap.add_argument("--eval-per-problem", dest="eval_per_problem", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--backbone", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", dest="max_length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--refresh", type=int, default=None, help="meta.refresh (default: the library's)")
    ap.add_argument("--meta-lr", dest="meta_lr", type=float, default=None, help="meta.meta_lr (default: the library's)")
    ap.add_argument("--scope", default=None, help="meta.scope: head or all (default: the library's)")
    ap.add_argument("--meta-set", dest="meta_set", action="append", default=[], metavar="KEY=VALUE",
                    help="any other CorrectionConfig field, e.g. preconditioner=sgd (repeatable)")
    ap.add_argument("--frozen-epochs", dest="frozen_epochs", type=int, default=0,
                    help="> 0: frozen backbone (features cached once), the head trained this many epochs")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/meta-correction-experiment"),
                    help="checkpoints, and with --frozen-epochs the step features every run reuses "
                    "(features-cache/; a cache made by another backbone is refused)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    modes = tuple(args.modes.split(","))
    t_start = time.perf_counter()

    problems, sols, reference, what = load_inputs(args)
    tr, me, ev = split_problems(
        [s.problem_id for s in sols],
        (args.train_problems, args.meta_problems, args.eval_problems),
        args.split_seed,
    )
    train_sols = {
        s.id
        for s in pick_per_problem([s for s in sols if s.problem_id in tr], "problem_id", args.per_problem, 0)
    }
    eval_sols = {
        s.id
        for s in pick_per_problem(
            [s for s in sols if s.problem_id in ev], "problem_id", args.eval_per_problem, 1
        )
    }
    train_ref = [lab for lab in reference if lab.solution_id in train_sols]
    eval_ref = [lab for lab in reference if lab.solution_id in eval_sols]
    if args.meta_from == "same-problems":  # the training problems' other candidates, with their verdicts
        meta_sols = [s for s in sols if s.problem_id in tr and s.id not in train_sols]
    else:
        meta_sols = [s for s in sols if s.problem_id in me]
    ref_of = {lab.key: float(lab.mc_value >= 0.5) if not args.few else lab.mc_value for lab in train_ref}
    n_pos = sum(v >= 0.5 for v in ref_of.values())
    print(
        f"data: {what}\n"
        f"problems: {len(tr)} train / {len(me)} meta / {len(ev)} eval (split seed {args.split_seed}); "
        f"train: {len(train_sols)} solutions, {len(train_ref)} step labels ({n_pos} reference positives); "
        f"meta: {len(meta_sols)} solutions ({sum(s.passed for s in meta_sols)} pass); "
        f"eval: {len(eval_sols)} solutions, {len(eval_ref)} step labels",
        flush=True,
    )
    noise_what = f"{args.few}-rollout re-draws" if args.few else f"{args.noise:.0%} of labels flipped"
    print(
        f"noisy input: {noise_what}; PRM {args.backbone} "
        f"{f'frozen, head {args.frozen_epochs} epochs' if args.frozen_epochs > 0 else f'LoRA r=8, {args.epochs} epoch(s)'}, batch {args.batch}, "
        f"max_length {args.max_length}, lr {args.lr}; correction: the library's defaults"
        f"{'' if args.refresh is None else f', refresh {args.refresh}'}{'' if args.meta_lr is None else f', meta_lr {args.meta_lr}'}; "
        f"seeds {args.seeds}",
        flush=True,
    )
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    labels_of_seed: dict[int, tuple[list[Any], list[bool]]] = {}
    for seed in range(args.seeds):
        labels_of_seed[seed] = noisy_labels(train_ref, args, seed)
        noisy, changed = labels_of_seed[seed]
        for mode in modes:
            t0 = time.perf_counter()
            r = run_one(mode, seed, noisy, meta_sols, eval_ref, problems, args)
            r["labels"] = label_figures(r, noisy, ref_of, changed)
            figs = eval_figures(r["eval"], sorted(r["eval"]))
            runs[mode].append(r)
            print(
                f"seed {seed} {mode:7s}: {r['steps']} inner steps / {r['refreshes']} refreshes, train {r['train_seconds']:.0f} s, "
                f"flipped recovered {r['labels']['recovered']:.1%}, clean broken {r['labels']['broken']:.1%}, "
                f"touches min {r['movement'].get('touches_min', 0)}; "
                f"total {time.perf_counter() - t0:.0f} s; label MAE {r['labels']['mae_before']:.3f} -> "
                f"{r['labels']['mae_after']:.3f}; step AUC {figs['step_auc']:.3f}, best-of-N {figs['best_of_n']:.3f} "
                f"(random {figs['random']:.3f}, oracle {figs['oracle']:.3f})  [{time.perf_counter() - t_start:.0f} s]",
                flush=True,
            )
            if args.json:  # after every run, so that a stopped experiment keeps what it did
                _dump(args, runs)

    print(
        "\n| mode | flipped recovered | clean broken | label MAE before | after | changed labels: before -> after | unchanged: after | touched | weight changed / unchanged |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, rs in runs.items():
        lf = [r["labels"] for r in rs]

        def m(k: str, lf: list[dict] = lf) -> float:
            return statistics.mean(x.get(k, float("nan")) for x in lf)

        wtxt = f"{m('weight_noisy'):.3f} / {m('weight_clean'):.3f}" if mode == "weights" else "-"
        print(
            f"| {mode} | {m('recovered'):.1%} | {m('broken'):.1%} | {m('mae_before'):.3f} | {m('mae_after'):.3f} | {m('mae_noisy_before'):.3f} -> {m('mae_noisy_after'):.3f} "
            f"| {m('mae_clean_after'):.3f} | {m('touched'):.0%} | {wtxt} |"
        )
    print("\n| mode | held-out step AUC | minus none (paired) | best-of-N | minus none (paired) |")
    print("|---|---|---|---|---|")
    base = runs.get("none")
    for mode, rs in runs.items():
        cells = []
        for key in ("step_auc", "best_of_n"):
            cells.append(_fmt(bootstrap(rs, None, key, args.bootstrap, 1)))
            cells.append(
                _fmt(bootstrap(rs, base, key, args.bootstrap, 1)) if base and mode != "none" else "-"
            )
        print(f"| {mode} | " + " | ".join(cells) + " |")
    any_run = next(iter(runs.values()))[0]
    ref_figs = eval_figures(any_run["eval"], sorted(any_run["eval"]))
    print(
        f"eval: {len(any_run['eval'])} problems; random choice {ref_figs['random']:.3f}, oracle {ref_figs['oracle']:.3f}; "
        f"95% bootstrap over eval problems{' and seeds' if args.seeds > 1 else ''} ({args.bootstrap} draws); "
        f"{time.perf_counter() - t_start:.0f} s in all"
    )
    if args.json:
        _dump(args, runs)


def _dump(args: argparse.Namespace, runs: dict[str, list[dict]]) -> None:
    slim = {m: [{k: v for k, v in r.items() if k != "corrected"} for r in rs] for m, rs in runs.items()}
    args.json.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": slim}, indent=1)
    )


if __name__ == "__main__":
    sys.exit(main())
