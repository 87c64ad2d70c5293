"""The candidate harness: what runs inside a forked candidate, around the candidate's code.

A stdin run executes the program as ``__main__`` and says how it ended in its exit status; a
call session loads the code once and answers call frames from the host until the host closes
the pipe. The candidate's globals start from LCB's import block, executed once in the worker.
"""

from __future__ import annotations

import os
import struct
import sys

from .codec import NotPlainData, decode_value, encode_value
from .messages import CallReply, Ready, WireLimits
from .wire import FrameError, read_sole_frame, write_frame

LCB_PRELUDE = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n"
    "from random import *\nfrom statistics import *\nfrom itertools import *\nfrom functools import *\n"
    "from operator import *\nfrom io import *\nfrom sys import *\nfrom json import *\n"
    "from builtins import *\nfrom typing import *\nimport string\nimport re\nimport datetime\n"
    "import collections\nimport heapq\nimport bisect\nimport copy\nimport math\nimport random\n"
    "import statistics\nimport itertools\nimport functools\nimport operator\nimport io\nimport sys\n"
    "import json\nsys.setrecursionlimit(50000)\n"
)

EXIT_EXCEPTION = 1
EXIT_COMPILE = 3
EXIT_MEMORY = 4
EXIT_SETUP = 5


def _prelude_template() -> dict:
    """LCB's import block, executed once: a candidate's namespace starts as a copy of this.

    ``from m import *`` only binds names to objects the worker already holds, so copying the
    result is the same as executing the block again (~4 ms per run saved). The block's
    ``sys.setrecursionlimit(50000)`` is applied in each candidate, not here.
    """
    import builtins

    ns: dict = {"__name__": None, "__builtins__": builtins}
    limit = sys.getrecursionlimit()
    exec(compile(LCB_PRELUDE, "<prelude>", "exec"), ns)
    sys.setrecursionlimit(limit)
    return ns


class CandidateGlobals:
    """What a candidate's globals are made from, held by the worker and inherited by every fork:
    LCB's import block executed once, and the setup code compiled once."""

    def __init__(self) -> None:
        self.prelude = _prelude_template()
        self.code_cache: dict[str, object] = {}

    def compiled(self, source: str, name: str) -> object:
        """Trusted problem code (setup), compiled once per worker."""
        code = self.code_cache.get(source)
        if code is None:
            if len(self.code_cache) > 256:
                self.code_cache.clear()
            code = self.code_cache[source] = compile(source, name, "exec")
        return code

    def namespace(self, name: str, limits: WireLimits, setup: str) -> dict:
        """The candidate's globals: LCB's import block, then the setup code.

        Called in the forked candidate, which owns its copy of the worker's memory: it takes
        the prebuilt prelude namespace itself instead of copying it, because copying (like any
        walk over its values) writes ~600 reference counts and so copies the pages holding
        them (~1 ms per run).
        """
        import builtins

        if limits.get("lcb_prelude", True):
            ns = self.prelude
            ns["__name__"] = name
            sys.setrecursionlimit(50000)
        else:
            ns = {"__name__": name, "__builtins__": builtins}
        if setup:
            exec(self.compiled(setup, "<setup>"), ns)
        return ns


def install_exit_builtins() -> None:
    """``exit`` and ``quit`` for candidates that call them, where ``site`` did not add them."""
    import builtins

    class _Quitter:
        def __init__(self, name: str) -> None:
            self.name = name

        def __repr__(self) -> str:
            return f"Use {self.name}() to exit"

        def __call__(self, code: object = None) -> None:
            raise SystemExit(code)

    if not hasattr(builtins, "exit"):
        builtins.exit = _Quitter("exit")
        builtins.quit = _Quitter("quit")


def run_main(globs: CandidateGlobals, limits: WireLimits, setup: str, code: str) -> None:
    """Candidate, stdin mode: run the program as ``__main__``; exit status says how it ended."""
    import traceback

    try:
        compiled = compile(code, "<solution>", "exec")
    except (SyntaxError, ValueError, MemoryError) as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        os._exit(EXIT_COMPILE)
    code_exit = 0
    try:
        ns = globs.namespace("__main__", limits, setup)
        exec(compiled, ns)
    except SystemExit:
        pass
    except MemoryError:
        code_exit = EXIT_MEMORY
    except BaseException:
        try:
            traceback.print_exc(limit=-8)
        except BaseException:
            pass
        code_exit = EXIT_EXCEPTION
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        code_exit = code_exit or EXIT_EXCEPTION
    os._exit(code_exit)


def serve_calls(globs: CandidateGlobals, limits: WireLimits, setup: str, code: str, call_fd: int, reply_fd: int) -> None:
    """Candidate, call mode: exec the code once, then answer ``{"fn", "args", "kwargs"}`` frames
    from the host until it closes the pipe."""
    import traceback

    try:
        compiled = compile(code, "<solution>", "exec")
    except (SyntaxError, ValueError, MemoryError) as exc:
        write_frame(reply_fd, {"status": "compile_error", "error": f"{type(exc).__name__}: {exc}"})
        os._exit(0)
    # The functions the code itself defines, found among the global names its module code
    # stores (``co_names``), so the prelude's ~600 entries are never walked (see
    # CandidateGlobals.namespace).
    names_used = sorted(set(compiled.co_names))
    try:
        ns = globs.namespace("candidate", limits, setup)
        before = {k: ns.get(k) for k in names_used}
        exec(compiled, ns)
        instance = ns["Solution"]() if "class Solution" in code and isinstance(ns.get("Solution"), type) else None
    except SystemExit:
        write_frame(reply_fd, {"status": "exception", "type": "SystemExit", "error": "exited while loading"})
        os._exit(0)
    except MemoryError:
        write_frame(reply_fd, {"status": "memory"})
        os._exit(0)
    except BaseException as exc:
        write_frame(reply_fd, {"status": "compile_error", "error": _exc_text(exc, traceback)})
        os._exit(0)
    # Trusted test code may call them by name.
    names = [
        k for k in names_used
        if type(ns.get(k)).__name__ == "function" and not k.startswith("__") and before.get(k) is not ns.get(k)
    ]
    ready: Ready = {"status": "ready", "names": names, "solution": instance is not None}
    write_frame(reply_fd, ready)
    while True:
        try:
            msg = read_sole_frame(call_fd)
        except (FrameError, OSError, struct.error):
            os._exit(0)
        # ``{"batch": [call, ...]}``: the host knows the next calls in advance (assert tests made
        # of literal calls); answer each, in order, one frame per call, without waiting.
        batch = msg.get("batch") if isinstance(msg, dict) else None
        for call in batch if isinstance(batch, list) else [msg]:
            reply = one_call(ns, instance, call, traceback)
            try:
                write_frame(reply_fd, reply)
            except (OSError, ValueError, TypeError):
                os._exit(EXIT_EXCEPTION)


def one_call(ns: dict, instance: object, msg: object, traceback_module) -> CallReply:
    """Candidate, call mode: one ``{"fn", "args", "kwargs"}`` call, and the reply to send."""
    fn_name = msg.get("fn") if isinstance(msg, dict) else None
    try:
        fn = _resolve(ns, instance, fn_name)
        args = decode_value(msg.get("args") or [])
        kwargs = decode_value(msg.get("kwargs") or {"dict": []})
        result = fn(*args, **kwargs)
        return {"status": "ok", "value": encode_value(result)}
    except NotPlainData as exc:
        return {"status": "bad_value", "error": str(exc)}
    except SystemExit as exc:
        return {"status": "exception", "type": "SystemExit", "error": f"SystemExit({exc.code!r})"}
    except MemoryError:
        return {"status": "memory"}
    except BaseException as exc:
        return {"status": "exception", "type": type(exc).__name__, "error": _exc_text(exc, traceback_module)}


def _resolve(ns: dict, instance: object, name: str | None):
    """The callee: a ``Solution`` method when the code defines that class, else the function."""
    if name is None:
        raise NameError("no function name given")
    if instance is not None and hasattr(instance, name):
        return getattr(instance, name)
    if name in ns and callable(ns[name]):
        return ns[name]
    raise NameError(f"name '{name}' is not defined by the solution")


def _exc_text(exc: BaseException, traceback_module) -> str:
    try:
        text = "".join(traceback_module.format_exception(type(exc), exc, exc.__traceback__, limit=-6))
    except BaseException:
        text = f"{type(exc).__name__}"
    return text[-4000:]
