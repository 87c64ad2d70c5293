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

import numpy as np

from dreamprm_code.errors import UserError
from dreamprm_code.records import AGGREGATIONS
from dreamprm_code.scaling.metrics import argmax_seeded

_EPS = 1e-6


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def aggregate(scores: Sequence[float], how: str = "min") -> float:
    """One number per candidate from its step scores (see the module docstring); the PRM's too."""
    if how not in AGGREGATIONS:
        raise UserError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}", field="aggregation")
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
    clusters: dict[Hashable, list[int]] = {}
    for i, b in enumerate(behaviours):
        if b is not None:
            clusters.setdefault(b, []).append(i)
    if not clusters:
        return int(rng.integers(len(behaviours)))
    groups = list(clusters.values())
    sizes = np.array([len(g) for g in groups])
    best = np.flatnonzero(sizes == sizes.max())
    group = groups[int(best[0]) if len(best) == 1 else int(rng.choice(best))]
    return group[0] if len(group) == 1 else int(rng.choice(group))
