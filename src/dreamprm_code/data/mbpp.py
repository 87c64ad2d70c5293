"""MBPP: each ``assert f(...) == ...`` line becomes one test, typed when it safely can be."""

from __future__ import annotations

import ast
import builtins
import warnings
from collections import Counter
from pathlib import Path

from dreamprm_code.data.common import NOT_LITERAL, default_path, json_faithful, literal
from dreamprm_code.errors import UserError
from dreamprm_code.io import load_records, require
from dreamprm_code.records import Problem, TestCase


def _under_test(name: str, defined: frozenset[str]) -> bool:
    """A call to the solution's function: defined by the reference, or at least not a builtin.

    MBPP has solutions named like builtins (task 126 defines ``sum``), hence ``defined`` first.
    """
    return name in defined or not hasattr(builtins, name)


def parse_assert(line: str, defined: frozenset[str] = frozenset()) -> tuple[str | None, TestCase]:
    """One MBPP test line -> (called function name or None, TestCase).

    ``defined``: the function names the reference solution defines.

    ``assert f(<literals>) == <literal>`` becomes a ``functional`` test when every value survives
    JSON unchanged (no tuples, sets, non-finite floats...); anything else (tuples, ``1.0/3``,
    ``set(f(x)) == ...``, trees built in setup code) stays an ``assert`` test holding the line,
    so nothing is compared more loosely than MBPP's own ``==``.
    """
    text = line.strip()
    try:
        tree = ast.parse(text)
    except SyntaxError:
        raise UserError(f"test is not valid Python: {text[:80]!r}", field="test_list") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise UserError(f"test is not one assert statement: {text[:80]!r}", field="test_list")
    test = tree.body[0].test
    if (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Eq)
        and isinstance(test.left, ast.Call)
        and isinstance(test.left.func, ast.Name)
        and _under_test(test.left.func.id, defined)
        and not test.left.keywords
        and not any(isinstance(a, ast.Starred) for a in test.left.args)
    ):
        args = [literal(a) for a in test.left.args]
        expected = literal(test.comparators[0])
        values = [*args, expected]
        if all(v is not NOT_LITERAL for v in values) and json_faithful(values):
            return test.left.func.id, TestCase(kind="functional", input=args, output=expected)
    calls = [n.func.id for n in ast.walk(test) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    callee = next((c for c in calls if c in defined), None) or next(
        (c for c in calls if _under_test(c, defined)), None
    )
    return callee, TestCase(kind="assert", code=text + "\n")


def _functions(code: str) -> dict[str, str]:
    """``{name: "def name(a, b):"}`` for the reference solution's functions, for the prompt."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in old reference code
            tree = ast.parse(code)
    except SyntaxError:
        return {}
    return {
        node.name: f"def {node.name}({ast.unparse(node.args)}):"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


def _parse(rec: dict) -> Problem:
    task_id = require(rec, "task_id", (int, str))
    text = require(rec, "text", str)
    code = require(rec, "code", str).replace("\r\n", "\n")
    lines = require(rec, "test_list", list)
    if not lines:
        raise UserError("no tests", field="test_list")
    functions = _functions(code)
    defined = frozenset(functions)
    tests: list[TestCase] = []
    callees: Counter[str] = Counter()
    for line in lines:
        if not isinstance(line, str):
            raise UserError("expected a list of strings", field="test_list")
        name, test = parse_assert(line, defined)
        if name:
            callees[name] += 1
        tests.append(test)
    if not callees:
        raise UserError("no function call found in the tests", field="test_list")
    entry = callees.most_common(1)[0][0]
    sig = functions.get(entry) or f"def {entry}(...):"
    # MBPP's own prompt shows the tests (evalplus's MBPP+ shows the first one): without an
    # example the expected return type is often a guess (a list or a tuple, a string or a value).
    statement = (
        f"{text}\nWrite it as a Python function `{entry}` with this signature:\n{sig}\n"
        f"Your code should pass this test:\n{lines[0].strip()}"
    )
    return Problem(
        id=f"mbpp/{task_id}",
        title=entry,
        statement=statement,
        platform="mbpp",
        # MBPP is "Mostly Basic Python Problems": no labels, all entry level, so "easy".
        difficulty="easy",
        tests=tests,
        entry_point=entry,
        source="mbpp",
        setup_code=(rec.get("test_setup_code") or "").replace("\r\n", "\n"),
        meta={
            "reference_solution": code,
            "challenge_tests": list(rec.get("challenge_test_list") or []),
        },
    )


def load_mbpp(path: str | Path | None = None) -> list[Problem]:
    """The MBPP problems (974 in the full file) with ids ``mbpp/<task_id>``."""
    return load_records(path or default_path("mbpp", "mbpp/mbpp.jsonl"), _parse)
