"""pass@k, bootstrap intervals, verdicts and seeded tie-breaking."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamprm_code.errors import UserError
from dreamprm_code.scaling.metrics import (
    LOSS,
    WIN,
    WITHIN,
    argmax_seeded,
    bootstrap_ci,
    mean_pass_at_k,
    paired_bootstrap,
    pass_at_k,
    selection_pass_at_1,
    tie_rng,
)
from dreamprm_code.scaling.select import aggregate, majority_vote, vote_weight, weighted_vote


@given(st.integers(1, 12), st.data())
@settings(max_examples=60, deadline=None)
def test_pass_at_k_equals_enumeration(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    labels = [1] * c + [0] * (n - c)
    subsets = list(combinations(range(n), k))
    exact = sum(any(labels[i] for i in s) for s in subsets) / len(subsets)
    assert math.isclose(pass_at_k(n, c, k), exact, rel_tol=1e-9, abs_tol=1e-12)


def test_pass_at_k_edges():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    assert mean_pass_at_k([(10, 5), (4, 1)], 5) is None
    assert mean_pass_at_k([(10, 5), (10, 0)], 1) == pytest.approx(0.25)


def test_selection_pass_at_1():
    correct = [[True, False], [False, False], [False, True]]
    assert selection_pass_at_1(correct, [0, 1, 1]) == pytest.approx(2 / 3)
    assert selection_pass_at_1(correct, [1, 0, 0]) == 0.0


def test_bootstrap_ci_contains_mean_and_is_seeded():
    x = np.random.default_rng(1).integers(0, 2, 200)
    a = bootstrap_ci(x, seed=3)
    b = bootstrap_ci(x, seed=3)
    assert a == b
    assert a.low <= a.value <= a.high
    assert a.n == 200
    # A 95% interval of a proportion near 0.5 with n=200 is about +-0.07.
    assert 0.04 < (a.high - a.low) / 2 < 0.1


def test_paired_bootstrap_verdicts():
    n = 100
    b = np.zeros(n)
    clear_win = np.r_[np.ones(30), np.zeros(n - 30)]
    assert paired_bootstrap(clear_win, b).verdict == WIN
    assert paired_bootstrap(b, clear_win).verdict == LOSS
    # Two problems better out of 100: the paper's typical gap, inside the interval.
    small = np.r_[np.ones(2), np.zeros(n - 2)]
    cmp = paired_bootstrap(small, b, names=("prm", "policy"))
    assert cmp.verdict == WITHIN
    assert cmp.low <= 0 <= cmp.high
    assert cmp.diff == pytest.approx(0.02)
    assert (cmp.a, cmp.b) == ("prm", "policy")
    # Identical methods: interval is exactly 0 and never a win.
    assert paired_bootstrap(b, b).verdict == WITHIN


def test_paired_is_tighter_than_unpaired_for_correlated_methods():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 300).astype(float)
    other = base.copy()
    flip = rng.choice(300, 12, replace=False)
    other[flip[:9]] = 1
    other[flip[9:]] = 0
    cmp = paired_bootstrap(other, base)
    ci_a, ci_b = bootstrap_ci(other), bootstrap_ci(base)
    assert cmp.high - cmp.low < (ci_a.high - ci_a.low)
    assert ci_b.low < ci_a.value  # the unpaired intervals overlap widely


def test_argmax_seeded_ties_are_seeded_and_uniform():
    values = [0.5, 0.9, 0.9, 0.1, 0.9]
    picks = [argmax_seeded(values, tie_rng(0, "m", f"p{i}")) for i in range(600)]
    assert set(picks) == {1, 2, 4}
    counts = np.bincount(picks, minlength=5)[[1, 2, 4]]
    assert counts.min() > 150  # roughly uniform over the three tied candidates
    again = [argmax_seeded(values, tie_rng(0, "m", f"p{i}")) for i in range(600)]
    assert picks == again
    assert argmax_seeded([0.2, float("nan"), 0.3], tie_rng(0)) == 2
    assert argmax_seeded([float("nan"), float("nan")], tie_rng(0)) in (0, 1)


def test_tie_rng_depends_on_keys_not_order():
    a = tie_rng(5, "x", "y").random()
    assert a == tie_rng(5, "x", "y").random()
    assert a != tie_rng(5, "y", "x").random()
    assert a != tie_rng(6, "x", "y").random()


def test_aggregations():
    s = [0.9, 0.5, 0.8]
    assert aggregate(s, "min") == 0.5
    assert aggregate(s, "mean") == pytest.approx(2.2 / 3)
    assert aggregate(s, "last") == 0.8
    assert aggregate(s, "product") == pytest.approx(0.36)
    expected = sum(math.log(p / (1 - p)) for p in s)
    assert aggregate(s, "logodds") == pytest.approx(expected)
    assert aggregate([1.0], "logodds") < 20  # clipped, finite
    assert math.isnan(aggregate([], "min"))
    with pytest.raises(UserError):
        aggregate(s, "median")


def test_majority_vote():
    rng = tie_rng(0, "maj", "p")
    assert majority_vote(["a", "b", "a", None, None, None], rng) in (0, 2)
    # None never forms a cluster, even when most candidates are broken.
    assert majority_vote([None, None, "x", None], tie_rng(1)) == 2
    assert majority_vote([None, None], tie_rng(1)) in (0, 1)
    picks = {majority_vote(["a", "b", "b", "a"], tie_rng(0, str(i))) for i in range(50)}
    assert picks == {0, 1, 2, 3}


def test_weighted_vote_differs_from_plain_vote_and_argmax():
    # Cluster A: one very high score and one very low; B: three agreeing, fairly good;
    # C: the largest cluster, all poorly scored.
    beh = ["A", "A", "B", "B", "B", "C", "C", "C", "C"]
    scores = [0.95, 0.1, 0.7, 0.7, 0.72, 0.2, 0.2, 0.2, 0.2]
    rng = tie_rng(0)
    assert majority_vote(beh, rng) in (5, 6, 7, 8)
    assert argmax_seeded(scores, rng) == 0
    # sum: A 1.05, B 2.12, C 0.8; mean: A 0.525, B 0.707, C 0.2. The pick is B's best member.
    assert weighted_vote(beh, scores, "min", "sum", rng) == 4
    assert weighted_vote(beh, scores, "min", "mean", rng) == 4


def test_weighted_vote_sum_and_mean_disagree():
    # sum: A 0.9, B 1.15, C 0.9 -> B; mean: A 0.3, B 0.575, C 0.9 -> C (a lone high score wins).
    beh = ["A", "A", "A", "B", "B", "C"]
    scores = [0.3, 0.3, 0.3, 0.55, 0.6, 0.9]
    assert weighted_vote(beh, scores, "min", "sum", tie_rng(0)) == 4
    assert weighted_vote(beh, scores, "min", "mean", tie_rng(0)) == 5


def test_weighted_vote_broken_unscored_and_logodds():
    # Broken candidates (None) join no cluster however high their score...
    assert weighted_vote([None, "x", "y"], [0.99, 0.2, 0.3], "min", "sum", tie_rng(0)) == 2
    # ...unless every candidate is broken: then the best-scored one.
    assert weighted_vote([None, None, None], [0.1, 0.8, 0.3], "min", "sum", tie_rng(0)) == 1
    # Unscored (NaN) members add nothing to their cluster.
    assert weighted_vote(["a", "a", "a", "b"], [float("nan")] * 3 + [0.1], "min", "sum", tie_rng(0)) == 3
    # Log-odds aggregates weigh as probabilities: two agreeing at logit 0 (0.5 each) beat one at
    # logit 0.5 (0.62); summing raw log-odds would give 0 < 0.5.
    assert vote_weight(0.0, "logodds") == pytest.approx(0.5)
    assert vote_weight(-1e9, "logodds") == 0.0
    assert weighted_vote(["a", "a", "b"], [0.0, 0.0, 0.5], "logodds", "sum", tie_rng(0)) in (0, 1)
    # Equal cluster weights are a seeded draw between clusters.
    picks = {weighted_vote(["a", "b"], [0.5, 0.5], "min", "sum", tie_rng(0, str(i))) for i in range(40)}
    assert picks == {0, 1}
    with pytest.raises(UserError, match="vote weighting"):
        weighted_vote(["a"], [0.5], "min", "median", tie_rng(0))
