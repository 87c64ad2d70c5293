"""Choosing one candidate out of N: by an aggregated PRM score, or by majority behaviour.

Aggregations turn a candidate's per-step probabilities into one number to rank by:

- ``min``: the weakest step (a chain is as good as its worst function);
- ``mean``: the average step score;
- ``last``: the score of the full program (what an outcome reward model gives);
- ``product``: the product of step probabilities (every step right, if independent);
- ``logodds``: the sum of per-step log-odds ``log(p / (1 - p))``, with ``p`` clipped to
  ``[1e-6, 1 - 1e-6]``; unlike ``product`` it rewards confident steps as well as punishing weak ones.

An empty score list aggregates to NaN, which ranks below every real score.

Ties (exactly equal aggregates, or equally large behaviour clusters) are broken by a uniform draw
from a generator seeded by ``(seed, method, problem id[, N, subsample])`` (see
:func:`dreamprm_code.scaling.metrics.tie_rng`), so results are reproducible and do not depend on
the order of candidates or problems.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Literal, get_args

import numpy as np

from dreamprm_code.errors import UserError
from dreamprm_code.scaling.metrics import argmax_seeded

Aggregation = Literal["min", "mean", "last", "product", "logodds"]
#: Every aggregation name, in the order reports list them; the one list the package checks against.
AGGREGATIONS: tuple[Aggregation, ...] = get_args(Aggregation)
VoteWeighting = Literal["sum", "mean"]
VOTE_WEIGHTINGS: tuple[VoteWeighting, ...] = get_args(VoteWeighting)
_EPS = 1e-6


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def check_aggregation(how: str) -> Aggregation:
    """``how`` if it names an aggregation, else a :class:`UserError` listing the names."""
    if how not in AGGREGATIONS:
        raise UserError(f"unknown aggregate {how!r}; choose one of {', '.join(AGGREGATIONS)}", field="aggregate")
    return how  # type: ignore[return-value]


def aggregate(scores: Sequence[float], how: str = "min") -> float:
    """One number per candidate from its step probabilities (see the module docstring)."""
    check_aggregation(how)
    if len(scores) == 0:
        return float("nan")
    xs = [float(s) for s in scores]
    if how == "min":
        return min(xs)
    if how == "mean":
        return sum(xs) / len(xs)
    if how == "last":
        return xs[-1]
    if how == "product":
        return math.prod(xs)
    return sum(_logit(p) for p in xs)


def vote_weight(value: float, how: str) -> float:
    """A candidate's weight in a PRM-weighted vote: its aggregate as a probability in [0, 1].

    ``logodds`` aggregates are log-odds, so they pass through the logistic function (the same
    ranking, and a weight that cannot be negative); unscored candidates (NaN) weigh 0.
    """
    if math.isnan(value):
        return 0.0
    if how == "logodds":
        return 1.0 / (1.0 + math.exp(-value)) if value > -700 else 0.0
    return value


def select_by_score(values: Sequence[float], rng: np.random.Generator) -> int:
    """The candidate with the highest aggregate; seeded tie-break; NaN (unscored) ranks last."""
    return argmax_seeded(values, rng)


def majority_vote(behaviours: Sequence[Hashable | None], rng: np.random.Generator) -> int:
    """A member of the largest cluster of candidates with identical behaviour.

    ``None`` marks a candidate whose behaviour is unknown or broken (does not compile, crashes on
    every test): such candidates form no cluster and are chosen only when all are ``None``.
    Ties between equally large clusters, and the member within the chosen cluster, are seeded
    uniform draws (members of one cluster behave the same on the tests used to cluster them,
    but may differ on hidden tests).
    """
    if len(behaviours) == 0:
        raise ValueError("no candidates to choose from")
    clusters = behaviour_clusters(behaviours)
    if not clusters:
        return int(rng.integers(len(behaviours)))
    groups = list(clusters.values())
    sizes = np.array([len(g) for g in groups])
    best = np.flatnonzero(sizes == sizes.max())
    group = groups[int(best[0]) if len(best) == 1 else int(rng.choice(best))]
    return group[0] if len(group) == 1 else int(rng.choice(group))


def behaviour_clusters(behaviours: Sequence[Hashable | None]) -> dict[Hashable, list[int]]:
    """Candidate indices by behaviour, in first-seen order; ``None`` (crashed) joins no cluster."""
    clusters: dict[Hashable, list[int]] = {}
    for i, b in enumerate(behaviours):
        if b is not None:
            clusters.setdefault(b, []).append(i)
    return clusters


def weighted_vote(
    behaviours: Sequence[Hashable | None],
    values: Sequence[float],
    how: str,
    weighting: str,
    rng: np.random.Generator,
) -> int:
    """PRM-weighted majority vote: the best-scored member of the cluster with the largest weight.

    As in the weighted best-of-N of search-and-learn and OpenR, candidates that behave the same
    pool their scores: a cluster weighs the ``sum`` (or the ``mean``) of its members'
    :func:`vote_weight`, so several fairly good agreeing candidates can outvote one lone
    high-scored candidate, and a large cluster of poorly scored ones cannot win on size alone.
    ``values`` are the candidates' aggregates under ``how``. Candidates with behaviour ``None``
    join no cluster; when every candidate has none, the best-scored candidate is chosen. Ties
    (equal weights, equal scores within the cluster) are seeded uniform draws.
    """
    if len(behaviours) != len(values):
        raise ValueError("one score per candidate")
    if weighting not in VOTE_WEIGHTINGS:
        raise UserError(f"unknown vote weighting {weighting!r}; choose one of {', '.join(VOTE_WEIGHTINGS)}")
    if len(behaviours) == 0:
        raise ValueError("no candidates to choose from")
    clusters = behaviour_clusters(behaviours)
    if not clusters:
        return argmax_seeded(values, rng)
    groups = list(clusters.values())
    xs = np.asarray(values, dtype=float).tolist()
    weights = [vote_weight(x, how) for x in xs]
    totals = [sum(weights[i] for i in g) for g in groups]
    if weighting == "mean":
        totals = [t / len(g) for t, g in zip(totals, groups, strict=True)]
    group = groups[argmax_seeded(totals, rng)]
    return group[argmax_seeded([xs[i] for i in group], rng)]
