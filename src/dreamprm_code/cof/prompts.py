"""Prompts that ask for a chain of functions (or plain code), and prompts that continue a prefix.

Templates are plain text files in ``cof/templates/`` named ``{style}_{kind}.txt`` (styles
``cof`` and ``plain``; kinds ``stdin``, ``leetcode``, ``function``), so users can read them and
override any of them with a directory of their own (``templates=DIR``; a file there replaces the
packaged file of the same name, and a new style is just a new set of files). A file holds
sections opened by ``=== name ===`` lines: ``system`` and ``user`` (chat form), ``completion``
(completion form) and ``starter`` (rendered as ``{{starter_block}}`` only when the problem has
starter code). Text above the first section is a description and is ignored.

The ```` ```python ```` fence is opened by this module, never by the template: after the
completion text, and as the assistant prefill of :func:`continuation_prompt` (docs/architecture.md#step-labels-from-rollouts: a
rollout's code is prefix + continuation, cut at the closing fence by
:func:`code_from_continuation`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from dreamprm_code.errors import UserError
from dreamprm_code.policy.base import Prompt
from dreamprm_code.records import Problem

PackagedStyle = Literal["cof", "plain"]  # the styles shipped in cof/templates/
Style = str  # a packaged style, or any style a templates directory adds
Form = Literal["chat", "completion"]
KINDS = ("stdin", "leetcode", "function")
SECTIONS = ("system", "user", "starter", "completion")
PLACEHOLDERS = (
    "statement",
    "title",
    "starter_code",
    "starter_block",
    "entry_point",
    "platform",
    "problem_id",
)
FENCE_OPEN = "```python\n"

_SECTION = re.compile(r"^=== *([A-Za-z_]+) *===[ \t]*$")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")
_CLOSING_FENCE = re.compile(r"^[ \t]*```", re.MULTILINE)


@dataclass
class Template:
    """One template file, split into its sections (``line`` = where each section's text starts)."""

    path: str
    sections: dict[str, str]
    lines: dict[str, int]

    def render(self, section: str, values: dict[str, str]) -> str:
        """Fill ``{{name}}`` placeholders; an unknown one is a user error naming file and line."""
        if section not in self.sections:
            raise UserError(f"template has no '=== {section} ===' section", path=self.path, field=section)
        text = self.sections[section]

        def fill(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in values:
                line = self.lines[section] + text.count("\n", 0, m.start())
                known = ", ".join(PLACEHOLDERS)
                raise UserError(
                    f"unknown placeholder {{{{{name}}}}} (known: {known})",
                    path=self.path,
                    line=line,
                    field=section,
                )
            return values[name]

        return _PLACEHOLDER.sub(fill, text)


def parse_template(text: str, path: str) -> Template:
    """Split a template file into sections; it needs at least ``user`` and ``completion``."""
    sections: dict[str, list[str]] = {}
    lines: dict[str, int] = {}
    current: str | None = None
    for i, line in enumerate(text.splitlines(), start=1):
        m = _SECTION.match(line)
        if m:
            current = m.group(1).lower()
            if current not in SECTIONS:
                raise UserError(
                    f"unknown section '{current}' (known: {', '.join(SECTIONS)})", path=path, line=i
                )
            if current in sections:
                raise UserError(f"section '{current}' appears twice", path=path, line=i)
            sections[current] = []
            lines[current] = i + 1
        elif current is not None:
            sections[current].append(line)
    for need in ("user", "completion"):
        if need not in sections:
            raise UserError(f"template needs a '=== {need} ===' section", path=path)
    return Template(path, {k: "\n".join(v).strip("\n") for k, v in sections.items()}, lines)


def load_templates(templates: str | Path | None = None) -> dict[str, Template]:
    """The packaged templates, each replaced by a same-named ``*.txt`` in ``templates`` if given."""
    out: dict[str, Template] = {}
    packaged = resources.files("dreamprm_code.cof") / "templates"
    for entry in sorted(packaged.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".txt"):
            out[entry.name[:-4]] = parse_template(
                entry.read_text(encoding="utf-8"), f"<package>/cof/templates/{entry.name}"
            )
    if templates is not None:
        folder = Path(templates)
        if not folder.is_dir():
            raise UserError("templates directory not found", path=folder)
        for f in sorted(folder.glob("*.txt")):
            out[f.stem] = parse_template(f.read_text(encoding="utf-8"), str(f))
    return out


def problem_kind(problem: Problem) -> str:
    """``leetcode`` (a ``class Solution`` starter), ``function`` (an entry point), else ``stdin``."""
    if "class Solution" in (problem.starter_code or ""):
        return "leetcode"
    if problem.entry_point and problem.test_kind != "stdin":
        return "function"
    return "stdin"


def _values(problem: Problem, template: Template) -> dict[str, str]:
    starter = (problem.starter_code or "").strip("\n").rstrip()
    statement = problem.statement.strip()
    # HumanEval's statement is the entry point's docstring, already inside the starter code
    if starter and statement and " ".join(statement.split()) in " ".join(starter.split()):
        statement = ""
    values = {
        "statement": statement,
        "title": problem.title,
        "starter_code": starter,
        "entry_point": problem.entry_point or "main",
        "platform": problem.platform,
        "problem_id": problem.id,
        "starter_block": "",
    }
    if starter and "starter" in template.sections:
        values["starter_block"] = "\n" + template.render("starter", values) + "\n"
    return values


def _tidy(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip()


@lru_cache(maxsize=16)
def _load_cached(templates: str | None) -> dict[str, Template]:
    return load_templates(templates)


def _template(problem: Problem, style: Style, templates: str | Path | dict[str, Template] | None) -> Template:
    if isinstance(templates, dict):
        loaded = templates
    else:
        loaded = _load_cached(None if templates is None else str(Path(templates).resolve()))
    name = f"{style}_{problem_kind(problem)}"
    if name not in loaded:
        styles = sorted({k.rsplit("_", 1)[0] for k in loaded})
        raise UserError(f"no template '{name}.txt' (styles available: {', '.join(styles)})", field="style")
    return loaded[name]


def build_prompt(
    problem: Problem,
    style: Style = "cof",
    form: Form = "chat",
    templates: str | Path | dict[str, Template] | None = None,
    *,
    open_fence: bool = False,
    prefill_starter: bool = False,
) -> Prompt:
    """The prompt that asks the policy for a whole solution.

    Chat form: system + user messages (prefilled with an opened ```` ```python ```` fence when
    ``open_fence``, so the reply is code up to the closing fence). Completion form: one text
    that ends with an opened fence. Either way :func:`code_from_continuation` with an empty
    prefix turns a fenced-open reply into code. ``prefill_starter`` (implies ``open_fence``) also
    puts a function or LeetCode problem's starter code after the fence: small models otherwise
    spend a third of their tokens copying it, sometimes wrongly.
    """
    if form not in ("chat", "completion"):
        raise UserError(f"form must be 'chat' or 'completion', got {form!r}", field="form")
    t = _template(problem, style, templates)
    values = _values(problem, t)
    starter = values["starter_code"] + "\n" if prefill_starter and problem_kind(problem) != "stdin" else ""
    starter = starter if starter.strip() else ""
    if form == "completion":
        return Prompt(text=_tidy(t.render("completion", values)) + "\n\n" + FENCE_OPEN + starter)
    messages = []
    system = _tidy(t.render("system", values)) if "system" in t.sections else ""
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": _tidy(t.render("user", values))})
    return Prompt(messages=messages, prefill=FENCE_OPEN + starter if open_fence or prefill_starter else "")


# Column-0 lines that end a function or LeetCode solution: what follows is usage examples and
# tests that the task forbids, cost tokens, and fail the program when the token limit cuts them.
_TRAILERS = ("\nprint(", "\nassert ", "\nif __name__", "\n# Example", "\n# Test", "\n# example", "\n# test")


def trailer_stops(problem: Problem) -> list[str]:
    """Stop strings that end a function or LeetCode solution before its usage examples (none for stdin)."""
    return list(_TRAILERS) if problem_kind(problem) != "stdin" else []


def code_stops(problem: Problem) -> list[str]:
    """Stop strings for a fenced reply: the closing fence, then :func:`trailer_stops`."""
    return ["```", *trailer_stops(problem)]


def continuation_prompt(
    problem: Problem,
    prefix: str,
    style: Style = "cof",
    form: Form = "chat",
    templates: str | Path | dict[str, Template] | None = None,
) -> Prompt:
    """The prompt whose reply continues ``prefix`` (docs/architecture.md#step-labels-from-rollouts): the code is prefix + continuation.

    Chat: the assistant prefill is an opened fence followed by the prefix. Completion: the prompt
    text, the opened fence and the prefix.
    """
    base = build_prompt(problem, style, form, templates)
    if base.text is not None:
        return Prompt(text=base.text + prefix)
    return Prompt(messages=base.messages, prefill=FENCE_OPEN + prefix)


def code_from_continuation(prefix: str, continuation_text: str) -> str:
    """``prefix`` + the continuation cut at its closing fence (a line starting with ```` ``` ````).

    A fence at the very start of the continuation counts only if the prefix ends a line.
    Without a closing fence (a reply cut by the token limit) the whole continuation is kept.
    """
    text = continuation_text
    at_line_start = prefix == "" or prefix.endswith(("\n", "\r"))
    for m in _CLOSING_FENCE.finditer(text):
        if m.start() == 0 and not at_line_start:
            continue
        return prefix + text[: m.start()]
    return prefix + text
