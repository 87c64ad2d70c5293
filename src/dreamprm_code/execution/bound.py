"""A memory and process bound over a candidate's *whole* process tree (host side).

The worker's resource limits are per process (RLIMIT_AS, RLIMIT_NPROC per uid), so a
candidate that forks N children, each under the address-space limit, could hold N times it.
This module bounds the tree, with the first mechanism that works here:

``cgroup2``
    Two cgroups per worker (candidates alternate between them as they alternate uids), with
    ``memory.max`` = the tree limit, ``memory.swap.max`` = 0, ``memory.oom.group`` = 1 (the
    kernel kills the whole tree at once) and ``pids.max``.
``cgroup1``
    The same with the v1 ``memory`` (``memory.limit_in_bytes``) and ``pids`` controllers. The
    kernel's OOM killer kills the largest process of the tree; the host then gives the
    candidate the ``memory_limit`` verdict and the worker kills the rest of it as it does at
    every candidate's end.
``watchdog``
    A host thread sums the memory of each worker's candidate processes (``/proc``: resident
    size, then the proportional set size when that is over) every 50 ms and kills the tree
    past the limit.

The cgroups are made and their limits written by the host. Each worker gets, at start, a
file descriptor of each cgroup's ``cgroup.procs`` opened here; the forked candidate writes
``0`` to it (moving itself) before it drops its privileges and before any of its code runs, so
everything it starts is born inside. The candidate then closes every descriptor it was not
given; the cgroup file system is not mounted in the bubblewrap sandbox and the candidate's uid
could not write to it anyway, so it can neither lift the limit nor leave the cgroup. OOM
kills are read from ``memory.oom_control`` / ``memory.events`` after each test (one ``pread``).
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import weakref
from pathlib import Path
from typing import Literal

from dreamprm_code.errors import UserError
from dreamprm_code.execution.worker.process import descendants

BoundMode = Literal["auto", "cgroup2", "cgroup1", "watchdog", "off"]
BOUND_MODES = ("auto", "cgroup2", "cgroup1", "watchdog", "off")
SLOTS = 2  # cgroups per worker: a candidate never shares one with the one torn down before it
_NAMES = itertools.count()
PREFIX = "dreamprm-"


def _mountinfo() -> list[tuple[str, str, str, set[str]]]:
    """(root inside the hierarchy, mount point, fs type, super options) of each cgroup mount."""
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) >= 5 and len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
            out.append((fields[3], fields[4], rfields[0], set(rfields[2].split(","))))
    return out


def _own_cgroups() -> dict[str, str]:
    """Our cgroup path per v1 controller, and under ``""`` the v2 one (``/proc/self/cgroup``)."""
    out: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else [""]:
            out[c] = path
    return out


def _join(mount: str, root: str, path: str) -> Path:
    rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
    return Path(mount) if rel in (".", "") else Path(mount) / rel


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _sweep_stale(parent: Path) -> None:
    """Remove cgroups left by a host process that died (their pid is in the name)."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not name.startswith(PREFIX):
            continue
        try:
            pid = int(name[len(PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            _kill_cgroup(entry)
            try:
                entry.rmdir()
            except OSError:
                pass


def _kill_cgroup(path: Path) -> None:
    """SIGKILL every process in the cgroup (``cgroup.kill`` where the kernel has it)."""
    kill_file = path / "cgroup.kill"
    if kill_file.exists():
        try:
            _write(kill_file, "1")
            return
        except OSError:
            pass
    for _ in range(50):
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _v2_parent() -> tuple[Path | None, str]:
    """A v2 directory we may make cgroups with ``memory`` and ``pids`` in, else why not."""
    own = _own_cgroups().get("")
    mounts = [m for m in _mountinfo() if m[2] == "cgroup2"]
    if own is None or not mounts:
        return None, "no cgroup2 hierarchy"
    root, mount, _, _ = mounts[0]
    candidates = [_join(mount, root, own), Path(mount)]
    why = ""
    for parent in dict.fromkeys(candidates):
        try:
            available = set((parent / "cgroup.controllers").read_text().split())
        except OSError as exc:
            why = f"{parent}: {exc.strerror}"
            continue
        if not {"memory", "pids"} <= available:
            why = f"the memory and pids controllers are not available in {parent} (only: {' '.join(sorted(available)) or 'none'})"
            continue
        try:
            enabled = set((parent / "cgroup.subtree_control").read_text().split())
            if not {"memory", "pids"} <= enabled:
                _write(parent / "cgroup.subtree_control", "+memory +pids")
        except OSError as exc:
            why = f"cannot enable memory and pids below {parent}: {exc.strerror}"
            continue
        return parent, ""
    return None, why


def _v1_parents() -> tuple[dict[str, Path] | None, str]:
    own = _own_cgroups()
    out: dict[str, Path] = {}
    for ctrl in ("memory", "pids"):
        mount = next((m for m in _mountinfo() if m[2] == "cgroup" and ctrl in m[3]), None)
        if mount is None or ctrl not in own:
            return None, f"no cgroup v1 {ctrl} controller mounted"
        out[ctrl] = _join(mount[1], mount[0], own[ctrl])
    return out, ""


class TreeBound:
    """The bound of one worker: its cgroups (or its watchdog entry), limits and OOM count."""

    mode: str = "off"

    def procs_fds(self) -> list[list[int]]:
        """Per slot, the ``cgroup.procs`` descriptors a candidate writes ``0`` to (passed to the worker)."""
        return []

    def set_limits(self, memory_bytes: int, processes: int) -> None:
        """Limits for every slot; written only when they change."""

    def attach(self, root_pid: int) -> None:
        """The worker has started (``root_pid``: the process the host spawned)."""

    def kills(self) -> int:
        """How many times a candidate tree was killed for memory so far."""
        return 0

    def check(self) -> None:
        """One look of the monitor thread (every 50 ms)."""

    def close(self) -> None:
        """Kill what is left in the cgroups and remove them."""


class CgroupBound(TreeBound):
    """cgroup v2 (``controllers == [""]``) or v1 (``["memory", "pids"]``) slots of one worker."""

    def __init__(self, mode: str, parents: dict[str, Path]) -> None:
        self.mode = mode
        name = f"{PREFIX}{os.getpid()}-{next(_NAMES)}"
        self.dirs: dict[str, list[Path]] = {c: [p / f"{name}-{s}" for s in range(SLOTS)] for c, p in parents.items()}
        self.limits: tuple[int, int] | None = None
        self._fds: list[list[int]] = [[] for _ in range(SLOTS)]
        self._events: list[int] = []  # per slot: memory.events (v2) / memory.oom_control (v1)
        self._base = 0
        self._seen: list[int] = []
        self._lock = threading.Lock()
        try:
            for ctrl, dirs in self.dirs.items():
                for slot, d in enumerate(dirs):
                    d.mkdir()
                    self._fds[slot].append(os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
                    if ctrl in ("", "memory"):
                        events = "memory.events" if ctrl == "" else "memory.oom_control"
                        self._events.append(os.open(d / events, os.O_RDONLY | os.O_CLOEXEC))
                        if ctrl == "":
                            _write(d / "memory.oom.group", "1")
        except OSError:
            self.close()
            raise
        self._seen = [self._slot_kills(fd) for fd in self._events]
        self._base = sum(self._seen)

    def attach(self, root_pid: int) -> None:
        _Monitor.add(self)

    def check(self) -> None:
        self.kills()

    @staticmethod
    def _slot_kills(fd: int) -> int:
        try:
            data = os.pread(fd, 4096, 0)
        except OSError:
            return 0
        at = data.find(b"oom_kill ")
        return int(data[at + 9:].split(None, 1)[0]) if at >= 0 else 0

    def procs_fds(self) -> list[list[int]]:
        return self._fds

    def set_limits(self, memory_bytes: int, processes: int) -> None:
        if self.limits == (memory_bytes, processes):
            return
        for ctrl, dirs in self.dirs.items():
            for d in dirs:
                if ctrl == "":
                    _write(d / "memory.max", str(memory_bytes))
                    if (d / "memory.swap.max").exists():
                        _write(d / "memory.swap.max", "0")
                    _write(d / "pids.max", str(processes))
                elif ctrl == "memory":
                    # memory + swap (memsw, where swap is accounted) must stay >= memory alone:
                    # lowering writes memory first, raising memsw first
                    memsw = d / "memory.memsw.limit_in_bytes"
                    try:
                        _write(d / "memory.limit_in_bytes", str(memory_bytes))
                    except OSError:
                        _write(memsw, str(memory_bytes))
                        _write(d / "memory.limit_in_bytes", str(memory_bytes))
                    else:
                        if memsw.exists():
                            _write(memsw, str(memory_bytes))
                else:
                    _write(d / "pids.max", str(processes))
        self.limits = (memory_bytes, processes)

    def kills(self) -> int:
        """Also acts on what it finds: a slot with a new OOM kill has the rest of its tree
        killed now (v1 kills one process, v2's ``memory.oom.group`` all of them). The first
        to look (the host after each test, before each candidate, or the monitor every 50 ms)
        takes it, so a kill is always done while the tree that caused it is the slot's."""
        with self._lock:
            for slot, fd in enumerate(self._events):
                n = self._slot_kills(fd)
                if n != self._seen[slot]:
                    self._seen[slot] = n
                    for dirs in self.dirs.values():
                        _kill_cgroup(dirs[slot])
            return sum(self._seen) - self._base

    def close(self) -> None:
        _Monitor.remove(self)
        for fd in [*self._events, *(fd for fds in self._fds for fd in fds)]:
            os.close(fd)
        self._events, self._fds = [], [[] for _ in range(SLOTS)]
        for dirs in self.dirs.values():
            for d in dirs:
                if not d.exists():
                    continue
                for _ in range(100):
                    _kill_cgroup(d)
                    try:
                        d.rmdir()
                        break
                    except OSError:
                        threading.Event().wait(0.01)  # dying processes leave it within ms


class WatchdogBound(TreeBound):
    """Sums the memory of the worker's candidate processes from ``/proc``; kills past the limit."""

    mode = "watchdog"
    INTERVAL = 0.05

    def __init__(self) -> None:
        self.limit = 0
        self.root = -1
        self.infra: set[int] = set()
        self._kills = 0

    def set_limits(self, memory_bytes: int, processes: int) -> None:
        self.limit = memory_bytes

    def attach(self, root_pid: int) -> None:
        """``root_pid`` and its descendants now (bwrap, the worker) are not the candidate's."""
        self.root = root_pid
        self.infra = {root_pid, *descendants(root_pid)}
        _Monitor.add(self)

    def candidates(self) -> list[int]:
        return [p for p in descendants(self.root) if p not in self.infra] if self.root > 0 else []

    def check(self) -> None:
        """One look: cheap resident sizes first (an upper bound: shared pages counted in each),
        the proportional set size only when they are over the limit."""
        if self.limit <= 0:
            return
        pids = self.candidates()
        if not pids or sum(_statm_rss(p) for p in pids) <= self.limit:
            return
        if sum(_pss(p) for p in pids) <= self.limit:
            return
        for _ in range(20):  # kill until nothing of the tree is left (it may still be forking)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            pids = self.candidates()
            if not pids:
                break
        self._kills += 1

    def kills(self) -> int:
        return self._kills

    def close(self) -> None:
        _Monitor.remove(self)


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _statm_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        return _statm_rss(pid)
    return 0


class _Monitor:
    """One thread looking at every bound worker of this process every 50 ms."""

    _bounds: weakref.WeakSet[TreeBound] = weakref.WeakSet()
    _lock = threading.Lock()
    _thread: threading.Thread | None = None

    @classmethod
    def add(cls, bound: TreeBound) -> None:
        with cls._lock:
            cls._bounds.add(bound)
            if cls._thread is None:
                cls._thread = threading.Thread(target=cls._run, name="sandbox-tree-bound", daemon=True)
                cls._thread.start()

    @classmethod
    def remove(cls, bound: TreeBound) -> None:
        with cls._lock:
            cls._bounds.discard(bound)

    @classmethod
    def _run(cls) -> None:
        wait = threading.Event().wait
        while True:
            with cls._lock:
                bounds = list(cls._bounds)
            for bound in bounds:
                try:
                    bound.check()
                except Exception:  # a vanished process mid-look: the next look sees the truth
                    pass
            wait(WatchdogBound.INTERVAL)


_DETECTED: dict[str, tuple[str, str]] = {}
_DETECT_LOCK = threading.Lock()


def _try(mode: str) -> str:
    """Why ``mode`` cannot bound a tree here ("" when it can: a trial cgroup was made)."""
    if mode == "watchdog":
        return "" if Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists() else "no /proc/PID/task/TID/children"
    if mode == "cgroup2":
        parent, why = _v2_parent()
        parents = {"": parent} if parent is not None else None
    else:
        parents, why = _v1_parents()
    if parents is None:
        return why
    for p in parents.values():
        _sweep_stale(p)
    try:
        CgroupBound(mode, parents).close()
    except OSError as exc:
        return f"cannot make a cgroup in {' and '.join(str(p) for p in parents.values())}: {exc.strerror}"
    return ""


def detect_bound(requested: str = "auto") -> tuple[str, str]:
    """The tree bound in force and, for ``auto``, why the better ones were not taken.

    ``auto`` takes cgroup2, then cgroup1, then watchdog; a named one that does not work here
    is a :class:`UserError`; ``off`` leaves only the per-process limits.
    """
    if requested not in BOUND_MODES:
        raise UserError(f"unknown memory bound {requested!r}; use {', '.join(BOUND_MODES)}", field="memory_bound")
    with _DETECT_LOCK:
        if requested in _DETECTED:
            return _DETECTED[requested]
        if requested == "off":
            result = ("off", "")
        elif requested != "auto":
            why = _try(requested)
            if why:
                raise UserError(f"memory bound {requested!r} is not usable here: {why}", field="memory_bound")
            result = (requested, "")
        else:
            reasons = []
            for mode in ("cgroup2", "cgroup1", "watchdog"):
                why = _try(mode)
                if not why:
                    result = (mode, "; ".join(reasons))
                    break
                reasons.append(f"{mode}: {why}")
            else:
                result = ("off", "; ".join(reasons))
        _DETECTED[requested] = result
        return result


def make_bound(mode: str) -> TreeBound:
    """A fresh bound for one worker (``mode`` from :func:`detect_bound`)."""
    if mode == "cgroup2":
        parent, why = _v2_parent()
        if parent is None:
            raise OSError(why)
        return CgroupBound(mode, {"": parent})
    if mode == "cgroup1":
        parents, why = _v1_parents()
        if parents is None:
            raise OSError(why)
        return CgroupBound(mode, parents)
    if mode == "watchdog":
        return WatchdogBound()
    return TreeBound()


def describe(mode: str) -> str:
    """How the bound reads in the executor's start-up line."""
    return {
        "cgroup2": "cgroup2 (memory.max + pids.max per candidate tree)",
        "cgroup1": "cgroup1 (v1 memory + pids controllers per candidate tree)",
        "watchdog": "watchdog (sums the tree's memory from /proc every 50 ms)",
        "off": "off (per-process limits only)",
    }[mode]
