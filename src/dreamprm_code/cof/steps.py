"""Steps of a program (docs/architecture.md#steps-come-from-the-syntax-tree): ``ast`` spans that tile the code.

Rules, in order of precedence:

* **module** mode: code that does not parse, or has no statement at all, is one step of kind
  ``"module"``.
* **functions** mode (chain of functions): when the code has two or more *function steps*
  (top-level ``def``/``async def`` and the methods of ``class Solution``), every top-level
  function, every ``Solution`` method and every other top-level class is one step (kinds
  ``"function"``, ``"method"``, ``"block"`` for a class). Nested functions stay inside their step.
* **blocks** mode (the fallback for code that is not CoF): the top-level statements are the
  units, except that the one function (or ``Solution`` method), if there is exactly one, is
  opened up and its body statements are the units (its header and docstring go with its first
  body statement). A new block starts at a unit that a blank line or a comment line separates
  from the previous unit; the first unit inside an opened function never starts one, so the
  header is never a step alone. More than ``max_blocks`` blocks are merged, the shortest
  adjacent pair first. All steps have kind ``"block"``.

**Boundaries.** A step ends right after the last line of its last statement (after that line's
newline). Everything between two steps (blank lines, comments, decorators, statements that are
not steps, the ``class Solution:`` header) therefore opens the *next* step: statements before the
first step join step 1, and whatever follows the last step (``if __name__ == "__main__":``,
trailing calls) joins the last step, which ends at ``len(code)``. Offsets are characters of the
``str``, never bytes, and every boundary except the last is a line start. ``\\r\\n``, ``\\r`` and
``\\n`` all end a line, as they do for Python's tokenizer.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass, field

from dreamprm_code.errors import UserError
from dreamprm_code.records import Solution, Step

FUNCTION = "function"
METHOD = "method"
BLOCK = "block"
MODULE = "module"
STEP_KINDS = (FUNCTION, METHOD, BLOCK, MODULE)

MODE_FUNCTIONS = "functions"
MODE_BLOCKS = "blocks"
MODE_MODULE = "module"

#: Default cap on the number of fallback blocks (CoF function steps are never merged).
MAX_BLOCKS = 8

_NEWLINE = re.compile(r"\r\n|\r|\n")
_DEF_LINE = re.compile(r"[ \t\f]*(?:async[ \t]+def[ \t]|def[ \t]|class[ \t]|@)")
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass
class SplitInfo:
    """How a program was split: the steps, the mode used and why."""

    mode: str  # "functions" | "blocks" | "module"
    steps: list[Step]
    reason: str
    functions: int = 0  # function steps found (top-level functions + Solution methods)
    lines: list[tuple[int, int]] = field(default_factory=list)  # 1-based first/last line per step

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "reason": self.reason,
            "functions": self.functions,
            "steps": [
                {**s.to_dict(), "first_line": a, "last_line": b, "prefix_end": s.end}
                for s, (a, b) in zip(self.steps, self.lines, strict=True)
            ],
        }


@dataclass
class _Unit:
    name: str
    kind: str
    first: int  # 1-based line of the first decorator / keyword
    last: int  # 1-based last line
    opens: bool = False  # first unit inside an opened function or class: never starts a block
    node: ast.AST | None = None


class _Lines:
    """Line starts of a text, split the way Python's tokenizer splits lines."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.starts = [0] + [m.end() for m in _NEWLINE.finditer(code)]

    @property
    def count(self) -> int:
        return len(self.starts)

    @property
    def last(self) -> int:
        """Number of the last line that has text (a final newline does not open a new line)."""
        ends_line = self.code.endswith(("\n", "\r")) and len(self.starts) > 1
        return len(self.starts) - 1 if ends_line else len(self.starts)

    def start(self, line: int) -> int:
        """Offset of the start of 1-based ``line`` (``len(code)`` past the end)."""
        return self.starts[line - 1] if 1 <= line <= len(self.starts) else len(self.code)

    def after(self, line: int) -> int:
        """Offset just after 1-based ``line`` and its newline."""
        return self.start(line + 1)

    def text(self, line: int) -> str:
        return self.code[self.start(line) : self.after(line)].rstrip("\r\n")

    def line_of(self, offset: int) -> int:
        """1-based number of the first line that starts at or after ``offset``."""
        lo, hi = 0, len(self.starts)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.starts[mid] < offset:
                lo = mid + 1
            else:
                hi = mid
        return lo + 1


def _parse(code: str) -> ast.Module | None:
    """``ast.parse`` that answers None for anything that is not valid Python (never raises)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(code)
    except Exception:  # SyntaxError, ValueError (null bytes), RecursionError, MemoryError
        return None


def _first_line(node: ast.stmt) -> int:
    lines = [node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]
    return min(lines)


def _is_solution(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.ClassDef)
        and node.name == "Solution"
        and any(isinstance(b, _DEFS) for b in node.body)
    )


def _items(tree: ast.Module) -> list[_Unit]:
    """Candidate CoF steps: top-level functions, ``Solution`` methods, other classes."""
    items: list[_Unit] = []
    for node in tree.body:
        if isinstance(node, _DEFS):
            items.append(
                _Unit(node.name, FUNCTION, _first_line(node), node.end_lineno or node.lineno, node=node)
            )
        elif _is_solution(node):
            assert isinstance(node, ast.ClassDef)
            for sub in node.body:
                if isinstance(sub, _DEFS):
                    name = f"Solution.{sub.name}"
                    items.append(
                        _Unit(name, METHOD, _first_line(sub), sub.end_lineno or sub.lineno, node=sub)
                    )
        elif isinstance(node, ast.ClassDef):
            items.append(_Unit(node.name, BLOCK, _first_line(node), node.end_lineno or node.lineno))
    return items


def _merge_overlaps(units: list[_Unit]) -> list[_Unit]:
    """Units that share a line (``a = 1; b = 2``) become one: boundaries fall between lines."""
    out: list[_Unit] = []
    for u in units:
        if out and u.first <= out[-1].last:
            prev = out[-1]
            out[-1] = _Unit(prev.name, prev.kind, prev.first, max(prev.last, u.last), prev.opens, prev.node)
        else:
            out.append(u)
    return out


def _body_units(body: list[ast.stmt], target: ast.AST, opens: bool) -> list[_Unit]:
    """Statements of ``body`` as units, opening up ``target`` (and the class that holds it)."""
    units: list[_Unit] = []
    for i, node in enumerate(body):
        first_in_body = opens and i == 0
        inner: list[ast.stmt] | None = None
        if node is target:
            assert isinstance(node, _DEFS)
            inner = list(node.body)
            if len(inner) > 1 and ast.get_docstring(node, clean=False) is not None:
                inner = inner[1:]  # the docstring goes with the first statement
        elif isinstance(node, ast.ClassDef) and any(b is target for b in node.body):
            inner = list(node.body)
        if inner:
            sub = _body_units(inner, target, opens=True)
            if first_in_body and sub:
                sub[0].opens = True
            units.extend(sub)
        else:
            units.append(
                _Unit(
                    type(node).__name__,
                    BLOCK,
                    _first_line(node),
                    node.end_lineno or node.lineno,
                    first_in_body,
                )
            )
    return units


def _gap_has_break(lines: _Lines, after_line: int, before_line: int) -> bool:
    """Is there a blank line or a comment line strictly between the two lines?"""
    for n in range(after_line + 1, before_line):
        text = lines.text(n).strip()
        if not text or text.startswith("#"):
            return True
    return False


def _blocks(lines: _Lines, units: list[_Unit], max_blocks: int) -> list[tuple[int, int]]:
    """Group units into blocks (first line, last line) and cap their number."""
    groups: list[list[int]] = []
    prev: _Unit | None = None
    for u in units:
        if prev is None or (not u.opens and _gap_has_break(lines, prev.last, u.first)):
            groups.append([u.first, u.last])
        else:
            groups[-1][1] = u.last
        prev = u
    spans = [(a, b) for a, b in groups]
    max_blocks = max(1, max_blocks)
    while len(spans) > max_blocks:
        # size of the merged pair, measured in characters of the steps it would produce
        def size(i: int) -> int:
            start = 0 if i == 0 else lines.after(spans[i - 1][1])
            end = len(lines.code) if i + 2 >= len(spans) else lines.after(spans[i + 1][1])
            return end - start

        i = min(range(len(spans) - 1), key=size)
        spans[i : i + 2] = [(spans[i][0], spans[i + 1][1])]
    return spans


def _tile(lines: _Lines, spans: list[tuple[int, int]], names: list[str], kinds: list[str]) -> list[Step]:
    steps = []
    for k, (_, last) in enumerate(spans):
        start = 0 if k == 0 else steps[-1].end
        end = len(lines.code) if k == len(spans) - 1 else lines.after(last)
        steps.append(Step(name=names[k], kind=kinds[k], start=start, end=end))
    return steps


def split_info(code: str, *, max_blocks: int = MAX_BLOCKS) -> SplitInfo:
    """Split ``code`` into steps and say which mode was used (see the module docstring)."""
    lines = _Lines(code)
    tree = _parse(code)
    if tree is None or not tree.body:
        reason = "does not parse" if tree is None else "no statements"
        return SplitInfo(MODE_MODULE, [Step("module", MODULE, 0, len(code))], reason, 0, [(1, lines.last)])
    items = _merge_overlaps(_items(tree))
    n_functions = sum(1 for u in items if u.kind in (FUNCTION, METHOD))
    if n_functions >= 2:
        spans = [(u.first, u.last) for u in items]
        steps = _tile(lines, spans, [u.name for u in items], [u.kind for u in items])
        return SplitInfo(
            MODE_FUNCTIONS, steps, f"{n_functions} functions", n_functions, _step_lines(spans, lines)
        )
    target = next((u.node for u in items if u.kind in (FUNCTION, METHOD)), None)
    units = _merge_overlaps(_body_units(tree.body, target if target is not None else tree, opens=False))
    spans = _blocks(lines, units, max_blocks)
    names = [f"L{a}-L{b}" for a, b in spans]
    steps = _tile(lines, spans, names, [BLOCK] * len(spans))
    reason = "one function: its body statements are the blocks" if target else "no function: top-level blocks"
    return SplitInfo(MODE_BLOCKS, steps, reason, n_functions, _step_lines(spans, lines))


def _step_lines(spans: list[tuple[int, int]], lines: _Lines) -> list[tuple[int, int]]:
    """1-based first and last line of each step's text (a step starts after the previous span)."""
    out = []
    for k, (_, last) in enumerate(spans):
        first = 1 if k == 0 else spans[k - 1][1] + 1
        end_line = lines.last if k == len(spans) - 1 else last
        out.append((first, end_line))
    return out


def split_steps(code: str, *, max_blocks: int = MAX_BLOCKS) -> list[Step]:
    """The steps of ``code``; they tile it, so prefix k is ``code[:steps[k].end]``. Never raises."""
    return split_info(code, max_blocks=max_blocks).steps


def is_cof(code: str) -> bool:
    """Is ``code`` chain-of-functions shaped (two or more function steps)?"""
    return split_info(code).mode == MODE_FUNCTIONS


def solution_steps(solution: Solution) -> list[Step]:
    """A candidate's steps: those it records, else :func:`split_steps` of its code (every stage agrees)."""
    return list(solution.steps) if solution.steps else split_steps(solution.code)


def check_steps(code: str, steps: list[Step]) -> None:
    """Raise :class:`UserError` unless ``steps`` tile ``code`` (e.g. steps read from a file)."""
    if not steps:
        raise UserError("a solution needs at least one step", field="steps")
    pos = 0
    for i, s in enumerate(steps):
        if s.start != pos or s.end < s.start:
            raise UserError(f"step {i} spans [{s.start}, {s.end}) but should start at {pos}", field="steps")
        pos = s.end
    if pos != len(code):
        raise UserError(f"the last step ends at {pos} but the code has {len(code)} characters", field="steps")


def step_prefixes(code: str, steps: list[Step]) -> list[str]:
    """Prefix k is exactly ``code[:steps[k].end]``: the text of steps 1..k (monotone)."""
    check_steps(code, steps)
    return [code[: s.end] for s in steps]


def _indent(text: str) -> int:
    stripped = text.lstrip(" \t\f")
    return len(text[: len(text) - len(stripped)].expandtabs(8))


def next_step_end(code: str, start: int, *, final: bool = False) -> int | None:
    """Where the first complete new step after ``start`` ends, or None if none is complete yet.

    ``code`` is a kept prefix plus a sampled continuation and ``start`` the offset where the
    prefix ends. A new step is a top-level function, ``Solution`` method or other top-level class
    whose first line (decorator or keyword) is at or after ``start``. It is complete once a later
    statement line at the same or a lower indentation shows that its body is over, or, when
    ``final`` is set (the continuation is finished), at the end of the text. The answer is the
    offset just after its last line, the same boundary :func:`split_steps` uses, so
    ``code[:answer]`` is the next prefix. The continuation need not parse: only the text up to
    each candidate line is parsed, so a half-written function after the complete one is fine.
    """
    start = min(max(start, 0), len(code))
    lines = _Lines(code)
    s = lines.line_of(start)
    texts = [lines.text(n) for n in range(1, lines.count + 1)]
    code_lines = [
        n
        for n in range(s, lines.count + 1)
        if texts[n - 1].strip() and not texts[n - 1].lstrip().startswith("#")
    ]
    defs = [n for n in code_lines if _DEF_LINE.match(texts[n - 1])]
    if not defs:
        return None
    indent = {n: _indent(texts[n - 1]) for n in code_lines}

    def complete_at(cut: int) -> int | None:
        """The answer if the text up to ``cut`` parses and shows the first new step complete."""
        tree = _parse(code[:cut])
        if tree is None:
            return None
        item = next((u for u in _items(tree) if u.first >= s), None)
        if item is None:
            return -1
        following = next((n for n in code_lines if n > item.last), None)
        if following is None:
            return lines.after(item.last) if cut == len(code) and final else -1
        return lines.after(item.last) if indent[following] <= _indent(texts[item.first - 1]) else -1

    # A step can only be seen complete at a statement line no deeper than its def line. Cut
    # candidates, in order: every line as shallow as the shallowest def line, and after each def
    # line, the lines no deeper than it until one of them leaves a parseable text.
    shallowest = min(indent[d] for d in defs)
    def_set = set(defs)
    pending: list[int] = []
    for n in code_lines:
        if n > defs[0] and (indent[n] <= shallowest or any(indent[n] <= indent[d] for d in pending)):
            answer = complete_at(lines.start(n))
            if answer is not None:
                pending = [d for d in pending if indent[n] > indent[d]]
                if answer >= 0:
                    return answer
        if n in def_set:
            pending.append(n)
    if final:
        answer = complete_at(len(code))
        if answer is not None and answer >= 0:
            return answer
    return None


_CUT_POINT = re.compile(r"(?:\S|[ \t]+(?:def|async def|class|@)\b)")


def complete_head(code: str) -> str:
    """``code`` if it parses, else its longest head that does, cut before a top-level statement
    or a (nested) ``def``/``class``/decorator line.

    A reply cut by the token limit usually ends inside its last function; what precedes it is
    often a whole solution (evalplus's sanitizer keeps complete definitions the same way). Returns
    ``code`` unchanged when no head parses.
    """
    if _parse(code) is not None:
        return code
    lines = code.splitlines(keepends=True)
    for i in range(len(lines) - 1, 0, -1):
        if not _CUT_POINT.match(lines[i]) or lines[i].startswith(("#", ")", "]", "}")):
            continue
        head = "".join(lines[:i]).rstrip() + "\n"
        if head.strip() and _parse(head) is not None:
            return head
    return code
