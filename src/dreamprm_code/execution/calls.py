"""Call sessions: a candidate's functions behind proxies, for functional and assert tests.

The worker forks the candidate, which loads its code once, and hands the host the candidate's
two pipes and a pidfd; calls then go to the candidate directly, each under its own time limit
enforced here. Trusted test code runs in the host and calls :class:`Proxy` objects, so the
candidate never sees it, nor an expected value.

Where the calls of an ``assert`` test are known before it runs (:func:`planned_calls`), they are
sent ahead in one batch that the candidate answers without a round trip each: +5-17%
candidates/s and -6-9% CPU on HumanEval (docs/benchmarks.md). A guess that turns out wrong raises
:class:`Mispredicted`, and the program is run again call by call.
"""

from __future__ import annotations

import ast
import builtins
import functools
import json
import math
import os
import select
import time
from dataclasses import dataclass
from typing import Any

from dreamprm_code.execution.limits import MARGIN, Limits
from dreamprm_code.execution.sandbox import SandboxWorker, WorkerDied
from dreamprm_code.execution.worker.codec import NotPlainData, decode_value, encode_value
from dreamprm_code.execution.worker.messages import (
    Call,
    CallBatch,
    CallReply,
    Ending,
    EndRequest,
    ExitInfo,
    OpenRequest,
)
from dreamprm_code.execution.worker.process import Budget, classify, proc_field
from dreamprm_code.execution.worker.wire import (
    HEADER,
    FrameError,
    decode_body,
    frame_bytes,
    frame_size,
    read_sole_frame,
    write_frame_by,
)
from dreamprm_code.records import MEMORY_LIMIT, RUNTIME_ERROR, TIME_LIMIT, WRONG_ANSWER

TRIM = 400  # characters of a candidate's output or error a verdict keeps


def tail(text: str, n: int = TRIM) -> str:
    """The last ``n`` characters of an error text (where a traceback says what happened)."""
    return text if len(text) <= n else "..." + text[-n:]


class SandboxFailure(RuntimeError):
    """The sandbox itself failed (a worker that would not start or died): not a verdict."""


def worker_died(exc: WorkerDied) -> Ending:
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


class Proxy:
    """Stands for a candidate function in trusted test code; each call runs in the sandbox."""

    def __init__(self, session: CallSession, name: str) -> None:
        self._session = session
        self._name = name
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.call(self._name, list(args), kwargs)

    def __repr__(self) -> str:
        return f"<sandboxed {self._name}>"


class Mispredicted(BaseException):  # noqa: N818 (not an error: a signal to rerun)
    """A call did not match the batch sent ahead (see :func:`planned_calls`): the candidate
    has run calls the test did not make, so the run starts again, one call at a time.
    A ``BaseException`` so that trusted test code's ``except Exception`` cannot swallow it."""


_PLAN_BREAKERS = (ast.BoolOp, ast.IfExp, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
                  ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)


@functools.lru_cache(maxsize=1024)
def planned_calls(code: str, entry: str) -> tuple[tuple[str, Call], ...]:
    """The calls an assert test will make, known before it runs: the leading statements of
    ``check`` that are plain ``assert``s calling the candidate once with literal arguments
    (HumanEval's usual shape). They are sent to the candidate as one batch, which answers
    them in order without a round trip each. Only a guess: every actual call is matched
    against it (:meth:`CallSession.call`), and a mismatch reruns the program call by call.
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
    """The calls a test is expected to make (:func:`planned_calls`), sent to the candidate as
    one batch; each call the test makes must be the next of them (:meth:`CallSession.call`)."""

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
    return proc_field(f"/proc/self/fdinfo/{pidfd}", b"Pid")


class CallSession:
    """An open call session on one worker for one program (functional and assert tests).

    The worker forks the candidate and hands us its two pipes and a pidfd; calls then go to
    the candidate directly, and this side enforces each call's time limit (the same rule as
    the worker's for stdin tests: wall clock, plus the CPU grace read from ``/proc``).
    """

    def __init__(self, worker: SandboxWorker, code: str, setup: str, limits: Limits, n_tests: int = 1,
                 ahead: tuple[tuple[str, Call], ...] = ()) -> None:
        """``ahead``: the first test's planned calls (:func:`planned_calls`), sent with the
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
            self.open_reply = worker_died(exc)
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
            worker_died(exc)
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
            raise Mispredicted
        ahead = self.ahead
        if ahead.asked < len(ahead.calls):  # a batch of calls is (to be) sent ahead
            if ahead.calls[ahead.asked][0] != json.dumps(frame, ensure_ascii=False):
                if ahead.sent:  # the candidate runs calls the test does not make
                    self.mispredicted = True
                    raise Mispredicted
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
            raise _candidate_exception(str(reply.get("type")), tail(str(reply.get("error", ""))))
        if self.alive:
            self.close()
        self.alive = False
        if status == "timeout":
            raise CandidateFailure(TIME_LIMIT, "time limit exceeded")
        if status == "memory":
            raise CandidateFailure(MEMORY_LIMIT, "memory limit exceeded")
        raise CandidateFailure(RUNTIME_ERROR, str(reply.get("error") or status))

    def begin_test(self, planned: tuple[tuple[str, Call], ...]) -> None:
        """A test starts that is expected to make the ``planned`` calls (none: not known).
        :class:`Mispredicted` when the candidate has run calls no test asked for: the rest of
        an earlier batch, or a batch sent for other calls."""
        ahead = self.ahead
        if ahead.unasked() and (ahead.asked or ahead.calls != planned):
            raise Mispredicted
        if not (ahead.sent and ahead.asked == 0 and ahead.calls == planned):  # else: sent with the start
            self.ahead = _Ahead(planned)

    def end_test(self) -> None:
        """The test code is done: a batch it did not ask for in full was a wrong guess."""
        if self.ahead.unasked():
            self.mispredicted = True

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
