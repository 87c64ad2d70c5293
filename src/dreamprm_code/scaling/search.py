"""PRM-guided function-level beam search.

Best-of-N spends the PRM only at the end. Here the PRM steers generation one *step* (function)
at a time: each of ``beam`` kept prefixes is continued ``expand`` times up to the end of its next
function (``cof.next_step_end``); every new prefix is scored by the PRM and the best ``beam``
are kept. A continuation whose reply closed its code fence (or ended) is also a complete
program and joins the pool of finished programs, since its tokens are already paid for; so does
a prefix that has no further step to write. At the end the finished programs go to best-of-N
under the same PRM.

Every policy token (prompt and completion) is counted, so the search can be compared with plain
best-of-N at the same completion-token budget (``dreamprm-code search --compare``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamprm_code.cof import split_steps
from dreamprm_code.policy import FINISH_STOP, Policy
from dreamprm_code.records import Problem, Solution
from dreamprm_code.scaling.config import SearchConfig
from dreamprm_code.scaling.metrics import tie_rng
from dreamprm_code.scaling.select import aggregate, select_by_score

if TYPE_CHECKING:
    from dreamprm_code.prm.score import Scorer


@dataclass
class Candidate:
    """A program text: a prefix to extend, or a finished program."""

    code: str
    score: float = float("nan")
    steps: int = 0
    origin: str = ""  # "step" (cut at a function end) | "finished" (the reply ended)


@dataclass
class SearchResult:
    """The chosen program and what the search cost."""

    problem_id: str
    code: str
    score: float
    finished: list[Candidate]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    policy_calls: int = 0
    samples: int = 0
    depth: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["finished"] = [asdict(c) for c in self.finished]
        return d

    def to_solution(self, policy_name: str = "", config: SearchConfig | None = None) -> Solution:
        """The chosen program as a solution record, with its token cost."""
        return Solution(
            problem_id=self.problem_id,
            sample_index=0,
            code=self.code,
            policy=policy_name,
            sampling={"method": "prm-beam-search", **({} if config is None else _config_dict(config))},
            steps=split_steps(self.code),
            tokens={"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            meta={"search_score": self.score, "finished_programs": len(self.finished), "depth": self.depth},
        )


def _config_dict(c: SearchConfig) -> dict[str, Any]:
    d = asdict(c)
    d["sampling"] = c.sampling.to_dict()
    return d


def _seed(config: SearchConfig, *keys: str) -> int:
    return int(tie_rng(config.seed, *keys).integers(0, 2**31 - 1))


def search_problem(problem: Problem, policy: Policy, scorer: Scorer, config: SearchConfig) -> SearchResult:
    """Beam search over functions for one problem; see the module docstring."""
    from dreamprm_code.cof import code_from_continuation, continuation_prompt, next_step_end


    def score(codes: Sequence[str]) -> list[float]:
        if not codes:
            return []
        sols = [Solution(problem.id, i, c, steps=split_steps(c)) for i, c in enumerate(codes)]
        per_step = scorer([problem] * len(sols), sols)
        return [aggregate(s, config.aggregation) for s in per_step]

    beams = [Candidate("", steps=0)]
    finished: dict[str, Candidate] = {}
    prompt_tokens = completion_tokens = calls = samples = depth = 0
    for depth in range(1, config.max_steps + 1):
        prompts = []
        for b, beam in enumerate(beams):
            p = continuation_prompt(problem, beam.code, config.style, config.form)  # type: ignore[arg-type]
            p.seed = _seed(config, problem.id, str(depth), str(b))
            prompts.append(p)
        sampling = replace(config.sampling, seed=_seed(config, problem.id, str(depth)))
        outs = policy.generate(prompts, config.expand, sampling)
        calls += 1
        grown: dict[str, Candidate] = {}
        for beam, completions in zip(beams, outs, strict=True):
            for c in completions:
                samples += 1
                prompt_tokens += c.prompt_tokens
                completion_tokens += c.completion_tokens
                code = code_from_continuation(beam.code, c.text)
                done = c.finish_reason == FINISH_STOP
                if done and code.strip():
                    finished.setdefault(code, Candidate(code, steps=beam.steps + 1, origin="finished"))
                end = next_step_end(code, len(beam.code), final=done)
                if end is None or end <= len(beam.code):
                    continue
                prefix = code[:end]
                if done and not code[end:].strip():
                    continue  # the whole rest was one step: already a finished program
                grown.setdefault(prefix, Candidate(prefix, steps=beam.steps + 1, origin="step"))
        if not grown:
            break
        cands = list(grown.values())
        for cand, s in zip(cands, score([c.code for c in cands]), strict=True):
            cand.score = s
        rng = tie_rng(config.seed, "beam", problem.id, str(depth))
        kept: list[Candidate] = []
        while cands and len(kept) < config.beam:
            kept.append(cands.pop(select_by_score([c.score for c in cands], rng)))
        beams = kept
    else:
        # Out of steps with no finished program: the kept prefixes are all the search has.
        if not finished:
            for b in beams:
                finished.setdefault(b.code, Candidate(b.code, steps=b.steps, origin="step"))
    pool = list(finished.values())
    for cand, s in zip(pool, score([c.code for c in pool]), strict=True):
        cand.score = s
    if pool:
        best = pool[select_by_score([c.score for c in pool], tie_rng(config.seed, "final", problem.id))]
        code, best_score = best.code, best.score
    else:
        code, best_score = "", float("nan")
    return SearchResult(
        problem.id, code, best_score, pool, prompt_tokens, completion_tokens, calls, samples, depth
    )


def best_of_n_at_budget(
    problem: Problem,
    policy: Policy,
    scorer: Scorer,
    config: SearchConfig,
    completion_budget: int,
    *,
    max_samples: int = 64,
) -> SearchResult:
    """Plain best-of-N that samples whole solutions until it has spent ``completion_budget`` tokens.

    The comparison the search must beat: the same policy, prompt style and PRM, the same number
    of completion tokens (rounded up to a whole sample).
    """
    from dreamprm_code.cof import build_prompt, code_from_continuation

    prompt = build_prompt(problem, config.style, config.form, open_fence=True)  # type: ignore[arg-type]
    codes: list[str] = []
    prompt_tokens = completion_tokens = calls = 0
    while completion_tokens < completion_budget and len(codes) < max_samples:
        prompt.seed = _seed(config, problem.id, "bon", str(len(codes)))
        (outs,) = policy.generate([prompt], 1, replace(config.sampling, seed=prompt.seed))
        calls += 1
        for c in outs:
            prompt_tokens += c.prompt_tokens
            completion_tokens += max(1, c.completion_tokens)
            codes.append(code_from_continuation("", c.text))
    sols = [Solution(problem.id, i, c, steps=split_steps(c)) for i, c in enumerate(codes)]
    per_step = scorer([problem] * len(sols), sols) if sols else []
    pool = [Candidate(c, aggregate(s, config.aggregation), len(split_steps(c)), "finished") for c, s in zip(codes, per_step, strict=True)]
    if pool:
        best = pool[select_by_score([c.score for c in pool], tie_rng(config.seed, "bon", problem.id))]
        code, best_score = best.code, best.score
    else:
        code, best_score = "", float("nan")
    return SearchResult(problem.id, code, best_score, pool, prompt_tokens, completion_tokens, calls, len(codes), 1)


def _verdict(problem: Problem, code: str) -> str | None:
    """The chosen program's verdict in the sandbox (``None`` when there is no program)."""
    if not code.strip():
        return None
    from dreamprm_code.execution import run_program

    return run_program(problem, code).verdict


def run_search(
    problems: Sequence[Problem],
    policy: Policy,
    scorer: Scorer,
    config: SearchConfig,
    out_dir: str | Path,
    *,
    compare: bool = False,
    execute: bool = True,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Search every problem, appending one record per problem to ``out_dir/search.jsonl``.

    A killed run resumes where it stopped (finished problems are skipped). With ``compare``,
    best-of-N at the same completion-token budget goes to ``bon.jsonl``. Returns one summary
    row per method: problems, solved (``None`` without execution) and tokens spent.
    """
    from dreamprm_code.io import JsonlAppender
    from dreamprm_code.progress import make_progress

    out = Path(out_dir)
    logs = {"search": JsonlAppender(out / "search.jsonl", key=lambda r: r["problem_id"])}
    if compare:
        logs["best-of-n"] = JsonlAppender(out / "bon.jsonl", key=lambda r: r["problem_id"])
    try:
        with make_progress(disable=not show_progress) as progress:
            task = progress.add_task("beam search", total=len(problems), info="")
            for problem in problems:
                if all(problem.id in log.done for log in logs.values()):
                    progress.advance(task)
                    continue
                if problem.id in logs["search"].done:
                    rec = next(r for r in logs["search"].records if r["problem_id"] == problem.id)
                    budget = int(rec["completion_tokens"])
                else:
                    res = search_problem(problem, policy, scorer, config)
                    rec = {**res.to_dict(), "verdict": _verdict(problem, res.code) if execute else None}
                    rec["solution"] = res.to_solution(policy.name, config).to_dict()
                    logs["search"].append(rec)
                    budget = res.completion_tokens
                if compare and problem.id not in logs["best-of-n"].done:
                    bon = best_of_n_at_budget(problem, policy, scorer, config, max(1, budget))
                    logs["best-of-n"].append(
                        {**bon.to_dict(), "verdict": _verdict(problem, bon.code) if execute else None}
                    )
                progress.update(task, advance=1, info=f"{rec['completion_tokens']} tok")
        rows = []
        wanted = {p.id for p in problems}
        for method, log in logs.items():
            recs = [r for r in log.records if r["problem_id"] in wanted]
            verdicts = [r.get("verdict") for r in recs]
            known = execute and all(v is not None or not r["code"].strip() for v, r in zip(verdicts, recs, strict=True))
            rows.append(
                {
                    "method": method,
                    "problems": len(recs),
                    "solved": sum(v == "pass" for v in verdicts) if known else None,
                    "completion_tokens": sum(int(r["completion_tokens"]) for r in recs),
                    "prompt_tokens": sum(int(r["prompt_tokens"]) for r in recs),
                }
            )
        return rows
    finally:
        for log in logs.values():
            log.close()
