"""Every real candidate in the data folder's ``pools`` splits, tiles, and keeps parseable prefixes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dreamprm_code.cof import next_step_end, split_info, step_prefixes
from dreamprm_code.data import load_solutions


def _pool_files(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "pools").glob("*/*.jsonl"))
    assert len(files) == 20, files
    return files


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return True


@pytest.mark.slow
def test_every_pool_candidate_splits(shared_data: Path):
    total = cof = 0
    for path in _pool_files(shared_data):
        for sol in load_solutions(path):
            total += 1
            info = split_info(sol.code)
            steps = info.steps
            assert steps[0].start == 0 and steps[-1].end == len(sol.code), sol.id
            assert all(a.end == b.start and a.start < a.end for a, b in zip(steps, steps[1:], strict=False))
            prefixes = step_prefixes(sol.code, steps)
            if info.mode == "module":
                assert len(steps) == 1
                continue
            # decision 1: every prefix of a parseable program is itself a parseable program
            assert all(_parses(p) for p in prefixes), (sol.id, info.mode)
            if info.mode == "functions":
                cof += 1
                for k in range(len(steps) - 1):
                    start = 0 if k == 0 else steps[k - 1].end
                    assert next_step_end(sol.code, start) == steps[k].end, (sol.id, k)
    assert total >= 3000  # the loader skips records without code
    assert 0 < cof < total
