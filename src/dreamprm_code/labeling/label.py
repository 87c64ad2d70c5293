"""Monte-Carlo step labels: continue each step prefix N times, run the programs, count passes.

A rollout's program is the prefix followed by the policy's continuation (never a rewrite,
docs/architecture.md#step-labels-from-rollouts): the prompt comes from :func:`dreamprm_code.cof.continuation_prompt` and the
program from :func:`dreamprm_code.cof.code_from_continuation`. For prefix k < last,
``mc_value = passed / rollouts`` and ``hard_label = passed > 0``. The last prefix is the whole
solution, so its label is the solution's own verdict (``rollouts = 0``, ``mc_value`` 1.0 or 0.0).

Strategies
----------
``full`` (the paper's recipe): every prefix but the last gets N rollouts from one
``generate(..., n=N)`` call. Costs ``N * (steps - 1)`` rollouts per solution; every label is
measured.

``search``: looks for the *first failing step* (the first prefix with no passing rollout) with
fewer rollouts, and infers the labels it does not measure:

- a visited prefix is sampled in rounds (``LabelConfig.rounds``: 1, 1, 2, 4, ... rollouts by
  default) and stops at the first round with a pass; a prefix whose first M = ``search_give_up``
  rollouts (N/2 by default) all fail is labelled 0 (below);
- a failing solution gets a binary search for the first prefix with no passing rollout, between
  prefix 0 and its own (failing) last prefix: about ``log2(steps)`` prefixes visited. This
  assumes labels are *monotone* along the solution (if prefix k can be completed, so can every
  shorter prefix; if it cannot, no longer prefix can);
- a passing solution (``probe_passing``, the default) has its prefixes visited in order until
  one has no passing rollout, which is then its first failing step; the prefixes after it are
  inferred solvable, since the solution itself completes them. A prefix of a passing solution
  is solvable by construction, but ``full`` labels it 0 when the policy fails N times on it; the
  probe finds those. Most prefixes of a passing solution pass in the first round, so the probe
  costs about one rollout per prefix. With ``probe_passing = False`` a passing solution gets no
  rollout at all and every prefix is inferred solvable.

Every prefix draws its rollouts from one seeded stream (rollout ``j`` of a prefix is sample
``j`` of the prefix's seed, whatever the round; backends seed sample ``j`` with ``seed + j``), so
the rollouts ``search`` draws for a prefix are the first rollouts ``full`` draws for it with the
same settings. A prefix that ``search`` visits therefore gets the hard label ``full`` gives it
(up to floating-point differences between batch shapes), unless it gives up before N (below).
The two strategies differ only in what ``search`` does not sample.

What ``search`` gives up, and how the labels say so in ``meta``:

- unvisited prefixes get *inferred* hard labels (``meta.inferred = true``, ``rollouts = 0``,
  ``meta.source``: ``monotone`` on failing solutions, ``solution_passes`` on passing ones). On
  a failing solution they are wrong wherever the policy's success is not monotone (a prefix
  that full sampling would find hopeless before a solvable one, or a solvable one after a
  hopeless one). On a passing solution only the prefixes after the first failing step are
  inferred (1); ``full`` may find a later prefix hopeless too;
- their ``mc_value`` is interpolated (``meta.mc_interpolated = true``): 0.0 after the first
  failing step of a failing solution, else linear interpolation between the measured values
  of the visited solvable prefixes (the last prefix of a passing solution counting as 1.0),
  constant beyond the outermost;
- a visited prefix that stopped at its first passing round (``meta.early_stop = true``) has
  ``mc_value = passed / rollouts_run`` over fewer than N rollouts: a noisier estimate, biased
  upward by the stopping rule (a first-round pass gives 1.0);
- a visited prefix whose first M rollouts all fail is labelled 0 (``meta.gave_up = true``, M =
  ``search_give_up``, N/2 by default): ``full`` labels it 1 when one of its other N - M rollouts
  passes. With a weak policy most of ``full``'s cost goes to prefixes with no pass at all, so
  this halves what ``search`` spends there; set M = N to have every visited prefix labelled as
  ``full`` labels it.

The hard labels, and hence the first failing step, are what ``search`` is for; use ``full``
when the soft values themselves matter.

Resumability: labels go to ``out`` through :class:`dreamprm_code.io.JsonlAppender` keyed by
``StepLabel.key``; every generate call's texts go to the rollout log before execution and
every verdict after it (:mod:`dreamprm_code.labeling.rolloutlog`). A killed run, rerun with
the same settings, skips finished labels, re-reads logged rounds instead of sampling them
again, and derives every seed from (seed, solution, step) and the rollout's index, so it ends with the
labels an uninterrupted run writes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dreamprm_code.errors import UserError
from dreamprm_code.io import JsonlAppender, atomic_write_json, check_resume, load_records, require
from dreamprm_code.labeling.config import LabelConfig
from dreamprm_code.labeling.rolloutlog import RolloutLog, rollouts_path
from dreamprm_code.progress import make_progress
from dreamprm_code.records import PASS, Problem, Solution, Step, StepLabel


def config_path(out: str | Path) -> Path:
    """The settings of the run that writes ``out`` (checked when a run resumes)."""
    out = Path(out)
    return out.with_name(out.name + ".config.json")


def label_key(record: dict[str, Any]) -> str:
    """``StepLabel.key`` of a label record as stored in the labels file."""
    return f"{record['solution_id']}@{record['step_index']}"


def rollout_seed(base: int, solution_id: str, step_index: int, first: int = 0) -> int:
    """The seed of a prompt whose sample 0 is rollout ``first`` of a prefix's stream.

    A prefix's stream seed depends on (base, solution, prefix) only, so it is independent of
    batching and of earlier kills; rollout ``j`` is sample 0 of seed ``stream + j`` (backends
    seed sample ``i`` of a prompt with ``seed + i``), so the rounds of ``search`` draw the
    first rollouts ``full`` draws.
    """
    key = "\0".join((str(base), solution_id, str(step_index), "0"))
    digest = hashlib.sha256(key.encode()).hexdigest()
    return (int(digest[:8], 16) & 0x7FFFFFFF) + first


@dataclass
class Request:
    """One generate call's worth of work: ``n`` continuations of one prefix."""

    solution_id: str
    step_index: int
    round: int
    n: int
    seed: int
    prefix: str
    problem: Problem
    prompt: Any = None

    @property
    def key(self) -> str:
        return f"{self.solution_id}@{self.step_index}#{self.round}"


@dataclass
class RoundResult:
    """What came back for one :class:`Request`: verdicts and token counts of its rollouts."""

    verdicts: list[str]
    completion_tokens: list[int]
    prompt_tokens: int
    unique_codes: int
    reused: bool = False  # generation read back from the rollout log of an earlier run

    @property
    def passed(self) -> int:
        return sum(v == PASS for v in self.verdicts)


@dataclass
class _SolutionState:
    """A solution being labelled: its problem, prefixes, final verdict and finished labels."""

    solution: Solution
    problem: Problem
    steps: list[Step]
    prefixes: list[str]
    split: str  # "given" or "split here"
    final_verdict: str | None = None
    existing: dict[int, StepLabel] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.solution.id

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def complete(self) -> bool:
        return len(self.existing) == self.num_steps


LabelerGen = Generator[list[Request], list[RoundResult], None]


class _Labeler:
    """The strategies, written as generators that yield requests and receive their results."""

    def __init__(self, config: LabelConfig, emit: Callable[[StepLabel], None]) -> None:
        self.config = config
        self.emit = emit

    # -- labels -------------------------------------------------------------------------
    def request(self, st: _SolutionState, k: int, rnd: int, n: int, first: int = 0) -> Request:
        return Request(
            solution_id=st.id,
            step_index=k,
            round=rnd,
            n=n,
            seed=rollout_seed(self.config.seed, st.id, k, first),
            prefix=st.prefixes[k],
            problem=st.problem,
        )

    def _base(self, st: _SolutionState, k: int) -> dict[str, Any]:
        return {
            "solution_id": st.id,
            "problem_id": st.problem.id,
            "step_index": k,
            "num_steps": st.num_steps,
            "prefix": st.prefixes[k],
        }

    def _meta(self, st: _SolutionState, k: int, **extra: Any) -> dict[str, Any]:
        step = st.steps[k]
        return {
            "strategy": self.config.strategy,
            "step_name": step.name,
            "step_kind": step.kind,
            "steps_from": st.split,
            **extra,
        }

    def rollout_label(self, st: _SolutionState, k: int, results: list[RoundResult]) -> StepLabel:
        rollouts = sum(len(r.verdicts) for r in results)
        passed = sum(r.passed for r in results)
        verdicts = Counter(v for r in results for v in r.verdicts)
        meta = self._meta(
            st,
            k,
            source="rollouts",
            rounds=len(results),
            early_stop=rollouts < self.config.rollouts and passed > 0,
            gave_up=rollouts < self.config.rollouts and passed == 0,
            verdicts=dict(sorted(verdicts.items())),
            unique_codes=sum(r.unique_codes for r in results),
            prompt_tokens=sum(r.prompt_tokens for r in results),
            reused_rounds=sum(r.reused for r in results),
        )
        return StepLabel(
            **self._base(st, k),
            rollouts=rollouts,
            passed=passed,
            mc_value=passed / rollouts,
            hard_label=int(passed > 0),
            tokens=sum(sum(r.completion_tokens) for r in results),
            meta=meta,
        )

    def final_label(self, st: _SolutionState) -> StepLabel:
        k = st.num_steps - 1
        ok = st.final_verdict == PASS
        return StepLabel(
            **self._base(st, k),
            rollouts=0,
            passed=0,
            mc_value=1.0 if ok else 0.0,
            hard_label=int(ok),
            tokens=0,
            meta=self._meta(st, k, source="verdict", verdict=st.final_verdict),
        )

    def put(self, st: _SolutionState, label: StepLabel) -> StepLabel:
        if label.step_index not in st.existing:
            st.existing[label.step_index] = label
            self.emit(label)
        return st.existing[label.step_index]

    # -- strategies ------------------------------------------------------------------------
    def run(self, st: _SolutionState) -> LabelerGen:
        if self.config.strategy == "full":
            return self._full(st)
        return self._search(st)

    def _full(self, st: _SolutionState) -> LabelerGen:
        todo = [k for k in range(st.num_steps - 1) if k not in st.existing]
        size = self.config.concurrency
        for i in range(0, len(todo), size):
            chunk = todo[i : i + size]
            results = yield [self.request(st, k, 0, self.config.rollouts) for k in chunk]
            for k, res in zip(chunk, results, strict=True):
                self.put(st, self.rollout_label(st, k, [res]))
        self.put(st, self.final_label(st))

    def _visit(self, st: _SolutionState, k: int) -> Generator[list[Request], list[RoundResult], StepLabel]:
        """Sample prefix ``k`` round by round until a round has a pass or N rollouts are drawn."""
        if k in st.existing:
            return st.existing[k]
        results: list[RoundResult] = []
        done = 0
        for rnd, n in enumerate(self.config.rounds()):
            (res,) = yield [self.request(st, k, rnd, n, first=done)]
            results.append(res)
            done += n
            if res.passed:
                break
        return self.put(st, self.rollout_label(st, k, results))

    def _search(self, st: _SolutionState) -> LabelerGen:
        last = st.num_steps - 1
        final = self.put(st, self.final_label(st))
        visited: dict[int, StepLabel] = {last: final}
        first_fail = st.num_steps  # no failing prefix
        if not final.hard_label:
            lo, hi = 0, last
            while lo < hi:
                mid = (lo + hi) // 2
                visited[mid] = yield from self._visit(st, mid)
                if visited[mid].hard_label:
                    lo = mid + 1
                else:
                    hi = mid
            first_fail = hi
        elif self.config.probe_passing:
            for k in range(last):
                visited[k] = yield from self._visit(st, k)
                if not visited[k].hard_label:
                    first_fail = k
                    break
        passing = bool(final.hard_label)
        for k, label in infer_unvisited(st.num_steps, visited, first_fail, zeros_after=not passing).items():
            self.put(
                st,
                StepLabel(
                    **self._base(st, k),
                    rollouts=0,
                    passed=0,
                    mc_value=label[1],
                    hard_label=label[0],
                    tokens=0,
                    meta=self._meta(
                        st,
                        k,
                        source="solution_passes" if passing else "monotone",
                        inferred=True,
                        mc_interpolated=True,
                        first_fail=first_fail,
                    ),
                ),
            )


def infer_unvisited(
    num_steps: int, visited: dict[int, StepLabel], first_fail: int, *, zeros_after: bool = True
) -> dict[int, tuple[int, float]]:
    """Hard label and interpolated MC value of each prefix the search did not sample.

    With ``zeros_after`` (a failing solution, labels assumed monotone) prefixes from
    ``first_fail`` on are 0 / 0.0; without it (a passing solution, which completes every one of
    its prefixes) every unvisited prefix is 1. A prefix labelled 1 gets the value interpolated
    linearly between the nearest visited solvable prefixes (constant past the outermost one;
    1.0 when none was visited).
    """
    anchors = sorted(
        (k, lab.mc_value)
        for k, lab in visited.items()
        if lab.hard_label and (k < first_fail or not zeros_after)
    )
    out: dict[int, tuple[int, float]] = {}
    for k in range(num_steps):
        if k in visited:
            continue
        if zeros_after and k >= first_fail:
            out[k] = (0, 0.0)
            continue
        left = [(i, v) for i, v in anchors if i < k]
        right = [(i, v) for i, v in anchors if i > k]
        if left and right:
            (i0, v0), (i1, v1) = left[-1], right[0]
            value = v0 + (v1 - v0) * (k - i0) / (i1 - i0)
        elif left or right:
            value = (left[-1] if left else right[0])[1]
        else:
            value = 1.0
        out[k] = (1, value)
    return out


class _Runner:
    """Drives the labelers in waves: one generate call per round size, one batched execution."""

    def __init__(
        self,
        backend: Any,
        config: LabelConfig,
        rlog: RolloutLog,
        on_rollouts: Callable[[int, int], None],
    ) -> None:
        self.backend = backend
        self.config = config
        self.rlog = rlog
        self.on_rollouts = on_rollouts
        self._verdicts: dict[tuple[str, str], tuple[str, int]] = {}
        self.sampling = config.sampling()
        self.generated_calls = 0
        self.executed_programs = 0

    def _code_key(self, problem: Problem, code: str) -> tuple[str, str]:
        return problem.id, hashlib.sha256(code.encode()).hexdigest()

    def execute(self, pairs: list[tuple[Problem, str]]) -> list[tuple[str, int]]:
        """Verdicts of programs, each distinct (problem, code) executed once per run."""
        todo: dict[tuple[str, str], tuple[Problem, str]] = {}
        for problem, code in pairs:
            key = self._code_key(problem, code)
            if key not in self._verdicts and key not in todo:
                todo[key] = (problem, code)
        if todo:
            results = self.backend.execute(list(todo.values()))
            self.executed_programs += len(todo)
            for key, res in zip(todo, results, strict=True):
                self._verdicts[key] = (res.verdict, res.passed)
        return [self._verdicts[self._code_key(p, c)] for p, c in pairs]

    @staticmethod
    def rollout_codes(prefix: str, gen: dict[str, Any]) -> list[str]:
        """Programs of a round: prefix + continuation; one cut by the token limit keeps its
        longest complete head, as whole solutions do in the generate stage."""
        from dreamprm_code.cof import code_from_continuation, complete_head

        finish = gen.get("finish") or [None] * len(gen["texts"])
        return [
            complete_head(code_from_continuation(prefix, t))
            if f == "length"
            else code_from_continuation(prefix, t)
            for t, f in zip(gen["texts"], finish, strict=False)
        ]

    def run_wave(self, requests: list[Request]) -> list[RoundResult]:
        from dreamprm_code.cof import continuation_prompt, trailer_stops

        # 1. generation: rounds in the log are read back; the rest in one call per round size and
        # stop list (function problems also stop at top-level usage examples)
        fresh: dict[tuple[int, tuple[str, ...]], list[Request]] = {}
        for req in requests:
            if req.key not in self.rlog.gen:
                req.prompt = replace(
                    continuation_prompt(req.problem, req.prefix, self.config.style), seed=req.seed
                )
                stops = tuple(dict.fromkeys([*self.sampling.stop, *trailer_stops(req.problem)]))
                fresh.setdefault((req.n, stops), []).append(req)
        for (n, stops), group in fresh.items():
            outs = self.backend.generate(
                [r.prompt for r in group], n, replace(self.sampling, seed=group[0].seed, stop=list(stops))
            )
            self.generated_calls += 1
            if len(outs) != len(group) or any(len(o) != n for o in outs):
                raise RuntimeError(
                    f"policy returned {[len(o) for o in outs]} completions for {len(group)}x{n}"
                )
            for req, comps in zip(group, outs, strict=True):
                self.rlog.add_gen(
                    req.key,
                    seed=req.seed,
                    texts=[c.text for c in comps],
                    completion_tokens=[int(c.completion_tokens) for c in comps],
                    prompt_tokens=max((int(c.prompt_tokens) for c in comps), default=0),
                    finish=[c.finish_reason for c in comps],
                )
                self.on_rollouts(len(comps), sum(int(c.completion_tokens) for c in comps))
        # 2. execution: all rounds of the wave without a logged verdict, in one batch
        pending: list[tuple[Request, list[str]]] = []
        pairs: list[tuple[Problem, str]] = []
        for req in requests:
            if req.key not in self.rlog.exec:
                codes = self.rollout_codes(req.prefix, self.rlog.gen[req.key])
                pending.append((req, codes))
                pairs.extend((req.problem, c) for c in codes)
        verdicts = self.execute(pairs)
        pos = 0
        for req, codes in pending:
            mine = verdicts[pos : pos + len(codes)]
            pos += len(codes)
            self.rlog.add_exec(req.key, verdicts=[v for v, _ in mine], tests_passed=[p for _, p in mine])
        # 3. results
        fresh_keys = {r.key for g in fresh.values() for r in g}
        out = []
        for req in requests:
            gen, ex = self.rlog.gen[req.key], self.rlog.exec[req.key]
            out.append(
                RoundResult(
                    verdicts=list(ex["verdicts"]),
                    completion_tokens=list(gen["completion_tokens"]),
                    prompt_tokens=int(gen["prompt_tokens"]),
                    unique_codes=len(set(self.rollout_codes(req.prefix, gen))),
                    reused=req.key not in fresh_keys,
                )
            )
        return out


def _prepare(
    solutions: Iterable[Solution], problems: dict[str, Problem], existing: dict[str, dict[int, StepLabel]]
) -> list[_SolutionState]:
    from dreamprm_code.cof import check_steps, split_steps, step_prefixes

    states: list[_SolutionState] = []
    seen: set[str] = set()
    for sol in solutions:
        if sol.id in seen:
            raise UserError(f"solution '{sol.id}' appears twice", field="problem_id/sample_index")
        seen.add(sol.id)
        problem = problems.get(sol.problem_id)
        if problem is None:
            raise UserError(f"solution '{sol.id}': no problem with id '{sol.problem_id}'", field="problem_id")
        if not problem.tests:
            raise UserError(f"problem '{problem.id}' has no tests to label against", field="tests")
        if sol.steps:
            try:
                check_steps(sol.code, sol.steps)
            except UserError as exc:
                raise UserError(f"solution '{sol.id}': {exc.message}", field="steps") from None
            steps, split = sol.steps, "given"
        else:
            steps, split = split_steps(sol.code), "split here"
        states.append(
            _SolutionState(
                solution=sol,
                problem=problem,
                steps=steps,
                prefixes=step_prefixes(sol.code, steps),
                split=split,
                final_verdict=sol.verdict,
                existing=dict(existing.get(sol.id, {})),
            )
        )
    return states


def _check_fingerprint(out: Path, config: LabelConfig) -> None:
    path = config_path(out)
    fp = config.fingerprint()
    if path.exists() and out.exists():
        check_resume(_read_json(path), fp, where=path, what=f"labels in {out}",
                     hint="use another --out, or delete it and its .rollouts.jsonl to start over")
    atomic_write_json(path, fp)


def _read_json(path: Path) -> dict[str, Any]:
    """The fingerprint stored next to a labels file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON ({exc.msg})", path=path, line=exc.lineno) from None
    if not isinstance(data, dict):
        raise UserError("expected a JSON object", path=path)
    return data


def parse_step_label(rec: dict[str, Any]) -> StepLabel:
    """A labels-file record, with the fields training needs checked by name."""
    for key, kind in (("solution_id", str), ("problem_id", str), ("prefix", str)):
        require(rec, key, kind)
    for key in ("step_index", "num_steps"):
        require(rec, key, int)
    value = require(rec, "mc_value", (int, float))
    if not 0.0 <= float(value) <= 1.0:
        raise UserError(f"must be in [0, 1], got {value}", field="mc_value")
    if not 0 <= rec["step_index"] < rec["num_steps"]:
        raise UserError(f"step_index {rec['step_index']} outside 0..{rec['num_steps'] - 1}", field="step_index")
    rec = {"rollouts": 0, "passed": 0, "hard_label": int(float(value) > 0), **rec, "mc_value": float(value)}
    return StepLabel.from_dict(rec)


def load_labels(path: str | Path) -> list[StepLabel]:
    """The labels file: each record checked by name (a torn last line from a kill is skipped)."""
    return load_records(path, parse_step_label, tolerate_torn_tail=True)


@dataclass
class RunStats:
    """What one call of :func:`label_solutions` spent (labels resumed from disk cost nothing)."""

    labels_written: int = 0
    labels_resumed: int = 0
    rollouts: int = 0
    tokens: int = 0
    generate_calls: int = 0
    programs_executed: int = 0
    wall_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def label_solutions(
    solutions: Iterable[Solution],
    problems: Iterable[Problem] | dict[str, Problem],
    policy: Any,
    executor: Any,
    config: LabelConfig,
    out: str | Path,
    *,
    show_progress: bool = True,
    stats: RunStats | None = None,
) -> list[StepLabel]:
    """Label every step prefix of every solution; append to ``out``; resume what is there.

    ``policy`` is a :class:`dreamprm_code.policy.Policy` or a spec string for
    :func:`dreamprm_code.policy.load_policy` (a spec is what Ray actors load);
    ``executor`` is a :class:`dreamprm_code.execution.Executor`. Returns the labels of the given
    solutions (finished earlier or now), in solution order and step order.
    """
    from dreamprm_code.labeling.backends import make_backend

    t0 = time.perf_counter()
    stats = stats if stats is not None else RunStats()
    out = Path(out)
    solutions = list(solutions)
    probs = problems if isinstance(problems, dict) else {p.id: p for p in problems}
    _check_fingerprint(out, config)

    labels_log = JsonlAppender(out, key=label_key)
    rlog = RolloutLog(rollouts_path(out))
    try:
        existing: dict[str, dict[int, StepLabel]] = {}
        for rec in labels_log.records:
            lab = StepLabel.from_dict(rec)
            existing.setdefault(lab.solution_id, {})[lab.step_index] = lab
        states = _prepare(solutions, probs, existing)
        total = sum(st.num_steps for st in states)
        already = sum(len(st.existing) for st in states)
        stats.labels_resumed = already
        todo = [st for st in states if not st.complete()]
        if not todo:
            return _collect(states)

        backend = make_backend(policy, executor, config)
        try:
            _run(states, todo, backend, config, labels_log, rlog, stats, total, already, show_progress)
        finally:
            backend.close()
        return _collect(states)
    finally:
        stats.wall_time = time.perf_counter() - t0
        labels_log.close()
        rlog.close()


def _collect(states: list[_SolutionState]) -> list[StepLabel]:
    return [st.existing[k] for st in states for k in sorted(st.existing)]


def _run(
    states: list[_SolutionState],
    todo: list[_SolutionState],
    backend: Any,
    config: LabelConfig,
    labels_log: JsonlAppender,
    rlog: RolloutLog,
    stats: RunStats,
    total: int,
    already: int,
    show_progress: bool,
) -> None:
    t0 = time.perf_counter()
    with make_progress(disable=not show_progress) as progress:
        task = progress.add_task("label prefixes", total=total, completed=already, info="", unit="prefix")

        def info() -> str:
            dt = max(time.perf_counter() - t0, 1e-9)
            return (
                f"{stats.rollouts} rollouts ({stats.rollouts / dt:.2f}/s), "
                f"{stats.tokens} tok ({stats.tokens / dt:.1f} tok/s)"
            )

        def on_rollouts(n: int, tokens: int) -> None:
            stats.rollouts += n
            stats.tokens += tokens
            progress.update(task, info=info())

        def emit(label: StepLabel) -> None:
            labels_log.append(label.to_dict())
            stats.labels_written += 1
            progress.update(task, advance=1, info=info())

        runner = _Runner(backend, config, rlog, on_rollouts)
        labeler = _Labeler(config, emit)

        # final verdicts that the solutions file does not carry: execute the whole programs once
        missing = [st for st in todo if st.final_verdict is None]
        if missing:
            verdicts = runner.execute([(st.problem, st.solution.code) for st in missing])
            for st, (verdict, _) in zip(missing, verdicts, strict=True):
                st.final_verdict = verdict

        waiting = deque(todo)
        active: list[tuple[LabelerGen, list[Request]]] = []
        while waiting or active:
            while waiting and sum(len(r) for _, r in active) < config.concurrency:
                gen = labeler.run(waiting.popleft())
                try:
                    active.append((gen, next(gen)))
                except StopIteration:
                    pass
            if not active:
                continue
            wave: list[tuple[LabelerGen, list[Request]]] = []
            size = 0
            while active and (not wave or size + len(active[0][1]) <= config.concurrency):
                item = active.pop(0)
                wave.append(item)
                size += len(item[1])
            results = runner.run_wave([r for _, reqs in wave for r in reqs])
            pos = 0
            for gen, reqs in wave:
                mine = results[pos : pos + len(reqs)]
                pos += len(reqs)
                try:
                    active.append((gen, gen.send(mine)))
                except StopIteration:
                    pass
        stats.generate_calls += runner.generated_calls
        stats.programs_executed += runner.executed_programs
