"""Scoring candidates: every step of every candidate, one forward pass per candidate.

Candidates are batched by length under a token budget (rows x longest row), so short
candidates do not pay for long ones' padding. ``aggregate`` (owned by ``scaling.select``, re-exported
here) turns a candidate's step scores into one number for best-of-N.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from dreamprm_code.cof import solution_steps
from dreamprm_code.distributed import RayOptions
from dreamprm_code.errors import UserError
from dreamprm_code.prm.data import Example, examples_from_solutions
from dreamprm_code.prm.format import step_texts
from dreamprm_code.prm.model import ProcessRewardModel, step_feature_batches
from dreamprm_code.progress import make_progress
from dreamprm_code.records import Problem, Solution, StepScores
from dreamprm_code.scaling.select import AGGREGATIONS, aggregate

#: The same tuple as ``scaling.select.AGGREGATIONS``, under the name ``dreamprm_code.prm`` exports.
AGGREGATES = AGGREGATIONS

#: Scores a batch: problems and solutions in the same order -> per-step probabilities of each
#: (the PRM-guided search and the reward service take any such function).
Scorer = Callable[[Sequence[Problem], Sequence[Solution]], list[list[float]]]


def _problem_map(problems: Mapping[str, Problem] | Sequence[Problem] | None) -> dict[str, Problem]:
    if problems is None:
        return {}
    if isinstance(problems, Mapping):
        return dict(problems)
    return {p.id: p for p in problems}


@torch.inference_mode()
def score_examples(
    prm: ProcessRewardModel,
    examples: Sequence[Example],
    *,
    batch_tokens: int = 16384,
    progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
    share_prefix: bool = True,
) -> list[list[float]]:
    """Step probabilities for each example (in its ``step_index`` order).

    One backbone pass per distinct sequence, reusing each problem's header cache when
    ``share_prefix`` (see :func:`~dreamprm_code.prm.model.step_feature_batches`).
    """
    was_training = prm.training
    prm.eval()
    out: list[list[float]] = [[] for _ in examples]
    with make_progress(disable=not progress) as bar:
        task = bar.add_task("score", total=len(examples), info="", unit="seq")
        for idx, feats, tokens in step_feature_batches(prm, examples, batch_tokens=batch_tokens,
                                                       share_prefix=share_prefix):
            probs = torch.sigmoid(prm.head(feats)).float().cpu().tolist()
            pos = 0
            for i in idx:
                n = len(examples[i].step_token_index)
                out[i] = probs[pos : pos + n]
                pos += n
            bar.advance(task, len(idx))
            if on_batch is not None:
                on_batch(tokens)
    prm.train(was_training)
    return out


def score_solutions(
    prm: ProcessRewardModel,
    problems: Mapping[str, Problem] | Sequence[Problem] | None,
    solutions: Sequence[Solution],
    *,
    batch_tokens: int = 16384,
    progress: bool = False,
) -> list[StepScores]:
    """Per-step scores of each solution, one forward pass per candidate (docs/architecture.md#one-forward-pass-scores-every-step)."""
    if prm.prompt_format is None:
        raise UserError("the PRM has no input format attached (load it with load_prm)")
    pmap = _problem_map(problems)
    # an empty candidate has no step to score: no scores, so it ranks last (aggregate -> NaN)
    examples = examples_from_solutions([s for s in solutions if s.code.strip()], prm.prompt_format, pmap)
    probs = score_examples(prm, examples, batch_tokens=batch_tokens, progress=progress)
    per_solution: dict[str, dict[int, float]] = {s.id: {} for s in solutions}
    for ex, ps in zip(examples, probs, strict=True):
        per_solution[ex.solution_id].update(zip(ex.step_index, ps, strict=True))
    model_name = str(prm.spec.get("name", prm.spec.get("backbone", "")))
    out = []
    for sol in solutions:
        got = per_solution[sol.id]
        scores = [got[k] for k in sorted(got)]
        out.append(
            StepScores(
                solution_id=sol.id,
                problem_id=sol.problem_id,
                scores=scores,
                model=model_name,
                meta={"num_steps": len(scores), "min": aggregate(scores, "min"), "last": aggregate(scores, "last")}
                if scores else {"num_steps": 0, "empty_code": True},
            )
        )
    return out


def prefix_examples(
    prm: ProcessRewardModel,
    problems: Mapping[str, Problem] | Sequence[Problem] | None,
    solutions: Sequence[Solution],
) -> list[Example]:
    """One sequence per step prefix, scoring only its last step: the reference's way, kept as
    the baseline that one-pass scoring must match and beat."""
    if prm.prompt_format is None:
        raise UserError("the PRM has no input format attached (load it with load_prm)")
    pmap = _problem_map(problems)
    out: list[Example] = []
    for sol in solutions:
        texts = step_texts(sol.code, solution_steps(sol))
        problem = pmap.get(sol.problem_id)
        for k in range(1, len(texts) + 1):
            view = prm.prompt_format.encode(
                problem.statement if problem else "", (problem.starter_code or "") if problem else "", texts[:k]
            )[-1]
            out.append(
                Example(
                    view.input_ids[: view.step_token_index[-1] + 1],
                    [view.step_token_index[-1]],
                    [k - 1],
                    [math.nan],
                    [-1],
                    [k == len(texts)],
                    sol.id,
                    sol.problem_id,
                )
            )
    return out


def score_prefixes_separately(
    prm: ProcessRewardModel,
    problems: Mapping[str, Problem] | Sequence[Problem] | None,
    solutions: Sequence[Solution],
    *,
    batch_tokens: int = 16384,
) -> list[list[float]]:
    """Each step's score from its own prefix fed alone (n sequences per candidate)."""
    examples = prefix_examples(prm, problems, solutions)
    probs = score_examples(prm, examples, batch_tokens=batch_tokens)
    per: dict[str, list[float]] = {s.id: [] for s in solutions}
    for ex, ps in zip(examples, probs, strict=True):
        per[ex.solution_id].append(ps[0])
    return [per[s.id] for s in solutions]


def score_to_file(
    prm: ProcessRewardModel | str | Path,
    problems: Mapping[str, Problem] | Sequence[Problem] | None,
    solutions: Sequence[Solution],
    out: str | Path,
    *,
    batch_tokens: int = 16384,
    chunk: int = 64,
    progress: bool = True,
    ray: RayOptions | None = None,
) -> int:
    """Score the candidates not yet in ``out`` (step-scores JSONL), appending ``chunk`` at a time.

    A killed run resumes where it stopped; returns how many candidates this call scored.
    ``ray``: score on Ray actors instead, each loading the checkpoint ``prm`` (a directory) once;
    chunks go to actors as they free up and are appended here as they come back.
    """
    from dreamprm_code.io import JsonlAppender

    with JsonlAppender(out, key=lambda r: r["solution_id"]) as sink:
        # a problem's candidates in one chunk where they fit, so they share its header's cache
        todo = sorted((s for s in solutions if s.id not in sink.done), key=lambda s: s.problem_id)
        pieces = [list(todo[i : i + chunk]) for i in range(0, len(todo), max(1, chunk))]
        with make_progress(disable=not progress) as bar:
            task = bar.add_task("score", total=len(todo), info=f"{len(solutions) - len(todo)} already scored")
            if ray is None:
                if not isinstance(prm, ProcessRewardModel):
                    from dreamprm_code.prm.checkpoint import load_prm

                    prm = load_prm(prm)
                for part in pieces:
                    for rec in score_solutions(prm, problems, part, batch_tokens=batch_tokens):
                        sink.append(rec.to_dict())
                    bar.advance(task, len(part))
            elif pieces:
                from dreamprm_code.distributed import Fleet, PrmActor, model_actors, ray_session

                if isinstance(prm, ProcessRewardModel):
                    raise UserError("scoring on Ray needs the checkpoint directory, not a loaded model", field="prm")
                pmap = _problem_map(problems)
                jobs = [([pmap[s.problem_id] for s in {s.problem_id: s for s in part}.values()
                          if s.problem_id in pmap], part) for part in pieces]
                with ray_session(ray.address) as ray_mod:
                    actors, gpus = model_actors(ray_mod, ray)
                    fleet = Fleet(ray_mod, PrmActor, (str(prm), batch_tokens), actors=actors, num_gpus=gpus)
                    try:
                        for k, recs in fleet.call("score", jobs):
                            for rec in recs:
                                sink.append(rec.to_dict())
                            bar.advance(task, len(pieces[k]))
                    finally:
                        fleet.close()
    return len(todo)


def prm_scorer(prm: ProcessRewardModel, *, batch_tokens: int = 16384) -> Scorer:
    """A :data:`Scorer` over a loaded PRM: one ``score_solutions`` call per batch."""
    def score(problems: Sequence[Problem], solutions: Sequence[Solution]) -> list[list[float]]:
        recs = score_solutions(prm, {p.id: p for p in problems}, solutions, batch_tokens=batch_tokens)
        return [r.scores for r in recs]

    return score


def load_scorer(prm_dir: str | Path, *, device: str | None = None) -> tuple[Scorer, str]:
    """Load a PRM checkpoint directory and wrap it as a scorer; returns (scorer, model name)."""
    path = Path(prm_dir)
    if not path.is_dir():
        raise UserError("PRM checkpoint directory not found", path=path)
    from dreamprm_code.prm.checkpoint import load_prm

    prm = load_prm(path) if device is None else load_prm(path, device=device)
    return prm_scorer(prm), str(getattr(prm, "spec", {}).get("name", path.name))
