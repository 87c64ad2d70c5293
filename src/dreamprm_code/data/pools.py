"""The MapCoder pools of the data folder, each with the problems its recorded verdicts were made on."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from dreamprm_code.data.common import data_path
from dreamprm_code.data.problems import load_problems
from dreamprm_code.records import Problem

AppsTests = Literal["auto", "all", "hidden"]


def mapcoder_pools(
    root: str | Path | None = None, apps_tests: AppsTests = "auto"
) -> dict[str, tuple[list[Problem], Path]]:
    """``{"humaneval": (problems, folder), "apps": (problems, folder)}`` for grading the pools.

    HumanEval pools are graded against ``humaneval``; APPS pools against ``apps-stdin`` (their
    candidates are stdin programs). The loader puts an APPS statement's samples first (public)
    and ``test_list`` after; the pools' labels were made on ``test_list`` alone for call-based
    problems and on both for stdin problems, so ``auto`` keeps those tests, ``hidden`` keeps
    ``test_list`` everywhere and ``all`` everything the loader gives (docs/execution.md).
    """
    apps = load_problems(f"apps-stdin:{data_path('apps-150', 'problems.jsonl', root=root)}")
    if apps_tests != "all":
        for p in apps:
            if apps_tests == "hidden" or p.meta.get("call_based"):
                p.tests = [t for t in p.tests if not t.public] or p.tests
    return {
        "humaneval": (load_problems("humaneval"), data_path("pools", "humaneval-mapcoder", root=root)),
        "apps": (apps, data_path("pools", "apps-mapcoder", root=root)),
    }
