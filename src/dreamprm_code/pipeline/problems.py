"""Choosing the training and evaluation problems of a run: seeded slices, never overlapping."""

from __future__ import annotations

import random
from typing import Any

from dreamprm_code.data import load_problems
from dreamprm_code.data.split import order_by_hash
from dreamprm_code.errors import UserError
from dreamprm_code.pipeline.config import ProblemSet
from dreamprm_code.records import Problem


def _parse_source(spec: str) -> tuple[str, dict[str, Any]]:
    """``name[:PATH]`` with optional ``key=value,...`` options after the colon (livecodebench)."""
    if ":" not in spec:
        return spec, {}
    name, rest = spec.split(":", 1)
    if "=" not in rest:
        return spec, {}
    opts: dict[str, Any] = {}
    path = None
    for part in rest.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            opts[key.strip()] = value.strip()
        elif part.strip():
            path = part.strip()
    return (f"{name}:{path}" if path else name), opts


def select_problems(sets: list[ProblemSet]) -> list[Problem]:
    """Load each set, filter, shuffle (seeded), slice; ids stay unique across sets."""
    chosen: list[Problem] = []
    seen: set[str] = set()
    for ps in sets:
        source, opts = _parse_source(ps.source)
        problems = load_problems(source, **opts)
        if ps.difficulties:
            problems = [p for p in problems if p.difficulty in ps.difficulties]
        if ps.ids:
            wanted = set(ps.ids)
            problems = [p for p in problems if p.id in wanted]
            missing = wanted - {p.id for p in problems}
            if missing:
                raise UserError(f"unknown problem ids in {ps.source}: {sorted(missing)[:5]}", field="ids")
        problems = sorted(problems, key=lambda p: p.id)
        if ps.shuffle_seed is not None:
            random.Random(ps.shuffle_seed).shuffle(problems)
        end = None if ps.limit is None else ps.offset + ps.limit
        for p in problems[ps.offset : end]:
            if p.id not in seen:
                seen.add(p.id)
                chosen.append(p)
    return chosen


def split_train_eval(train_sets: list[ProblemSet], eval_sets: list[ProblemSet]) -> tuple[list[Problem], list[Problem]]:
    """The two problem lists of a run; a problem in both is a config error, named."""
    train = select_problems(train_sets)
    evaluation = select_problems(eval_sets)
    overlap = {p.id for p in train} & {p.id for p in evaluation}
    if overlap:
        raise UserError(
            f"{len(overlap)} problem(s) are in both the training and the evaluation sets, e.g. {sorted(overlap)[0]!r}",
            field="eval_problems",
        )
    if not train or not evaluation:
        raise UserError("the training or the evaluation problem set is empty", field="train_problems")
    return train, evaluation


def split_training_problems(problem_ids: list[str], meta_share: float, seed: int) -> dict[str, list[str]]:
    """Training problems by problem into a ``label`` part and a held-out ``meta`` pool.

    ``label``: solutions get rollout labels and train every variant. ``meta``: whole solutions
    with verdicts, later split by :func:`dreamprm_code.meta.metaset.split_meta_set` into the
    outer-step part and the validation part. The order is a seeded hash of the ids (as in
    ``split_meta_set``), so reruns agree; at least one problem stays labelled.
    """
    order = order_by_hash(problem_ids, seed)
    n = len(order)
    n_meta = 0 if n < 2 or meta_share <= 0 else min(n - 1, max(1, round(n * meta_share)))
    return {"label": sorted(order[n_meta:]), "meta": sorted(order[:n_meta])}
