"""Splitting problems by a seeded hash of their ids: one rule for every split of the package.

A problem's place depends only on ``(seed, problem id)``, never on input order or on which
other problems are present, so reruns (and resumed runs) agree and a problem never moves
between the parts of a split when problems are added.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def problem_hash(seed: int, problem_id: str) -> str:
    """The hex SHA-256 of ``"{seed}:{problem_id}"``: the key every split orders problems by."""
    return hashlib.sha256(f"{seed}:{problem_id}".encode()).hexdigest()


def hash_fraction(seed: int, problem_id: str) -> float:
    """The problem's hash as a number in [0, 1], for "hold out a fraction" splits."""
    return int(problem_hash(seed, problem_id)[:8], 16) / 0xFFFFFFFF


def order_by_hash(problem_ids: Iterable[str], seed: int) -> list[str]:
    """The distinct ids in the seeded hash order (take a prefix for a split of a given size)."""
    return sorted(set(problem_ids), key=lambda pid: problem_hash(seed, pid))


def held_out(problem_ids: Iterable[str], fraction: float, seed: int) -> set[str]:
    """The problems held out when a ``fraction`` of them is set aside (validation): each by its own hash."""
    return {pid for pid in set(problem_ids) if hash_fraction(seed, pid) < fraction}
