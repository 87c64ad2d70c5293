"""The ``generate`` stage: problems -> candidate solutions (prompt, reply, code, steps, verdict).

Every sample gets its own record in an append-only JSONL (``io.JsonlAppender``) keyed by the
solution id ``PROBLEM#INDEX``, written only once it is complete (executed unless told not to),
so a killed run resumes with neither duplicates nor gaps. Each problem's seed is derived from
the base seed and the problem id, so resumed runs draw the same samples as uninterrupted ones
(backends that honour per-prompt seeds; see ``Prompt.seed``).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from dreamprm_code.distributed import RayOptions
from dreamprm_code.errors import UserError
from dreamprm_code.io import JsonlAppender, check_resume
from dreamprm_code.policy.base import FINISH_LENGTH, Completion, Policy, Prompt, SamplingParams
from dreamprm_code.progress import make_progress
from dreamprm_code.records import PASS, Problem, Solution

#: sampling keys that must match for a resumed run to append to an existing file
_RESUME_KEYS = ("temperature", "top_p", "max_new_tokens", "stop", "reasoning_effort", "base_seed", "n", "style", "form", "code_prefill")


def problem_seed(base: int | None, problem_id: str) -> int | None:
    """A per-problem seed that does not depend on the order or batching of problems."""
    if base is None:
        return None
    return (int(base) + zlib.crc32(problem_id.encode("utf-8"))) % (2**31 - 1)


def reply_text(prompt: Prompt, completion: Completion) -> str:
    """The whole assistant reply: the prefill (or a completion prompt's opened fence) + the continuation."""
    if prompt.messages is not None:
        return prompt.prefill + completion.text
    text = prompt.text or ""
    tail = text[text.rfind("```") :] if "```" in text else ""
    opened = tail.startswith("```") and tail.count("```") == 1 and tail.endswith("\n")
    return (tail if opened else "") + completion.text


def export_lcb(solutions: list[Solution], path: str | Path) -> None:
    """Write LiveCodeBench's generation layout (``question_id``, ``code_list``, ``graded_list``)
    so its users can compare against their own tooling; written atomically, in problem order."""
    from dreamprm_code.io import atomic_write_json

    by_problem: dict[str, list[Solution]] = {}
    for s in solutions:
        by_problem.setdefault(s.problem_id, []).append(s)
    rows = []
    for pid, sols in by_problem.items():
        sols = sorted(sols, key=lambda s: s.sample_index)
        row: dict[str, Any] = {"question_id": pid, "code_list": [s.code for s in sols]}
        if all(s.verdict is not None for s in sols):
            row["graded_list"] = [s.passed for s in sols]
        rows.append(row)
    atomic_write_json(path, rows)


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for k in range(0, len(items), size):
        yield items[k : k + size]


def _check_resumable(existing: list[dict], policy_name: str, settings: dict[str, Any], out: Path) -> None:
    for i, rec in enumerate(existing, start=1):
        old = {"policy": rec.get("policy"), **(rec.get("sampling") or {})}
        check_resume(old, {"policy": policy_name, **settings}, keys=["policy", *(k for k in _RESUME_KEYS if k in old)],
                     where=out, line=i, what="this file's solutions",
                     hint="resume with the same options or write to a new --out")


def sample_chunk(
    policy: Policy,
    chunk: list[Problem],
    n: int,
    sampling: SamplingParams,
    settings: dict[str, Any],
    style: str,
    form: str,
    templates: str | Path | None,
    open_fence: bool,
    code_prefill: bool,
    skip: set[str],
    executor: Any = None,
) -> tuple[list[Solution], int]:
    """One policy call's worth of problems -> their new solutions (run when ``executor`` is given)
    and the completion tokens drawn; ids in ``skip`` (written before a kill) are drawn again by
    the same seed but not returned. Runs in this process or in a Ray policy actor."""
    from dreamprm_code.cof import build_prompt, code_stops, complete_head, split_info
    from dreamprm_code.data import extract_code

    prompts = []
    for p in chunk:
        prompt = build_prompt(
            p, style, form=form, templates=templates,
            open_fence=open_fence or code_prefill, prefill_starter=code_prefill,
        )
        prompt.seed = problem_seed(sampling.seed, p.id)
        prompts.append(prompt)
    call = sampling
    if code_prefill:
        call = replace(sampling, stop=list(dict.fromkeys([*sampling.stop, *code_stops(chunk[0])])))
    replies = policy.generate(prompts, n, call)
    if len(replies) != len(prompts) or any(len(r) != n for r in replies):
        raise UserError(f"policy {policy.name} returned the wrong number of samples")
    fresh: list[Solution] = []
    tokens = 0
    for p, prompt, comps in zip(chunk, prompts, replies, strict=True):
        for i, comp in enumerate(comps):
            tokens += comp.completion_tokens
            if f"{p.id}#{i}" in skip:
                continue  # written before a kill; the same seed drew it again
            raw = reply_text(prompt, comp)
            code = extract_code(raw)
            cut = 0
            if comp.finish_reason == FINISH_LENGTH:  # judge the complete definitions
                head = complete_head(code)
                code, cut = head, len(code) - len(head)
            info = split_info(code)
            fresh.append(
                Solution(
                    problem_id=p.id,
                    sample_index=i,
                    code=code,
                    policy=policy.name,
                    sampling={**settings, "seed": prompt.seed},
                    prompt=prompt.to_dict(),
                    raw=raw,
                    steps=info.steps,
                    tokens={"prompt": comp.prompt_tokens, "completion": comp.completion_tokens},
                    meta={"finish_reason": comp.finish_reason, "step_mode": info.mode, "trimmed_chars": cut},
                )
            )
    if executor is not None:
        by_id = {p.id: p for p in chunk}
        results = executor.run_many([(by_id[s.problem_id], s.code) for s in fresh], progress=False)
        for s, res in zip(fresh, results, strict=True):
            s.verdict, s.result = res.verdict, res
    return fresh, tokens


def generate_solutions(
    problems: list[Problem],
    policy: Policy,
    n: int,
    sampling: SamplingParams,
    style: str = "cof",
    out: str | Path = "solutions.jsonl",
    *,
    executor: Any = None,
    execute: bool = True,
    limit: int | None = None,
    batch_size: int | None = None,
    form: str = "chat",
    open_fence: bool = False,
    code_prefill: bool = False,
    templates: str | Path | None = None,
    show_progress: bool = True,
    ray: RayOptions | None = None,
) -> list[Solution]:
    """Sample ``n`` solutions per problem, split them into steps, run them, append them to ``out``.

    ``executor`` is an :class:`~dreamprm_code.execution.Executor` (one is made, and closed, when
    ``execute`` and none is given). ``batch_size`` prompts go to the policy per call (default:
    the backend's ``concurrency``, or as many as one in-process ``generate`` call holds), and
    each call's solutions are saved before the next. Returns every solution of these problems
    in ``out``, in problem and sample order, including those from earlier runs.

    ``code_prefill`` opens the fence and puts the starter code (function and LeetCode problems)
    in the assistant's prefill, and stops at the closing fence or at top-level usage examples
    (:func:`~dreamprm_code.cof.code_stops`): every token then goes to the program. A reply cut
    by the token limit keeps its longest complete head (:func:`~dreamprm_code.cof.complete_head`;
    ``meta.trimmed_chars`` says how much went).

    ``ray``: sample on Ray policy actors instead (:mod:`dreamprm_code.distributed`), each
    holding the policy (``policy`` may then be a spec string or ``(spec, options)``, loaded in
    the actors only) and, when ``execute``, a sandbox executor with ``executor``'s limits and
    workers, so programs run on the node that generated them; the driver appends every chunk
    as it comes back.
    """
    from dreamprm_code.cof import problem_kind

    if n < 1:
        raise UserError(f"n must be >= 1, got {n}", field="n")
    if limit is not None:
        problems = problems[: max(0, limit)]
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"problem id '{dup}' appears more than once", field="id")
    out = Path(out)
    settings = {
        **sampling.to_dict(), "base_seed": sampling.seed, "n": n, "style": style, "form": form, "code_prefill": code_prefill,
    }
    own_executor = None
    if execute and executor is None:
        from dreamprm_code.execution import Executor

        executor = own_executor = Executor(workers=1 if ray is not None else None)
    stack = ExitStack()  # the Ray session and its actors, when ``ray``
    fleet: Any = None
    try:
        if ray is None:
            name = policy.name
            per_call = getattr(policy, "prompts_per_call", None)  # in-process models: one generate call's worth
            shape = {
                "concurrency": getattr(policy, "concurrency", 0), "per_call": per_call(n) if per_call else 0,
                "batch_size": getattr(policy, "batch_size", 0),
            }
        else:
            from dreamprm_code.distributed import Fleet, PolicyActor, model_actors, ray_session

            ray_mod = stack.enter_context(ray_session(ray.address))
            actors, gpus = model_actors(ray_mod, ray)
            exec_settings = (executor.limits, executor.workers, executor.mode) if execute else None
            fleet = Fleet(ray_mod, PolicyActor, (policy, exec_settings), actors=actors, num_gpus=gpus)
            stack.callback(fleet.close)
            shape = next(fleet.call("describe", [n]))[1]
            name = shape["name"]
        size = batch_size or shape["concurrency"] or shape["per_call"]
        size = max(1, int(size or shape["batch_size"] or 8))
        with JsonlAppender(out, key=lambda r: r["id"]) as log:
            wanted = set(ids)
            _check_resumable([r for r in log.records if r.get("problem_id") in wanted], name, settings, out)
            todo = [p for p in problems if any(f"{p.id}#{i}" not in log.done for i in range(n))]
            missing = sum(1 for p in todo for i in range(n) if f"{p.id}#{i}" not in log.done)
            t_start = time.perf_counter()
            tokens = passed = executed = 0
            with make_progress(disable=not show_progress) as bar:
                task = bar.add_task("generate", total=missing, info="", unit="sample")
                # one stop list per call (code_stops differ by kind): stdin problems get their own calls
                kinds = (False, True) if code_prefill else (None,)
                chunks = [
                    c for k in kinds
                    for c in _batches([p for p in todo if k is None or (problem_kind(p) == "stdin") == k], size)
                ]
                jobs = [
                    {
                        "chunk": chunk, "n": n, "sampling": sampling, "settings": settings, "style": style,
                        "form": form, "templates": templates, "open_fence": open_fence,
                        "code_prefill": code_prefill,
                        "skip": {f"{p.id}#{i}" for p in chunk for i in range(n) if f"{p.id}#{i}" in log.done},
                    }
                    for chunk in chunks
                ]
                if ray is None:
                    results: Iterator[tuple[int, tuple[list[Solution], int]]] = (
                        (k, sample_chunk(policy, executor=executor if execute else None, **job))
                        for k, job in enumerate(jobs)
                    )
                else:
                    results = fleet.call("sample", jobs)
                for _, (fresh, used) in results:
                    tokens += used
                    for s in fresh:
                        if s.verdict is not None:
                            passed += s.verdict == PASS
                            executed += 1
                        log.append(s.to_dict())
                    rate = tokens / max(1e-9, time.perf_counter() - t_start)
                    verdicts = f", pass {passed}/{executed}" if execute else ""
                    bar.update(task, advance=len(fresh), info=f"{rate:.1f} tok/s{verdicts}")
            by_id = {r["id"]: r for r in log.records}
    finally:
        stack.close()
        if own_executor is not None:
            own_executor.close()
    return [Solution.from_dict(by_id[f"{pid}#{i}"]) for pid in ids for i in range(n) if f"{pid}#{i}" in by_id]
