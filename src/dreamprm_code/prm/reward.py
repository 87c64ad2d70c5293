"""A PRM as a reward function for RL trainers: TRL's ``GRPOTrainer(reward_funcs=[...])``.

TRL calls ``reward(prompts=..., completions=..., completion_ids=..., **dataset_columns)`` once per
generation batch and wants one float per completion; it names the reward by ``__name__``.
:class:`PRMReward` takes the code out of each completion (:func:`dreamprm_code.data.extract_code`),
cuts it into steps (decision 1), scores the steps with a local PRM or a reward service, and
aggregates them into one number (``min`` by default, see :func:`dreamprm_code.prm.score.aggregate`).

The problem statement in the PRM's input is the prompt's text (the last user message of a
conversational prompt), or, when the dataset has a ``problem_id`` column and ``problems`` were
given, that problem's statement and starter code, as in training.

With ``url``, the batch goes to a reward service in the contract of OpenRLHF's remote reward
model: ``POST {"query": [prompt + completion, ...], "prompts": [prompt, ...]}`` answered by
``{"rewards": [float, ...]}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dreamprm_code.errors import UserError
from dreamprm_code.records import Problem, Solution


def _text(item: Any, role: str | None = None) -> str:
    """A plain string, or the content of a conversation's messages (of ``role`` when given)."""
    if isinstance(item, str):
        return item
    if isinstance(item, Sequence):
        msgs = [m for m in item if isinstance(m, Mapping) and (role is None or m.get("role") == role)]
        if role == "user":
            msgs = msgs[-1:]
        return "".join(str(m.get("content") or "") for m in msgs)
    raise UserError(f"a prompt or completion must be a string or a list of messages, got {type(item).__name__}")


class PRMReward:
    """``reward(prompts, completions, **kwargs) -> list[float]``, for ``GRPOTrainer(reward_funcs=...)``.

    ``prm``: a loaded :class:`~dreamprm_code.prm.model.ProcessRewardModel` or a checkpoint
    directory; or ``url`` of a reward service (with an optional bearer ``token``). A completion
    with no code gets ``empty_reward``.
    """

    def __init__(
        self,
        prm: Any = None,
        *,
        url: str | None = None,
        token: str | None = None,
        problems: Sequence[Problem] | Mapping[str, Problem] | None = None,
        aggregate: str = "min",
        empty_reward: float = 0.0,
        batch_tokens: int = 16384,
        timeout: float = 120.0,
    ) -> None:
        from dreamprm_code.prm.score import AGGREGATES

        if (prm is None) == (url is None):
            raise UserError("give a PRM (model or checkpoint directory) or a reward service url, not both", field="prm")
        if aggregate not in AGGREGATES:
            raise UserError(f"unknown aggregate {aggregate!r}; choose one of {', '.join(AGGREGATES)}", field="aggregate")
        if isinstance(prm, (str, Path)):
            from dreamprm_code.prm.checkpoint import load_prm

            prm = load_prm(prm)
        self.prm = prm
        self.url = url
        self.token = token
        self.problems = dict(problems) if isinstance(problems, Mapping) else {p.id: p for p in problems or []}
        self.aggregate = aggregate
        self.empty_reward = empty_reward
        self.batch_tokens = batch_tokens
        self.timeout = timeout
        self.__name__ = f"dreamprm_{aggregate}"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise UserError(f"{len(prompts)} prompts but {len(completions)} completions")
        prompt_texts = [_text(p, "user") for p in prompts]
        completion_texts = [_text(c, "assistant") for c in completions]
        if self.url is not None:
            return self._remote(prompt_texts, completion_texts)
        return self._local(prompt_texts, completion_texts, kwargs.get("problem_id"))

    def _local(self, prompts: list[str], completions: list[str], problem_ids: Sequence[str] | None) -> list[float]:
        from dreamprm_code.data import extract_code
        from dreamprm_code.prm.score import aggregate, score_solutions

        problems: dict[str, Problem] = {}
        solutions: list[Solution] = []
        at: list[int] = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            code = extract_code(completion)
            if not code.strip():
                continue
            pid = str(problem_ids[i]) if problem_ids is not None else ""
            problem = self.problems.get(pid) or Problem(
                id=f"prompt-{i}", title="", statement=prompt, platform="", difficulty="medium", tests=[]
            )
            problems[problem.id] = problem
            solutions.append(Solution(problem.id, i, code))
            at.append(i)
        rewards = [float(self.empty_reward)] * len(prompts)
        if solutions:
            scored = score_solutions(self.prm, problems, solutions, batch_tokens=self.batch_tokens)
            for i, s in zip(at, scored, strict=True):
                rewards[i] = aggregate(s.scores, self.aggregate)
        return rewards

    def _remote(self, prompts: list[str], completions: list[str]) -> list[float]:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        body = {"query": [p + c for p, c in zip(prompts, completions, strict=True)], "prompts": prompts}
        try:
            resp = httpx.post(self.url, json=body, headers=headers, timeout=self.timeout)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise UserError(f"reward service {self.url} unreachable: {exc}", field="url") from None
        if resp.status_code != 200:
            raise UserError(f"reward service {self.url} answered {resp.status_code}: {resp.text[:200]}", field="url")
        try:
            rewards = resp.json()["rewards"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"reward service {self.url} answered without a 'rewards' list", field="url") from None
        if not isinstance(rewards, list) or len(rewards) != len(prompts):
            raise UserError(f"reward service {self.url} sent {len(rewards) if isinstance(rewards, list) else 'no'} "
                            f"rewards for {len(prompts)} completions", field="url")
        return [float(r) for r in rewards]
