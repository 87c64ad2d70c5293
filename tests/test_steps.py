"""Unit tests of the step rules (docs/architecture.md, "Steps come from the syntax tree"): modes, boundaries, offsets, next_step_end."""

from __future__ import annotations

import pytest

from dreamprm_code.cof import (
    check_steps,
    is_cof,
    next_step_end,
    split_info,
    split_steps,
    step_prefixes,
)
from dreamprm_code.errors import UserError
from dreamprm_code.records import Step

COF = '''import sys
MOD = 10**9 + 7


def main():
    """Strategy: read n, solve, print."""
    n = int(input())
    print(solve(n))

# the helper comes next
@decorate
def solve(n):
    """Plan: recurse through an inner helper."""
    def inner(x):
        return x
    return inner(n) % MOD


class UF:
    def __init__(self):
        self.p = {}

if __name__ == "__main__":
    main()
'''

LEETCODE = '''from typing import List
class Solution:
    """Two methods."""
    LIMIT = 3

    def maxSum(self, nums: List[int]) -> int:
        """Strategy: add them up with the helper."""
        return self.total(nums)

    async def total(self, nums):
        s = 0
        for x in nums:
            s += x
        return s
'''

ONE_FUNCTION = '''from typing import List

def has_close(numbers: List[float], t: float) -> bool:
    """Check every pair."""
    n = len(numbers)
    # compare all pairs
    for i in range(n):
        for j in range(i + 1, n):
            if abs(numbers[i] - numbers[j]) < t:
                return True

    return False
'''

SCRIPT = """n = int(input())
a = list(map(int, input().split()))

# count
c = 0
for x in a:
    c += x
print(c)
"""


def texts(code: str, steps: list[Step]) -> list[str]:
    return [code[s.start : s.end] for s in steps]


def assert_tiles(code: str, steps: list[Step]) -> None:
    assert steps[0].start == 0
    assert steps[-1].end == len(code)
    for a, b in zip(steps, steps[1:], strict=False):
        assert a.end == b.start
        assert a.start < a.end or len(code) == 0


def test_cof_program_steps_and_boundaries():
    info = split_info(COF)
    assert info.mode == "functions" and info.functions == 2
    steps = info.steps
    assert [(s.name, s.kind) for s in steps] == [("main", "function"), ("solve", "function"), ("UF", "block")]
    assert_tiles(COF, steps)
    t = texts(COF, steps)
    # imports and constants before the first function belong to step 1; it ends after main's last line
    assert t[0].startswith("import sys\nMOD") and t[0].endswith("    print(solve(n))\n")
    # the comment and decorator leading into solve open step 2; the nested def is not a step
    assert t[1].startswith("\n# the helper comes next\n@decorate\ndef solve(n):")
    assert t[1].endswith("    return inner(n) % MOD\n")
    # the class is one step and the __main__ block goes with the last step
    assert t[2].startswith("\n\nclass UF:") and t[2].endswith("    main()\n")
    assert is_cof(COF)


def test_solution_methods_class_header_goes_with_first_method():
    steps = split_steps(LEETCODE)
    assert [(s.name, s.kind) for s in steps] == [("Solution.maxSum", "method"), ("Solution.total", "method")]
    t = texts(LEETCODE, steps)
    assert t[0].startswith('from typing import List\nclass Solution:\n    """Two methods."""\n    LIMIT = 3')
    assert t[0].endswith("return self.total(nums)\n")
    assert t[1].startswith("\n    async def total")
    assert_tiles(LEETCODE, steps)


def test_one_function_falls_back_to_body_blocks():
    info = split_info(ONE_FUNCTION)
    assert info.mode == "blocks" and "one function" in info.reason
    assert not is_cof(ONE_FUNCTION)
    t = texts(ONE_FUNCTION, info.steps)
    assert all(s.kind == "block" for s in info.steps)
    # header, docstring and the statements up to the first comment/blank line are block 1
    assert t[0] == ONE_FUNCTION[: ONE_FUNCTION.index("    # compare")]
    assert t[1].startswith("    # compare all pairs\n    for i") and t[1].endswith("return True\n")
    assert t[2] == "\n    return False\n"


def test_script_without_functions_falls_back_to_top_level_blocks():
    info = split_info(SCRIPT)
    assert info.mode == "blocks" and info.reason.startswith("no function")
    assert texts(SCRIPT, info.steps) == [
        "n = int(input())\na = list(map(int, input().split()))\n",
        "\n# count\nc = 0\nfor x in a:\n    c += x\nprint(c)\n",
    ]


def test_one_solution_method_opens_the_method_body():
    code = "class Solution:\n    def f(self, a):\n        x = a\n\n        y = x + 1\n\n        return y\n"
    info = split_info(code)
    assert info.mode == "blocks"
    t = texts(code, info.steps)
    assert t == [
        "class Solution:\n    def f(self, a):\n        x = a\n",
        "\n        y = x + 1\n",
        "\n        return y\n",
    ]


def test_unparsable_and_empty_code_is_one_module_step():
    for code, reason in [
        ("def f(:\n    pass\n", "does not parse"),
        ("", "no statements"),
        ("# hi\n\n", "no statements"),
        ("x = 1\x00\n", "does not parse"),
        ("\ufeffx = 1\n", "does not parse"),
    ]:
        info = split_info(code)
        assert info.mode == "module" and info.reason == reason
        assert info.steps == [Step("module", "module", 0, len(code))]


def test_crlf_lone_cr_and_tabs():
    for nl in ("\r\n", "\r"):
        code = COF.replace("\n", nl)
        steps = split_steps(code)
        assert [s.name for s in steps] == ["main", "solve", "UF"]
        assert_tiles(code, steps)
        assert [t.replace(nl, "\n") for t in texts(code, steps)] == texts(COF, split_steps(COF))
    tabbed = LEETCODE.replace("    ", "\t")
    assert [s.name for s in split_steps(tabbed)] == ["Solution.maxSum", "Solution.total"]
    assert texts(tabbed, split_steps(tabbed))[1].startswith("\n\tasync def total")


def test_offsets_are_characters_not_bytes():
    code = 'S = "é😀 naïve"\n\ndef f():\n    """Überblick: 😀."""\n    return S\n\ndef g():\n    return "ß" * 2\n'
    steps = split_steps(code)
    assert [s.name for s in steps] == ["f", "g"]
    assert code[steps[1].start :] == '\ndef g():\n    return "ß" * 2\n'
    assert step_prefixes(code, steps)[0] == code[: code.index("\ndef g")]


def test_semicolons_and_one_line_defs():
    code = "import os; import sys\ndef a(): return 1\ndef b(): x = 2; return x\nprint(a(), b())"
    steps = split_steps(code)
    assert texts(code, steps) == [
        "import os; import sys\ndef a(): return 1\n",
        "def b(): x = 2; return x\nprint(a(), b())",
    ]


def test_max_blocks_merges_shortest_neighbours():
    code = "".join(f"x{i} = {i}\n\n" for i in range(20))
    assert len(split_steps(code, max_blocks=100)) == 20
    steps = split_steps(code, max_blocks=5)
    assert len(steps) == 5
    assert_tiles(code, steps)
    assert len(split_steps(code, max_blocks=1)) == 1


def test_functions_are_never_merged():
    code = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(20))
    assert len(split_steps(code, max_blocks=2)) == 20


def test_step_prefixes_and_check_steps():
    steps = split_steps(COF)
    prefixes = step_prefixes(COF, steps)
    assert prefixes[-1] == COF
    assert all(prefixes[i + 1].startswith(prefixes[i]) for i in range(len(prefixes) - 1))
    with pytest.raises(UserError, match="should start at"):
        check_steps(COF, [Step("a", "block", 0, 5), Step("b", "block", 6, len(COF))])
    with pytest.raises(UserError, match="last step ends"):
        step_prefixes(COF, steps[:-1])
    with pytest.raises(UserError, match="at least one step"):
        check_steps(COF, [])


def test_split_info_to_dict_lists_prefix_ends_and_lines():
    d = split_info(COF).to_dict()
    assert d["mode"] == "functions"
    assert [s["prefix_end"] for s in d["steps"]] == [s.end for s in split_steps(COF)]
    assert d["steps"][0]["first_line"] == 1
    assert d["steps"][-1]["last_line"] == COF.count("\n")


# ---------------------------------------------------------------- next_step_end


def test_next_step_end_matches_split_steps_on_complete_code():
    steps = split_steps(COF)
    assert next_step_end(COF, 0) == steps[0].end
    assert next_step_end(COF, steps[0].end) == steps[1].end
    # the class is last, followed by the __main__ block: complete without `final`
    assert next_step_end(COF, steps[1].end) == COF.index("\nif __name__")
    assert next_step_end(COF, steps[2].end) is None
    lc = split_steps(LEETCODE)
    assert next_step_end(LEETCODE, 0) == lc[0].end


def test_next_step_end_waits_for_the_body_to_close():
    prefix = COF[: split_steps(COF)[0].end]
    cont = "\ndef solve(n):\n    x = 1\n\n    # still inside\n"
    assert next_step_end(prefix + cont, len(prefix)) is None
    # a final continuation closes it at the end of the text
    assert next_step_end(prefix + cont, len(prefix), final=True) == len(prefix + cont) - len(
        "\n    # still inside\n"
    )
    more = cont + "    return x\n\ndef other("  # the next function is half written and does not parse
    end = next_step_end(prefix + more, len(prefix))
    assert (prefix + more)[:end].endswith("    return x\n")


def test_next_step_end_ignores_def_lines_inside_strings_and_brackets():
    prefix = "def main():\n    pass\n"
    cont = 'def f():\n    s = """\ndef fake():\n"""\n    t = [1,\n2]\n    return s\nx = 1\n'
    assert (prefix + cont)[: next_step_end(prefix + cont, len(prefix))].endswith("    return s\n")
    # an unterminated string: nothing complete yet
    assert (
        next_step_end(prefix + 'def f():\n    s = """\ndef fake():\n    return 1\n\nx = 2\n', len(prefix))
        is None
    )


def test_next_step_end_solution_methods():
    prefix = "class Solution:\n    def a(self):\n        return self.b()\n"
    cont = "\n    def b(self):\n        return 1\n\n    def c(self"
    end = next_step_end(prefix + cont, len(prefix))
    assert (prefix + cont)[len(prefix) : end] == "\n    def b(self):\n        return 1\n"
    assert next_step_end(prefix + "\n    def b(self):\n        return 1\n", len(prefix)) is None
    assert (
        next_step_end(prefix + "\n    def b(self):\n        return 1\n", len(prefix), final=True) is not None
    )
    # a continuation that opens class Solution itself: the first method is the step
    code = "import os\n"
    cont = "class Solution:\n    def a(self):\n        return 1\n    def b(self):\n        pass\n"
    assert (code + cont)[: next_step_end(code + cont, len(code))].endswith("return 1\n")


def test_next_step_end_skips_the_function_the_prefix_is_inside():
    # the prefix ends inside main (a blocks-mode prefix): finishing main is not a new step
    code = "def main():\n    x = 1\n"
    cont = "    print(x)\n\ndef helper():\n    return 2\n\nmain()\n"
    end = next_step_end(code + cont, len(code))
    assert (code + cont)[:end].endswith("return 2\n")


def test_next_step_end_prefix_without_trailing_newline_and_bounds():
    code = "def a():\n    return 1"
    cont = "\n\ndef b():\n    return 2\nprint(a())\n"
    assert (code + cont)[: next_step_end(code + cont, len(code))].endswith("return 2\n")
    assert next_step_end("", 0) is None
    assert next_step_end("x = 1\n", 99) is None
    assert next_step_end(COF, -5) == split_steps(COF)[0].end


def test_max_blocks_merges_the_shortest_adjacent_pair():
    big = "x = [\n" + "    1,\n" * 10 + "]\n"
    code = big + "\na = 1\n\nb = 2\n\n" + big.replace("x", "y")
    assert len(split_steps(code, max_blocks=10)) == 4
    t = texts(code, split_steps(code, max_blocks=3))
    assert t == [big, "\na = 1\n\nb = 2\n", "\n" + big.replace("x", "y")]
