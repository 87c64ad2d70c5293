"""Best-of-N evaluation (docs/architecture.md#honest-evaluation): every selection method, by difficulty, with intervals.

For each problem with N candidates, each method picks one candidate (or, for the policy and
random rows, is scored by its expected value), and its pass@1 is the fraction of problems whose
pick is correct. Methods:

- ``policy``: the policy's own pass@1, the mean correctness of its candidates;
- ``random``: a uniformly random candidate, as an expected value. It equals ``policy`` by
  construction; it stays in the table because the paper prints it;
- ``majority``: the largest cluster of candidates that behave the same on a few tests;
- ``<score set>/<aggregation>``: the candidate with the best aggregated step score;
- ``oracle``: pass@N, whether any candidate is correct.

Every method gets a bootstrap interval per difficulty, and a paired bootstrap interval for its
difference to the policy and to the best baseline (best of policy, random, majority and any score
set the caller names as a baseline, e.g. an ORM). The scaling curve repeats the selection on
seeded random subsets of N candidates (all subsets when there are at most ``subsamples``), N = 1,
2, 4, ... up to the largest pool.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dreamprm_code.errors import UserError
from dreamprm_code.progress import make_progress
from dreamprm_code.records import Problem, Solution, StepScores
from dreamprm_code.scaling.metrics import (
    Comparison,
    Interval,
    bootstrap_ci,
    mean_pass_at_k,
    paired_bootstrap,
    pass_at_k,
    tie_rng,
)
from dreamprm_code.scaling.select import AGGREGATIONS, aggregate, majority_vote, select_by_score

DIFFICULTY_ORDER = ("easy", "medium", "hard")
OVERALL = "overall"
POLICY, RANDOM, MAJORITY, ORACLE = "policy", "random", "majority", "oracle"
PASS_AT_K = (1, 5, 10)

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

    def table_methods(self) -> list[MethodResult]:
        """The paper's rows: baselines, each score set under the primary aggregation, oracle."""
        return [
            m for m in self.methods if m.kind != "score" or m.aggregation == self.primary_aggregation
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


def _group_of(problem: Problem) -> str:
    return str(problem.difficulty).lower()


def _scaling_sizes(max_n: int) -> list[int]:
    sizes = [1]
    while sizes[-1] * 2 < max_n:
        sizes.append(sizes[-1] * 2)
    if max_n > 1:
        sizes.append(max_n)
    return sizes


def evaluate(
    problems: Sequence[Problem],
    solutions: Sequence[Solution],
    score_sets: Mapping[str, Sequence[StepScores]] | None = None,
    aggregations: Sequence[str] = AGGREGATIONS,
    seed: int = 0,
    majority: bool = True,
    *,
    behaviours: Mapping[str, Hashable | None] | None = None,
    behaviour_fn: Callable[[Sequence[Problem], Sequence[Solution]], Mapping[str, Hashable | None]]
    | None = None,
    label: str = "verdict",
    resamples: int = 2000,
    subsamples: int = 20,
    primary_aggregation: str | None = None,
    baselines: Sequence[str] = (),
    show_progress: bool = False,
) -> EvalReport:
    """Evaluate every selection method on the candidate pools; see the module docstring.

    ``behaviours`` maps solution id -> a hashable summary of its outputs (``None`` when it did
    not run); when missing and ``majority`` is set, ``behaviour_fn`` (default: run a few tests
    of each candidate through the execution stage) computes it. ``baselines`` names score sets
    that count as baselines (e.g. ``orm``). ``primary_aggregation`` is the one the paper-layout
    table shows (default: the first of ``aggregations``); choosing it after looking at the
    results would be selecting on the test set.
    """
    score_sets = dict(score_sets or {})
    aggregations = list(aggregations)
    for how in aggregations:
        if how not in AGGREGATIONS:
            raise UserError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}")
    if score_sets and not aggregations:
        raise UserError("give at least one aggregation to rank candidates by their step scores")
    primary = primary_aggregation or (aggregations[0] if aggregations else "min")
    if score_sets and primary not in aggregations:
        raise UserError(f"primary aggregation {primary!r} is not among {aggregations}")
    for b in baselines:
        if b not in score_sets:
            raise UserError(f"baseline {b!r} is not a score set (have: {', '.join(score_sets) or 'none'})")
    reserved = {POLICY, RANDOM, MAJORITY, ORACLE}
    for name in score_sets:
        if name in reserved or "/" in name:
            raise UserError(f"score set name {name!r} is reserved or contains '/'; rename it")

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

    # Aggregated scores: method name -> problem id -> array over candidates (NaN = unscored).
    agg = aggregate
    score_values: dict[str, dict[str, np.ndarray]] = {}
    coverage: dict[str, dict[str, int]] = {}
    sol_ids = {s.id for pid in pids for s in pools[pid]}
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
            notes.append(
                f"score set {name!r} lacks {coverage[name]['missing']} candidates; they rank last"
            )
        for how in aggregations:
            key = f"{name}/{how}"
            score_values[key] = {
                pid: np.array(
                    [agg(table[s.id], how) if s.id in table else float("nan") for s in pools[pid]],
                    dtype=float,
                )
                for pid in pids
            }

    if majority and behaviours is None:
        if behaviour_fn is None:
            from dreamprm_code.scaling.behaviour import compute_behaviours

            behaviour_fn = compute_behaviours
        behaviours = behaviour_fn([by_id[pid] for pid in pids], [s for pid in pids for s in pools[pid]])
    beh = {pid: [None if behaviours is None else behaviours.get(s.id) for s in pools[pid]] for pid in pids}

    groups_present = {_group_of(by_id[pid]) for pid in pids}
    groups = [g for g in DIFFICULTY_ORDER if g in groups_present]
    groups += sorted(groups_present - set(groups)) + [OVERALL]
    members = {g: [pid for pid in pids if g == OVERALL or _group_of(by_id[pid]) == g] for g in groups}

    # Methods in the paper's row order.
    methods: list[MethodResult] = [
        MethodResult(POLICY, "Policy", "baseline"),
        MethodResult(RANDOM, "Random", "baseline"),
    ]
    if majority:
        methods.append(MethodResult(MAJORITY, "Majority vote", "baseline"))
    for name in score_sets:
        for how in aggregations:
            label_text = row_label(name) if how == primary else f"{row_label(name)} ({how})"
            kind = "baseline" if name in baselines else "score"
            m = MethodResult(f"{name}/{how}", label_text, kind, score_set=name, aggregation=how)
            if kind == "baseline" and how != primary:
                m.kind = "score"  # only the primary aggregation of a baseline set is a baseline
            methods.append(m)
    methods.append(MethodResult(ORACLE, "Oracle (pass@N)", "oracle"))

    def choose(method: str, pid: str, idx: np.ndarray, rng_keys: tuple[str, ...]) -> int:
        """Position (within ``idx``) of the candidate a selecting method picks."""
        rng = tie_rng(seed, method, pid, *rng_keys)
        if method == MAJORITY:
            return majority_vote([beh[pid][i] for i in idx], rng)
        return select_by_score(score_values[method][pid][idx], rng)

    def pick(method: str, pid: str, idx: np.ndarray, rng_keys: tuple[str, ...]) -> float:
        """Correctness (or its expectation) of ``method``'s choice among candidates ``idx``."""
        c = correct[pid][idx]
        if method in (POLICY, RANDOM):
            return float(c.mean())
        if method == ORACLE:
            return float(c.any())
        return float(c[choose(method, pid, idx, rng_keys)])

    with make_progress(disable=not show_progress) as progress:
        task = progress.add_task("selecting", total=len(methods) * len(pids), info="")
        for m in methods:
            for pid in pids:
                full = np.arange(len(pools[pid]))
                m.per_problem[pid] = pick(m.name, pid, full, ())
                if m.name == MAJORITY or m.score_set is not None:
                    m.chosen[pid] = pools[pid][choose(m.name, pid, full, ())].id
                progress.advance(task)

        def values(m: MethodResult, g: str) -> list[float]:
            return [m.per_problem[pid] for pid in members[g]]

        for m in methods:
            for g in groups:
                m.cells[g] = bootstrap_ci(values(m, g), resamples=resamples, seed=seed)
        baseline_methods = [m for m in methods if m.kind == "baseline"]
        best = max(baseline_methods, key=lambda m: (m.cells[OVERALL].value, -baseline_methods.index(m)))
        policy = methods[0]
        for m in methods:
            for g in groups:
                m.vs_policy[g] = paired_bootstrap(
                    values(m, g), values(policy, g), names=(m.name, POLICY), resamples=resamples, seed=seed
                )
                m.vs_best_baseline[g] = paired_bootstrap(
                    values(m, g), values(best, g), names=(m.name, best.name), resamples=resamples, seed=seed
                )

        # Scaling curve: the same selection on seeded subsets of N candidates.
        max_n = max(len(pools[pid]) for pid in pids)
        sizes = _scaling_sizes(max_n)
        scaling: dict[str, list[dict[str, float]]] = {m.name: [] for m in methods}
        task = progress.add_task("scaling curve", total=len(sizes) * len(methods), info="")
        for n in sizes:
            # A whole pool keeps the table's tie-break keys, so the curve ends at the table's value.
            subsets: dict[str, list[tuple[np.ndarray, tuple[str, ...]]]] = {}
            for pid in pids:
                size = len(pools[pid])
                if size <= n:
                    subsets[pid] = [(np.arange(size), ())]
                elif math.comb(size, n) <= subsamples:
                    # Few enough subsets to average over all of them: exact, no sampling noise.
                    subsets[pid] = [
                        (np.array(c), (str(n), str(r))) for r, c in enumerate(itertools.combinations(range(size), n))
                    ]
                else:
                    rng = tie_rng(seed, "subsample", pid, str(n))
                    subsets[pid] = [
                        (np.sort(rng.choice(size, n, replace=False)), (str(n), str(r))) for r in range(subsamples)
                    ]
            for m in methods:
                per: list[float] = []
                for pid in pids:
                    size = len(pools[pid])
                    if m.name == ORACLE:
                        per.append(pass_at_k(size, int(correct[pid].sum()), min(n, size)))
                    elif m.name in (POLICY, RANDOM):
                        per.append(float(correct[pid].mean()))
                    else:
                        per.append(float(np.mean([pick(m.name, pid, idx, keys) for idx, keys in subsets[pid]])))
                ci = bootstrap_ci(per, resamples=resamples, seed=seed)
                scaling[m.name].append({"n": n, "value": ci.value, "low": ci.low, "high": ci.high})
                progress.advance(task)

    counts = {
        g: {
            "problems": len(members[g]),
            "candidates": int(sum(len(pools[pid]) for pid in members[g])),
            "min_n": int(min(len(pools[pid]) for pid in members[g])),
            "max_n": int(max(len(pools[pid]) for pid in members[g])),
            "correct": int(sum(int(correct[pid].sum()) for pid in members[g])),
        }
        for g in groups
    }
    pak: dict[str, dict[str, float | None]] = {}
    for g in groups:
        nc = [(len(pools[pid]), int(correct[pid].sum())) for pid in members[g]]
        pak[g] = {f"pass@{k}": mean_pass_at_k(nc, k) for k in PASS_AT_K}
    if len({len(pools[pid]) for pid in pids}) > 1:
        notes.append("pools differ in size; the scaling curve uses a whole pool when it is smaller than N")
    return EvalReport(
        groups=groups,
        counts=counts,
        methods=methods,
        best_baseline=best.name,
        primary_aggregation=primary,
        pass_at_k=pak,
        scaling=scaling,
        coverage=coverage,
        settings={
            "seed": seed,
            "resamples": resamples,
            "subsamples": subsamples,
            "label": label,
            "aggregations": aggregations,
            "majority": majority,
            "baselines": list(baselines),
            "confidence": 0.95,
            "tie_break": "uniform seeded draw keyed by (seed, method, problem id[, N, subsample])",
        },
        notes=notes,
    )
