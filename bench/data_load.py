"""How long loading problems, pools and extracting code take, next to what they cannot beat.

    python bench/data_load.py [--data DIR] [--repeat 3]

Baselines, measured in the same run on the same files:
- loaders: reading the file and ``json.loads`` of every line (the floor any loader pays);
- LeetCode: the full-``ast`` test reader, which the line reader replaces when a script is plain;
- ``extract_code``: LiveCodeBench's rule (the lines between the last two fence lines), which is
  cheaper but wrong on replies that leave a fence open.
Each figure is the best of ``--repeat`` runs (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from dreamprm_code.data import data_dir, data_path, extract_code, load_problems, load_solutions
from dreamprm_code.data.leetcode import _ast_tests, _fast_tests


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def lcb_extract(reply: str) -> str:
    """LiveCodeBench's ``extract_code``: the text between the last two lines holding a fence."""
    lines = reply.split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return ""
    return "\n".join(lines[fences[-2] + 1 : fences[-1]])


def row(name: str, ours: float, base: float, base_name: str) -> None:
    print(
        f"{name:<34} {ours * 1000:9.1f} ms   {base_name:<28} {base * 1000:9.1f} ms   ratio {ours / base:6.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=data_dir(), help="the data folder (default: $DREAMPRM_DATA)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    data, n = data_path(root=args.data), args.repeat
    files = {
        "mbpp": data / "mbpp/mbpp.jsonl",
        "apps": data / "apps-150/problems.jsonl",
        "apps-stdin": data / "apps-150/problems.jsonl",
        "leetcode": data / "leetcode-180/problems.jsonl",
    }
    for name, path in files.items():
        ours = best(lambda name=name, path=path: load_problems(f"{name}:{path}"), n)
        base = best(lambda path=path: json_lines(path), n)
        row(f"load_problems {name}", ours, base, "json.loads per line")
    ours = best(lambda: load_problems("humaneval"), n)
    print(f"{'load_problems humaneval':<34} {ours * 1000:9.1f} ms")

    scripts = [rec["test"] for rec in json_lines(files["leetcode"])]
    ours = best(lambda: [_fast_tests(s) or _ast_tests(s) for s in scripts], n)
    base = best(lambda: [_ast_tests(s) for s in scripts], n)
    row("leetcode tests: line reader", ours, base, "full ast reader")

    for pool in ("apps-mapcoder", "humaneval-mapcoder"):
        folder = data / "pools" / pool
        ours = best(lambda folder=folder: load_solutions(folder), n)
        base = best(lambda folder=folder: [json_lines(p) for p in sorted(folder.glob("*.jsonl"))], n)
        row(f"load_solutions {pool}", ours, base, "json.loads per line")

    replies = [
        r
        for p in sorted((data / "pools").glob("*/*.jsonl"))
        for rec in json_lines(p)
        for r in rec.get("responses", [])
    ]
    ours = best(lambda: [extract_code(r) for r in replies], n)
    base = best(lambda: [lcb_extract(r) for r in replies], n)
    row(f"extract_code x{len(replies)}", ours, base, "LiveCodeBench's rule")
    codes = [
        c
        for p in sorted((data / "pools").glob("*/*.jsonl"))
        for rec in json_lines(p)
        for c in rec.get("source_codes", [])
    ]
    same_ours = sum(extract_code(r).strip() == c.strip() for r, c in zip(replies, codes, strict=True))
    same_lcb = sum(lcb_extract(r).strip() == c.strip() for r, c in zip(replies, codes, strict=True))
    print(
        f"agreement with the pools' own extracted code: ours {same_ours}/{len(codes)}, LCB rule {same_lcb}/{len(codes)}"
    )


if __name__ == "__main__":
    main()
