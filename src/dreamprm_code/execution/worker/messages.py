"""The messages host, worker and candidate exchange, as typed dicts (what the frames carry).

Typed dicts rather than dataclasses: a frame is JSON, so a message is a dict on the wire, and
building or reading one costs nothing more than the dict itself on the hot paths (a forked
candidate answers each call with one). Anything read from the other side is still untrusted:
the readers check types where a wrong one could matter.

Host -> worker, on the worker's socket: :class:`StdinRequest`, :class:`OpenRequest`,
:class:`EndRequest`, :class:`PingRequest`; the worker answers :class:`Hello` once at start,
then :class:`RunReply`, :class:`Started` (with the session's descriptors), :class:`Ended` or
:class:`ErrorReply`. Host -> candidate, on a call session's pipes: :class:`Call` (or a
:class:`CallBatch`); the candidate answers :class:`Ready` once it has loaded its code (or an
:class:`Ending`), then one :class:`CallReply` per call.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class WorkerConfig(TypedDict, total=False):
    """The worker's command-line argument: how to start candidates on this machine."""

    tmp_root: str  # where candidates' working directories are made
    drop_uid: int | None  # uid the shim path drops to (as root), else None
    unshare_net: bool  # the shim path's namespaces include network, IPC and UTS
    fast: bool  # one fork per candidate under a uid of its own, where possible
    cand_uid: int  # the first of the two uids of this worker's candidates
    cgroup_fds: list[list[int]]  # per slot, the descriptors of its cgroup(s)' cgroup.procs
    pid_ns: bool  # false: never try user + PID namespaces


class _WireLimits(TypedDict):
    timeout: float
    cpu_time: float
    memory_mb: int
    tree_memory_mb: int
    processes: int
    file_size_mb: int
    output_bytes: int
    lcb_prelude: bool
    grace: bool


class WireLimits(_WireLimits, total=False):
    """One run's limits (``Limits.wire()`` in the host); ``cpu_total`` for a call session."""

    cpu_total: float


class StdinRequest(TypedDict):
    """Run ``code`` as ``__main__`` on ``input``; answered by a :class:`RunReply`."""

    op: Literal["stdin"]
    code: str
    setup: str
    input: str
    limits: WireLimits


class OpenRequest(TypedDict):
    """Start a call session; answered by :class:`Started` (and its descriptors) or an error."""

    op: Literal["open"]
    code: str
    setup: str
    limits: WireLimits


class _EndRequest(TypedDict):
    op: Literal["end"]
    kill: bool


class EndRequest(_EndRequest, total=False):
    """End the call session; :class:`Ended` unless ``quiet``."""

    wait: float  # seconds to wait for the candidate to exit by itself
    quiet: bool  # nobody needs the exit status: no answer


class PingRequest(TypedDict):
    op: Literal["ping"]


Request = StdinRequest | OpenRequest | EndRequest | PingRequest


class ExitInfo(TypedDict, total=False):
    """How a candidate process ended: its wait status and resource usage (empty when unknown)."""

    status: int
    cpu: float
    maxrss_kb: int


class _Ending(TypedDict):
    status: str  # ok, timeout, output_limit, memory, exception, compile_error, crash


class Ending(_Ending, total=False):
    """How a run or a call ended, for the host's verdict (:func:`~.process.classify`)."""

    error: str
    time: float  # seconds, added by whoever timed it


class RunReply(Ending, total=False):
    """A stdin run: how it ended, its stdout (capped) and the tail of its stderr."""

    cpu: float | None
    maxrss_kb: int | None
    stdout: str
    stderr: str


class Hello(TypedDict):
    """The worker's first frame: ready, and what isolation it got."""

    status: Literal["hello"]
    pid_ns: bool
    fast: bool
    uid: int
    python: str


class Started(TypedDict):
    """A call session started; the frame carries the call pipe, the reply pipe and a pidfd."""

    status: Literal["started"]


class Ended(TypedDict):
    status: Literal["ended"]
    exit: ExitInfo


class Pong(TypedDict):
    status: Literal["pong"]
    pid_ns: bool
    fast: bool
    uid: int


class ErrorReply(TypedDict):
    status: Literal["error"]
    error: str


Reply = Hello | RunReply | Started | Ended | Pong | ErrorReply | Ending


class _Call(TypedDict):
    fn: str
    args: Any  # tagged JSON of a list (see codec)
    kwargs: Any  # tagged JSON of a dict


class Call(_Call):
    """One call of a candidate's function (a ``Solution`` method when it defines that class)."""


class CallBatch(TypedDict):
    """Calls known in advance: the candidate answers each in order, one reply frame each."""

    batch: list[Call]


class Ready(TypedDict):
    """The candidate loaded its code: the functions it defines, and whether it has ``Solution``."""

    status: Literal["ready"]
    names: list[str]
    solution: bool


class CallReply(Ending, total=False):
    """One call's answer: ``value`` (tagged JSON) when ``ok``, the ``type`` of an exception, or
    ``bad_value`` when the returned value is not plain data."""

    value: Any
    type: str
