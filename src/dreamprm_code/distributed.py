"""Ray for every heavy stage: actors that hold a model or sandbox workers, fed as they free up.

One place for the Ray logic of ``generate``, ``execute``, ``score``, ``label`` and ``run``:

- :func:`ray_session` joins a cluster (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) or starts a
  private one (``local``); a Ray instance this process already started is used and left running.
- :class:`Fleet` starts N actors of one class (each loads its policy, PRM or sandbox workers
  once, in ``__init__``) and hands tasks out as actors free up; a task whose actor dies (its
  worker process or node killed) goes back to the queue and a replacement actor is started.
  Results come back to the driver as they finish, so the caller writes each one to its
  append-only log at once (:class:`dreamprm_code.io.JsonlAppender`): a killed driver loses
  nothing that was written, and a re-run does only what is missing.
- The actor classes here are the stages' remote halves: :class:`ExecActor` (a sandbox
  :class:`~dreamprm_code.execution.Executor` on the node that runs the programs),
  :class:`PolicyActor` (a policy, optionally with an executor for ``generate``) and
  :class:`PrmActor` (a PRM checkpoint).

Ray is optional (``pip install 'dreamprm-code[ray]'``); without it ``--ray`` is a one-line error.
"""

from __future__ import annotations

import collections
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dreamprm_code.errors import UserError


@dataclass
class RayOptions:
    """Where and how wide a stage runs on Ray.

    ``address``: ``auto`` (the cluster this machine belongs to), ``HOST:PORT`` or
    ``ray://HOST:PORT``, or ``local`` (a private instance for this run). ``actors``: how many
    actors (default: per stage, see :func:`model_actors` and :func:`exec_actors`).
    ``gpus``: GPUs per model actor (default: 1 when the cluster has GPUs, else 0).
    """

    address: str
    actors: int | None = None
    gpus: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.address or not str(self.address).strip():
            raise UserError("--ray needs an address: auto, HOST:PORT, ray://HOST:PORT or local", field="ray")
        if self.actors is not None and self.actors < 1:
            raise UserError(f"ray actors must be >= 1, got {self.actors}", field="ray-actors")


def as_options(ray: str | RayOptions | None, actors: int | None = None) -> RayOptions | None:
    """``--ray ADDRESS`` (and ``--ray-actors``) as :class:`RayOptions`; ``None`` means in-process."""
    if ray is None or isinstance(ray, RayOptions):
        return ray
    return RayOptions(address=ray, actors=actors)


def require_ray() -> Any:
    """The ``ray`` module, or a user error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(
            "--ray needs Ray: pip install 'dreamprm-code[ray]' (or 'ray[default]')", field="ray"
        ) from None
    return ray


LOOPBACK = "127.0.0.1"
LOOPBACK_ENV = {
    # Ray's "use the loopback IP as this node's address" switch (its macOS/Windows default);
    # without it Ray rewrites 127.0.0.1 to the machine's interface address on connect.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # No usage reports and no cloud-metadata probes (169.254.169.254) from a private cluster.
    "RAY_USAGE_STATS_ENABLED": "0",
}


def pin_ray_to_loopback() -> None:
    """Make the Ray clusters this process starts, and its drivers, use 127.0.0.1 only, so a
    private cluster never listens on or sends to another address; for single-machine clusters
    only (a driver pinned this way cannot join a multi-machine cluster)."""
    os.environ.update(LOOPBACK_ENV)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # ray already imported: the env var was read at import
        constants.ENABLE_RAY_CLUSTER = False


@contextmanager
def ray_session(address: str) -> Iterator[Any]:
    """Ray, connected to ``address`` for the block (shut down after it, unless it was already up);
    ``local`` starts a private instance on 127.0.0.1 only."""
    local = address in (None, "local")
    ray = require_ray()
    owns = False
    if not ray.is_initialized():
        if local:
            pin_ray_to_loopback()
        # "local", not None: None would join whatever Ray instance already runs on this machine.
        where = {"address": "local", "_node_ip_address": LOOPBACK} if local else {"address": address}
        try:
            ray.init(log_to_driver=False, include_dashboard=False, **where)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserError(f"cannot reach Ray at '{address}': {exc}", field="ray") from None
        owns = True
    try:
        yield ray
    finally:
        if owns:
            ray.shutdown()


def model_actors(ray: Any, opts: RayOptions) -> tuple[int, float]:
    """(actors, GPUs each) for policy and PRM actors: one per GPU when the cluster has GPUs,
    else one per node, unless ``opts`` says otherwise."""
    resources = ray.cluster_resources()
    gpus = opts.gpus if opts.gpus is not None else (1.0 if resources.get("GPU", 0) >= 1 else 0.0)
    if opts.actors is not None:
        return opts.actors, gpus
    if gpus > 0:
        return max(1, int(resources.get("GPU", 0) // gpus)), gpus
    return max(1, sum(1 for n in ray.nodes() if n.get("Alive"))), gpus


def exec_actors(ray: Any, opts: RayOptions, workers: int) -> int:
    """Sandbox actors, ``workers`` CPUs each: as many as the cluster's CPUs hold, unless given."""
    if opts.actors is not None:
        return opts.actors
    return max(1, int(ray.cluster_resources().get("CPU", 1) // max(1, workers)))


class _Ready:
    """Mixin: a no-op the driver awaits to know an actor has finished loading."""

    def ready(self) -> bool:
        return True


class Fleet:
    """``actors`` copies of ``cls`` (constructed with ``args``) on Ray, fed task by task.

    ``slots`` tasks are in flight per actor (give threaded actors ``max_concurrency=slots``).
    An actor that dies (process or node killed) is replaced and its tasks re-queued, up to
    ``max_failures`` deaths in all; an exception raised by the task itself is not retried.
    ``start_timeout`` bounds the wait for a replacement that the cluster has no room for.
    """

    def __init__(
        self,
        ray: Any,
        cls: type,
        args: tuple[Any, ...],
        *,
        actors: int,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        slots: int = 1,
        max_failures: int | None = None,
        start_timeout: float = 600.0,
    ) -> None:
        self._ray = ray
        largest = max((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
        num_cpus = min(num_cpus, largest) if largest else num_cpus  # else no node could ever host one
        self._remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=max(1, slots))(cls)
        self._args = args
        self.slots = max(1, slots)
        self.max_failures = max_failures if max_failures is not None else 2 * actors + 2
        self.start_timeout = start_timeout
        self.failures = 0
        self._idle: list[Any] = []  # one entry per free slot
        self._starting: dict[Any, Any] = {}  # ready() ref -> actor
        self._all: list[Any] = []
        for _ in range(max(1, actors)):
            self._start()

    @property
    def size(self) -> int:
        """Actors alive or starting."""
        return len(self._all)

    def _start(self) -> None:
        actor = self._remote.remote(*self._args)
        self._all.append(actor)
        self._starting[actor.ready.remote()] = actor

    def _lost(self, actor: Any, why: BaseException) -> None:
        self.failures += 1
        if actor in self._all:
            self._all.remove(actor)
        self._idle = [a for a in self._idle if a is not actor]
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass
        if self.failures > self.max_failures:
            raise RuntimeError(f"{self.failures} Ray actors died (last: {why}); giving up") from why
        self._start()

    def call(self, method: str, items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        """``(index, result)`` of ``actor.method(item)`` for every item, in finishing order."""
        from ray.exceptions import GetTimeoutError, RayActorError

        pending = collections.deque(enumerate(items))
        inflight: dict[Any, tuple[Any, int, Any]] = {}
        while pending or inflight:
            while pending and self._idle:
                actor = self._idle.pop()
                index, item = pending.popleft()
                inflight[getattr(actor, method).remote(item)] = (actor, index, item)
            waiting = list(inflight) + list(self._starting)
            if not waiting:
                raise RuntimeError("no Ray actor is left to run the remaining tasks")
            timeout = None if inflight else self.start_timeout
            ready, _ = self._ray.wait(waiting, num_returns=1, timeout=timeout)
            if not ready:
                raise UserError(
                    f"no Ray actor could start within {self.start_timeout:.0f} s (is there room on the cluster?)",
                    field="ray",
                )
            ref = ready[0]
            if ref in self._starting:
                actor = self._starting.pop(ref)
                try:
                    self._ray.get(ref)
                except RayActorError as exc:
                    if getattr(exc, "actor_init_failed", False):  # its constructor raised: no retry helps
                        lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
                        raise UserError(f"a Ray actor failed to start: {lines[-1] if lines else exc}",
                                        field="ray") from None
                    if actor in self._all:
                        self._lost(actor, exc)
                    continue
                self._idle.extend([actor] * self.slots)
                continue
            actor, index, item = inflight.pop(ref)
            try:
                result = self._ray.get(ref)
            except (RayActorError, GetTimeoutError) as exc:
                pending.appendleft((index, item))
                if actor in self._all:
                    self._lost(actor, exc)
                continue
            self._idle.append(actor)
            yield index, result

    def map(self, method: str, items: list[Any]) -> list[Any]:
        """Every result, in the items' order (the work is still handed out as actors free up)."""
        out: list[Any] = [None] * len(items)
        for index, result in self.call(method, items):
            out[index] = result
        return out

    def close(self) -> None:
        """Call each live actor's ``close`` (if any), then kill them all."""
        ready = [a for a in self._all if a not in self._starting.values()]
        try:
            refs = [a.close.remote() for a in ready if hasattr(a, "close")]
            if refs:
                self._ray.wait(refs, num_returns=len(refs), timeout=30)
        finally:
            for actor in self._all:
                try:
                    self._ray.kill(actor, no_restart=True)
                except Exception:
                    pass
            self._all, self._idle, self._starting = [], [], {}


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive pieces of at most ``size``."""
    size = max(1, size)
    return [items[k : k + size] for k in range(0, len(items), size)]


def chunk_size(n: int, actors: int, per_actor: int = 4) -> int:
    """Pieces small enough that a fast actor takes more of them than a slow one."""
    return max(1, math.ceil(n / max(1, actors * per_actor)))


# --- the stages' actors -------------------------------------------------------------------------------


def load_policy_spec(policy: Any) -> Any:
    """A policy object as given, or one loaded from a spec (``str`` or ``(spec, options)``)."""
    if isinstance(policy, str):
        policy = (policy, {})
    if isinstance(policy, tuple):
        from dreamprm_code.policy import load_policy

        spec, opts = policy
        return load_policy(spec, **opts)
    return policy


class ExecActor(_Ready):
    """A sandbox executor on the node that runs the programs, its workers warm between tasks.

    Threaded: ``workers`` tasks run at once, each on its own sandbox worker. No result cache:
    the driver keeps the log.
    """

    def __init__(self, limits: Any, workers: int, sandbox: str) -> None:
        from dreamprm_code.execution import Executor

        self.executor = Executor(limits, workers=workers, sandbox=sandbox)  # type: ignore[arg-type]
        self.executor.start()

    def run_batch(self, pairs: list[tuple[Any, str]]) -> list[Any]:
        return [self.executor.run(problem, code) for problem, code in pairs]

    def close(self) -> None:
        self.executor.close()


class PolicyActor(_Ready):
    """A policy replica (loaded once); with ``exec_settings`` it also runs what it generates."""

    def __init__(self, policy: Any, exec_settings: tuple[Any, int, str] | None = None) -> None:
        self.policy = load_policy_spec(policy)
        self.executor = None
        if exec_settings is not None:
            from dreamprm_code.execution import Executor

            limits, workers, sandbox = exec_settings
            self.executor = Executor(limits, workers=workers, sandbox=sandbox)  # type: ignore[arg-type]

    def describe(self, n: int) -> dict[str, Any]:
        per_call = getattr(self.policy, "prompts_per_call", None)
        return {
            "name": self.policy.name,
            "concurrency": getattr(self.policy, "concurrency", 0),
            "per_call": per_call(n) if per_call else 0,
            "batch_size": getattr(self.policy, "batch_size", 0),
        }

    def generate(self, job: tuple[list[Any], int, Any]) -> list[list[Any]]:
        prompts, n, sampling = job
        return self.policy.generate(prompts, n, sampling)

    def sample(self, job: dict[str, Any]) -> tuple[list[Any], int]:
        from dreamprm_code.generate.solutions import sample_chunk

        return sample_chunk(self.policy, executor=self.executor, **job)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()


class PrmActor(_Ready):
    """A PRM checkpoint loaded once (on this actor's GPU when it has one)."""

    def __init__(self, path: str, batch_tokens: int) -> None:
        import torch

        from dreamprm_code.prm.checkpoint import load_prm

        self.prm = load_prm(path, device="cuda" if torch.cuda.is_available() else "cpu")
        self.batch_tokens = batch_tokens

    def score(self, job: tuple[list[Any], list[Any]]) -> list[Any]:
        from dreamprm_code.prm.score import score_solutions

        problems, solutions = job
        return score_solutions(self.prm, problems, solutions, batch_tokens=self.batch_tokens)


# --- the stages' drivers -------------------------------------------------------------------------------


def execute_on_ray(
    opts: RayOptions,
    pairs: list[tuple[Any, str]],
    on_result: Callable[[int, Any], None],
    *,
    limits: Any,
    workers: int = 1,
    sandbox: str = "auto",
    progress: bool = True,
    batch: int | None = None,
) -> None:
    """Run ``(problem, code)`` pairs on sandbox actors (``workers`` sandbox workers and CPUs each);
    ``on_result(index, result)`` is called in the driver as each finishes, in finishing order."""
    from dreamprm_code.progress import make_progress
    from dreamprm_code.records import PASS

    if not pairs:
        return
    with ray_session(opts.address) as ray:
        actors = exec_actors(ray, opts, workers)
        size = batch or min(8, chunk_size(len(pairs), actors * workers))
        pieces = chunks(list(range(len(pairs))), size)
        fleet = Fleet(ray, ExecActor, (limits, workers, sandbox), actors=actors, num_cpus=workers, slots=workers)
        passed = 0
        try:
            with make_progress(disable=not progress) as bar:
                task = bar.add_task("execute (ray)", total=len(pairs), info=f"{actors} actors")
                jobs = [[pairs[i] for i in piece] for piece in pieces]
                for k, results in fleet.call("run_batch", jobs):
                    for i, res in zip(pieces[k], results, strict=True):
                        on_result(i, res)
                        passed += res.verdict == PASS
                    bar.update(task, advance=len(results), info=f"pass {passed}, {actors} actors")
        finally:
            fleet.close()
