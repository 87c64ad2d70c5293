"""Prompt templates, build_prompt, continuation_prompt and code_from_continuation."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamprm_code.cof import split_steps, step_prefixes
from dreamprm_code.cof.prompts import (
    FENCE_OPEN,
    build_prompt,
    code_from_continuation,
    continuation_prompt,
    load_templates,
    problem_kind,
)
from dreamprm_code.errors import UserError
from dreamprm_code.policy import Prompt
from dreamprm_code.records import Problem
from dreamprm_code.records import TestCase as Case

STDIN = Problem(
    id="abc/1",
    title="Sum",
    statement="Read two integers and print their sum.",
    platform="atcoder",
    difficulty="easy",
    tests=[Case("stdin", "1 2\n", "3\n")],
)
LEETCODE = Problem(
    id="lc/1",
    title="Two Sum",
    statement="Return indices of the two numbers that add up to target.",
    platform="leetcode",
    difficulty="easy",
    tests=[Case("functional", [[2, 7], 9], [0, 1])],
    starter_code="class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
    entry_point="twoSum",
)
HUMANEVAL = Problem(
    id="HumanEval/0",
    title="add",
    statement="Add two numbers x and y.",
    platform="humaneval",
    difficulty="easy",
    tests=[Case("assert", code="assert add(1, 2) == 3")],
    starter_code='def add(x: int, y: int) -> int:\n    """Add two numbers\n    x and y.\n    """\n',
    entry_point="add",
)
MBPP = Problem(
    id="mbpp/2",
    title="square",
    statement="Write a function to square a number.\ndef square(n):",
    platform="mbpp",
    difficulty="easy",
    tests=[Case("assert", code="assert square(3) == 9")],
    entry_point="square",
)
ALL = [STDIN, LEETCODE, HUMANEVAL, MBPP]


def test_problem_kind():
    assert [problem_kind(p) for p in ALL] == ["stdin", "leetcode", "function", "function"]


@pytest.mark.parametrize("problem", ALL, ids=lambda p: p.id)
@pytest.mark.parametrize("style", ["cof", "plain"])
def test_chat_prompts_render_fully(problem: Problem, style: str):
    prompt = build_prompt(problem, style=style)
    assert isinstance(prompt, Prompt) and prompt.prefill == ""
    roles = [m["role"] for m in prompt.messages]
    assert roles == ["system", "user"]
    user = prompt.messages[1]["content"]
    assert "{{" not in user and "}}" not in user
    assert "```python code block" in user
    if problem.starter_code:
        assert problem.starter_code.strip() in user
    cof = "chain of functions" in user
    assert cof == (style == "cof")
    if style == "cof":
        assert "Do not define functions inside other functions" in user
        if problem_kind(problem) == "stdin":
            assert "`main()`" in user and 'if __name__ == "__main__":' in user
        else:
            assert f"`{problem.entry_point}` comes first and is the strategy" in user


def test_statement_shown_once_when_the_starter_holds_it():
    user = build_prompt(HUMANEVAL).messages[1]["content"]
    assert user.count("Add two numbers") == 1
    assert STDIN.statement in build_prompt(STDIN).messages[1]["content"]
    assert MBPP.statement in build_prompt(MBPP).messages[1]["content"]


def test_completion_form_ends_with_an_open_fence():
    for p in ALL:
        prompt = build_prompt(p, form="completion")
        assert prompt.messages is None and prompt.text.endswith("\n\n" + FENCE_OPEN)
        assert "{{" not in prompt.text
    assert "chain of functions" in build_prompt(STDIN, form="completion").text
    assert "chain of functions" not in build_prompt(STDIN, "plain", "completion").text


def test_open_fence_and_bad_form():
    assert build_prompt(STDIN, open_fence=True).prefill == FENCE_OPEN
    with pytest.raises(UserError, match="form must be"):
        build_prompt(STDIN, form="json")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="no template 'fancy_stdin.txt'.*cof, plain"):
        build_prompt(STDIN, style="fancy")


def test_continuation_prompt_prefills_the_prefix():
    code = "def main():\n    print(f())\n\ndef f():\n    return 1\n"
    prefix = step_prefixes(code, split_steps(code))[0]
    chat = continuation_prompt(STDIN, prefix)
    assert chat.prefill == FENCE_OPEN + prefix
    assert chat.messages == build_prompt(STDIN).messages
    comp = continuation_prompt(STDIN, prefix, form="completion")
    assert comp.text == build_prompt(STDIN, form="completion").text + prefix
    # the rollout's code is the prefix plus the continuation, cut at the closing fence
    reply = "\ndef f():\n    return 1\n\nif __name__ == '__main__':\n    main()\n```\nThis program prints 1."
    rolled = code_from_continuation(prefix, reply)
    assert rolled.startswith(prefix)
    assert rolled.endswith("    main()\n")


def test_code_from_continuation_edges():
    assert code_from_continuation("", "x = 1\n```\ntext") == "x = 1\n"
    assert code_from_continuation("a = 1\n", "```\nrest") == "a = 1\n"
    # a fence right after a prefix that ends mid-line is not a closing fence line
    assert code_from_continuation("s = '", "```'\nx = 1\n```") == "s = '```'\nx = 1\n"
    assert code_from_continuation("", "x = 1\n   ```\n") == "x = 1\n"
    assert code_from_continuation("p\n", "no fence at all") == "p\nno fence at all"


def test_templates_directory_overrides_and_adds_styles(tmp_path: Path):
    (tmp_path / "cof_stdin.txt").write_text(
        "My override.\n=== user ===\nPROBLEM {{title}}: {{statement}}\n=== completion ===\nC {{problem_id}}\n",
        encoding="utf-8",
    )
    (tmp_path / "terse_leetcode.txt").write_text(
        "=== system ===\nBe terse.\n=== user ===\n{{starter_block}}\n=== starter ===\nS: {{starter_code}}\n"
        "=== completion ===\nx\n",
        encoding="utf-8",
    )
    p = build_prompt(STDIN, templates=tmp_path)
    assert p.messages == [{"role": "user", "content": f"PROBLEM Sum: {STDIN.statement}"}]
    assert build_prompt(STDIN, form="completion", templates=tmp_path).text == "C abc/1\n\n" + FENCE_OPEN
    # untouched files still come from the package
    assert "chain of functions" in build_prompt(LEETCODE, templates=tmp_path).messages[1]["content"]
    terse = build_prompt(LEETCODE, style="terse", templates=str(tmp_path))
    assert terse.messages[0]["content"] == "Be terse."
    assert terse.messages[1]["content"].startswith("S: class Solution:")
    loaded = load_templates(tmp_path)
    assert {"cof_stdin", "plain_stdin", "terse_leetcode"} <= set(loaded)
    assert build_prompt(STDIN, templates=loaded).messages == p.messages


def test_template_errors_name_file_and_line(tmp_path: Path):
    bad = tmp_path / "cof_stdin.txt"
    bad.write_text("=== user ===\nline one\nsee {{statment}}\n=== completion ===\nx\n", encoding="utf-8")
    with pytest.raises(UserError) as exc:
        build_prompt(STDIN, templates=tmp_path)
    assert exc.value.path == str(bad) and exc.value.line == 3 and "statment" in exc.value.message
    bad.write_text("=== user ===\nx\n", encoding="utf-8")
    with pytest.raises(UserError, match="completion"):
        load_templates(tmp_path)
    bad.write_text("=== user ===\nx\n=== footer ===\ny\n=== completion ===\nz\n", encoding="utf-8")
    with pytest.raises(UserError, match="unknown section 'footer'") as exc:
        load_templates(tmp_path)
    assert exc.value.line == 3
    with pytest.raises(UserError, match="not found"):
        load_templates(tmp_path / "missing")


def test_packaged_templates_cover_every_style_and_kind():
    loaded = load_templates()
    for style in ("cof", "plain"):
        for kind in ("stdin", "leetcode", "function"):
            t = loaded[f"{style}_{kind}"]
            assert {"system", "user", "starter", "completion"} <= set(t.sections)


def test_prefill_starter_puts_the_starter_after_the_fence_for_function_problems():
    he = build_prompt(HUMANEVAL, prefill_starter=True)
    assert he.prefill == FENCE_OPEN + HUMANEVAL.starter_code.rstrip() + "\n"
    lc = build_prompt(LEETCODE, prefill_starter=True)
    assert lc.prefill.startswith(FENCE_OPEN + "class Solution:\n    def twoSum(") and lc.prefill.endswith("]:\n")
    # no starter to give: just the opened fence (MBPP), and stdin problems never get one
    assert build_prompt(MBPP, prefill_starter=True).prefill == FENCE_OPEN
    assert build_prompt(STDIN, prefill_starter=True, open_fence=True).prefill == FENCE_OPEN
    completion = build_prompt(HUMANEVAL, form="completion", prefill_starter=True).text
    assert completion.endswith(FENCE_OPEN + HUMANEVAL.starter_code.rstrip() + "\n")


def test_code_stops_end_function_solutions_before_their_usage_examples():
    from dreamprm_code.cof import code_stops, trailer_stops

    assert code_stops(STDIN) == ["```"] and trailer_stops(STDIN) == []
    stops = code_stops(HUMANEVAL)
    assert stops[0] == "```" and "\nprint(" in stops and "\n# Example" in stops
    reply = "    return x + y\n\n# Example usage\nprint(add(1, 2))\n"
    from dreamprm_code.policy.base import truncate_at_stop

    assert truncate_at_stop(reply, stops) == ("    return x + y\n", True)
    # an indented print inside the function is code, not a trailer
    assert truncate_at_stop("    print(x)\n    return x\n", stops) == ("    print(x)\n    return x\n", False)
