"""The records that pass between stages, in one place.

Every stage reads and writes these as JSON lines. ``to_dict`` / ``from_dict`` are the only
(de)serialisers; unknown keys are kept in ``meta`` so files written by newer versions still load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Difficulty = Literal["easy", "medium", "hard"]
TestKind = Literal["stdin", "functional", "assert"]

#: Verdicts, matching LiveCodeBench's categories (plus memory limit).
PASS = "pass"
WRONG_ANSWER = "wrong_answer"
TIME_LIMIT = "time_limit"
MEMORY_LIMIT = "memory_limit"
RUNTIME_ERROR = "runtime_error"
COMPILE_ERROR = "compile_error"
VERDICTS = (PASS, WRONG_ANSWER, TIME_LIMIT, MEMORY_LIMIT, RUNTIME_ERROR, COMPILE_ERROR)


def _from_dict(cls, data: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    known = {k: v for k, v in data.items() if k in names}
    extra = {k: v for k, v in data.items() if k not in names}
    obj = cls(**known)
    if extra and hasattr(obj, "meta"):
        obj.meta = {**extra, **(obj.meta or {})}
    return obj


@dataclass
class TestCase:
    """One unit test.

    ``stdin``: ``input`` is the text fed to stdin, ``output`` the expected stdout text.
    ``functional``: ``input`` is the list of positional arguments (JSON values), ``kwargs`` the
    keyword arguments, ``output`` the expected return value; the callee is the problem's
    ``entry_point`` (a method of ``Solution`` when the starter code defines that class).
    ``assert``: ``code`` is trusted Python test code (MBPP asserts, HumanEval ``check``) that
    calls the entry point by name (or ``candidate``); the harness decides how to run it safely.
    """

    kind: TestKind
    input: Any = None
    output: Any = None
    kwargs: dict[str, Any] | None = None
    code: str | None = None
    public: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestCase:
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})


@dataclass
class Problem:
    """A coding problem with its tests, the same record for every source."""

    id: str
    title: str
    statement: str
    platform: str
    difficulty: Difficulty
    tests: list[TestCase]
    starter_code: str = ""
    entry_point: str | None = None
    date: str | None = None  # ISO date, YYYY-MM-DD
    source: str = ""
    setup_code: str = ""  # trusted code run before the tests (MBPP test_setup_code, imports)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def test_kind(self) -> str:
        kinds = {t.kind for t in self.tests}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tests"] = [t.to_dict() for t in self.tests]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        data = dict(data)
        data["tests"] = [TestCase.from_dict(t) for t in data.get("tests", [])]
        return _from_dict(cls, data)


@dataclass
class Step:
    """One reasoning step: a top-level function, a ``Solution`` method, or a block of code.

    ``start``/``end`` are character offsets into the solution's code; steps tile the code, so
    prefix k is ``code[:steps[k].end]`` and the last step ends at ``len(code)``.
    """

    name: str
    kind: str  # "function" | "method" | "block" | "module"
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        return cls(**{k: data[k] for k in ("name", "kind", "start", "end")})


@dataclass
class TestResult:
    """The outcome of one test: a verdict, its time and, on failure, trimmed evidence."""

    status: str  # one of VERDICTS
    time: float = 0.0
    output: str | None = None  # trimmed actual output on failure
    expected: str | None = None  # trimmed expected output on failure
    error: str | None = None  # trimmed error message / traceback tail

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestResult:
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})


@dataclass
class ExecResult:
    """The verdict of one program against a problem's tests."""

    verdict: str  # one of VERDICTS
    passed: int
    total: int
    tests: list[TestResult] = field(default_factory=list)
    wall_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tests"] = [t.to_dict() for t in self.tests]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecResult:
        data = dict(data)
        data["tests"] = [TestResult.from_dict(t) for t in data.get("tests", [])]
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})


@dataclass
class Solution:
    """One candidate program for a problem, with where it came from and how it fared."""

    problem_id: str
    sample_index: int
    code: str
    policy: str = ""
    sampling: dict[str, Any] = field(default_factory=dict)  # temperature, seed, n, ...
    prompt: Any = None  # text, or a list of chat messages
    raw: str | None = None  # the model's raw reply
    steps: list[Step] | None = None
    verdict: str | None = None  # one of VERDICTS, once executed
    result: ExecResult | None = None
    tokens: dict[str, int] = field(default_factory=dict)  # prompt / completion token counts
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.problem_id}#{self.sample_index}"

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["id"] = self.id
        d["steps"] = None if self.steps is None else [s.to_dict() for s in self.steps]
        d["result"] = None if self.result is None else self.result.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Solution:
        data = {k: v for k, v in data.items() if k != "id"}
        if data.get("steps") is not None:
            data["steps"] = [Step.from_dict(s) for s in data["steps"]]
        if data.get("result") is not None:
            data["result"] = ExecResult.from_dict(data["result"])
        return _from_dict(cls, data)


@dataclass
class StepLabel:
    """The Monte-Carlo label of one step prefix of one solution."""

    solution_id: str
    problem_id: str
    step_index: int  # 0-based; prefix = code[: steps[step_index].end]
    num_steps: int
    prefix: str
    rollouts: int
    passed: int
    mc_value: float  # passed / rollouts (soft label); for the final step, the verdict itself
    hard_label: int  # 1 if any rollout passed, else 0
    tokens: int = 0  # policy tokens spent on this prefix's rollouts
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.solution_id}@{self.step_index}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepLabel:
        return _from_dict(cls, dict(data))


@dataclass
class StepScores:
    """The PRM's per-step scores of one candidate (probabilities in [0, 1])."""

    solution_id: str
    problem_id: str
    scores: list[float]
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepScores:
        return _from_dict(cls, dict(data))
