"""What `evaluate` costs with and without the PRM-weighted votes, on seeded synthetic pools.

164 problems (HumanEval's count) x 10 candidates, four score sets (ORM, PRM, PRM + weights,
PRM + label correction) of four steps each, every aggregation; a third of the wrong candidates
crash (no behaviour). Selection, intervals and the scaling curve are what is timed; the pools are
built before the clock starts.

    PYTHONPATH=src python bench/evaluate_cost.py
"""

from __future__ import annotations

import os
import time

import numpy as np

from dreamprm_code.records import PASS, WRONG_ANSWER, Problem, Solution, StepScores
from dreamprm_code.records import TestCase as Case
from dreamprm_code.scaling.evaluate import EvalOptions, evaluate


def pools(n_problems: int = 164, n: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    problems, solutions, behaviours = [], [], {}
    sets: dict[str, list[StepScores]] = {k: [] for k in ("orm", "prm", "weights", "labels")}
    for k in range(n_problems):
        pid = f"P{k}"
        problems.append(Problem(pid, pid, "s", "t", ("easy", "medium", "hard")[k % 3], [Case("stdin", "1\n", "1\n")]))
        for i in range(n):
            ok = bool(rng.random() < 0.4)
            sol = Solution(pid, i, "x", verdict=PASS if ok else WRONG_ANSWER)
            solutions.append(sol)
            for records in sets.values():
                steps = np.clip(rng.normal(0.6 if ok else 0.45, 0.2, 4), 0, 1)
                records.append(StepScores(sol.id, pid, [float(x) for x in steps]))
            behaviours[sol.id] = "ok" if ok else (None if rng.random() < 0.3 else f"bad{rng.integers(3)}")
    return problems, solutions, sets, behaviours


def main() -> None:
    problems, solutions, sets, behaviours = pools()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for votes in ((), ("sum", "mean")):
        t0 = time.perf_counter()
        rep = evaluate(problems, solutions, sets, EvalOptions(weighted_vote=votes, baselines=("orm",)),
                       behaviours=behaviours)
        print(f"weighted_vote={list(votes)}: {len(rep.methods)} methods, {time.perf_counter() - t0:.1f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
