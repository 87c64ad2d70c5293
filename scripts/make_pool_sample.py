"""Write the packaged pool sample the demo evaluates: a seeded random sample of HumanEval
problems with all their candidates from the MapCoder HumanEval pool (MIT, see
src/dreamprm_code/data/samples/LICENSE.mapcoder), in our solutions JSONL, verdicts left to the
sandbox.

    python scripts/make_pool_sample.py [--problems 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from dreamprm_code.data import data_path, load_problems, load_solutions
from dreamprm_code.io import atomic_write_jsonl

OUT = Path(__file__).resolve().parent.parent / "src" / "dreamprm_code" / "data" / "samples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    problems = load_problems("humaneval")
    keep = set(random.Random(args.seed).sample(sorted(p.id for p in problems), args.problems))
    rows = []
    for s in load_solutions(data_path("pools", "humaneval-mapcoder"), problems):
        if s.problem_id in keep:
            rows.append({"problem_id": s.problem_id, "sample_index": s.sample_index, "code": s.code,
                         "policy": s.policy, "meta": {k: v for k, v in s.meta.items() if k != "raw"}})
    rows.sort(key=lambda r: (int(r["problem_id"].split("/")[1]), r["sample_index"]))
    atomic_write_jsonl(OUT / f"humaneval-pool-{args.problems}.jsonl", rows)
    shutil.copyfile(data_path("pools", "LICENSE.mapcoder"), OUT / "LICENSE.mapcoder")
    print(f"{len(rows)} candidates of {len(keep)} problems -> {OUT}")


if __name__ == "__main__":
    main()
