"""complete_head: what a reply cut by the token limit is judged on."""

from __future__ import annotations

import ast

from hypothesis import given, settings
from hypothesis import strategies as st

from dreamprm_code.cof import complete_head

WHOLE = '''def main(xs):
    """Strategy."""
    return helper(xs)


def helper(xs):
    return sorted(xs)
'''


def test_code_that_parses_is_unchanged():
    assert complete_head(WHOLE) == WHOLE


def test_cut_inside_a_trailing_function_drops_it():
    cut = WHOLE + '\n\ndef extra(a, b):\n    """Compare two numbers.\n    >>> extra(1, 2.'
    assert complete_head(cut) == WHOLE.rstrip() + "\n"


def test_cut_inside_a_nested_helper_or_a_method_keeps_the_enclosing_head():
    nested = "def f(x):\n    def g(y):\n        return y\n    def h(z):\n        return (z +"
    assert complete_head(nested) == "def f(x):\n    def g(y):\n        return y\n"
    method = "class Solution:\n    def a(self):\n        return 1\n\n    def b(self):\n        return [1,"
    assert complete_head(method) == "class Solution:\n    def a(self):\n        return 1\n"


def test_nothing_parses_gives_the_code_back():
    assert complete_head("def f(:\n    return (") == "def f(:\n    return ("


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=len(WHOLE) - 1))
def test_any_cut_of_a_program_gives_a_parsing_head_of_it_or_itself(k: int):
    cut = WHOLE[:k]
    head = complete_head(cut)
    assert WHOLE.startswith(head.rstrip("\n")) or head == cut
    if head != cut:
        ast.parse(head)
