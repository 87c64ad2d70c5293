"""A real outcome reward model (ORM) in the best-of-N table, trained and tested on disjoint problems.

Problems are split in two halves by a seeded hash. On the first half an ORM (the embedded
SmolLM2-135M backbone with LoRA, final-step labels = executed verdicts, no correction) is
trained for ``--max-steps`` steps; it then scores every candidate of the second half, and the
table compares it, on the second half only, with the policy, random choice and majority vote
(the baselines, measured in the same run on the same problems). Every stage resumes: verdicts,
behaviours, the checkpoint and the scores are cached under ``--out``.

    python experiments/scaling_orm_apps.py --out runs/bench-orm-apps --max-steps 40
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

from dreamprm_code.cof import split_steps
from dreamprm_code.data import data_dir, load_problems, load_solutions
from dreamprm_code.io import JsonlAppender
from dreamprm_code.records import StepLabel, StepScores
from dreamprm_code.report.write import write_report
from dreamprm_code.scaling.behaviour import compute_behaviours, fill_verdicts
from dreamprm_code.scaling.evaluate import OVERALL, EvalOptions, evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", default=f"apps-stdin:{data_dir() / 'apps-150' / 'problems.jsonl'}")
    ap.add_argument("--solutions", default=str(data_dir() / "pools" / "apps-mapcoder"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    problems = load_problems(args.problems)
    solutions = load_solutions(args.solutions, problems)
    fill_verdicts(problems, solutions, cache_dir=out, workers=args.workers)
    test_ids = {p.id for p in problems if zlib.crc32(f"{args.seed}:{p.id}".encode()) % 2}
    train_sols = [s for s in solutions if s.problem_id not in test_ids]
    test_sols = [s for s in solutions if s.problem_id in test_ids]
    test_probs = [p for p in problems if p.id in test_ids]

    labels = []
    for s in train_sols:
        n = len(split_steps(s.code))
        ok = int(s.passed)
        labels.append(StepLabel(s.id, s.problem_id, n - 1, n, s.code, 1, ok, float(ok), ok))

    from dreamprm_code.prm import TrainConfig, load_prm, score_solutions, train_prm

    t0 = time.perf_counter()
    config = TrainConfig(output_dir=str(out / "orm"), outcome_only=True, meta={"mode": "none"}, max_steps=args.max_steps,
                         max_length=args.max_length, per_device_train_batch_size=args.batch_size, num_train_epochs=1, seed=args.seed, eval_each_epoch=False)
    ckpt = train_prm(config, labels, problems=problems)
    t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    prm = load_prm(ckpt)
    with JsonlAppender(out / "scores-orm.jsonl", key=lambda r: r["solution_id"]) as sink:
        todo = [s for s in test_sols if s.id not in sink.done]
        for i in range(0, len(todo), 16):
            for rec in score_solutions(prm, problems, todo[i : i + 16], batch_tokens=4096):
                sink.append(rec.to_dict())
        scores = [StepScores.from_dict(r) for r in sink.records]
    t_score = time.perf_counter() - t0

    beh = compute_behaviours(test_probs, test_sols, cache=out / "behaviours.jsonl", workers=args.workers)
    rep = evaluate(test_probs, test_sols, {"orm": scores}, EvalOptions(aggregations=("last", "min", "mean")), behaviours=beh)
    write_report(rep, out / "report", problems=test_probs, solutions=test_sols, score_sets={"orm": scores})
    policy = rep.method("policy").cells[OVERALL]
    c = rep.counts[OVERALL]
    print(f"# scaling_orm_apps: ORM ({args.max_steps} LoRA steps, SmolLM2-135M, {len(labels)} train candidates on "
          f"{len({s.problem_id for s in train_sols})} problems) tested on {c['problems']} other problems, "
          f"{c['candidates']} candidates")
    print(f"{'method':<28}{'pass@1 % [95% CI]':>24}{'policy (baseline)':>20}{'ratio':>8}  paired diff vs policy")
    for m in rep.methods:
        iv, d = m.cells[OVERALL], m.vs_policy[OVERALL]
        ratio = iv.value / policy.value if policy.value else float("nan")
        print(f"{m.label:<28}{100 * iv.value:>8.1f} [{100 * iv.low:5.1f}, {100 * iv.high:5.1f}]"
              f"{100 * policy.value:>20.1f}{ratio:>7.2f}x  {100 * d.diff:+.1f} [{100 * d.low:+.1f}, "
              f"{100 * d.high:+.1f}] {d.verdict}")
    print(f"time: train {t_train:.0f}s, score {t_score:.0f}s ({len(test_sols)} candidates)")


if __name__ == "__main__":
    main()
