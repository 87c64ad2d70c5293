"""Where generation and execution run: in this process, or fanned out on a Ray cluster.

Both backends offer the same two calls, so the labelling logic does not know which it has:
``generate(prompts, n, sampling) -> list[list[Completion]]`` and
``execute([(problem, code), ...]) -> list[ExecResult]``.
"""

from __future__ import annotations

import threading
from typing import Any

from dreamprm_code.distributed import load_policy_spec
from dreamprm_code.labeling.config import LabelConfig


class LocalBackend:
    """The policy and the executor of this process (the executor runs its own worker pool)."""

    def __init__(self, policy: Any, executor: Any) -> None:
        self.policy = load_policy_spec(policy)
        self.executor = executor
        self._lock = threading.Lock()

    def generate(self, prompts: list[Any], n: int, sampling: Any) -> list[list[Any]]:
        with self._lock:
            return self.policy.generate(prompts, n, sampling)

    def execute(self, pairs: list[tuple[Any, str]]) -> list[Any]:
        return self.executor.run_many(pairs, progress=False)

    def close(self) -> None:
        """Nothing to release: the caller owns the policy and the executor."""


class RayBackend:
    """Policy replicas and sandbox executors as Ray actors (:mod:`dreamprm_code.distributed`);
    each wave is cut into pieces handed out as actors free up, so a slow actor takes fewer.

    ``address``: ``auto`` (a running cluster), ``HOST:PORT``, ``ray://HOST:PORT``, or ``local``
    (start a private instance for this run). If Ray is already initialised in this process (a
    test, a notebook), that instance is used and left running. The executor given to
    :func:`label_solutions` only lends its settings (limits, workers per actor, sandbox mode).
    """

    def __init__(self, policy: Any, executor: Any, config: LabelConfig) -> None:
        from dreamprm_code.distributed import ExecActor, Fleet, PolicyActor, ray_session

        self._session = ray_session(config.ray or "local")
        ray = self._session.__enter__()
        try:
            self._policies = Fleet(ray, PolicyActor, (policy,), actors=config.ray_policy_actors,
                                   num_gpus=config.ray_policy_gpus)
            self._executors = Fleet(ray, ExecActor, (executor.limits, executor.workers, executor.mode),
                                    actors=config.ray_exec_actors, num_cpus=executor.workers,
                                    slots=executor.workers)
        except BaseException:
            self._session.__exit__(None, None, None)
            raise

    def generate(self, prompts: list[Any], n: int, sampling: Any) -> list[list[Any]]:
        from dreamprm_code.distributed import chunk_size, chunks

        pieces = chunks(prompts, chunk_size(len(prompts), self._policies.size, per_actor=2))
        parts = self._policies.map("generate", [(c, n, sampling) for c in pieces])
        return [comps for part in parts for comps in part]

    def execute(self, pairs: list[tuple[Any, str]]) -> list[Any]:
        from dreamprm_code.distributed import chunks

        if not pairs:
            return []
        return [res for part in self._executors.map("run_batch", chunks(pairs, 2)) for res in part]

    def close(self) -> None:
        try:
            self._executors.close()
            self._policies.close()
        finally:
            self._session.__exit__(None, None, None)


def make_backend(policy: Any, executor: Any, config: LabelConfig) -> LocalBackend | RayBackend:
    """The backend ``config.ray`` asks for."""
    if config.ray:
        return RayBackend(policy, executor, config)
    return LocalBackend(policy, executor)
