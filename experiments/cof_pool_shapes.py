"""How CoF-shaped are real LLM solutions, and what does ast-based splitting cost?

For every candidate in the MapCoder pools (the data folder's ``pools`` or ``--pools DIR``) this
splits the code with :func:`dreamprm_code.cof.split_info` and reports, per pool file:

* the share of candidates in each mode (functions = CoF-shaped, blocks = fallback, module =
  does not parse), next to a *baseline*: the share a line heuristic (two or more lines that
  start with ``def``/``async def`` after optional indentation) would call CoF, and the ratio;
* the mean number of steps, and the share of step prefixes that parse (decision 1 says all
  prefixes of a parseable program must parse);

and, over all candidates, the time of ``split_steps`` next to the time of a bare ``ast.parse``
of the same code (its floor), and of ``next_step_end`` over every CoF step.

Usage: python experiments/cof_pool_shapes.py [--pools DIR] [--markdown]
"""

from __future__ import annotations

import argparse
import ast
import re
import statistics
import time
from pathlib import Path

from dreamprm_code.cof import next_step_end, split_info, step_prefixes
from dreamprm_code.data import data_path, load_solutions

HEURISTIC_DEF = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]", re.MULTILINE)


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def _time(fn, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pools", type=Path, default=None, help="default: pools/ of $DREAMPRM_DATA")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = ap.parse_args()
    pools = args.pools or data_path("pools")
    files = sorted(pools.glob("*/*.jsonl"))
    if not files:
        raise SystemExit(f"no pool files under {pools}")

    rows = []
    all_codes: list[str] = []
    for path in files:
        codes = [s.code for s in load_solutions(path)]
        all_codes += codes
        modes = {"functions": 0, "blocks": 0, "module": 0}
        heuristic = 0
        n_steps = []
        prefixes_ok = prefixes_all = 0
        for code in codes:
            info = split_info(code)
            modes[info.mode] += 1
            n_steps.append(len(info.steps))
            heuristic += len(HEURISTIC_DEF.findall(code)) >= 2
            if info.mode != "module":
                for p in step_prefixes(code, info.steps):
                    prefixes_all += 1
                    prefixes_ok += _parses(p)
        n = len(codes)
        rows.append(
            {
                "pool": f"{path.parent.name}/{path.stem}",
                "n": n,
                "cof": modes["functions"] / n,
                "heuristic": heuristic / n,
                "blocks": modes["blocks"] / n,
                "module": modes["module"] / n,
                "steps": statistics.mean(n_steps),
                "prefix_ok": prefixes_ok / max(prefixes_all, 1),
            }
        )

    def share(x: float) -> str:
        return f"{100 * x:5.1f}%"

    header = [
        "pool",
        "n",
        "CoF (ast)",
        "baseline: >=2 def lines",
        "ratio",
        "blocks",
        "no parse",
        "steps",
        "prefixes parse",
    ]
    lines = []
    for r in rows:
        ratio = r["cof"] / r["heuristic"] if r["heuristic"] else float("nan")
        lines.append(
            [
                r["pool"],
                str(r["n"]),
                share(r["cof"]),
                share(r["heuristic"]),
                f"{ratio:.2f}",
                share(r["blocks"]),
                share(r["module"]),
                f"{r['steps']:.2f}",
                share(r["prefix_ok"]),
            ]
        )
    total = sum(r["n"] for r in rows)
    w = {
        k: sum(r[k] * r["n"] for r in rows) / total for k in ("cof", "heuristic", "blocks", "module", "steps")
    }
    lines.append(
        [
            "ALL",
            str(total),
            share(w["cof"]),
            share(w["heuristic"]),
            f"{w['cof'] / w['heuristic']:.2f}",
            share(w["blocks"]),
            share(w["module"]),
            f"{w['steps']:.2f}",
            "",
        ]
    )

    # timing over every candidate: split_steps vs its floor (one ast.parse), and next_step_end
    t_split = _time(lambda: [split_info(c) for c in all_codes])
    t_parse = _time(lambda: [_parses(c) for c in all_codes])
    cof_cases = []
    for c in all_codes:
        info = split_info(c)
        if info.mode == "functions":
            cof_cases += [(c, 0 if k == 0 else info.steps[k - 1].end) for k in range(len(info.steps) - 1)]
    t_next = _time(lambda: [next_step_end(c, s) for c, s in cof_cases], reps=1)
    timing = [
        [
            "split_info per candidate",
            f"{1e6 * t_split / len(all_codes):.0f} us",
            f"ast.parse: {1e6 * t_parse / len(all_codes):.0f} us",
            f"{t_split / t_parse:.2f}",
        ],
        [
            "next_step_end per CoF step",
            f"{1e6 * t_next / max(len(cof_cases), 1):.0f} us",
            f"ast.parse: {1e6 * t_parse / len(all_codes):.0f} us",
            f"{(t_next / max(len(cof_cases), 1)) / (t_parse / len(all_codes)):.2f}",
        ],
    ]
    theader = ["operation", "time", "baseline (same run)", "ratio"]
    _print(header, lines, args.markdown)
    print()
    _print(theader, timing, args.markdown)
    print(
        f"\n{len(all_codes)} candidates, {len(cof_cases)} CoF steps timed; best of 3 runs (next_step_end: 1 run)"
    )


def _print(header: list[str], rows: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
