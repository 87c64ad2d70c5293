"""``load_problems(source)``: every benchmark mapped to the one :class:`records.Problem`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from dreamprm_code.data.common import split_source
from dreamprm_code.errors import UserError
from dreamprm_code.io import load_records, require
from dreamprm_code.records import Difficulty, Problem, TestCase, TestKind

SOURCES = ("humaneval", "mbpp", "apps", "apps-stdin", "leetcode", "livecodebench")


def _parse_ours(rec: dict) -> Problem:
    """One ``Problem.to_dict()`` line, checked field by field so a bad file names the field."""
    require(rec, "id", str)
    require(rec, "statement", str)
    require(rec, "platform", str)
    if require(rec, "difficulty", str) not in get_args(Difficulty):
        raise UserError(f"expected one of {get_args(Difficulty)}", field="difficulty")
    tests = require(rec, "tests", list)
    for i, t in enumerate(tests):
        if not isinstance(t, dict):
            raise UserError("expected an object", field=f"tests[{i}]")
        if t.get("kind") not in get_args(TestKind):
            raise UserError(f"expected one of {get_args(TestKind)}", field=f"tests[{i}].kind")
        if t["kind"] == "assert" and not isinstance(t.get("code"), str):
            raise UserError("an assert test needs its code", field=f"tests[{i}].code")
        if t["kind"] == "functional" and not isinstance(t.get("input", []), list):
            raise UserError("expected the list of positional arguments", field=f"tests[{i}].input")
        if t["kind"] == "stdin" and not (
            isinstance(t.get("input"), str) and isinstance(t.get("output"), str)
        ):
            raise UserError("stdin tests need input and output text", field=f"tests[{i}]")
    rec = {"title": rec["id"], **rec}
    problem = Problem.from_dict(rec)
    problem.tests = [TestCase.from_dict(t) for t in tests]
    return problem


def load_problem_file(path: str | Path) -> list[Problem]:
    """Our own problems JSONL (``Problem.to_dict()`` per line)."""
    problems = load_records(path, _parse_ours)
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise UserError(f"duplicate problem id {p.id!r}", path=path, field="id")
        seen.add(p.id)
    return problems


def load_problems(source: str, **opts: Any) -> list[Problem]:
    """Load a benchmark by name (``humaneval``, ``mbpp[:PATH]``, ``apps[:PATH]``,
    ``apps-stdin[:PATH]``, ``leetcode[:PATH]``, ``livecodebench[:PATH]``) or our problems JSONL.
    A file in LiveCodeBench's layout (``question_id``, ``question_content``) is read as
    ``livecodebench:PATH`` without the prefix.

    Options: ``as_stdin`` (apps); ``release``, ``start_date``, ``end_date``, ``platform``,
    ``hub_base``, ``cache_dir`` (livecodebench). Unknown options are an error rather than silently ignored.
    """
    opts = {k: v for k, v in opts.items() if v is not None}
    name, path = split_source(source)
    allowed: dict[str, set[str]] = {
        "humaneval": set(),
        "mbpp": set(),
        "apps": {"as_stdin"},
        "apps-stdin": set(),
        "leetcode": set(),
        "livecodebench": {"release", "start_date", "end_date", "hub_base", "platform", "cache_dir"},
    }
    if name not in allowed:
        file = Path(source)
        if file.is_file():
            from dreamprm_code.data.livecodebench import is_lcb_file, load_livecodebench

            if is_lcb_file(file):  # recognised from its fields, as if given as livecodebench:PATH
                _check_opts(source, opts, allowed["livecodebench"])
                return load_livecodebench(file, **opts)
            _check_opts(source, opts, set())
            try:
                return load_problem_file(file)
            except UserError as exc:
                if exc.field != "id":
                    raise
                raise UserError(
                    f"{exc.message} (not our problems layout; for a LiveCodeBench file pass livecodebench:{file}, "
                    f"for a benchmark NAME:{file} with NAME one of {', '.join(SOURCES)})",
                    path=exc.path, line=exc.line, field=exc.field,
                ) from None
        raise UserError(
            f"unknown problem source {source!r}: expected one of {', '.join(SOURCES)} (optionally NAME:PATH) "
            "or the path of a problems JSONL file"
        )
    _check_opts(name, opts, allowed[name])
    if name == "humaneval":
        from dreamprm_code.data.humaneval import load_humaneval

        return load_humaneval(path)
    if name == "mbpp":
        from dreamprm_code.data.mbpp import load_mbpp

        return load_mbpp(path)
    if name in ("apps", "apps-stdin"):
        from dreamprm_code.data.apps import load_apps

        return load_apps(path, as_stdin=name == "apps-stdin" or bool(opts.get("as_stdin")))
    if name == "leetcode":
        from dreamprm_code.data.leetcode import load_leetcode

        return load_leetcode(path)
    from dreamprm_code.data.livecodebench import load_livecodebench

    return load_livecodebench(path, **opts)


def _check_opts(name: str, opts: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(k for k, v in opts.items() if k not in allowed and v is not None)
    if extra:
        raise UserError(f"option(s) {', '.join(extra)} do not apply to source {name!r}")
