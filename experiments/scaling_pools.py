"""Best-of-N on the real candidate pools: each method's pass@1 next to the policy's, with CIs.

The baseline of every figure is the policy's own pass@1 (mean over its candidates), measured in
the same run on the same problems; the ratio and the paired bootstrap verdict follow it.
Verdicts come from the sandboxed execution stage (cached in OUT/exec-cache.jsonl), majority
behaviour likewise (OUT/behaviours.jsonl), so a second run only re-does the statistics.

    python experiments/scaling_pools.py --problems apps-stdin:$DREAMPRM_DATA/apps-150/problems.jsonl \
        --solutions $DREAMPRM_DATA/pools/apps-mapcoder --out runs/bench-apps [--scores NAME=FILE ...]

``--prm NAME=DIR`` scores every candidate with a trained checkpoint first (resumable, into
``OUT/scores-NAME.jsonl``), e.g. the models of a pipeline run trained on other problems;
``--max-problems N`` evaluates a seeded sample of N problems (scoring on a CPU is the cost).

    python experiments/scaling_pools.py --problems humaneval --solutions $DREAMPRM_DATA/pools/humaneval-mapcoder \
        --out runs/bench-he-prm --max-problems 40 --prm ORM=runs/cpu-study/models/orm \
        --prm PRM=runs/cpu-study/models/prm --prm DreamPRM-Code=runs/cpu-study/models/prm-labels \
        --exclude-problems runs/cpu-study/problems/train.jsonl
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from dreamprm_code.data import load_problems, load_solutions
from dreamprm_code.io import read_jsonl
from dreamprm_code.prm.checkpoint import load_prm
from dreamprm_code.prm.score import score_to_file
from dreamprm_code.report.write import write_report
from dreamprm_code.scaling.behaviour import compute_behaviours, fill_verdicts
from dreamprm_code.scaling.evaluate import OVERALL, EvalOptions, evaluate
from dreamprm_code.scaling.scores import load_step_scores, parse_score_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", required=True)
    ap.add_argument("--solutions", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scores", action="append", default=[])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--label", default="verdict", choices=["verdict", "recorded"])
    ap.add_argument("--prm", action="append", default=[], help="NAME=DIR: score with this checkpoint first")
    ap.add_argument("--max-problems", type=int, default=0, help="a seeded sample of this many problems (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exclude-problems", type=Path, help="a problems JSONL (e.g. a run's problems/train.jsonl) to leave out")
    args = ap.parse_args()

    problems = load_problems(args.problems)
    solutions = load_solutions(args.solutions, problems)
    if args.exclude_problems:  # the PRMs' own training problems: the table must be on other problems
        seen = {r["id"] for r in read_jsonl(args.exclude_problems)}
        problems = [p for p in problems if p.id not in seen]
        solutions = [s for s in solutions if s.problem_id not in seen]
    if args.max_problems:
        ids = sorted({s.problem_id for s in solutions})
        keep = set(random.Random(args.seed).sample(ids, min(args.max_problems, len(ids))))
        problems = [p for p in problems if p.id in keep]
        solutions = [s for s in solutions if s.problem_id in keep]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for spec in args.prm:
        name, path = parse_score_spec(spec)
        scores = Path(args.out) / f"scores-{name}.jsonl"
        t1 = time.perf_counter()
        n = score_to_file(load_prm(path, device="cuda" if torch.cuda.is_available() else "cpu"), problems,
                          solutions, scores)
        print(f"{name}: scored {n} candidates in {time.perf_counter() - t1:.0f}s -> {scores}", flush=True)
        args.scores.append(f"{name}={scores}")
    t0 = time.perf_counter()
    if args.label == "verdict":
        fill_verdicts(problems, solutions, cache_dir=args.out, workers=args.workers)
    beh = compute_behaviours(problems, solutions, cache=f"{args.out}/behaviours.jsonl", workers=args.workers)
    t_exec = time.perf_counter() - t0
    sets = {}
    for spec in args.scores:
        name, path = parse_score_spec(spec)
        sets[name] = load_step_scores(path)
    t0 = time.perf_counter()
    rep = evaluate(problems, solutions, sets, EvalOptions(label=args.label, resamples=args.resamples), behaviours=beh)
    t_eval = time.perf_counter() - t0
    write_report(rep, args.out, problems=problems, solutions=solutions, score_sets=sets)

    agree = [
        (s.passed, bool(s.meta["recorded_is_solved"])) for s in solutions if "recorded_is_solved" in s.meta and s.verdict
    ]
    policy = rep.method("policy").cells[OVERALL]
    c = rep.counts[OVERALL]
    print(f"# scaling_pools: {args.solutions} ({c['problems']} problems, {c['candidates']} candidates, "
          f"N {c['min_n']}..{c['max_n']}); labels: {args.label}")
    print(f"{'method':<40}{'pass@1 % [95% CI]':>24}{'policy (baseline)':>20}{'ratio':>8}  paired diff vs policy")
    for m in rep.table_methods():
        iv = m.cells[OVERALL]
        d = m.vs_policy[OVERALL]
        ratio = iv.value / policy.value if policy.value else float("nan")
        print(f"{m.label:<40}{100 * iv.value:>8.1f} [{100 * iv.low:5.1f}, {100 * iv.high:5.1f}]"
              f"{100 * policy.value:>20.1f}{ratio:>7.2f}x  {100 * d.diff:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}] "
              f"{d.verdict}")
    for g in rep.groups[:-1]:
        cells = "  ".join(f"{m.label}={100 * m.cells[g].value:.1f}" for m in rep.table_methods())
        print(f"  {g}: {cells}")
    if agree:
        same = sum(a == b for a, b in agree) / len(agree)
        print(f"executed verdicts agree with the pool's recorded is_solved on {100 * same:.1f}% of {len(agree)}")
    print(f"time: execution+behaviour {t_exec:.1f}s (cached after the first run), evaluate {t_eval:.1f}s")


if __name__ == "__main__":
    main()
