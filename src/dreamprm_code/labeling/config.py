"""Settings of a labelling run, and the fingerprint that keeps a resumed run consistent."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from dreamprm_code.errors import UserError
from dreamprm_code.options import choices, option

Strategy = Literal["full", "search"]
STRATEGIES: tuple[str, ...] = choices(Strategy)


@dataclass
class LabelConfig:
    """How step prefixes are labelled by Monte-Carlo rollouts (docs/architecture.md#step-labels-from-rollouts).

    Each field's help says what it does. Under ``search`` the first failing step is found with
    fewer rollouts: a binary search (OmegaPRM-style) on failing solutions, an in-order probe on
    passing ones, and a prefix stops at its first passing round; see
    :mod:`dreamprm_code.labeling.label` for exactly what ``search`` gives up against ``full``
    (the paper's recipe: N rollouts on every prefix but the last, unbiased soft labels everywhere).
    Each (solution, prefix, round) derives its own seed from ``seed``, so a resumed run samples
    what an uninterrupted one would have.
    """

    rollouts: int = option(8, short="-n", help="continuations sampled per step prefix (N)")
    strategy: Strategy = option(
        "full", help="full: N rollouts on every prefix; search: look for the first failing step with fewer"
    )
    search_round: int = option(
        1, help="under search, rollouts in a prefix's first round; each later round draws as many as "
        "were drawn so far (1, 1, 2, 4, ...), capped at N; a prefix stops at its first passing round",
    )
    probe_passing: bool = option(
        True, help="under search, sample the prefixes of passing solutions in order up to the first one "
        "with no passing rollout (off: infer them all solvable, cheaper but misses policy failures)",
    )
    search_give_up: int | None = option(
        None, help="under search, label a prefix 0 once its first M rollouts all fail (default N/2; "
        "M = N gives every visited prefix the label full gives it)",
    )
    temperature: float = option(0.7, help="sampling temperature of each rollout")
    top_p: float = option(0.95, help="nucleus sampling of each rollout")
    max_new_tokens: int = option(512, help="most tokens per rollout")
    stop: list[str] = option(default_factory=lambda: ["```"], help="stop strings of each rollout")
    seed: int = option(0, help="base seed; each (solution, prefix, round) derives its own")
    style: str = option("cof", help="continuation prompt style: cof | plain")
    concurrency: int = option(
        1, help="prefixes per policy generate call (each with its own N samples); raise for HTTP "
        "servers and GPUs, keep 1 on a small CPU",
    )
    ray: str | None = option(
        None, help="send generation and execution to Ray: ADDRESS (ray://host:10001), auto, or local "
        "to start a private instance",
    )
    ray_policy_actors: int = option(1, help="policy replicas on the Ray cluster (each loads the policy; one CPU)")
    ray_policy_gpus: float = option(0.0, help="GPUs per policy replica on Ray")
    ray_exec_actors: int = option(2, help="sandbox executors on the Ray cluster (one CPU each, warm workers)")

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
