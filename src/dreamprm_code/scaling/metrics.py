"""pass@k, pass@1 of a selection, paired bootstrap intervals and seeded tie-breaking.

Why paired bootstrap: the headline gaps between selection methods are often one or two problems
out of a hundred. Resampling *problems* (the same resample for both methods) gives an interval for
the difference that accounts for the fact that both methods are judged on the same problems; a
difference whose interval contains 0 is reported as "within CI", never as a win.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np

WIN = "win"
LOSS = "loss"
WITHIN = "within CI"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), computed stably.

    ``n`` samples of which ``c`` are correct; ``k`` <= ``n``.
    """
    if n < 1 or k < 1 or k > n or c < 0 or c > n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float | None:
    """Mean unbiased pass@k over problems given ``(n, c)`` pairs; ``None`` if some ``n < k``."""
    if not counts or any(n < k for n, _ in counts):
        return None
    return float(np.mean([pass_at_k(n, c, k) for n, c in counts]))


def selection_pass_at_1(correct: Sequence[Sequence[bool]], chosen: Sequence[int]) -> float:
    """pass@1 of a selection: the fraction of problems whose chosen candidate is correct."""
    if len(correct) != len(chosen):
        raise ValueError("one chosen index per problem")
    if not correct:
        return float("nan")
    return float(np.mean([bool(c[i]) for c, i in zip(correct, chosen, strict=True)]))


def tie_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the keys (e.g. method and problem id).

    Ties are then broken the same way on every run and independently of the order in which
    problems or methods are processed.
    """
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(k.encode("utf-8")) for k in keys]
    return np.random.default_rng(words)


class _LazyRng:
    """A :func:`tie_rng` built on first use: most picks have no tie, and building a generator
    costs more than the pick itself. Draws are those of the generator it stands for."""

    def __init__(self, seed: int, keys: tuple[str, ...]) -> None:
        self._args = (seed, keys)
        self._rng: np.random.Generator | None = None

    def __getattr__(self, name: str) -> Any:
        if self._rng is None:
            self._rng = tie_rng(self._args[0], *self._args[1])
        return getattr(self._rng, name)


def lazy_tie_rng(seed: int, *keys: str) -> np.random.Generator:
    """:func:`tie_rng`, built only when a tie asks for a draw (same draws)."""
    return cast(np.random.Generator, _LazyRng(seed, keys))


def argmax_seeded(values: Sequence[float], rng: np.random.Generator) -> int:
    """Index of the largest value; ties (exactly equal values) go to a uniform seeded draw.

    NaN counts as the lowest possible value, so a candidate without a score is picked only when
    every candidate lacks one.
    """
    if len(values) == 0:
        raise ValueError("no candidates to choose from")
    # Plain Python: pools are small, and numpy's per-call overhead dominated the scaling curve.
    xs = [-math.inf if x != x else x for x in np.asarray(values, dtype=float).tolist()]
    top = max(xs)
    best = [i for i, x in enumerate(xs) if x == top]
    return best[0] if len(best) == 1 else int(rng.choice(best))


@dataclass
class Interval:
    """A point estimate with a percentile bootstrap interval."""

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Comparison:
    """Method A minus method B over the same problems, with its paired bootstrap interval."""

    a: str
    b: str
    diff: float
    low: float
    high: float
    n: int
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def _resample_index(n: int, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, n))


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> Interval:
    """Mean of per-problem values with a percentile bootstrap interval over problems."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    idx = _resample_index(x.size, resamples, seed)
    means = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return Interval(float(x.mean()), float(lo), float(hi), int(x.size))


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    names: tuple[str, str] = ("a", "b"),
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Comparison:
    """Difference of means ``a - b`` with a paired percentile bootstrap over problems.

    The verdict is ``"win"`` / ``"loss"`` only when the whole interval lies above / below 0.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError("paired bootstrap needs one value per problem for both methods")
    if x.size == 0:
        return Comparison(names[0], names[1], float("nan"), float("nan"), float("nan"), 0, WITHIN)
    d = x - y
    idx = _resample_index(d.size, resamples, seed)
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    lo, hi = float(lo), float(hi)
    verdict = WIN if lo > 0 else LOSS if hi < 0 else WITHIN
    return Comparison(names[0], names[1], float(d.mean()), lo, hi, int(d.size), verdict)
