"""Shared pieces of the labelling tests: a scripted policy, a problem and its CoF solutions.

The scripted policy is a real object implementing the ``Policy`` protocol: it reads the prefix
from the prompt's prefill (decision 2), finds which functions the prefix already defines, and
writes the missing ones: correct bodies in a fraction ``good_rate[k]`` of samples (k = functions
already written), broken ones otherwise, decided by a seeded RNG so runs are reproducible.
(This module holds no tests; it is named ``test_*`` so it may live under ``tests/``.)
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass, field

from dreamprm_code.cof.prompts import FENCE_OPEN
from dreamprm_code.policy import Completion, Prompt, SamplingParams, truncate_at_stop
from dreamprm_code.records import Problem, Solution
from dreamprm_code.records import TestCase as Case

ORDER = ["solve", "squares", "total"]
GOOD = {
    "solve": 'def solve(xs):\n    """Sum of squares: square each, then add."""\n    return total(squares(xs))\n',
    "squares": 'def squares(xs):\n    """Square each element."""\n    return [x * x for x in xs]\n',
    "total": 'def total(ys):\n    """Add them up."""\n    return sum(ys)\n',
}
BAD = {
    "solve": 'def solve(xs):\n    """Sum of squares."""\n    return total(xs)\n',
    "squares": 'def squares(xs):\n    """Square each element."""\n    return [x + x for x in xs]\n',
    "total": 'def total(ys):\n    """Add them up."""\n    return max(ys)\n',
}

PROBLEM = Problem(
    id="sq/1",
    title="Sum of squares",
    statement="Return the sum of the squares of a list of integers.",
    platform="test",
    difficulty="easy",
    tests=[
        Case("functional", [[1, 2, 3]], 14),
        Case("functional", [[0]], 0),
        Case("functional", [[2, 2]], 8),
    ],
    entry_point="solve",
)


def program(*bodies: str) -> str:
    return "\n\n".join(bodies)


def passing_solution(index: int = 0) -> Solution:
    return Solution(PROBLEM.id, index, program(GOOD["solve"], GOOD["squares"], GOOD["total"]), verdict="pass")


def failing_solution(index: int = 1, verdict: str | None = "wrong_answer") -> Solution:
    """Broken at step 1 (``squares``): prefix 0 can still be completed, prefixes 1 and 2 cannot."""
    return Solution(PROBLEM.id, index, program(GOOD["solve"], BAD["squares"], GOOD["total"]), verdict=verdict)


def defined(prefix: str) -> list[str]:
    return re.findall(r"^def (\w+)\(", prefix, flags=re.MULTILINE)


@dataclass
class ScriptedPolicy:
    """A deterministic policy: the k-th prefix is completed correctly with probability good_rate[k]."""

    good_rate: dict[int, float] = field(default_factory=lambda: {0: 0.5, 1: 0.5, 2: 0.5})
    delay: float = 0.0
    fail_after: int | None = None  # raise on this many-th call (a crash mid-run)
    name: str = "scripted"
    calls: list[tuple[int, int]] = field(default_factory=list)
    prefills: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def continuation(self, prefix: str, seed: int, i: int) -> str:
        """Sample ``i`` of ``seed`` depends on ``seed + i`` only, as the real backends seed samples."""
        have = defined(prefix)
        good = random.Random((seed + i) * 1009).random() < self.good_rate.get(len(have), 0.0)
        missing = [name for name in ORDER if name not in have]
        bodies = [(GOOD if good else BAD)[name] for name in missing]
        return ("\n" if prefix else "") + "\n\n".join(bodies) + "```\nThat is the program."

    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        with self._lock:
            if self.fail_after is not None and len(self.calls) >= self.fail_after:
                raise RuntimeError("scripted crash")
            self.calls.append((len(prompts), n))
        if self.delay:
            time.sleep(self.delay)
        out = []
        for p in prompts:
            assert p.prefill.startswith(FENCE_OPEN), p.prefill
            prefix = p.prefill[len(FENCE_OPEN) :]
            self.prefills.append(prefix)
            seed = p.seed if p.seed is not None else (sampling.seed or 0)
            texts = [truncate_at_stop(self.continuation(prefix, seed, i), sampling.stop)[0] for i in range(n)]
            out.append([Completion(t, prompt_tokens=100, completion_tokens=len(t.split())) for t in texts])
        return out
