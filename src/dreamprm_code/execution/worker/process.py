"""The worker process: a fork server inside the sandbox that starts, bounds and ends candidates.

Trust boundary: the worker only ever holds candidate code, test *inputs* and call arguments.
Expected outputs and trusted test code stay in the host, which does every comparison, so a
candidate that forks from the worker cannot find them in memory (``gc``, frames, raw memory).

Per run, in privileged bubblewrap (the host runs as root), the worker forks the candidate
once; the child drops to the worker's own unprivileged uid before anything else, so it cannot
signal, trace or read the worker, and whatever it leaves behind is reparented to the worker
(a child subreaper), which then kills every process of its sandbox but bwrap's init with
``kill(-1)``. Elsewhere the worker forks a tiny shim (``A``) that drops to an unprivileged uid
when it can, enters a fresh user + PID namespace and forks the candidate (``B``), which is
PID 1 there: killing ``B`` makes the kernel kill every process of the candidate. Without
namespaces the worker kills the whole tree by hand.

Call sessions (functional and ``assert`` tests) talk to the host directly: the worker hands
the host its ends of the candidate's two pipes and a pidfd over the Unix socket they share.
The host also uses :func:`classify` and :class:`Budget` (the same time rule for its calls).
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from .codec import decode_value, encode_value
from .harness import (
    EXIT_COMPILE,
    EXIT_EXCEPTION,
    EXIT_MEMORY,
    EXIT_SETUP,
    CandidateGlobals,
    install_exit_builtins,
    one_call,
    run_main,
    serve_calls,
)
from .messages import (
    Ended,
    Ending,
    EndRequest,
    ExitInfo,
    Hello,
    OpenRequest,
    PingRequest,
    Pong,
    Reply,
    RunReply,
    StdinRequest,
    WireLimits,
    WorkerConfig,
)
from .wire import FrameError, frame_bytes, read_exact, read_frame, read_sole_frame, write_frame

CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39


def _candidate_child(setup, body) -> None:
    """In a freshly forked candidate: ``setup`` (limits, uid, fds), then ``body``; never returns.
    A failed set-up is reported on stderr and exits with ``EXIT_SETUP``, before any model code runs."""
    try:
        setup()
    except BaseException as exc:
        os.write(2, f"sandbox setup failed: {type(exc).__name__}: {exc}\n".encode())
        os._exit(EXIT_SETUP)
    body()
    os._exit(0)


class _Proc:
    """One running candidate, however it was started; ``ended_fd`` turns readable when it ends."""

    pid: int
    ended_fd: int

    def kill(self) -> None:
        raise NotImplementedError

    def finish(self, wait: float = 10.0) -> ExitInfo:
        """Wait (at most ``wait`` s, then kill) for the end; reap; clean up; exit status + usage."""
        raise NotImplementedError


class _ForkedProc(_Proc):
    """Fast path: the candidate is a direct child of the worker (one fork, its own uid)."""

    def __init__(self, worker: _Worker, pid: int, workdir: str, uid: int) -> None:
        self.worker, self.pid, self.workdir, self.uid = worker, pid, workdir, uid
        self.ended_fd = os.pidfd_open(pid)
        self.done: ExitInfo | None = None

    def kill(self) -> None:
        if self.done is None:  # not reaped yet, so the pid cannot have been reused
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def finish(self, wait: float = 10.0) -> ExitInfo:
        if self.done is not None:
            return self.done
        ready, _, _ = select.select([self.ended_fd], [], [], max(0.0, wait))
        if not ready:
            self.kill()
        _, status, usage = os.wait4(self.pid, 0)
        os.close(self.ended_fd)
        self.worker._sweep_uid()
        self.worker._remove_workdir(self.workdir, self.uid)
        self.done = {"status": status, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss}
        return self.done

    def abandon(self) -> None:
        """End it without waiting for its exit status: SIGKILL it *and every other process of
        the sandbox* (bwrap's init and the worker excepted) now, so nothing of it can run
        again; the kernel tears it down while the next candidate (other uid) already starts.
        Reaped later (:meth:`_Worker._reap_ready`)."""
        self.done = {}
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(self.ended_fd)
        self.worker._remove_workdir(self.workdir, self.uid)


class _ShimProc(_Proc):
    """Namespace path: shim A forked candidate B, PID 1 of its own user + PID namespace."""

    def __init__(self, worker: _Worker, pid_a: int, pid_b: int, status_r: int) -> None:
        self.worker, self.pid_a, self.pid, self.ended_fd = worker, pid_a, pid_b, status_r
        self.done: ExitInfo | None = None

    def kill(self) -> None:
        if self.done is None:
            self.worker._kill_tree(self.pid)

    def finish(self, wait: float = 10.0) -> ExitInfo:
        if self.done is not None:
            return self.done
        ready, _, _ = select.select([self.ended_fd], [], [], max(0.0, wait))
        if not ready:  # B still runs (its exit status would be there): kill its namespace
            self.kill()
        self.done = self.worker._finish(self.pid_a, self.ended_fd)
        return self.done


class _Worker:
    """One persistent worker: warm interpreter, forks a candidate per run.

    Fast path (privileged bubblewrap, the worker is root in its own PID namespace): one fork;
    the child drops to this worker's own unprivileged uid before anything else. Otherwise a
    shim forks the candidate into a fresh user + PID namespace (two forks).
    """

    def __init__(self, config: WorkerConfig) -> None:
        import ctypes

        self.config = config
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.ctypes = ctypes
        self.tmp_root = config.get("tmp_root") or "/tmp"
        self.drop_uid = config.get("drop_uid")
        self.ns_flags = CLONE_NEWUSER | CLONE_NEWPID | (CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS if config.get("unshare_net") else 0)
        self.libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        # NO_NEW_PRIVS is inherited by every child and can never be cleared: set once here, it
        # holds for every candidate without a call in each (the worker never executes a
        # program, the only thing the flag restricts). Where it did not take, each candidate
        # sets it itself.
        self.libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        self.nnp_inherited = self.libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1
        if self.drop_uid is not None and os.getuid() == 0:
            try:  # the candidate's uid creates its working directory here
                os.chmod(self.tmp_root, 0o1777 if self.tmp_root == "/tmp" else 0o1733)
            except OSError:
                pass
        # What every candidate's environment starts from (it adds HOME and TMPDIR).
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"})
        self.session: _Proc | None = None
        self.seq = 0
        self.cand_uid = config.get("cand_uid")
        # Per slot, the host's descriptors of the cgroup(s) bounding a candidate's whole tree
        # (``cgroup.procs``; see the host's ``bound.py``): the candidate writes itself in.
        self.cgroup_fds: list[list[int]] = [[int(fd) for fd in fds] for fds in config.get("cgroup_fds") or []]
        self.fast = self._fast_possible()
        self.pid_ns = self.fast or (config.get("pid_ns", True) is not False and self._probe_namespaces())
        self.globals = CandidateGlobals()
        self.rlimit_last: tuple[dict | None, list] = (None, [])
        import array
        import socket

        self.started_frame = frame_bytes({"status": "started"})
        self.scm_level, self.scm_rights, self.fd_array = socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array

    def _fast_possible(self) -> bool:
        """One fork per candidate is safe only where the worker can give it a uid of its own and
        every other process it can see is bwrap's init: then ``kill(-1)`` reaches exactly the
        candidate's leftovers, and the candidate cannot signal, trace or read the worker."""
        if not self.config.get("fast") or not isinstance(self.cand_uid, int) or self.cand_uid <= 0:
            return False
        if os.getuid() != 0 or os.getpid() > 2:
            return False
        others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]
        return not others

    # ---- namespaces -----------------------------------------------------------------------
    def _probe_namespaces(self) -> bool:
        """Can a child enter a fresh user + PID namespace here? Tried once, at start."""
        pid = os.fork()
        if pid == 0:
            try:
                self._drop_privileges()
                ok = self.libc.unshare(self.ns_flags) == 0
                if ok:
                    child = os.fork()
                    if child == 0:
                        os._exit(0 if os.getpid() == 1 else 1)
                    _, status = os.waitpid(child, 0)
                    ok = os.waitstatus_to_exitcode(status) == 0
                os._exit(0 if ok else 1)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) == 0

    def _drop_privileges(self, uid: int | None = None) -> None:
        uid = self.drop_uid if uid is None else uid
        if uid is not None and os.getuid() == 0:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)  # from root to non-root: every capability is gone

    # ---- spawning a candidate ---------------------------------------------------------------
    def _spawn(self, limits: WireLimits, fds: dict[int, int], body) -> _Proc:
        """Start a candidate running ``body`` with ``fds`` (target fd in the candidate -> our
        fd, closed here once handed over)."""
        if self.fast:
            return self._spawn_fast(limits, fds, body)
        return self._spawn_shim(limits, fds, body)

    def _spawn_fast(self, limits: WireLimits, fds: dict[int, int], body) -> _Proc:
        self.seq += 1
        workdir = f"{self.tmp_root}/c{self.seq}"
        uid = self.cand_uid + self.seq % 2
        self._await_uid_free(uid)
        rlimits = self._rlimits(limits)  # worked out here, once, not in every candidate
        # The candidate's environment and temporary directory, set here so that the candidate
        # inherits them: nothing of the worker's own work uses them.
        import tempfile

        os.environ["HOME"] = os.environ["TMPDIR"] = workdir
        tempfile.tempdir = workdir
        pid = os.fork()
        if pid == 0:

            def setup() -> None:
                self._join_cgroup(self.seq % 2)
                self._drop_privileges(uid)
                os.mkdir(workdir, 0o700)
                self._enter_candidate(rlimits, fds, workdir, new_session=False, env_ready=True)

            _candidate_child(setup, body)
        for fd in fds.values():
            os.close(fd)
        return _ForkedProc(self, pid, workdir, uid)

    def _spawn_shim(self, limits: WireLimits, fds: dict[int, int], body) -> _Proc:
        """Fork shim A, which forks candidate B (PID 1 of its own namespace when available);
        A reports B's pid, then B's exit status and rusage, on a status pipe."""
        rlimits = self._rlimits(limits)
        status_r, status_w = os.pipe()
        pid_a = os.fork()
        if pid_a == 0:  # shim A
            try:
                import shutil
                import tempfile

                os.close(status_r)
                self._join_cgroup(0)  # A and B: A waits for B, which ends before A reports
                self._drop_privileges()
                # Created and removed by A, which has the candidate's uid: no privileges needed.
                workdir = tempfile.mkdtemp(prefix="cand-", dir=self.tmp_root)
                if self.pid_ns and self.libc.unshare(self.ns_flags) != 0:
                    os._exit(EXIT_SETUP)
                pid_b = os.fork()
                if pid_b == 0:

                    def setup() -> None:
                        os.close(status_w)
                        self._enter_candidate(rlimits, fds, workdir)

                    _candidate_child(setup, body)
                for fd in fds.values():
                    os.close(fd)
                os.write(status_w, struct.pack(">i", pid_b))
                _, status, usage = os.wait4(pid_b, 0)
                shutil.rmtree(workdir, ignore_errors=True)
                report = json.dumps(
                    {"status": status, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss}
                ).encode()
                os.write(status_w, report)
            except BaseException:
                pass
            os._exit(0)
        os.close(status_w)
        for fd in fds.values():
            os.close(fd)
        try:
            raw = read_exact(status_r, 4, time.monotonic() + 30)
            (pid_b,) = struct.unpack(">i", raw)
        except (TimeoutError, FrameError):
            pid_b = -1
        return _ShimProc(self, pid_a, pid_b, status_r)

    def _join_cgroup(self, slot: int) -> None:
        """In a fresh fork, before anything else: move into the slot's cgroup(s), so that all
        it starts is born inside. A failure fails the candidate's set-up (never runs unbound)."""
        if self.cgroup_fds:
            for fd in self.cgroup_fds[slot % len(self.cgroup_fds)]:
                os.write(fd, b"0")

    def _rlimits(self, limits: WireLimits) -> list[tuple[int, tuple[int, int], tuple[int, int]]]:
        """The candidate's resource limits, worked out in the worker (whose own limits the
        candidate inherits) when ``limits`` change: per resource, the (soft, hard) pair
        to set and the pair to fall back to if the kernel refuses it. The candidate then only
        makes the ``setrlimit`` calls (fewer steps, and fewer pages touched, after the fork)."""
        import resource

        last_limits, last = self.rlimit_last
        if limits == last_limits:  # the usual case: every request of a run has the same limits
            return last
        mem = int(limits["memory_mb"]) * 1024 * 1024
        cpu = int(math.ceil(limits.get("cpu_total") or limits["cpu_time"]))
        settings = [
            (resource.RLIMIT_AS, mem),
            (resource.RLIMIT_DATA, mem),
            (resource.RLIMIT_CPU, cpu),
            (resource.RLIMIT_FSIZE, int(limits["file_size_mb"]) * 1024 * 1024),
            (resource.RLIMIT_NPROC, int(limits["processes"])),
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_NOFILE, 256),
        ]
        out = []
        for which, value in settings:
            soft, hard = resource.getrlimit(which)
            new_hard = value if hard == resource.RLIM_INFINITY else min(value, hard)
            if which == resource.RLIMIT_CPU:
                new_hard = new_hard + 1 if hard == resource.RLIM_INFINITY else hard
            out.append((which, (min(value, new_hard), new_hard), (min(value, hard), hard)))
        self.rlimit_last = (dict(limits), out)
        return out

    def _enter_candidate(self, rlimits: list, fds: dict[int, int], workdir: str,
                         new_session: bool = True, env_ready: bool = False) -> None:
        """In the candidate, before any of its code: limits (``rlimits``, from :meth:`_rlimits`
        in the worker), no privileges, only the given fds.

        A process group of its own is enough where the candidate runs under its own uid (it
        cannot signal the worker's group anyway); ``setsid`` also creates a scheduler
        autogroup, which costs more than everything else here. ``env_ready``: the worker
        already set ``HOME``, ``TMPDIR`` and ``tempfile.tempdir`` to ``workdir`` before forking.
        """
        import resource

        try:
            if new_session:
                os.setsid()
            else:
                os.setpgid(0, 0)
        except OSError:
            pass
        if not self.nnp_inherited:
            self.libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        # Move the fds we keep to fixed numbers, then close everything else (the worker's
        # protocol socket above all: a candidate must not be able to talk to the host).
        # A source that is itself one of the targets is first copied above every target, where
        # no dup2 below can overwrite it.
        import fcntl

        targets = set(fds)
        above = max(targets) + 1
        moved = {target: fcntl.fcntl(fd, fcntl.F_DUPFD, above) if fd in targets else fd for target, fd in fds.items()}
        for target, fd in moved.items():
            if fd != target:
                os.dup2(fd, target, inheritable=True)
            else:
                os.set_inheritable(fd, True)
        if not {0, 1, 2} <= targets:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in range(3):
                if fd not in targets:
                    os.dup2(null, fd)
            if null not in targets:
                os.close(null)
        os.closerange(max([*fds, 2]) + 1, 1 << 20)  # one close_range() call (glibc >= 2.34)
        os.chdir(workdir)
        if not env_ready:  # the worker already holds exactly PATH and LANG (see _Worker.__init__)
            import tempfile

            os.environ["HOME"] = os.environ["TMPDIR"] = workdir
            tempfile.tempdir = workdir
        for which, wanted, fallback in rlimits:
            try:
                resource.setrlimit(which, wanted)
            except (ValueError, OSError):
                resource.setrlimit(which, fallback)

    # ---- ending a candidate -------------------------------------------------------------------
    def _kill_tree(self, pid_b: int) -> None:
        """Kill B (and with it its PID namespace), then anything that escaped to us."""
        if pid_b > 0:
            try:
                os.kill(pid_b, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if not self.pid_ns:
                try:
                    os.killpg(pid_b, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def _sweep_uid(self) -> None:
        """Fast path, after the candidate was reaped: anything it left (double-forked,
        ``setsid``-ed, signal-ignoring) was reparented to us, the subreaper. If anything is
        left, ``kill(-1)`` kills every process of this sandbox but bwrap's init and us, atomically
        with respect to fork (a process with SIGKILL pending cannot fork)."""
        for _ in range(100):
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return  # no descendants at all
            if pid:
                continue
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                while True:
                    os.waitpid(-1, 0)
            except ChildProcessError:
                return

    def _reap_ready(self) -> None:
        """Reap whatever has ended (abandoned candidates and their leftovers), without waiting."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return

    def _await_uid_free(self, uid: int) -> None:
        """Fast path, before a candidate starts under ``uid``: every other process still in the
        sandbox is doomed (SIGKILL-ed when its run ended) but counts for ``RLIMIT_NPROC`` until
        it is reaped; wait until none of ``uid`` is left, so the limit counts only the new
        candidate. Candidates alternate between two uids, so this rarely waits: the previous
        one, which the kernel may still be tearing down, has the other uid.

        Only the worker's own children are looked at: a process of ``uid`` can only have been
        started by another of ``uid`` (no privileges to change it; ``CLONE_PARENT`` makes it a
        sibling of its starter), and every orphan is reparented to the worker (subreaper), so
        the topmost process of ``uid`` in any chain is a child of the worker."""
        self._reap_ready()
        me = os.getpid()
        while True:
            try:
                with open(f"/proc/{me}/task/{me}/children", "rb") as fh:  # the worker has one thread
                    pids = [int(p) for p in fh.read().split()]
            except (OSError, ValueError):
                pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
            left = [pid for pid in pids if _proc_uid(pid) == uid]
            if not left:
                return
            for pid in left:  # ours (reparented to us, the subreaper) once their parent is gone
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            time.sleep(0.0005)

    def _remove_workdir(self, workdir: str, uid: int) -> None:
        """The worker owns ``tmp_root``, so it may remove the candidate's (empty) directory;
        a non-empty one is emptied by a helper with the candidate's uid."""
        try:
            os.rmdir(workdir)
            return
        except FileNotFoundError:
            return
        except OSError:
            pass
        pid = os.fork()
        if pid == 0:
            try:
                self._drop_privileges(uid)
                for root, dirs, files in os.walk(workdir, topdown=True):
                    for d in dirs:
                        try:
                            os.chmod(os.path.join(root, d), 0o700)
                        except OSError:
                            pass
                    for f in files:
                        try:
                            os.unlink(os.path.join(root, f))
                        except OSError:
                            pass
                for root, dirs, _ in os.walk(workdir, topdown=False):
                    for d in dirs:
                        try:
                            os.rmdir(os.path.join(root, d))
                        except OSError:
                            pass
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        try:
            os.rmdir(workdir)
        except OSError:
            pass

    def _sweep(self) -> None:
        """Kill and reap every remaining descendant (orphans reparent to us: subreaper)."""
        for _ in range(1000):
            kids = children(os.getpid())
            if not kids:
                break
            for kid in kids:
                for pid in [kid, *descendants(kid)]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            _reap()
        _reap()

    def _finish(self, pid_a: int, status_r: int) -> ExitInfo:
        """Shim path: wait for A's report on B, reap A, sweep the rest."""
        info: ExitInfo = {}
        try:
            ready, _, _ = select.select([status_r], [], [], 10)
            if ready:
                data = os.read(status_r, 4096)
                if data:
                    info = json.loads(data)
        except (OSError, ValueError):
            info = {}
        os.close(status_r)
        try:
            os.waitpid(pid_a, 0)
        except ChildProcessError:
            pass
        self._sweep()
        return info

    # ---- operations ---------------------------------------------------------------------------
    def op_stdin(self, msg: StdinRequest) -> RunReply:
        """Run ``code`` as ``__main__`` on one input; capture stdout (capped) and stderr tail."""
        import tempfile

        self._end_session()
        limits = msg["limits"]
        code = msg["code"]
        setup = msg.get("setup") or ""
        with tempfile.TemporaryFile(dir=self.tmp_root) as infile:  # unlinked: only the fd exists
            infile.write(msg["input"].encode("utf-8", "surrogateescape"))
            infile.flush()
            infile.seek(0)
            in_fd = os.dup(infile.fileno())
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()

        def body() -> None:
            run_main(self.globals, limits, setup, code)

        start = time.monotonic()
        proc = self._spawn(limits, {0: in_fd, 1: out_w, 2: err_w}, body)
        budget = Budget(proc.pid, float(limits["timeout"]), bool(limits.get("grace", True)))
        budget.start = start
        cap = int(limits["output_bytes"])
        out, err = bytearray(), bytearray()
        open_fds = {out_r: out, err_r: err}
        status = None
        while open_fds:
            left = budget.left()
            if left <= 0:
                status = "timeout"
                break
            ready, _, _ = select.select(list(open_fds), [], [], left)
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    del open_fds[fd]
                    continue
                buf = open_fds[fd]
                if buf is out:
                    buf += chunk
                    if len(buf) > cap:
                        status = "output_limit"
                else:
                    buf += chunk
                    if len(buf) > 65536:
                        del buf[: len(buf) - 65536]
            if status:
                break
        if status is None:
            # Pipes closed: wait for the exit (bounded by the time limit).
            status = self._wait_exit(proc.ended_fd, budget)
        elapsed = time.monotonic() - start
        if status in ("timeout", "output_limit"):
            proc.kill()
        info = proc.finish()
        for fd in (out_r, err_r):
            os.close(fd)
        result = classify(status, info)
        result.update(
            time=elapsed,
            cpu=info.get("cpu"),
            maxrss_kb=info.get("maxrss_kb"),
            stdout=bytes(out[:cap]).decode("utf-8", "replace"),
            stderr=bytes(err).decode("utf-8", "replace"),
        )
        return result

    def _wait_exit(self, ended_fd: int, budget: Budget | float) -> str | None:
        """Block until the candidate has ended (``ended_fd`` readable) or the time is up."""
        while True:
            left = budget.left() if isinstance(budget, Budget) else max(0.0, budget - time.monotonic())
            ready, _, _ = select.select([ended_fd], [], [], left)
            if ready:
                return None
            if not isinstance(budget, Budget) or budget.left() <= 0:
                return "timeout"

    def op_open(self, msg: OpenRequest, sock) -> None:
        """Start a call session. The candidate loads the code once, then serves calls over two
        pipes whose other ends (and a pidfd of the candidate) go straight to the host, which
        talks to the candidate directly and enforces each call's time limit itself."""
        self._end_session()
        limits = msg["limits"]
        code, setup = msg["code"], msg.get("setup") or ""
        call_r, call_w = os.pipe()  # host -> candidate
        reply_r, reply_w = os.pipe()  # candidate -> host

        def body() -> None:
            serve_calls(self.globals, limits, setup, code, 3, 4)

        proc = self._spawn(limits, {3: call_r, 4: reply_w}, body)
        self.session = proc
        if proc.pid <= 0:
            for fd in (call_w, reply_r):
                os.close(fd)
            write_frame(sock.fileno(), {"status": "crash", "error": "the candidate did not start"})
            return
        # The pidfd the worker keeps goes along as it is (the host receives its own copy).
        pidfd = proc.ended_fd if isinstance(proc, _ForkedProc) else os.pidfd_open(proc.pid)
        try:
            self._send_started(sock, [call_w, reply_r, pidfd])
        finally:
            for fd in (call_w, reply_r) if pidfd == proc.ended_fd else (call_w, reply_r, pidfd):
                os.close(fd)

    def _send_started(self, sock, fds: list[int]) -> None:
        """:func:`send_frame_fds` of ``{"status": "started"}``, with the frame and everything
        else prepared at start: this runs right after the fork, when every page the worker
        writes to is copied (the new candidate shares them all)."""
        frame = self.started_frame
        sent = sock.sendmsg([frame], [(self.scm_level, self.scm_rights, self.fd_array("i", fds))])
        buf = memoryview(frame)[sent:]
        while buf:
            buf = buf[os.write(sock.fileno(), buf):]

    def _end_session(self, kill: bool = True, wait: float = 0.0) -> ExitInfo:
        proc, self.session = self.session, None
        if proc is None:
            return {}
        if kill and wait <= 0:
            proc.kill()
        return proc.finish(wait)

    def op_end(self, msg: EndRequest) -> Ended | None:
        """End the call session: wait up to ``wait`` s for the candidate to exit by itself
        (``kill`` false), else kill it; report how it ended (unless ``quiet``)."""
        if msg.get("quiet") and isinstance(self.session, _ForkedProc):
            self.session.abandon()  # nobody needs its exit status: do not wait for it
            self.session = None
            return None
        info = self._end_session(bool(msg.get("kill", True)), float(msg.get("wait") or 0.0))
        return None if msg.get("quiet") else {"status": "ended", "exit": info}

    def op_ping(self, msg: PingRequest) -> Pong:
        return {"status": "pong", "pid_ns": self.pid_ns, "fast": self.fast, "uid": os.getuid()}


def classify(status: str | None, info: ExitInfo) -> Ending:
    """Map how B ended to a status: ok, timeout, memory, exception, compile_error, crash."""
    if status in ("timeout", "output_limit"):
        return {"status": status}
    raw = info.get("status")
    if raw is None:
        return {"status": "crash", "error": "no exit status from the candidate"}
    if os.WIFSIGNALED(raw):
        sig = os.WTERMSIG(raw)
        if sig in (signal.SIGXCPU, signal.SIGKILL) and status is None:
            # SIGXCPU: CPU limit. A SIGKILL we did not send comes from the CPU hard limit.
            return {"status": "timeout", "error": f"killed by {signal.Signals(sig).name}"}
        return {"status": "crash", "error": f"killed by signal {signal.Signals(sig).name}"}
    code = os.WEXITSTATUS(raw)
    if code == 0:
        return {"status": "ok"}
    if code == EXIT_COMPILE:
        return {"status": "compile_error"}
    if code == EXIT_MEMORY:
        return {"status": "memory"}
    if code == EXIT_EXCEPTION:
        return {"status": "exception"}
    return {"status": "crash", "error": f"exit code {code}"}


def proc_field(path: str, key: bytes) -> int:
    """The first number of the ``key:`` line of a small ``/proc`` file (``status``, ``fdinfo``);
    -1 when the file or the line is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        data = os.read(fd, 8192)  # the whole file (status ~1.5 kB)
        at = data.find(b"\n" + key + b":")
        return int(data[at + len(key) + 2:].split(None, 1)[0]) if at >= 0 else -1
    except (OSError, ValueError, IndexError):
        return -1
    finally:
        os.close(fd)


def _proc_uid(pid: int) -> int:
    """The real uid of a process (-1 when it is gone)."""
    return proc_field(f"/proc/{pid}/status", b"Uid")


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(x) for x in fh.read().split())
        except OSError:
            pass
    return out


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo and len(out) < 100000:
        kids = children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int, stat_fd: int = -1) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc (0 when unknown);
    ``stat_fd``, when given, is its ``/proc/PID/stat`` kept open."""
    try:
        if stat_fd >= 0:
            raw = os.pread(stat_fd, 4096, 0)
        else:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                raw = fh.read()
        fields = raw.rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


class Budget:
    """The time limit of one test, enforced from outside the candidate.

    Strict mode (LiveCodeBench): the wall clock alone. With ``grace`` (the default), a test
    also has to have *used* its time: past the wall deadline, a candidate that got less CPU
    than the limit (a loaded machine) runs on until it has, or until three times the limit on
    the wall clock. On an idle machine both rules stop a busy loop at the same moment.
    """

    def __init__(self, pid: int, timeout: float, grace: bool, stat_fd: int = -1) -> None:
        self.pid, self.timeout, self.grace, self.stat_fd = pid, timeout, grace, stat_fd
        self.start = time.monotonic()
        self.cpu0 = _proc_cpu(pid, stat_fd) if grace and pid > 0 else 0.0
        self.deadline = self.start + timeout
        self.hard = self.start + (3 * timeout if grace else timeout)

    def left(self) -> float:
        """Seconds to wait before the next check; 0 means the limit is reached."""
        now = time.monotonic()
        if now < self.deadline:
            return self.deadline - now
        if not self.grace or now >= self.hard:
            return 0.0
        used = _proc_cpu(self.pid, self.stat_fd) - self.cpu0
        if used >= self.timeout:
            return 0.0
        self.deadline = min(self.hard, now + max(0.05, self.timeout - used))
        return self.deadline - now


def warm_up() -> None:
    """Run the candidate-side code paths (frames, the codec) in the worker a few times, so
    every forked candidate inherits them already specialised by the interpreter instead of
    re-specialising (and so copying the pages of) them itself."""
    sample = [[1, 2, 3], "abc", 1.5, None, True, {"k": (1, 2)}, {1, 2}, b"x", 10**5000]
    ns = {"f": lambda *args: args[0]}
    call = {"fn": "f", "args": encode_value([sample]), "kwargs": {"dict": []}}
    r, w = os.pipe()
    try:
        for _ in range(64):
            write_frame(w, one_call(ns, None, call, None))
            read_sole_frame(r)
            write_frame(w, {"status": "ok", "value": encode_value(sample)})
            msg = read_sole_frame(r)
            decode_value(msg["value"] if isinstance(msg, dict) else [])
            classify(None, {"status": 0})
    finally:
        os.close(r)
        os.close(w)


# Imported once by the worker, so candidates inherit them: what LCB's import block needs, what
# the worker uses, and a few common imports. Each module also makes every fork a little dearer
# (more pages to map and unmap), so rarely used heavy ones (hashlib, unicodedata) are left out.
WARM_MODULES = ["string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "statistics",
                "itertools", "functools", "operator", "io", "json", "typing", "decimal", "fractions", "traceback",
                "tempfile", "shutil", "resource", "ctypes", "enum", "numbers", "struct", "fcntl", "builtins", "socket"]


def worker_main(argv: list[str]) -> None:
    """Entry point inside the sandbox: requests come on the socket at fd 0 (also fd 1), until EOF."""
    import gc
    import importlib
    import socket

    config: WorkerConfig = json.loads(argv[1]) if len(argv) > 1 else {}
    sock = socket.socket(fileno=os.dup(0))
    proto = sock.fileno()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    try:
        sys.stdout.reconfigure(encoding="utf-8", errors="replace")
        sys.stderr.reconfigure(encoding="utf-8", errors="replace")
        sys.stdin.reconfigure(encoding="utf-8", errors="surrogateescape")
    except (AttributeError, ValueError):
        pass
    install_exit_builtins()
    worker = _Worker(config)
    warm_up()
    gc.collect()
    gc.freeze()  # forked candidates never touch (copy) the worker's objects to collect them
    try:  # hand freed heap pages back: every mapped page costs each fork and each exit
        worker.libc.malloc_trim(0)
    except AttributeError:
        pass
    hello: Hello = {"status": "hello", "pid_ns": worker.pid_ns, "fast": worker.fast, "uid": os.getuid(),
                    "python": sys.version}
    write_frame(proto, hello)
    ops: dict[str, Callable[[Any], Reply | None]] = {"stdin": worker.op_stdin, "end": worker.op_end, "ping": worker.op_ping}
    while True:
        try:
            msg = read_frame(proto)
        except (FrameError, OSError, struct.error):
            worker._end_session()
            return
        name = msg.get("op") if isinstance(msg, dict) else None  # untrusted until it names an op
        reply: Reply | None
        try:
            if name == "open":
                worker.op_open(msg, sock)
                continue
            op = ops.get(name)
            reply = op(msg) if op is not None else {"status": "error", "error": f"unknown request {str(msg)[:80]}"}
        except Exception as exc:  # a bug here must not take the worker down silently
            reply = {"status": "error", "error": f"worker error: {type(exc).__name__}: {exc}"}
        if reply is not None:
            write_frame(proto, reply)
