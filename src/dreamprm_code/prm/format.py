"""How a (problem, candidate code) pair becomes the PRM's input tokens.

Template version 1 (``TEMPLATE``)::

    ### Problem
    {statement}

    ### Starter code
    {starter_code}          <- section left out when the problem has no starter code

    ### Solution
    {step 1 text}{step 2 text}...{step n text}

Tokenized piece by piece, never as one string: the header pieces, then each step's text on
its own (``add_special_tokens=False``), and the ids concatenated. So the tokens at the end of
step k are the same whether the input holds steps 1..k only or all n steps: one-pass scoring,
prefix-by-prefix scoring and training all see identical ids (docs/architecture.md#one-forward-pass-scores-every-step). The PRM reads the
hidden state at the last token of each step.

Truncation to ``max_length`` (tokens). The header depends on the problem only, never on
the code, so that the input for prefix k is exactly the first tokens of the input for the whole
candidate (one-pass = prefix-by-prefix, also when the statement is cut):

1. the starter code is cut in the middle to at most a quarter of ``max_length``;
2. the problem statement is cut in the middle (its start says what to do, its end holds the
   examples and constraints), with a ``[...]`` marker, to at most ``max_statement_tokens``
   (default: half of ``max_length``) and to what the fixed parts leave;
3. the code is never cut inside what a step score reads: when the header plus the whole code
   is too long, the candidate is split into *views*. A view is the header plus a contiguous
   window of code tokens that ends at the last token of some step j and starts as far left as
   fits; it scores every step whose last token lies in the window. Views are built from the
   last step backwards until every step is scored once. A step's score therefore sees the
   most recent code before its end, the same in training and scoring; only in this long case
   do one-pass and prefix-by-prefix inputs differ (for steps whose view does not start at the
   first code token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dreamprm_code.errors import UserError
from dreamprm_code.records import Problem, Step

#: Bumped whenever the text or the tokenization rules change; saved with every checkpoint.
FORMAT_VERSION = 1
TEMPLATE = {
    "problem": "### Problem\n",
    "starter": "\n\n### Starter code\n",
    "solution": "\n\n### Solution\n",
    "cut": " [...] ",
}


@dataclass
class Encoded:
    """One input sequence (a view) and the steps it scores.

    ``step_token_index[i]`` is the position of the last token of step ``step_index[i]``;
    ``code_start`` is where in the candidate's code tokens the view's window starts (0: the
    view holds the code from its beginning, as prefix-by-prefix inputs do).
    """

    input_ids: list[int]
    step_index: list[int]
    step_token_index: list[int]
    num_steps: int
    header_len: int
    code_start: int = 0


def _ids(tokenizer: Any, text: str) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _cut_middle(ids: list[int], budget: int, marker: list[int]) -> list[int]:
    if len(ids) <= budget:
        return ids
    if budget <= len(marker) + 1:
        return []
    keep = budget - len(marker)
    head = keep // 2
    return ids[:head] + marker + ids[len(ids) - (keep - head) :]


def step_texts(code: str, steps: Sequence[Step]) -> list[str]:
    """The text of each step; the steps must tile ``code`` (docs/architecture.md#steps-come-from-the-syntax-tree)."""
    if not steps:
        return [code]
    texts = []
    pos = 0
    for k, step in enumerate(steps):
        if step.start != pos or step.end < step.start:
            raise UserError(f"steps do not tile the code (step {k} starts at {step.start}, expected {pos})", field="steps")
        texts.append(code[step.start : step.end])
        pos = step.end
    if pos != len(code):
        raise UserError(f"steps end at {pos}, the code is {len(code)} characters long", field="steps")
    return texts


class PromptFormat:
    """Encodes problems and step texts into token ids with the rules above.

    Headers are tokenized once per problem and cached, since every candidate of a problem
    shares them.
    """

    def __init__(self, tokenizer: Any, max_length: int = 2048, max_statement_tokens: int = 0) -> None:
        if max_length < 32:
            raise UserError(f"max_length must be at least 32, got {max_length}", field="max_length")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_statement_tokens = max_statement_tokens or max_length // 2
        self._fixed = {k: _ids(tokenizer, v) for k, v in TEMPLATE.items()}
        self._header_cache: dict[tuple[str, str], list[int]] = {}

    def describe(self) -> dict[str, Any]:
        """What a checkpoint stores so that scoring formats inputs exactly as training did."""
        return {
            "format_version": FORMAT_VERSION,
            "template": dict(TEMPLATE),
            "max_length": self.max_length,
            "max_statement_tokens": self.max_statement_tokens,
        }

    def header(self, statement: str, starter: str) -> list[int]:
        """Header ids for a problem, truncated (rules 1 and 2); the same for every candidate."""
        key = (statement, starter)
        cached = self._header_cache.get(key)
        if cached is not None:
            return cached
        f = self._fixed
        start = _cut_middle(_ids(self.tokenizer, starter), self.max_length // 4, f["cut"]) if starter else []
        fixed = len(f["problem"]) + len(f["solution"]) + (len(f["starter"]) + len(start) if starter else 0)
        room = self.max_length - 16 - fixed  # leave code at least 16 tokens
        stmt = _cut_middle(_ids(self.tokenizer, statement), max(0, min(self.max_statement_tokens, room)), f["cut"])
        ids = f["problem"] + stmt
        if starter:
            ids = ids + f["starter"] + start
        ids = ids + f["solution"]
        if len(ids) > self.max_length - 1:
            raise UserError(f"max_length {self.max_length} leaves no room for code after the header", field="max_length")
        if len(self._header_cache) > 4096:
            self._header_cache.clear()
        self._header_cache[key] = ids
        return ids

    def encode(self, statement: str, starter: str, texts: Sequence[str]) -> list[Encoded]:
        """Encode one candidate (its step texts) into one view, or several when too long."""
        if not texts:
            raise UserError("a candidate needs at least one step", field="steps")
        code: list[int] = []
        ends: list[int] = []  # code position of the last token of each step (an empty step shares its predecessor's)
        for text in texts:
            code.extend(_ids(self.tokenizer, text))
            ends.append(len(code) - 1)
        if ends[0] < 0:
            raise UserError("the first step has no tokens", field="steps")
        head = self.header(statement, starter)
        n0 = len(head)
        window = self.max_length - n0
        if len(code) <= window:
            return [Encoded(head + code, list(range(len(texts))), [n0 + e for e in ends], len(texts), n0)]
        views: list[Encoded] = []
        j = len(texts) - 1
        while j >= 0:
            stop = ends[j] + 1
            start = max(0, stop - window)
            covered = [i for i in range(j + 1) if ends[i] >= start]
            views.append(
                Encoded(head + code[start:stop], covered, [n0 - start + ends[i] for i in covered], len(texts), n0, start)
            )
            j = covered[0] - 1
        views.reverse()
        return views

    def encode_solution(self, problem: Problem | None, code: str, steps: Sequence[Step]) -> list[Encoded]:
        """Encode a candidate for ``problem`` (``None``: no statement, no starter code)."""
        statement = problem.statement if problem else ""
        starter = (problem.starter_code or "") if problem else ""
        return self.encode(statement, starter, step_texts(code, steps))
