"""Host side of the sandbox: choose the isolation, start persistent workers, talk to them.

Default isolation is ``bwrap`` (bubblewrap): every worker runs in fresh PID, network, IPC and
UTS namespaces with a root file system made of read-only system directories, the Python
standard library (its ``site-packages`` hidden) and a private ``/tmp``; no home directory, no
run directory, no environment. Run as root, bwrap runs in its privileged mode and the worker
keeps only CAP_SETUID/CAP_SETGID/CAP_KILL, which it uses to run each candidate under an
unprivileged uid and to kill what it leaves; run as a normal user, bwrap builds a user
namespace instead. As root, each worker's candidates run under
a uid of their own, forked once from the worker; as a normal user each candidate gets its own
user + PID namespace (see ``worker/process.py``). Either way killing it kills everything it started.

Without bwrap the fallback is ``rlimits``: the same worker, resource limits, a private working
directory, a cleared environment and (when the kernel allows unprivileged user namespaces)
PID and network namespaces per candidate, but the file system stays visible. It is announced
loudly, because it is not a sandbox for hostile code.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dreamprm_code.errors import UserError
from dreamprm_code.execution import worker as worker_package
from dreamprm_code.execution.bound import TreeBound, make_bound
from dreamprm_code.execution.worker.messages import EndRequest, Reply, Request, WorkerConfig
from dreamprm_code.execution.worker.wire import FrameError, recv_frame_fds, write_frame
from dreamprm_code.progress import console

SandboxMode = Literal["auto", "bwrap", "rlimits"]
WORKER_DIR = Path(worker_package.__file__).resolve().parent  # the package shipped into the sandbox
SANDBOX_WORKER_DIR = "/sandbox/worker"
NOBODY = 65534


class WorkerDied(RuntimeError):
    """The sandbox worker stopped answering (crashed, was killed, or missed a deadline).

    ``deadline`` is true when the host gave up waiting (the worker was then killed): the
    candidate ran past every limit; otherwise the sandbox itself failed.
    """

    def __init__(self, message: str, *, deadline: bool = False) -> None:
        super().__init__(message)
        self.deadline = deadline


@dataclass(frozen=True)
class SandboxInfo:
    """What isolation a worker actually got, for reports and the loud fallback warning."""

    mode: str  # "bwrap" | "rlimits"
    pid_ns: bool  # each candidate in its own PID namespace
    uid: int  # uid the worker runs as (inside its namespace)
    python: str
    fast: bool = False  # one fork per candidate, under a uid of its own (privileged bwrap)


def _python() -> tuple[str, str]:
    """The real interpreter (not a venv shim) and its installation prefix."""
    return os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix)


def _ro_system_args() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for etc in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(etc):
            args += ["--ro-bind", etc, etc]
    return args


def bwrap_command(config: WorkerConfig) -> list[str]:
    """The bubblewrap command line that starts one worker."""
    exe, prefix = _python()
    args = ["bwrap", "--die-with-parent", "--new-session"]
    args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if os.geteuid() == 0:
        # Privileged mode: no user namespace, so the worker can hand each candidate its own
        # unprivileged uid (root is exempt from RLIMIT_NPROC, nobody is not).
        args += ["--cap-drop", "ALL"]
        args += [x for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL") for x in ("--cap-add", cap)]
    else:
        args += ["--unshare-user"]
    args += _ro_system_args()
    if not prefix.startswith("/usr/"):
        # Parent directories (e.g. a 0700 home holding pyenv) must be traversable by the
        # candidate's uid inside; bwrap creates them in its tmpfs with these permissions.
        for parent in reversed(Path(prefix).parents[:-1]):
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", prefix, prefix]
    if not exe.startswith(("/usr/", prefix + "/")):
        args += ["--ro-bind", exe, exe]
    purelib = os.path.realpath(sysconfig.get_paths(vars={"base": prefix, "platbase": prefix})["purelib"])
    if os.path.isdir(purelib) and purelib.startswith(prefix):
        args += ["--tmpfs", purelib]  # the stdlib only: hide the base interpreter's packages
    args += ["--ro-bind", str(WORKER_DIR), SANDBOX_WORKER_DIR]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/sandbox/tmp"]
    args += ["--clearenv", "--setenv", "LANG", "C.UTF-8", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin"]
    args += ["--chdir", "/tmp", *worker_command(exe, SANDBOX_WORKER_DIR, config)]
    return args


def worker_command(exe: str, package: str, config: WorkerConfig) -> list[str]:
    """The interpreter command that runs the worker package found at ``package``.

    ``-I`` puts no script directory on ``sys.path``, so the launcher adds the package's parent
    for the one import and takes it off again: candidates see the same ``sys.path`` as ever."""
    launch = (f"import sys; sys.path.insert(0, {str(Path(package).parent)!r}); "
              "from worker.process import worker_main; del sys.path[0]; worker_main(sys.argv)")
    return [exe, "-I", "-B", "-c", launch, json.dumps(config)]


_SPAWNER: ThreadPoolExecutor | None = None
_UIDS = itertools.count()
_UID_BASE = 1_500_000_000


def _candidate_uid() -> int:
    """The first of two unprivileged uids (``u``, ``u + 1``) for one worker's candidates, used
    by nothing else on the machine: RLIMIT_NPROC then counts only that worker's candidate
    (privileged bwrap has no user namespace of its own, so a shared uid would share the limit
    across workers). Candidates alternate between the two (see ``worker.process._Worker``)."""
    return _UID_BASE + ((os.getpid() & 0xFFFF) << 12) + ((next(_UIDS) & 0x7FF) << 1)


_SPAWNER_LOCK = threading.Lock()


def _spawner() -> ThreadPoolExecutor:
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawner")
        return _SPAWNER


class SandboxWorker:
    """One persistent sandboxed worker process; requests are answered one at a time."""

    def __init__(self, mode: str, bound: str = "off") -> None:
        """``bound``: the tree bound (:func:`~dreamprm_code.execution.bound.detect_bound`)."""
        if mode not in ("bwrap", "rlimits"):
            raise ValueError(f"unknown sandbox mode {mode!r}")
        self.mode = mode
        self.bound_mode = bound
        self.bound: TreeBound | None = None
        self.proc: subprocess.Popen | None = None
        self.info: SandboxInfo | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._stderr = None
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()

    def start(self, timeout: float = 120.0) -> SandboxInfo:
        """Start the worker and wait for its hello (interpreter warm, namespaces probed)."""
        self.kill()
        cg_fds = self._tree_bound().procs_fds()
        drop = NOBODY if os.geteuid() == 0 else None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the worker)
        if self.mode == "bwrap":
            config = {"tmp_root": "/tmp", "drop_uid": drop, "unshare_net": False}
            if drop is not None:  # privileged bwrap: one fork per candidate, under a uid of its own
                config.update(fast=True, cand_uid=_candidate_uid())
            config["cgroup_fds"] = cg_fds
            cmd, env, cwd = bwrap_command(config), {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, "/"
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="dreamprm-sandbox-")
            root = self._tmp.name
            config = {"tmp_root": root, "drop_uid": drop, "unshare_net": True, "cgroup_fds": cg_fds}
            exe, _ = _python()
            cmd = worker_command(exe, str(WORKER_DIR), config)
            env, cwd = {"LANG": "C.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin"}, root
        stderr = self._stderr
        # One Unix socket is the worker's stdin and stdout: frames both ways, and file
        # descriptors (a call session's pipes) from the worker to us.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock = ours
        # Spawned from one long-lived thread: bwrap's --die-with-parent fires when the *thread*
        # that forked it exits, and callers often start workers from short-lived pool threads.
        try:
            self.proc = _spawner().submit(
                subprocess.Popen, cmd, stdin=theirs, stdout=theirs, stderr=stderr,
                env=env, cwd=cwd, start_new_session=True, close_fds=True,
                pass_fds=[fd for fds in cg_fds for fd in fds],
            ).result()
        finally:
            theirs.close()
        try:
            hello, _ = self._read(time.monotonic() + timeout)
        except WorkerDied as exc:  # a start failure is never the candidate's deadline
            exc.deadline = False
            detail = self._stderr_tail()
            self.kill()
            raise WorkerDied(f"sandbox worker ({self.mode}) did not start: {exc}; {detail}") from None
        self.info = SandboxInfo(self.mode, bool(hello.get("pid_ns")), int(hello.get("uid", -1)),
                                str(hello.get("python", "")), bool(hello.get("fast")))
        self._tree_bound().attach(self.proc.pid)
        return self.info

    def _tree_bound(self) -> TreeBound:
        """Made once per worker slot and kept across restarts (its limits written once)."""
        if self.bound is None:
            self.bound = make_bound(self.bound_mode)
        return self.bound

    def memory_kills(self) -> int:
        """How many candidate trees the tree bound has killed for memory on this worker so far."""
        return self.bound.kills() if self.bound is not None else 0

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-2000:].decode("utf-8", "replace").strip()

    def _read(self, deadline: float) -> tuple[Reply, list[int]]:
        assert self.sock is not None
        try:
            reply, fds = recv_frame_fds(self.sock, deadline)
        except TimeoutError:
            self.kill()
            raise WorkerDied("no answer before the deadline", deadline=True) from None
        except (FrameError, OSError) as exc:
            detail = self._stderr_tail()
            self.kill()
            raise WorkerDied(f"{exc}" + (f"; worker stderr: {detail[-500:]}" if detail else "")) from None
        if not isinstance(reply, dict):
            for fd in fds:
                os.close(fd)
            self.kill()
            raise WorkerDied("malformed answer")
        return reply, fds

    def _send(self, msg: Request) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.sock is not None
        try:
            write_frame(self.sock.fileno(), msg)
        except OSError as exc:
            self.kill()
            raise WorkerDied(f"cannot write to the worker: {exc}") from None

    def request_fds(self, msg: Request, timeout: float) -> tuple[Reply, list[int]]:
        """Send one request and wait for its answer and any file descriptors sent with it."""
        limits = msg.get("limits")
        if limits is not None:  # before the candidate is forked; a write only when they change
            # pids.max: the candidate's processes and threads, + 1 for the namespace shim
            self._tree_bound().set_limits(int(limits["tree_memory_mb"]) << 20, int(limits["processes"]) + 1)
        self._send(msg)
        return self._read(time.monotonic() + timeout)

    def request(self, msg: Request, timeout: float) -> Reply:
        """Send one request and wait for its answer; a dead or stuck worker is killed."""
        reply, fds = self.request_fds(msg, timeout)
        for fd in fds:
            os.close(fd)
        return reply

    def post(self, msg: EndRequest) -> None:
        """Send a request that gets no answer (``end`` with ``quiet``)."""
        self._send(msg)

    def kill(self) -> None:
        """Kill the worker's whole session (bwrap, the worker and any candidate)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def close(self) -> None:
        """Kill the worker and remove its tree bound (cgroups) for good."""
        self.kill()
        if self.bound is not None:
            self.bound.close()
            self.bound = None


_DETECTED: dict[str, SandboxInfo] = {}
_DETECT_LOCK = threading.Lock()


def detect_sandbox(requested: SandboxMode = "auto") -> str:
    """Pick the isolation: ``bwrap`` when it starts a worker here, else ``rlimits`` (loudly).

    ``requested="bwrap"`` fails with a :class:`UserError` when bubblewrap does not work;
    ``"rlimits"`` is taken as asked (still with the warning).
    """
    if requested not in ("auto", "bwrap", "rlimits"):
        raise UserError(f"unknown sandbox {requested!r}; use auto, bwrap or rlimits", field="sandbox")
    with _DETECT_LOCK:
        if requested in ("auto", "bwrap") and "bwrap" not in _DETECTED:
            reason = None
            if shutil.which("bwrap") is None:
                reason = "bubblewrap (bwrap) is not installed"
            else:
                worker = SandboxWorker("bwrap")
                try:
                    _DETECTED["bwrap"] = worker.start(timeout=30)
                except WorkerDied as exc:
                    reason = str(exc)
                finally:
                    worker.close()
            if reason is not None:
                if requested == "bwrap":
                    raise UserError(f"sandbox 'bwrap' is not usable: {reason}", field="sandbox")
                _DETECTED["bwrap-failed"] = SandboxInfo("rlimits", False, -1, reason)
        if requested == "bwrap" or (requested == "auto" and "bwrap" in _DETECTED):
            return "bwrap"
        if "warned" not in _DETECTED:
            why = _DETECTED.get("bwrap-failed")
            reason = why.python if why else "rlimits requested"
            message = (
                f"NO FILE-SYSTEM SANDBOX: {reason}. Candidates run with resource limits only; they can "
                "read (and, where permissions allow, write) your files. Install bubblewrap "
                "(apt-get install bubblewrap) before running untrusted code."
            )
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            console.print(f"[bold red]WARNING:[/] {message}", highlight=False)
            _DETECTED["warned"] = SandboxInfo("rlimits", False, -1, "")
        return "rlimits"
