"""Framing: a 4-byte big-endian length, then UTF-8 JSON; over pipes and a Unix socket.

Both sides use it: the host imports it, the worker (inside the sandbox) runs it.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time

HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 30
# ``json.dumps(obj, ensure_ascii=False)`` builds an encoder per call; one, made once, writes the
# same text (and a forked candidate does not touch, so copy, the pages of a new one per frame).
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def frame_bytes(obj: object) -> bytes:
    """One frame: length header, then the JSON (NaN/Infinity allowed, so float results survive)."""
    data = _ENCODE(obj).encode("utf-8", "surrogatepass")
    return HEADER.pack(len(data)) + data


def write_frame(fd: int, obj: object) -> None:
    """Write one frame."""
    buf = memoryview(frame_bytes(obj))
    while buf:
        n = os.write(fd, buf)
        buf = buf[n:]


class FrameError(Exception):
    """The other side closed the pipe, sent garbage, or missed the deadline."""


def frame_size(head: bytes | bytearray, limit: int) -> int:
    """The body size a frame's header announces; :class:`FrameError` when over ``limit``."""
    (size,) = HEADER.unpack_from(head)
    if size > limit:
        raise FrameError(f"frame of {size} bytes is over the limit of {limit}")
    return size


def decode_body(body: bytes) -> object:
    """A frame's JSON body; :class:`FrameError` for anything malformed (untrusted input)."""
    try:
        return json.loads(body.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FrameError(f"malformed frame: {exc}") from None


def read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                raise TimeoutError
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise FrameError("pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None, limit: int = MAX_FRAME) -> object:
    """Read one frame; ``TimeoutError`` past ``deadline``, :class:`FrameError` on EOF/garbage."""
    size = frame_size(read_exact(fd, HEADER.size, deadline), limit)
    return decode_body(read_exact(fd, size, deadline))


def read_sole_frame(fd: int, deadline: float | None = None, limit: int = MAX_FRAME, ready: bool = False) -> object:
    """:func:`read_frame` for a pipe that carries one frame at a time (a call, or its reply):
    header and body usually come in one read. Bytes past the frame, which only a misbehaving
    candidate would send, are dropped (and then break that candidate's own next frame).
    ``ready``: the caller knows ``fd`` is readable (no wait for the first read)."""
    if deadline is not None and not ready:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
    data = os.read(fd, 1 << 16)
    if not data:
        raise FrameError("pipe closed")
    if len(data) < HEADER.size:
        data += read_exact(fd, HEADER.size - len(data), deadline)
    size = frame_size(data, limit)
    body = data[HEADER.size:HEADER.size + size]
    if len(body) < size:
        body += read_exact(fd, size - len(body), deadline)
    return decode_body(body)


def write_frame_by(fd: int, obj: object, deadline: float) -> None:
    """:func:`write_frame` to a non-blocking fd, giving up (``TimeoutError``) at ``deadline``:
    a candidate that stops reading cannot block the host."""
    buf = memoryview(frame_bytes(obj))
    while buf:
        try:
            n = os.write(fd, buf)
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError from None
            select.select([], [fd], [], left)
            continue
        buf = buf[n:]


def send_frame_fds(sock, obj: object, fds: list[int]) -> None:
    """One frame with file descriptors attached (SCM_RIGHTS) over a Unix socket."""
    import array
    import socket

    frame = frame_bytes(obj)
    sent = sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    buf = memoryview(frame)[sent:]
    while buf:
        buf = buf[os.write(sock.fileno(), buf):]


def recv_frame_fds(sock, deadline: float | None = None, limit: int = MAX_FRAME, max_fds: int = 4) -> tuple[object, list[int]]:
    """Read one frame from a Unix socket, with any file descriptors sent along with it."""
    import array
    import socket

    fd = sock.fileno()
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
    head, anc, _, _ = sock.recvmsg(HEADER.size, socket.CMSG_SPACE(max_fds * 4))
    fds: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", data[: len(data) - len(data) % 4]))
    try:
        if not head:
            raise FrameError("pipe closed")
        head += read_exact(fd, HEADER.size - len(head), deadline)
        size = frame_size(head, limit)
        return decode_body(read_exact(fd, size, deadline)), fds
    except BaseException:
        for x in fds:
            os.close(x)
        raise
