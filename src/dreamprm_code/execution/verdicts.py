"""Verdicts: run a program against a problem's tests in the sandbox, compare in the host.

The host (this module) is the only place that sees expected outputs and trusted test code:
stdin outputs are compared with LiveCodeBench's rules, functional return values arrive as
strict plain data and are compared here, and ``assert`` test code runs here against proxies
that ship each call to the sandboxed candidate. A candidate therefore cannot find the answer
in its own memory, nor fake a pass with an object whose ``__eq__`` always says yes.
"""

from __future__ import annotations

import ast
import builtins
import functools
import hashlib
import json
import math
import os
import queue
import select
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import CodeType
from typing import Any

from dreamprm_code.errors import UserError
from dreamprm_code.execution.bound import BoundMode, describe, detect_bound
from dreamprm_code.execution.sandbox import SandboxMode, SandboxWorker, WorkerDied, detect_sandbox
from dreamprm_code.execution.worker.codec import NotPlainData, decode_value, encode_value, to_json_value
from dreamprm_code.execution.worker.compare import compare_return, compare_stdout, stripped_lines
from dreamprm_code.execution.worker.harness import LCB_PRELUDE
from dreamprm_code.execution.worker.messages import (
    Call,
    CallBatch,
    CallReply,
    Ending,
    EndRequest,
    ExitInfo,
    OpenRequest,
    Reply,
    StdinRequest,
    WireLimits,
)
from dreamprm_code.execution.worker.process import Budget, classify
from dreamprm_code.execution.worker.wire import (
    HEADER,
    FrameError,
    decode_body,
    frame_bytes,
    frame_size,
    read_sole_frame,
    write_frame_by,
)
from dreamprm_code.io import JsonlAppender
from dreamprm_code.progress import console, make_progress
from dreamprm_code.records import (
    COMPILE_ERROR,
    MEMORY_LIMIT,
    PASS,
    RUNTIME_ERROR,
    TIME_LIMIT,
    WRONG_ANSWER,
    ExecResult,
    Problem,
    TestCase,
    TestResult,
)

#: Bump when verdict rules change, so cached results from older rules are not reused.
RULES_VERSION = "3"
TRIM = 400
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

    timeout: float = 6.0
    cpu_time: float | None = None
    memory_mb: int = 2048
    tree_memory_mb: int | None = None
    processes: int = 32
    file_size_mb: int = 64
    output_mb: float = 32.0
    stop_at_first_failure: bool = True
    lcb_prelude: bool = True
    cpu_grace: bool = True

    def __post_init__(self) -> None:
        for name in ("timeout", "memory_mb", "processes", "file_size_mb", "output_mb"):
            if not getattr(self, name) > 0:
                raise UserError(f"must be positive, got {getattr(self, name)!r}", field=f"limits.{name}")
        if self.tree_memory_mb is not None and not self.tree_memory_mb > 0:
            raise UserError(f"must be positive, got {self.tree_memory_mb!r}", field="limits.tree_memory_mb")

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


def _trim(text: Any, n: int = TRIM) -> str:
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, default=repr)
    return s if len(s) <= n else s[: n // 2] + f"...[{len(s) - n} chars]..." + s[-n // 2 :]


def _tail(text: str, n: int = TRIM) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def expected_text(test: TestCase) -> str:
    """The expected stdout of a ``stdin`` test as text (a list of lines is joined)."""
    out = test.output
    if isinstance(out, list) and all(isinstance(x, str) for x in out):
        return "\n".join(out)
    return out if isinstance(out, str) else "" if out is None else str(out)


def _exc_name(stderr: str) -> str:
    for line in reversed(stderr.strip().splitlines()):
        head = line.split(":", 1)[0].strip()
        if head and head.replace(".", "").replace("_", "").isalnum() and not line.startswith(" "):
            return head.rsplit(".", 1)[-1]
    return "Error"


# ------------------------------------------------------------------------------------------
# Assert tests: trusted code in the host, the candidate behind proxies.


class SandboxFailure(RuntimeError):
    """The sandbox itself failed (a worker that would not start or died): not a verdict."""


def _died(exc: WorkerDied) -> Ending:
    """A host-side deadline is the candidate's time limit; anything else is our failure."""
    if exc.deadline:
        return {"status": "timeout", "error": f"no answer from the sandbox in time ({exc})"}
    raise SandboxFailure(str(exc)) from exc


class CandidateFailure(Exception):
    """A proxied call did not return a value: the verdict is ``status``."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


_EXC_CLASSES: dict[str, type] = {}


def _candidate_exception(name: str, message: str) -> Exception:
    """An exception the trusted test code can catch by the builtin type the candidate raised."""
    base = getattr(builtins, name, None)
    if not (isinstance(base, type) and issubclass(base, Exception)) or base is Exception:
        return CandidateFailure(RUNTIME_ERROR, message)
    cls = _EXC_CLASSES.get(name)
    if cls is None:
        try:
            cls = type(f"Candidate{name}", (CandidateFailure, base), {"__init__": CandidateFailure.__init__})
        except TypeError:
            return CandidateFailure(RUNTIME_ERROR, message)
        _EXC_CLASSES[name] = cls
    return cls(RUNTIME_ERROR, message)


class _Proxy:
    """Stands for a candidate function in trusted test code; each call runs in the sandbox."""

    def __init__(self, session: _Session, name: str) -> None:
        self._session = session
        self._name = name
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.call(self._name, list(args), kwargs)

    def __repr__(self) -> str:
        return f"<sandboxed {self._name}>"


@functools.lru_cache(maxsize=1024)
def _calls_check(code: str) -> bool:
    """Does the test code call ``check(...)`` at top level itself (HumanEval's harness adds it)?"""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Name) and func.id == "check":
                return True
    return False


class _Mispredicted(BaseException):  # noqa: N818 (not an error: a signal to rerun)
    """A call did not match the batch sent ahead (see :func:`_planned_calls`): the candidate
    has run calls the test did not make, so the run starts again, one call at a time.
    A ``BaseException`` so that trusted test code's ``except Exception`` cannot swallow it."""


_PLAN_BREAKERS = (ast.BoolOp, ast.IfExp, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
                  ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)


@functools.lru_cache(maxsize=1024)
def _planned_calls(code: str, entry: str) -> tuple[tuple[str, Call], ...]:
    """The calls an assert test will make, known before it runs: the leading statements of
    ``check`` that are plain ``assert``s calling the candidate once with literal arguments
    (HumanEval's usual shape). They are sent to the candidate as one batch, which answers
    them in order without a round trip each. Only a guess: every actual call is matched
    against it (:meth:`_Session.call`), and a mismatch reruns the program call by call.
    Each item: the call's JSON text (what is compared) and the call itself."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return ()
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1 or not checks[0].args.args:
        return ()
    names = {checks[0].args.args[0].arg, entry}
    plan: list[tuple[str, Call]] = []
    for stmt in checks[0].body:
        if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            continue
        if not isinstance(stmt, ast.Assert):
            break
        nodes = list(ast.walk(stmt.test))
        calls = [n for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names]
        if stmt.msg is not None and any(isinstance(n, ast.Call) for n in ast.walk(stmt.msg)):
            break  # the message runs only when the assert fails; a call there is not planned
        if not calls:
            continue
        if len(calls) != 1 or any(isinstance(n, _PLAN_BREAKERS) for n in nodes):
            break
        call = calls[0]
        try:
            if any(k.arg is None for k in call.keywords):
                break
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            wire: Call = {"fn": entry, "args": encode_value(args), "kwargs": encode_value(kwargs)}
            text = json.dumps(wire, ensure_ascii=False)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            break
        plan.append((text, wire))
    return tuple(plan)


@dataclass
class _Ahead:
    """The calls a test is expected to make (:func:`_planned_calls`), sent to the candidate as
    one batch; each call the test makes must be the next of them (:meth:`_Session.call`)."""

    calls: tuple[tuple[str, Call], ...] = ()
    asked: int = 0  # how many of them the test has made so far
    sent: bool = False  # the batch is with the candidate

    def batch(self) -> CallBatch:
        return {"batch": [call for _, call in self.calls]}

    def unasked(self) -> bool:
        """Sent, and not all asked for: the candidate ran calls the test has not made."""
        return self.sent and self.asked < len(self.calls)


def _fd_pid(pidfd: int) -> int:
    """The pid (in our PID namespace) of the process a pidfd refers to; -1 when unknown."""
    try:
        fd = os.open(f"/proc/self/fdinfo/{pidfd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        data = os.read(fd, 4096)
        at = data.find(b"\nPid:")
        return int(data[at + 5:].split(None, 1)[0]) if at >= 0 else -1
    except (OSError, ValueError, IndexError):
        return -1
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=1024)
def _compiled(source: str, name: str) -> CodeType:
    """Trusted code (test code, setup code) compiled once; code objects are immutable."""
    return compile(source, name, "exec")


_PRELUDE_NS: dict[str, Any] | None = None
_PRELUDE_LOCK = threading.Lock()


def _check_namespace() -> dict[str, Any]:
    """Globals for trusted test code: LCB's import block, executed once and copied per test
    (``from m import *`` only binds names, so the copy is the same as running it again)."""
    global _PRELUDE_NS
    with _PRELUDE_LOCK:
        if _PRELUDE_NS is None:
            ns: dict[str, Any] = {"__name__": "__check__", "__builtins__": builtins}
            prelude = LCB_PRELUDE.replace("sys.setrecursionlimit(50000)\n", "")
            exec(compile(prelude, "<prelude>", "exec"), ns)
            _PRELUDE_NS = ns
    return dict(_PRELUDE_NS)


class _Session:
    """An open call session on one worker for one program (functional and assert tests).

    The worker forks the candidate and hands us its two pipes and a pidfd; calls then go to
    the candidate directly, and this side enforces each call's time limit (the same rule as
    the worker's for stdin tests: wall clock, plus the CPU grace read from ``/proc``).
    """

    def __init__(self, worker: SandboxWorker, code: str, setup: str, limits: Limits, n_tests: int = 1,
                 ahead: tuple[tuple[str, Call], ...] = ()) -> None:
        """``ahead``: the first test's planned calls (:func:`_planned_calls`), sent with the
        start so that the candidate answers them as soon as it has loaded its code."""
        self.worker = worker
        self.limits = limits
        self.deadline = math.inf
        self.last_time = 0.0
        self.values: list[Any] = []
        self.alive = False
        self.names: list[str] = []
        self.fds: list[int] = []
        self.ahead = _Ahead()  # the current test's calls, when known in advance
        self.mispredicted = False  # the candidate ran calls the test did not make: rerun
        self.rbuf: bytearray | None = None  # replies, once a batch was sent (several frames in flight)
        wire = limits.wire()
        # One process serves every test: its CPU rlimit covers all of them (+ loading); each
        # call's own limit is enforced from outside.
        wire["cpu_total"] = wire["cpu_time"] * (n_tests + 1)
        try:
            request: OpenRequest = {"op": "open", "code": code, "setup": setup, "limits": wire}
            reply, fds = worker.request_fds(request, self.wait_limit(limits.timeout))
        except WorkerDied as exc:
            self.open_reply = _died(exc)
            return
        if reply.get("status") != "started" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            self.open_reply = reply if reply.get("status") != "started" else {"status": "crash", "error": "bad start"}
            return
        self.fds = fds
        self.call_w, self.reply_r, self.pidfd = fds
        os.set_blocking(self.call_w, False)
        self.pid = _fd_pid(self.pidfd)
        try:  # kept open: one pread per call instead of open/read/close
            self.fds.append(os.open(f"/proc/{self.pid}/stat", os.O_RDONLY | os.O_CLOEXEC))
            self.stat_fd = self.fds[-1]
        except OSError:
            self.stat_fd = -1
        if ahead:
            self._send_ahead(ahead)
        self.open_reply = self._await(limits.timeout)
        self.alive = self.open_reply.get("status") == "ready"
        if self.alive:
            names = self.open_reply.get("names")
            self.names = [n for n in names if isinstance(n, str) and n.isidentifier() and not n.startswith("__")] \
                if isinstance(names, list) else []
        else:
            self.close()

    def _send_ahead(self, plan: tuple[tuple[str, Call], ...]) -> None:
        """Put the batch in the (empty) call pipe now, if it fits in one atomic write (the
        candidate reads it only once loaded); else it goes with the first call as usual."""
        ahead = _Ahead(plan, sent=True)
        frame = frame_bytes(ahead.batch())
        if len(frame) > select.PIPE_BUF:
            return
        try:
            if os.write(self.call_w, frame) != len(frame):  # all or nothing at or below PIPE_BUF
                self.mispredicted = True  # (a partial frame: then run call by call)
                return
        except OSError:  # the candidate is gone already: its open reply says how
            return
        self.ahead = ahead
        self.rbuf = bytearray()  # the ready frame and the first replies may come together

    def wait_limit(self, timeout: float) -> float:
        """How long the host waits for the worker before it declares it stuck."""
        return timeout * (3 if self.limits.cpu_grace else 1) + MARGIN

    def _await(self, timeout: float) -> CallReply:
        """The candidate's next frame, under the time limit; else how the candidate ended."""
        limit = int(self.limits.output_mb * 1024 * 1024)
        start = time.monotonic()
        hard = start + (3 * timeout if self.limits.cpu_grace else timeout)  # as _Budget's
        try:
            # A reply already here (a batch's) needs no wait, so no clock (/proc) either.
            reply = self._buffered_frame(limit) if self.rbuf is not None and timeout > 0 else None
            if reply is None:
                budget = Budget(self.pid, timeout, self.limits.cpu_grace, self.stat_fd)
                start, hard = budget.start, budget.hard
                reply = self._read_buffered(budget, limit) if self.rbuf is not None else self._read_one(budget, limit)
            if not isinstance(reply, dict):
                raise FrameError("reply is not an object")
        except TimeoutError:
            out = classify("timeout", self._end(kill=True))
            out["time"] = time.monotonic() - start
            return out
        except FrameError as exc:
            out = classify(None, self._end(kill=False, wait=max(0.0, hard - time.monotonic())))
            if out["status"] == "ok":
                out = {"status": "crash", "error": f"candidate process ended without a reply ({exc})"}
            out["time"] = time.monotonic() - start
            return out
        reply["time"] = time.monotonic() - start
        return reply

    def _read_one(self, budget: Budget, limit: int) -> object:
        """The reply when the pipe carries one frame at a time (no batch sent)."""
        while True:  # wait for the first byte under the budget, then read the frame
            left = budget.left()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.reply_r, self.pidfd], [], [], left)
            if self.reply_r in ready:
                break
            if ready:  # the candidate ended without a byte of reply
                raise FrameError("candidate exited")
        return read_sole_frame(self.reply_r, max(budget.hard, time.monotonic() + 1.0), limit, ready=True)

    def _buffered_frame(self, limit: int) -> object:
        """The next whole frame in the buffer, taken out of it; None when it is not all there."""
        buf = self.rbuf
        assert buf is not None
        head = HEADER
        if len(buf) < head.size:
            return None
        size = frame_size(buf, limit)
        if len(buf) < head.size + size:
            return None
        body = bytes(buf[head.size:head.size + size])
        del buf[:head.size + size]
        return decode_body(body)

    def _read_buffered(self, budget: Budget, limit: int) -> object:
        """The next reply frame when several may be in the pipe (after a batch): the same
        rules as the one-frame path (first byte under the budget, the rest of the frame until
        the hard limit or one more second), through a buffer that keeps the frames after it."""
        buf = self.rbuf
        assert buf is not None
        first = None  # when the frame's first byte was here
        while True:
            frame = self._buffered_frame(limit)
            if frame is not None:
                return frame
            if buf and first is None:
                first = time.monotonic()
            if first is None:
                left = budget.left()
                if left <= 0:
                    raise TimeoutError
                ready, _, _ = select.select([self.reply_r, self.pidfd], [], [], left)
                if self.reply_r not in ready:
                    if ready:  # the candidate ended without a byte of reply
                        raise FrameError("candidate exited")
                    continue
            else:
                left = max(budget.hard, first + 1.0) - time.monotonic()
                if left <= 0 or not select.select([self.reply_r], [], [], left)[0]:
                    raise TimeoutError
            data = os.read(self.reply_r, 1 << 16)
            if not data:
                raise FrameError("pipe closed")
            buf += data

    def _close_fds(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def _end(self, kill: bool, wait: float = 0.0) -> ExitInfo:
        """Ask the worker to end the candidate (now, or once it has exited within ``wait``)."""
        self._close_fds()
        self.alive = False
        try:
            end: EndRequest = {"op": "end", "kill": kill, "wait": wait}
            reply = self.worker.request(end, wait + MARGIN)
        except WorkerDied as exc:
            _died(exc)
            return {}
        info = reply.get("exit")
        return info if isinstance(info, dict) else {}

    def call(self, name: str, args: list, kwargs: dict) -> Any:
        """Run one call in the sandbox; a value comes back decoded, anything else raises."""
        if not self.alive:
            raise CandidateFailure(RUNTIME_ERROR, "the candidate process is no longer running")
        try:
            wire_args = encode_value(args)
            wire_kwargs = encode_value(dict(kwargs))
        except NotPlainData as exc:
            raise CandidateFailure(RUNTIME_ERROR, f"test argument is not plain data: {exc}") from None
        left = min(self.limits.timeout, self.deadline - time.monotonic())
        if left <= 0:
            raise CandidateFailure(TIME_LIMIT, "time limit exceeded")
        frame: Call | CallBatch | None = {"fn": name, "args": wire_args, "kwargs": wire_kwargs}
        if self.mispredicted:
            raise _Mispredicted
        ahead = self.ahead
        if ahead.asked < len(ahead.calls):  # a batch of calls is (to be) sent ahead
            if ahead.calls[ahead.asked][0] != json.dumps(frame, ensure_ascii=False):
                if ahead.sent:  # the candidate runs calls the test does not make
                    self.mispredicted = True
                    raise _Mispredicted
                self.ahead = _Ahead()  # nothing sent yet: one call at a time
            else:
                ahead.asked += 1
                if ahead.sent:  # its reply is on its way
                    frame = None
                else:
                    frame, ahead.sent = ahead.batch(), True
                    if self.rbuf is None:
                        self.rbuf = bytearray()
        start = time.monotonic()
        try:
            if frame is not None:
                write_frame_by(self.call_w, frame, start + left)
        except TimeoutError:  # it stopped reading its pipe
            reply = classify("timeout", self._end(kill=True))
            reply["time"] = time.monotonic() - start
        except OSError:
            reply = classify(None, self._end(kill=False, wait=1.0))
            if reply["status"] == "ok":
                reply = {"status": "crash", "error": "candidate process is gone"}
        else:
            reply = self._await(left - (time.monotonic() - start))
        self.last_time = float(reply.get("time") or 0.0)
        status = reply.get("status")
        if status == "ok":
            try:
                value = decode_value(reply.get("value"))
            except (NotPlainData, ValueError, TypeError, RecursionError) as exc:
                raise CandidateFailure(WRONG_ANSWER, f"malformed return value: {exc}") from None
            self.values.append(value)
            return value
        if status == "bad_value":
            self.values.append(f"<{reply.get('error')}>")
            raise CandidateFailure(WRONG_ANSWER, str(reply.get("error")))
        if status == "exception":
            self.values.append(f"<{reply.get('type')}>")
            raise _candidate_exception(str(reply.get("type")), _tail(str(reply.get("error", ""))))
        if self.alive:
            self.close()
        self.alive = False
        if status == "timeout":
            raise CandidateFailure(TIME_LIMIT, "time limit exceeded")
        if status == "memory":
            raise CandidateFailure(MEMORY_LIMIT, "memory limit exceeded")
        raise CandidateFailure(RUNTIME_ERROR, str(reply.get("error") or status))

    def close(self) -> None:
        """Done with the candidate: close its pipes and let the worker end it (no waiting)."""
        if self.fds:
            self._close_fds()
            try:
                end: EndRequest = {"op": "end", "kill": True, "quiet": True}
                self.worker.post(end)
            except WorkerDied:
                pass  # the worker restarts on its next request
        self.alive = False


# ------------------------------------------------------------------------------------------
# One program, one worker.


@dataclass
class _Outcome:
    result: TestResult
    canonical: str  # the test's behaviour for majority votes (see run_outputs)


def _stdin_test(worker: SandboxWorker, code: str, setup: str, test: TestCase, limits: Limits, compare: bool) -> _Outcome:
    msg: StdinRequest = {"op": "stdin", "code": code, "setup": setup,
                         "input": "" if test.input is None else str(test.input), "limits": limits.wire()}
    try:
        reply = worker.request(msg, limits.timeout * (3 if limits.cpu_grace else 1) + MARGIN)
    except WorkerDied as exc:
        reply = _died(exc)
    status = reply.get("status")
    t = float(reply.get("time") or 0.0)
    stdout, stderr = str(reply.get("stdout", "")), str(reply.get("stderr", ""))
    if status == "ok":
        if not compare:  # behaviour for majority votes: normalised the way outputs are compared
            return _Outcome(TestResult(PASS, t), "\n".join(stripped_lines(stdout)))
        want = expected_text(test)
        if compare_stdout(stdout, want):
            return _Outcome(TestResult(PASS, t), stdout)
        return _Outcome(TestResult(WRONG_ANSWER, t, output=_trim(stdout), expected=_trim(want)), stdout)
    if status == "compile_error":
        return _Outcome(TestResult(COMPILE_ERROR, t, error=_tail(stderr)), "<compile_error>")
    if status == "timeout":
        return _Outcome(TestResult(TIME_LIMIT, t, error="time limit exceeded"), "<time_limit>")
    if status == "memory":
        return _Outcome(TestResult(MEMORY_LIMIT, t, error="memory limit exceeded"), "<memory_limit>")
    if status == "output_limit":
        return _Outcome(TestResult(WRONG_ANSWER, t, output=_trim(stdout), expected=_trim(expected_text(test)),
                                   error=f"output limit exceeded ({limits.output_mb} MB)"), "<output_limit>")
    if status == "exception":
        name = _exc_name(stderr)
        return _Outcome(TestResult(RUNTIME_ERROR, t, output=_trim(stdout) or None, error=_tail(stderr)), f"<{name}>")
    return _Outcome(TestResult(RUNTIME_ERROR, t, error=_tail(str(reply.get("error") or status))), "<crash>")


def _functional_test(session: _Session, entry: str, test: TestCase, compare: bool) -> _Outcome:
    args = test.input if isinstance(test.input, list) else [] if test.input is None else [test.input]
    session.deadline = time.monotonic() + session.limits.timeout
    session.last_time = 0.0
    try:
        value = session.call(entry, list(args), dict(test.kwargs or {}))
    except CandidateFailure as exc:
        name = type(exc).__name__.removeprefix("Candidate") if type(exc) is not CandidateFailure else exc.status
        return _Outcome(TestResult(exc.status, session.last_time, error=_tail(str(exc))), f"<{name}>")
    canonical = json.dumps(to_json_value(value), sort_keys=True, ensure_ascii=False)
    if not compare or compare_return(value, test.output):
        return _Outcome(TestResult(PASS, session.last_time), canonical)
    return _Outcome(TestResult(WRONG_ANSWER, session.last_time, output=_trim(canonical),
                               expected=_trim(test.output)), canonical)


def _assert_test(session: _Session, problem: Problem, test: TestCase, limits: Limits, plan: bool = False,
                 canonical: bool = True) -> _Outcome:
    """Run trusted test code here; the entry point and the code's functions are proxies.

    ``plan``: send the calls the test code will make (:func:`_planned_calls`) ahead, as one
    batch; only where the run stops at this test if it fails, so a failed test's unused
    replies are never read by a later one. ``canonical``: also give the calls' values as
    JSON (for :meth:`Executor.run_outputs`; a verdict does not need it)."""
    start = time.monotonic()
    session.deadline = start + limits.timeout
    session.values = []
    planned = _planned_calls(test.code or "", problem.entry_point) if plan and problem.entry_point else ()
    ahead = session.ahead
    if ahead.unasked() and (ahead.asked or ahead.calls != planned):
        raise _Mispredicted  # calls sent for another test, or the rest of a batch not asked for
    if not (ahead.sent and ahead.asked == 0 and ahead.calls == planned):  # else: sent with the start
        session.ahead = _Ahead(planned)
    try:
        ns = _check_namespace() if limits.lcb_prelude else {"__name__": "__check__", "__builtins__": builtins}
        if problem.setup_code:
            exec(_compiled(problem.setup_code, "<setup>"), ns)
        for name in session.names:
            ns[name] = _Proxy(session, name)
        entry = problem.entry_point
        if entry:
            ns[entry] = ns["candidate"] = _Proxy(session, entry)
        code = test.code or ""
        exec(_compiled(code, "<test>"), ns)
        if callable(ns.get("check")) and not _calls_check(code):
            ns["check"](ns.get("candidate"))
        if session.ahead.unasked():
            session.mispredicted = True
        status, error = PASS, None
    except CandidateFailure as exc:
        status, error = exc.status, _tail(str(exc))
    except SandboxFailure:
        raise  # the sandbox failed, not the candidate: retried on a fresh worker
    except AssertionError as exc:
        status, error = WRONG_ANSWER, _assert_text(exc, test.code or "")
    except Exception as exc:  # the test code failed on what the candidate returned
        status, error = RUNTIME_ERROR, f"{type(exc).__name__}: {_tail(str(exc))}"
    if session.mispredicted:
        raise _Mispredicted
    elapsed = time.monotonic() - start
    if status == PASS and elapsed > limits.timeout:
        status, error = TIME_LIMIT, "time limit exceeded"
    if not canonical:
        return _Outcome(TestResult(status, elapsed, error=error), "")
    values = json.dumps(to_json_value(session.values), sort_keys=True, ensure_ascii=False, default=repr)
    return _Outcome(TestResult(status, elapsed, error=error), values if status in (PASS, WRONG_ANSWER) else values + f"<{status}>")


def _assert_text(exc: AssertionError, code: str) -> str:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<test>":
            line = tb.tb_lineno
        tb = tb.tb_next
    lines = code.splitlines()
    where = lines[line - 1].strip() if line and 0 < line <= len(lines) else "assertion failed"
    msg = str(exc)
    return _trim(f"{where}" + (f" ({msg})" if msg else ""))


def _run_tests(worker: SandboxWorker, problem: Problem, code: str, tests: list[TestCase], limits: Limits,
               compare: bool) -> tuple[ExecResult, list[str]]:
    """Run ``tests`` in order on one worker; stop at the first failure when asked (and comparing).

    Where a failed test ends the run, assert tests send their calls ahead in one batch when
    they can be known in advance; a wrong guess reruns the program one call at a time."""
    if compare and limits.stop_at_first_failure:
        try:
            return _run_tests_once(worker, problem, code, tests, limits, compare, plan=True)
        except _Mispredicted:
            pass
    return _run_tests_once(worker, problem, code, tests, limits, compare, plan=False)


def _run_tests_once(worker: SandboxWorker, problem: Problem, code: str, tests: list[TestCase], limits: Limits,
                    compare: bool, plan: bool) -> tuple[ExecResult, list[str]]:
    start = time.monotonic()
    results: list[TestResult] = []
    canon: list[str] = []
    session: _Session | None = None
    verdict = PASS
    killed = worker.memory_kills()  # kills of the tree bound so far: any new one is this candidate's
    try:
        for test in tests:
            if test.kind == "stdin":
                out = _stdin_test(worker, code, problem.setup_code, test, limits, compare)
            elif test.kind in ("functional", "assert"):
                if test.kind == "functional" and not problem.entry_point:
                    raise UserError("functional tests need the problem's entry_point", field="entry_point")
                if session is None or not session.alive:
                    n_calls = sum(t.kind != "stdin" for t in tests)
                    ahead = _planned_calls(test.code or "", problem.entry_point) \
                        if plan and test.kind == "assert" and problem.entry_point else ()
                    session = _Session(worker, code, problem.setup_code, limits, n_calls, ahead)
                    if not session.alive:
                        out = _open_failure(session.open_reply)
                        out, killed = _tree_memory(worker, killed, out, session)
                        results.append(out.result)
                        canon.append(out.canonical)
                        if out.result.status == COMPILE_ERROR or (compare and limits.stop_at_first_failure):
                            break
                        continue
                if test.kind == "functional":
                    out = _functional_test(session, problem.entry_point or "", test, compare)
                else:
                    out = _assert_test(session, problem, test, limits, plan, canonical=not compare)
            else:
                raise UserError(f"unknown test kind {test.kind!r}", field="tests.kind")
            out, killed = _tree_memory(worker, killed, out, session)
            results.append(out.result)
            canon.append(out.canonical)
            if out.result.status == COMPILE_ERROR:
                break
            if compare and limits.stop_at_first_failure and out.result.status != PASS:
                break
    finally:
        if session is not None:
            session.close()
    for r in results:
        if r.status != PASS:
            verdict = r.status
            break
    passed = sum(r.status == PASS for r in results)
    if verdict == PASS and len(results) < len(tests):
        verdict = RUNTIME_ERROR
    return ExecResult(verdict, passed, len(tests), results, time.monotonic() - start), canon


def _tree_memory(worker: SandboxWorker, killed: int, out: _Outcome, session: _Session | None) -> tuple[_Outcome, int]:
    """A test during which the tree bound killed (part of) the candidate for memory is a
    ``memory_limit``, however the rest of it ended; what is left of it is killed now."""
    now = worker.memory_kills()
    if now == killed:
        return out, killed
    if session is not None and session.alive:
        session.close()
    t = out.result.time
    return _Outcome(TestResult(MEMORY_LIMIT, t, error="memory limit of the process tree exceeded"), "<memory_limit>"), now


def _open_failure(reply: Reply) -> _Outcome:
    status = reply.get("status")
    error = _tail(str(reply.get("error") or status))
    mapping = {"compile_error": COMPILE_ERROR, "timeout": TIME_LIMIT, "memory": MEMORY_LIMIT}
    verdict = mapping.get(str(status), RUNTIME_ERROR)
    return _Outcome(TestResult(verdict, float(reply.get("time") or 0.0), error=error), f"<{verdict}>")


def _strip_bulky(result: ExecResult) -> ExecResult:
    """Keep evidence only on failures (passes carry status and time)."""
    return replace(result, tests=[t if t.status != PASS else TestResult(PASS, round(t.time, 6)) for t in result.tests])


# ------------------------------------------------------------------------------------------
# Public API.


def cache_key(problem: Problem, code: str, limits: Limits, tests: Iterable[TestCase] | None = None) -> str:
    """Hash of everything that decides a verdict: code, tests, setup, entry point, limits, rules."""
    payload = {
        "rules": RULES_VERSION,
        "code": code,
        "tests": [t.to_dict() for t in (problem.tests if tests is None else tests)],
        "setup": problem.setup_code,
        "entry": problem.entry_point,
        "limits": limits.to_dict(),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=repr).encode("utf-8", "surrogatepass")
    return hashlib.sha256(blob).hexdigest()


_ANNOUNCED: set[str] = set()  # start-up lines printed by this process (once each)
_ANNOUNCED_LOCK = threading.Lock()


class Executor:
    """Runs many programs in parallel on persistent sandboxed workers, with a result cache.

    ``workers`` defaults to the CPU count; ``cache_dir`` holds ``exec-cache.jsonl``, an
    append-only log keyed by :func:`cache_key`, so a re-run is free and a killed run resumes;
    ``sandbox`` is ``auto`` (bwrap when usable, else rlimits with a loud warning), ``bwrap``
    or ``rlimits``; ``memory_bound`` bounds each candidate's whole process tree
    (``Limits.tree_memory_mb``): ``auto`` (cgroup2, else cgroup1, else watchdog), one of
    those, or ``off``.
    """

    def __init__(self, limits: Limits | None = None, workers: int | None = None, cache_dir: str | Path | None = None,
                 sandbox: SandboxMode = "auto", memory_bound: BoundMode = "auto") -> None:
        self.limits = limits or Limits()
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.mode = detect_sandbox(sandbox)
        self.bound, self.bound_reason = detect_bound(memory_bound)
        self._announce()
        self._pool: queue.SimpleQueue[SandboxWorker] = queue.SimpleQueue()
        self._all: list[SandboxWorker] = []
        self._lock = threading.Lock()
        self._cache: dict[str, ExecResult] = {}
        self._log: JsonlAppender | None = None
        if cache_dir is not None:
            self._log = JsonlAppender(Path(cache_dir) / "exec-cache.jsonl", key=lambda r: r["key"])
            for rec in self._log.records:
                try:
                    self._cache[rec["key"]] = ExecResult.from_dict(rec["result"])
                except (KeyError, TypeError):
                    continue

    def describe(self) -> str:
        """The start-up line: isolation, and the bound of each candidate's process tree."""
        lim = self.limits
        tree = f", {lim.tree_memory_mb or lim.memory_mb} MiB and {lim.processes} processes per tree" \
            if self.bound != "off" else ""
        why = f" [not taken: {self.bound_reason}]" if self.bound_reason else ""
        return (f"sandbox: {self.mode}, {lim.memory_mb} MiB address space per process; "
                f"memory bound: {describe(self.bound)}{tree}{why}")

    def _announce(self) -> None:
        line = self.describe()
        with _ANNOUNCED_LOCK:
            if line in _ANNOUNCED:
                return
            _ANNOUNCED.add(line)
        console.print(line, highlight=False, markup=False)

    # -- workers ---------------------------------------------------------------------------------
    def _take(self) -> SandboxWorker:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            worker = SandboxWorker(self.mode, self.bound)
            with self._lock:
                self._all.append(worker)
            return worker

    def _with_worker(self, fn: Callable[[SandboxWorker], Any]) -> Any:
        worker = self._take()
        try:
            return fn(worker)
        finally:
            self._pool.put(worker)

    def start(self) -> None:
        """Start every worker now, in parallel, rather than on first use: a long-lived service
        or a timed run then pays the workers' start (~0.1 s each) before its first candidate."""
        with self._lock:
            missing = self.workers - len(self._all)
        fresh = [SandboxWorker(self.mode, self.bound) for _ in range(max(0, missing))]
        with ThreadPoolExecutor(max_workers=max(1, len(fresh))) as pool:
            list(pool.map(lambda w: w.start(), fresh))
        with self._lock:
            self._all.extend(fresh)
        for w in fresh:
            self._pool.put(w)

    def close(self) -> None:
        """Stop every worker and close the cache log."""
        with self._lock:
            for w in self._all:
                w.close()
            self._all.clear()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running ---------------------------------------------------------------------------------
    def run(self, problem: Problem, code: str) -> ExecResult:
        """One program against all of the problem's tests (cached)."""
        key = cache_key(problem, code, self.limits)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        result, _ = self._attempt(lambda w: _run_tests(w, problem, code, problem.tests, self.limits, True), problem)
        result = _strip_bulky(result)
        with self._lock:
            self._cache[key] = result
            if self._log is not None:
                self._log.append({"key": key, "problem_id": problem.id, "result": result.to_dict()})
        return result

    def run_many(self, items: list[tuple[Problem, str]], progress: bool = True,
                 on_result: Callable[[int, ExecResult], None] | None = None) -> list[ExecResult]:
        """Run every ``(problem, code)`` pair, in parallel over the workers; results in order.

        ``on_result(index, result)`` is called as each finishes (from worker threads, one at a
        time), so callers can write results as they come and resume after a kill.
        """
        results: list[ExecResult | None] = [None] * len(items)
        done_lock = threading.Lock()
        with make_progress(disable=not progress) as bar:
            task = bar.add_task("execute", total=len(items), info="")
            passed = 0

            def one(i: int) -> None:
                nonlocal passed
                problem, code = items[i]
                res = self.run(problem, code)
                results[i] = res
                with done_lock:
                    passed += res.verdict == PASS
                    if on_result is not None:
                        on_result(i, res)
                    bar.update(task, advance=1, info=f"pass {passed}")

            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                for fut in [pool.submit(one, i) for i in range(len(items))]:
                    fut.result()
        return [r for r in results if r is not None]

    def run_outputs(self, problem: Problem, code: str, tests: list[TestCase] | None = None) -> list[str]:
        """Each test's canonical behaviour, without comparing: stdout text (stripped as LCB
        strips it before comparing), the JSON of the return value (sorted keys; the values of
        every call for ``assert`` tests), or ``<ExceptionType>`` / ``<time_limit>``; for
        majority votes over execution behaviour. Every test runs (no stop at first failure)."""
        chosen = problem.tests if tests is None else tests
        _, canon = self._attempt(lambda w: _run_tests(w, problem, code, chosen, self.limits, False), problem)
        return canon

    def _attempt(self, fn: Callable[[SandboxWorker], Any], problem: Problem, tries: int = 3) -> Any:
        """Run on a worker; a sandbox failure (not a verdict) is retried on a fresh worker."""
        for attempt in range(tries):
            try:
                return self._with_worker(fn)
            except SandboxFailure as exc:
                if attempt == tries - 1:
                    raise SandboxFailure(f"sandbox failed {tries} times on {problem.id}: {exc}") from None
        raise AssertionError("unreachable")


def run_program(problem: Problem, code: str, limits: Limits | None = None, sandbox: SandboxMode = "auto") -> ExecResult:
    """Run one program against a problem's tests in a fresh sandboxed worker.

    For many programs use :class:`Executor`, which keeps its workers warm.
    """
    with Executor(limits, workers=1, sandbox=sandbox) as ex:
        return ex.run(problem, code)
