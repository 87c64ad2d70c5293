"""The resource limits of one program, and the form the sandbox worker reads them in."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dreamprm_code.errors import UserError
from dreamprm_code.execution.worker.messages import WireLimits
from dreamprm_code.options import option

MARGIN = 5.0  # seconds the host waits beyond a limit before it declares the worker stuck


@dataclass(frozen=True)
class Limits:
    """Resource limits for one program; the defaults follow LiveCodeBench (6 s per test).

    ``cpu_time`` defaults to the wall timeout plus one second (a backstop: the wall clock is
    enforced from outside). ``memory_mb`` caps each process's address space (RLIMIT_AS and
    RLIMIT_DATA); ``tree_memory_mb`` (default: ``memory_mb``) the memory of the candidate's
    whole process tree, where the executor has a tree bound (cgroup v2, cgroup v1 or the
    watchdog: see :mod:`~dreamprm_code.execution.bound`); ``processes`` the number of
    processes (and threads), ``file_size_mb`` any file written, ``output_mb``
    what is read from the program's stdout. ``lcb_prelude`` runs LiveCodeBench's import
    block before the code, as its grader does. ``cpu_grace``: past the wall limit, a test
    that got less CPU than the limit (a loaded machine) may run on until it has used it, up
    to three times the limit on the wall clock; off, the wall clock alone decides (LCB).
    """

    timeout: float = option(6.0, help="seconds per test (wall clock)")
    cpu_time: float | None = option(None, help="CPU seconds per test (default: timeout + 1)")
    memory_mb: int = option(2048, help="address-space limit per process of a candidate, MB")
    tree_memory_mb: int | None = option(
        None, help="memory limit of a candidate's whole process tree, MB (default: --memory-mb)"
    )
    processes: int = option(32, help="most processes a candidate may run")
    file_size_mb: int = option(64, help="largest file a candidate may write, MB")
    output_mb: float = option(32.0, help="most stdout read from a candidate, MB")
    stop_at_first_failure: bool = option(
        True, flag="--stop-at-first-failure/--all-tests",
        help="stop at a candidate's first failing test (--all-tests: run every test)",
    )
    lcb_prelude: bool = option(True, help="run LiveCodeBench's import block before the code, as its grader does")
    cpu_grace: bool = option(
        True, flag="--cpu-grace/--strict-wall-clock",
        help="past the wall limit, let a test that got less CPU than the limit run on (--strict-wall-clock: "
        "the wall clock alone decides, as LCB)",
    )

    def __post_init__(self) -> None:
        for name in ("timeout", "memory_mb", "processes", "file_size_mb", "output_mb"):
            if not getattr(self, name) > 0:
                raise UserError(f"must be positive, got {getattr(self, name)!r}", field=name)
        if self.tree_memory_mb is not None and not self.tree_memory_mb > 0:
            raise UserError(f"must be positive, got {self.tree_memory_mb!r}", field="tree_memory_mb")

    def wire(self) -> WireLimits:
        """The form the sandbox worker reads."""
        cpu = self.cpu_time if self.cpu_time is not None else self.timeout + 1
        return {
            "timeout": float(self.timeout), "cpu_time": float(cpu), "memory_mb": int(self.memory_mb),
            "tree_memory_mb": int(self.tree_memory_mb or self.memory_mb),
            "processes": int(self.processes), "file_size_mb": int(self.file_size_mb),
            "output_bytes": int(self.output_mb * 1024 * 1024), "lcb_prelude": bool(self.lcb_prelude),
            "grace": bool(self.cpu_grace),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
