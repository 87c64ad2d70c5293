"""Are the rebuilt APPS call arguments right? Functional grading vs stdin grading of real code.

    python experiments/data_apps_functional.py [--data DIR] [--workers 2] [--cache DIR]

The APPS call-based inputs lost the quotes of their string arguments; ``load_problems("apps")``
rebuilds them (``data/apps.py``). The MapCoder pools hold stdin programs for these problems;
most define the starter's function and then read ``input()`` at top level. For every such
candidate this script keeps only its definitions (functions, classes, imports, constant
assignments), grades that against the ``functional`` tests, and grades the whole program
against the ``apps-stdin`` tests (the baseline: no argument rebuilding involved). A wrong
rebuild shows up as "functional fails, stdin passes".
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

from dreamprm_code.data import data_dir, data_path, load_problems, load_solutions
from dreamprm_code.execution import Executor, Limits


def definitions_only(code: str) -> str | None:
    """The candidate without its top-level I/O: defs, classes, imports, constant assignments."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    keep = [
        n
        for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom))
        or (isinstance(n, ast.Assign) and not any(isinstance(x, ast.Call) for x in ast.walk(n.value)))
    ]
    return ast.unparse(ast.Module(body=keep, type_ignores=[]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=data_dir(), help="the data folder (default: $DREAMPRM_DATA)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", default=None, help="execution cache folder (a re-run is then free)")
    args = ap.parse_args()
    path = data_path("apps-150", "problems.jsonl", root=args.data)
    functional = {p.id: p for p in load_problems(f"apps:{path}")}
    stdin = {p.id: p for p in load_problems(f"apps-stdin:{path}")}
    solutions = load_solutions(data_path("pools", "apps-mapcoder", root=args.data), list(functional.values()))
    call_based = [s for s in solutions if functional[s.problem_id].meta["call_based"]]
    pairs = []
    for s in call_based:
        code = definitions_only(s.code)
        if code and f"def {functional[s.problem_id].entry_point}(" in code:
            pairs.append((s, code))
    executor = Executor(Limits(timeout=6), workers=args.workers, cache_dir=args.cache)
    fr = executor.run_many([(functional[s.problem_id], code) for s, code in pairs])
    sr = executor.run_many([(stdin[s.problem_id], s.code) for s, _ in pairs])
    print(f"call-based candidates: {len(call_based)}; defining the starter's function: {len(pairs)}")
    print(f"functional (rebuilt arguments): {dict(Counter(r.verdict for r in fr))}")
    print(f"stdin (baseline, no rebuilding): {dict(Counter(r.verdict for r in sr))}")
    f_pass = sum(r.verdict == "pass" for r in fr)
    s_pass = sum(r.verdict == "pass" for r in sr)
    print(f"pass: functional {f_pass}, stdin {s_pass}, ratio {f_pass / max(1, s_pass):.2f}")
    agree = sum((a.verdict == "pass") == (b.verdict == "pass") for a, b in zip(fr, sr, strict=True))
    print(f"same pass/fail: {agree}/{len(pairs)}")
    only_stdin = [
        (s, a)
        for (s, _), a, b in zip(pairs, fr, sr, strict=True)
        if b.verdict == "pass" and a.verdict != "pass"
    ]
    print(f"functional fails where stdin passes (a wrong rebuild would show here): {len(only_stdin)}")
    for s, a in only_stdin:
        first = next((t for t in a.tests if t.status != "pass"), None)
        print(f"  {s.id} {s.policy}: {a.verdict}: {(first.error or '') if first else ''}"[:300])


if __name__ == "__main__":
    main()
