"""Settings of a labelling run, and the fingerprint that keeps a resumed run consistent."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from dreamprm_code.errors import UserError

Strategy = Literal["full", "search"]
STRATEGIES: tuple[str, ...] = ("full", "search")


@dataclass
class LabelConfig:
    """How step prefixes are labelled by Monte-Carlo rollouts (DESIGN decision 2).

    Fields:

    - ``rollouts``: N, continuations sampled per step prefix (the paper uses N per prefix).
    - ``strategy``: ``full`` runs N rollouts on every prefix but the last (the paper's recipe,
      unbiased soft labels everywhere); ``search`` looks for the first failing step with fewer
      rollouts: a binary search (OmegaPRM-style) on failing solutions, an in-order probe on
      passing ones, and a prefix stops at its first passing round. See
      :mod:`dreamprm_code.labeling.label` for exactly what ``search`` gives up.
    - ``search_round``: rollouts in the first round of a prefix under ``search``; every later
      round draws as many as were drawn so far (1, 1, 2, 4, ... for the default 1), capped at N.
      A prefix stops after the first round with a pass.
    - ``probe_passing``: under ``search``, sample the prefixes of passing solutions in order
      until one has no passing rollout (the first failing step ``full`` would report); with
      ``False`` they are all inferred solvable without a rollout (cheaper, but it misses the
      prefixes on which the policy fails although the solution shows they can be completed).
    - ``search_give_up``: under ``search``, a prefix whose first M rollouts all fail is labelled
      0 without drawing the rest of N; ``None`` means ``max(1, N // 2)``. It halves the cost of
      the prefixes the policy cannot complete (with a weak policy most of the cost), at the risk
      of a 0 where one of ``full``'s other N - M rollouts would have passed; M = N gives every
      visited prefix the hard label ``full`` gives it.
    - ``temperature``, ``top_p``, ``max_new_tokens``, ``stop``: the sampling of each rollout.
    - ``seed``: base seed; each (solution, prefix, round) gets its own seed derived from it, so a
      resumed run samples what an uninterrupted one would have.
    - ``style``: the continuation prompt template (``cof`` or ``plain``), see
      :func:`dreamprm_code.cof.continuation_prompt`.
    - ``concurrency``: at most this many prefixes go to the policy in one ``generate`` call
      (each with its own N samples); raise it for HTTP servers and GPUs, keep 1 on a small CPU.
    - ``ray``: ``None`` for in-process work, else a Ray address (``auto``, ``ray://host:10001``,
      ``local`` to start a private local instance) to which generation and execution are sent.
    - ``ray_policy_actors``: policy replicas started as Ray actors (each loads the policy; one
      CPU each, plus ``ray_policy_gpus`` GPUs).
    - ``ray_exec_actors``: sandbox executors started as Ray actors (one CPU each, warm workers);
      the execution of a wave is split between them.
    """

    rollouts: int = 8
    strategy: Strategy = "full"
    search_round: int = 1
    probe_passing: bool = True
    search_give_up: int | None = None
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 512
    stop: list[str] = field(default_factory=lambda: ["```"])
    seed: int = 0
    style: str = "cof"
    concurrency: int = 1
    ray: str | None = None
    ray_policy_actors: int = 1
    ray_policy_gpus: float = 0.0
    ray_exec_actors: int = 2

    def __post_init__(self) -> None:
        if self.rollouts < 1:
            raise UserError(f"rollouts must be >= 1, got {self.rollouts}", field="rollouts")
        if self.strategy not in STRATEGIES:
            raise UserError(
                f"strategy must be one of {', '.join(STRATEGIES)}, got '{self.strategy}'", field="strategy"
            )
        if self.search_round < 1:
            raise UserError(f"search_round must be >= 1, got {self.search_round}", field="search_round")
        if self.search_give_up is not None and self.search_give_up < 1:
            raise UserError(f"search_give_up must be >= 1, got {self.search_give_up}", field="search_give_up")
        if self.concurrency < 1:
            raise UserError(f"concurrency must be >= 1, got {self.concurrency}", field="concurrency")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}", field="max_new_tokens")
        if self.ray_policy_actors < 1:
            raise UserError("ray_policy_actors must be >= 1", field="ray_policy_actors")
        if self.ray_exec_actors < 1:
            raise UserError("ray_exec_actors must be >= 1", field="ray_exec_actors")

    @property
    def give_up(self) -> int:
        """Failed rollouts after which ``search`` labels a prefix 0 (``search_give_up`` or N/2)."""
        return self.search_give_up if self.search_give_up is not None else max(1, self.rollouts // 2)

    def rounds(self) -> list[int]:
        """Rollouts per round of one prefix: ``[N]`` under ``full``; under ``search`` a first round
        of ``search_round``, then each round as large as all before it, the last cut to reach N
        (or ``search_give_up``)."""
        if self.strategy == "full":
            return [self.rollouts]
        total = min(self.rollouts, self.give_up)
        sizes = [min(total, self.search_round)]
        while sum(sizes) < total:
            sizes.append(min(sum(sizes), total - sum(sizes)))
        return sizes

    def sampling(self) -> Any:
        """The policy's :class:`SamplingParams` for every rollout (seeds are set per prompt)."""
        from dreamprm_code.policy import SamplingParams

        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            stop=list(self.stop),
            seed=self.seed,
        )

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change labels; a resumed run must match them."""
        d = asdict(self)
        for k in ("concurrency", "ray", "ray_policy_actors", "ray_policy_gpus", "ray_exec_actors"):
            d.pop(k)
        if self.strategy == "full":  # settings of ``search`` only
            d.pop("search_round")
            d.pop("probe_passing")
            d.pop("search_give_up")
        else:
            d["search_give_up"] = self.give_up
        d["rounds"] = self.rounds()
        return d

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
