"""LiveCodeBench's output comparison rules (``lcb_runner/evaluation/testing_util.py``).

Run in the host only, on trusted plain data: the sandbox never sees an expected output.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation


def stripped_lines(text: str) -> list[str]:
    """LCB: strip the whole text, split on newlines, strip every line."""
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(tok) for tok in line.split()]
    except (InvalidOperation, ValueError):
        return None


def compare_stdout(actual: str, expected: str) -> bool:
    """LCB ``grade_stdio``: same number of stripped lines; each line equal as text, or, when
    both lines parse as whitespace-separated decimals, equal as exact ``Decimal`` lists (so
    ``1.50`` matches ``1.5`` but ``0.333`` does not match ``0.3333``)."""
    got = stripped_lines(actual)
    want = stripped_lines(expected)
    if len(got) != len(want):
        return False
    for a, b in zip(got, want, strict=False):
        if a == b:
            continue
        da = _decimals(a)
        if da is None:
            return False
        db = _decimals(b)
        if db is None or da != db:
            return False
    return True


def compare_return(actual: object, expected: object) -> bool:
    """LCB ``grade_call_based``: a returned tuple counts as a list (top level only), then ``==``.

    Both sides are trusted plain data here, never a candidate's object.
    """
    if isinstance(actual, tuple):
        actual = list(actual)
    try:
        return bool(actual == expected)
    except RecursionError:
        return False
