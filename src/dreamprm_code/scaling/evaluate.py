"""Best-of-N evaluation (docs/architecture.md#honest-evaluation): every selection method, by difficulty, with intervals.

For each problem with N candidates, each method picks one candidate (or, for the policy and
random rows, is scored by its expected value), and its pass@1 is the fraction of problems whose
pick is correct. Methods:

- ``policy``: the policy's own pass@1, the mean correctness of its candidates;
- ``random``: a uniformly random candidate, as an expected value. It equals ``policy`` by
  construction; it stays in the table because the paper prints it;
- ``majority``: the largest cluster of candidates that behave the same on a few tests;
- ``<score set>/<aggregation>``: the candidate with the best aggregated step score;
- ``<score set>/<aggregation>/vote-sum`` (and ``vote-mean``): PRM-weighted majority vote, the
  behaviour cluster whose members' scores add up (or average) to the most, as in the weighted
  best-of-N of search-and-learn and OpenR (:func:`dreamprm_code.scaling.select.weighted_vote`);
- ``oracle``: pass@N, whether any candidate is correct.

Every method gets a bootstrap interval per difficulty, and a paired bootstrap interval for its
difference to the policy and to the best baseline (best of policy, random, majority and any score
set the caller names as a baseline, e.g. an ORM, with its weighted vote). Below
:data:`MIN_PROBLEMS_FOR_VERDICT` problems the reports show the intervals but call nothing a win. The scaling curve repeats the selection on
seeded random subsets of N candidates (all subsets when there are at most ``subsamples``), N = 1,
2, 4, ... up to the largest pool.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dreamprm_code.errors import UserError
from dreamprm_code.progress import make_progress
from dreamprm_code.records import Problem, Solution, StepScores
from dreamprm_code.scaling.metrics import (
    Comparison,
    Interval,
    bootstrap_ci,
    lazy_tie_rng,
    mean_pass_at_k,
    paired_bootstrap,
    pass_at_k,
    tie_rng,
)
from dreamprm_code.scaling.select import (
    AGGREGATIONS,
    VOTE_WEIGHTINGS,
    aggregate,
    majority_vote,
    select_by_score,
    weighted_vote,
)

DIFFICULTY_ORDER = ("easy", "medium", "hard")
OVERALL = "overall"
POLICY, RANDOM, MAJORITY, ORACLE = "policy", "random", "majority", "oracle"
PASS_AT_K = (1, 5, 10)
#: Below this many problems a paired interval is too wide to call a method better or worse.
MIN_PROBLEMS_FOR_VERDICT = 30

BehaviourFn = Callable[[Sequence[Problem], Sequence[Solution]], Mapping[str, Hashable | None]]

#: Row labels of the paper's table for the score-set names the pipeline writes.
KNOWN_LABELS = {
    "orm": "ORM",
    "prm": "PRM-CoF",
    "prm-cof": "PRM-CoF",
    "none": "PRM-CoF",
    "weights": "PRM + sample weights",
    "prm-weights": "PRM + sample weights",
    "labels": "DreamPRM-Code (label correction)",
    "prm-labels": "DreamPRM-Code (label correction)",
    "dreamprm": "DreamPRM-Code (label correction)",
    "dreamprm-code": "DreamPRM-Code (label correction)",
}


def row_label(score_set: str) -> str:
    """The paper's row name for a score set (``orm`` -> ``ORM``), else the name as given."""
    return KNOWN_LABELS.get(score_set.lower(), score_set)


@dataclass
class MethodResult:
    """One selection method: its pass@1 per group and its paired differences."""

    name: str
    label: str
    kind: str  # "baseline" | "score" | "oracle"
    score_set: str | None = None
    aggregation: str | None = None
    vote: str | None = None  # "sum" | "mean" for a PRM-weighted vote
    cells: dict[str, Interval] = field(default_factory=dict)
    vs_policy: dict[str, Comparison] = field(default_factory=dict)
    vs_best_baseline: dict[str, Comparison] = field(default_factory=dict)
    per_problem: dict[str, float] = field(default_factory=dict)
    chosen: dict[str, str] = field(default_factory=dict)  # problem id -> chosen solution id

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "kind": self.kind,
            "score_set": self.score_set,
            "aggregation": self.aggregation,
            "vote": self.vote,
            "cells": {g: c.to_dict() for g, c in self.cells.items()},
            "vs_policy": {g: c.to_dict() for g, c in self.vs_policy.items()},
            "vs_best_baseline": {g: c.to_dict() for g, c in self.vs_best_baseline.items()},
            "per_problem": self.per_problem,
            "chosen": self.chosen,
        }


@dataclass
class EvalReport:
    """Everything :func:`evaluate` measured; ``to_dict`` is what ``report.json`` holds."""

    groups: list[str]
    counts: dict[str, dict[str, int]]  # group -> problems, candidates, min_n, max_n
    methods: list[MethodResult]
    best_baseline: str
    primary_aggregation: str
    pass_at_k: dict[str, dict[str, float | None]]  # group -> "pass@k" -> value
    scaling: dict[str, list[dict[str, float]]]  # method -> [{n, value, low, high}]
    coverage: dict[str, dict[str, int]]  # score set -> scored / missing / extra
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def method(self, name: str) -> MethodResult:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def primary_vote(self) -> str | None:
        """The weighted-vote variant the main table shows (the first one asked for)."""
        votes = self.settings.get("weighted_vote") or []
        return votes[0] if votes else None

    @property
    def verdicts_allowed(self) -> bool:
        """Whether there are enough problems for a paired interval to call a win or a loss."""
        return self.counts[OVERALL]["problems"] >= MIN_PROBLEMS_FOR_VERDICT

    def table_methods(self) -> list[MethodResult]:
        """The paper's rows: baselines, each score set (and its weighted vote) under the primary
        aggregation, oracle."""
        return [
            m
            for m in self.methods
            if m.kind != "score"
            or (m.aggregation == self.primary_aggregation and m.vote in (None, self.primary_vote))
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": self.groups,
            "counts": self.counts,
            "best_baseline": self.best_baseline,
            "primary_aggregation": self.primary_aggregation,
            "methods": [m.to_dict() for m in self.methods],
            "pass_at_k": self.pass_at_k,
            "scaling": self.scaling,
            "coverage": self.coverage,
            "settings": self.settings,
            "notes": self.notes,
        }


def is_correct(sol: Solution, label: str) -> bool:
    """A candidate's ground truth: its executed verdict, or the pool's recorded label."""
    if label == "verdict":
        if sol.verdict is None:
            raise UserError(
                f"solution {sol.id} has no verdict; run the execution stage first, "
                "or evaluate with label='recorded' to use the pool's own labels",
                field="verdict",
            )
        return sol.passed
    if label == "recorded":
        for key in ("recorded_is_solved", "is_solved"):
            if key in sol.meta:
                return bool(sol.meta[key])
        if sol.verdict is not None:
            return sol.passed
        raise UserError(f"solution {sol.id} has neither a recorded label nor a verdict", field="meta")
    raise UserError(f"unknown label source {label!r}; use 'verdict' or 'recorded'")



@dataclass(frozen=True)
class EvalOptions:
    """How :func:`evaluate` selects and measures; the defaults are the CLI's."""

    #: Step-score aggregations to rank candidates by; each (score set, aggregation) is a row.
    aggregations: Sequence[str] = AGGREGATIONS
    #: The aggregation of the paper-layout table (default: the first of ``aggregations``). Fix it
    #: before looking at the results: choosing it afterwards is selecting on the test set.
    primary_aggregation: str | None = None
    #: Majority vote over behaviour clusters (needs each candidate's behaviour).
    majority: bool = True
    #: PRM-weighted vote variants ("sum", "mean") for every (score set, aggregation); they use the
    #: majority vote's clusters, so they exist only with ``majority``. The first is the main table's.
    weighted_vote: Sequence[str] = VOTE_WEIGHTINGS
    #: Score sets that count as baselines (e.g. ``orm``), under the primary aggregation.
    baselines: Sequence[str] = ()
    #: Ground truth: "verdict" (executed) or "recorded" (the pool's own label).
    label: str = "verdict"
    #: Seeds the bootstrap, the tie-breaks and the scaling curve's subsets.
    seed: int = 0
    #: Bootstrap resamples (over problems) per interval.
    resamples: int = 2000
    #: Seeded random subsets of N candidates per problem on the scaling curve.
    subsamples: int = 20
    #: A progress bar on the console.
    show_progress: bool = False

    def checked(self, score_sets: Mapping[str, object]) -> EvalOptions:
        """These options with the primary aggregation filled in; a :class:`UserError` if inconsistent."""
        aggregations = tuple(self.aggregations)
        for how in aggregations:
            if how not in AGGREGATIONS:
                raise UserError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}")
        for vote in self.weighted_vote:
            if vote not in VOTE_WEIGHTINGS:
                raise UserError(f"unknown weighted vote {vote!r}; choose from {', '.join(VOTE_WEIGHTINGS)}")
        if score_sets and not aggregations:
            raise UserError("give at least one aggregation to rank candidates by their step scores")
        primary = self.primary_aggregation or (aggregations[0] if aggregations else "min")
        if score_sets and primary not in aggregations:
            raise UserError(f"primary aggregation {primary!r} is not among {list(aggregations)}")
        for b in self.baselines:
            if b not in score_sets:
                raise UserError(f"baseline {b!r} is not a score set (have: {', '.join(score_sets) or 'none'})")
        reserved = {POLICY, RANDOM, MAJORITY, ORACLE}
        for name in score_sets:
            if name in reserved or "/" in name:
                raise UserError(f"score set name {name!r} is reserved or contains '/'; rename it")
        votes = tuple(self.weighted_vote) if self.majority else ()
        return replace(
            self,
            aggregations=aggregations,
            primary_aggregation=primary,
            weighted_vote=votes,
            baselines=tuple(self.baselines),
        )


def _group_of(problem: Problem) -> str:
    return str(problem.difficulty).lower()


def _scaling_sizes(max_n: int) -> list[int]:
    sizes = [1]
    while sizes[-1] * 2 < max_n:
        sizes.append(sizes[-1] * 2)
    if max_n > 1:
        sizes.append(max_n)
    return sizes


@dataclass
class _Pools:
    """The candidates of each problem that has any, in sample order, with their ground truth."""

    by_id: dict[str, Problem]
    pids: list[str]
    pools: dict[str, list[Solution]]
    correct: dict[str, np.ndarray]
    notes: list[str]

    def solutions(self) -> list[Solution]:
        return [s for pid in self.pids for s in self.pools[pid]]


def _build_pools(problems: Sequence[Problem], solutions: Sequence[Solution], label: str) -> _Pools:
    by_id = {p.id: p for p in problems}
    pools: dict[str, list[Solution]] = {}
    unknown = 0
    for s in solutions:
        if s.problem_id not in by_id:
            unknown += 1
            continue
        pools.setdefault(s.problem_id, []).append(s)
    if not pools:
        raise UserError("no solution belongs to any of the given problems (check problem ids)")
    pids = [p.id for p in problems if p.id in pools]
    for pid in pids:
        pools[pid].sort(key=lambda s: s.sample_index)
    correct = {pid: np.array([is_correct(s, label) for s in pools[pid]], dtype=bool) for pid in pids}
    notes: list[str] = []
    if unknown:
        notes.append(f"{unknown} solutions belong to no given problem and were ignored")
    missing_problems = len(problems) - len(pids)
    if missing_problems:
        notes.append(f"{missing_problems} problems have no candidates and are not counted")
    return _Pools(by_id, pids, pools, correct, notes)


def _aggregate_scores(
    data: _Pools, score_sets: Mapping[str, Sequence[StepScores]], aggregations: Sequence[str]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, int]]]:
    """``"set/aggregation"`` -> problem id -> aggregate per candidate (NaN = unscored), and coverage."""
    values: dict[str, dict[str, np.ndarray]] = {}
    coverage: dict[str, dict[str, int]] = {}
    sol_ids = {s.id for s in data.solutions()}
    for name, records in score_sets.items():
        table = {r.solution_id: r.scores for r in records}
        scored = sum(1 for sid in sol_ids if sid in table)
        coverage[name] = {
            "scored": scored,
            "missing": len(sol_ids) - scored,
            "extra": sum(1 for sid in table if sid not in sol_ids),
        }
        if scored == 0:
            raise UserError(f"score set {name!r} scores none of the candidates (solution ids do not match)")
        if coverage[name]["missing"]:
            data.notes.append(f"score set {name!r} lacks {coverage[name]['missing']} candidates; they rank last")
        for how in aggregations:
            values[f"{name}/{how}"] = {
                pid: np.array(
                    [aggregate(table[s.id], how) if s.id in table else float("nan") for s in data.pools[pid]],
                    dtype=float,
                )
                for pid in data.pids
            }
    return values, coverage


def _make_methods(score_sets: Iterable[str], options: EvalOptions) -> list[MethodResult]:
    """Every method, in the paper's row order; each score set's aggregations and weighted votes."""
    primary = options.primary_aggregation
    main_vote = options.weighted_vote[0] if options.weighted_vote else None
    methods = [MethodResult(POLICY, "Policy", "baseline"), MethodResult(RANDOM, "Random", "baseline")]
    if options.majority:
        methods.append(MethodResult(MAJORITY, "Majority vote", "baseline"))
    for name in score_sets:
        # Only the primary aggregation (and primary vote) of a baseline set is a baseline.
        is_baseline = name in options.baselines
        for how in options.aggregations:
            text = row_label(name) if how == primary else f"{row_label(name)} ({how})"
            kind = "baseline" if is_baseline and how == primary else "score"
            methods.append(MethodResult(f"{name}/{how}", text, kind, score_set=name, aggregation=how))
            for vote in options.weighted_vote:
                detail = vote if how == primary else f"{vote}, {how}"
                kind = "baseline" if is_baseline and how == primary and vote == main_vote else "score"
                methods.append(
                    MethodResult(
                        f"{name}/{how}/vote-{vote}",
                        f"{row_label(name)} weighted vote ({detail})",
                        kind,
                        score_set=name,
                        aggregation=how,
                        vote=vote,
                    )
                )
    methods.append(MethodResult(ORACLE, "Oracle (pass@N)", "oracle"))
    return methods


@dataclass
class _Selector:
    """What each method picks among a subset of a problem's candidates, with seeded tie-breaks."""

    data: _Pools
    values: dict[str, dict[str, np.ndarray]]
    behaviours: dict[str, list[Hashable | None]]
    seed: int

    def choose(self, m: MethodResult, pid: str, idx: np.ndarray, rng_keys: tuple[str, ...]) -> int:
        """Position (within ``idx``) of the candidate a selecting method picks."""
        rng = lazy_tie_rng(self.seed, m.name, pid, *rng_keys)
        if m.name == MAJORITY:
            return majority_vote([self.behaviours[pid][i] for i in idx], rng)
        if m.vote is not None:
            key = f"{m.score_set}/{m.aggregation}"
            beh = [self.behaviours[pid][i] for i in idx]
            return weighted_vote(beh, self.values[key][pid][idx], str(m.aggregation), m.vote, rng)
        return select_by_score(self.values[m.name][pid][idx], rng)

    def pick(self, m: MethodResult, pid: str, idx: np.ndarray, rng_keys: tuple[str, ...]) -> float:
        """Correctness (or its expectation) of ``m``'s choice among candidates ``idx``."""
        c = self.data.correct[pid][idx]
        if m.name in (POLICY, RANDOM):
            return float(c.mean())
        if m.name == ORACLE:
            return float(c.any())
        return float(c[self.choose(m, pid, idx, rng_keys)])


def _groups(data: _Pools) -> tuple[list[str], dict[str, list[str]]]:
    """Difficulty groups present (in easy/medium/hard order, then others, then overall) and their problems."""
    present = {_group_of(data.by_id[pid]) for pid in data.pids}
    groups = [g for g in DIFFICULTY_ORDER if g in present]
    groups += sorted(present - set(groups)) + [OVERALL]
    members = {
        g: [pid for pid in data.pids if g == OVERALL or _group_of(data.by_id[pid]) == g] for g in groups
    }
    return groups, members


def _fill_table(
    methods: list[MethodResult],
    selector: _Selector,
    members: dict[str, list[str]],
    options: EvalOptions,
    progress: Any,
) -> MethodResult:
    """Each method's pick per problem, its interval per group and its paired differences; returns
    the best baseline."""
    data = selector.data
    task = progress.add_task("selecting", total=len(methods) * len(data.pids), info="")
    for m in methods:
        for pid in data.pids:
            full = np.arange(len(data.pools[pid]))
            m.per_problem[pid] = selector.pick(m, pid, full, ())
            if m.name == MAJORITY or m.score_set is not None:
                m.chosen[pid] = data.pools[pid][selector.choose(m, pid, full, ())].id
            progress.advance(task)

    def values(m: MethodResult, g: str) -> list[float]:
        return [m.per_problem[pid] for pid in members[g]]

    resamples, seed = options.resamples, options.seed
    for m in methods:
        for g in members:
            m.cells[g] = bootstrap_ci(values(m, g), resamples=resamples, seed=seed)
    baseline_methods = [m for m in methods if m.kind == "baseline"]
    best = max(baseline_methods, key=lambda m: (m.cells[OVERALL].value, -baseline_methods.index(m)))
    policy = methods[0]
    for m in methods:
        for g in members:
            m.vs_policy[g] = paired_bootstrap(
                values(m, g), values(policy, g), names=(m.name, POLICY), resamples=resamples, seed=seed
            )
            m.vs_best_baseline[g] = paired_bootstrap(
                values(m, g), values(best, g), names=(m.name, best.name), resamples=resamples, seed=seed
            )
    return best


def _subsets(size: int, n: int, pid: str, options: EvalOptions) -> list[tuple[np.ndarray, tuple[str, ...]]]:
    """The subsets of N candidates a problem's curve point averages over, with their tie-break keys."""
    if size <= n:
        # A whole pool keeps the table's tie-break keys, so the curve ends at the table's value.
        return [(np.arange(size), ())]
    if math.comb(size, n) <= options.subsamples:
        # Few enough subsets to average over all of them: exact, no sampling noise.
        return [(np.array(c), (str(n), str(r))) for r, c in enumerate(itertools.combinations(range(size), n))]
    rng = tie_rng(options.seed, "subsample", pid, str(n))
    return [(np.sort(rng.choice(size, n, replace=False)), (str(n), str(r))) for r in range(options.subsamples)]


def _scaling_curve(
    methods: list[MethodResult], selector: _Selector, options: EvalOptions, progress: Any
) -> dict[str, list[dict[str, float]]]:
    """pass@1 of each method against N: the same selection on seeded subsets of N candidates."""
    data = selector.data
    sizes = _scaling_sizes(max(len(data.pools[pid]) for pid in data.pids))
    scaling: dict[str, list[dict[str, float]]] = {m.name: [] for m in methods}
    task = progress.add_task("scaling curve", total=len(sizes) * len(methods), info="")
    for n in sizes:
        subsets = {pid: _subsets(len(data.pools[pid]), n, pid, options) for pid in data.pids}
        for m in methods:
            per: list[float] = []
            for pid in data.pids:
                size = len(data.pools[pid])
                if m.name == ORACLE:
                    per.append(pass_at_k(size, int(data.correct[pid].sum()), min(n, size)))
                elif m.name in (POLICY, RANDOM):
                    per.append(float(data.correct[pid].mean()))
                else:
                    per.append(float(np.mean([selector.pick(m, pid, idx, keys) for idx, keys in subsets[pid]])))
            ci = bootstrap_ci(per, resamples=options.resamples, seed=options.seed)
            scaling[m.name].append({"n": n, "value": ci.value, "low": ci.low, "high": ci.high})
            progress.advance(task)
    return scaling


def _counts(data: _Pools, members: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    out = {}
    for g, pids in members.items():
        sizes = [len(data.pools[pid]) for pid in pids]
        out[g] = {
            "problems": len(pids),
            "candidates": int(sum(sizes)),
            "min_n": int(min(sizes)),
            "max_n": int(max(sizes)),
            "correct": int(sum(int(data.correct[pid].sum()) for pid in pids)),
        }
    return out


def _policy_pass_at_k(data: _Pools, members: dict[str, list[str]]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for g, pids in members.items():
        nc = [(len(data.pools[pid]), int(data.correct[pid].sum())) for pid in pids]
        out[g] = {f"pass@{k}": mean_pass_at_k(nc, k) for k in PASS_AT_K}
    return out


def evaluate(
    problems: Sequence[Problem],
    solutions: Sequence[Solution],
    score_sets: Mapping[str, Sequence[StepScores]] | None = None,
    options: EvalOptions | None = None,
    *,
    behaviours: Mapping[str, Hashable | None] | None = None,
    behaviour_fn: BehaviourFn | None = None,
) -> EvalReport:
    """Evaluate every selection method on the candidate pools; see the module docstring.

    ``behaviours`` maps solution id -> a hashable summary of its outputs (``None`` when it did
    not run); when missing and ``options.majority`` is set, ``behaviour_fn`` (default: run a few
    tests of each candidate through the execution stage) computes it.
    """
    score_sets = dict(score_sets or {})
    options = (options or EvalOptions()).checked(score_sets)
    data = _build_pools(problems, solutions, options.label)
    values, coverage = _aggregate_scores(data, score_sets, options.aggregations)
    if options.majority and behaviours is None:
        if behaviour_fn is None:
            from dreamprm_code.scaling.behaviour import compute_behaviours

            behaviour_fn = compute_behaviours
        behaviours = behaviour_fn([data.by_id[pid] for pid in data.pids], data.solutions())
    beh = {pid: [None if behaviours is None else behaviours.get(s.id) for s in data.pools[pid]] for pid in data.pids}
    groups, members = _groups(data)
    methods = _make_methods(score_sets, options)
    selector = _Selector(data, values, beh, options.seed)
    with make_progress(disable=not options.show_progress) as progress:
        best = _fill_table(methods, selector, members, options, progress)
        scaling = _scaling_curve(methods, selector, options, progress)
    if len({len(data.pools[pid]) for pid in data.pids}) > 1:
        data.notes.append("pools differ in size; the scaling curve uses a whole pool when it is smaller than N")
    return EvalReport(
        groups=groups,
        counts=_counts(data, members),
        methods=methods,
        best_baseline=best.name,
        primary_aggregation=str(options.primary_aggregation),
        pass_at_k=_policy_pass_at_k(data, members),
        scaling=scaling,
        coverage=coverage,
        settings={
            "seed": options.seed,
            "resamples": options.resamples,
            "subsamples": options.subsamples,
            "label": options.label,
            "aggregations": list(options.aggregations),
            "majority": options.majority,
            "weighted_vote": list(options.weighted_vote),
            "baselines": list(options.baselines),
            "confidence": 0.95,
            "min_problems_for_verdict": MIN_PROBLEMS_FOR_VERDICT,
            "tie_break": "uniform seeded draw keyed by (seed, method, problem id[, N, subsample])",
        },
        notes=data.notes,
    )
