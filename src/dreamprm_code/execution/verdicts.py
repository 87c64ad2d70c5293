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
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from types import CodeType
from typing import Any

from dreamprm_code.errors import UserError
from dreamprm_code.execution.bound import BoundMode, describe, detect_bound
from dreamprm_code.execution.calls import (
    TRIM,
    CallSession,
    CandidateFailure,
    Mispredicted,
    Proxy,
    SandboxFailure,
    planned_calls,
    tail,
    worker_died,
)
from dreamprm_code.execution.limits import MARGIN, Limits
from dreamprm_code.execution.sandbox import SandboxMode, SandboxWorker, WorkerDied, detect_sandbox
from dreamprm_code.execution.worker.codec import to_json_value
from dreamprm_code.execution.worker.compare import compare_return, compare_stdout, stripped_lines
from dreamprm_code.execution.worker.harness import LCB_PRELUDE
from dreamprm_code.execution.worker.messages import Reply, StdinRequest
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


def _trim(text: Any, n: int = TRIM) -> str:
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, default=repr)
    return s if len(s) <= n else s[: n // 2] + f"...[{len(s) - n} chars]..." + s[-n // 2 :]


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
# Assert tests: trusted code in the host, the candidate behind proxies (see calls.py).


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
        reply = worker_died(exc)
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
        return _Outcome(TestResult(COMPILE_ERROR, t, error=tail(stderr)), "<compile_error>")
    if status == "timeout":
        return _Outcome(TestResult(TIME_LIMIT, t, error="time limit exceeded"), "<time_limit>")
    if status == "memory":
        return _Outcome(TestResult(MEMORY_LIMIT, t, error="memory limit exceeded"), "<memory_limit>")
    if status == "output_limit":
        return _Outcome(TestResult(WRONG_ANSWER, t, output=_trim(stdout), expected=_trim(expected_text(test)),
                                   error=f"output limit exceeded ({limits.output_mb} MB)"), "<output_limit>")
    if status == "exception":
        name = _exc_name(stderr)
        return _Outcome(TestResult(RUNTIME_ERROR, t, output=_trim(stdout) or None, error=tail(stderr)), f"<{name}>")
    return _Outcome(TestResult(RUNTIME_ERROR, t, error=tail(str(reply.get("error") or status))), "<crash>")


def _functional_test(session: CallSession, entry: str, test: TestCase, compare: bool) -> _Outcome:
    args = test.input if isinstance(test.input, list) else [] if test.input is None else [test.input]
    session.deadline = time.monotonic() + session.limits.timeout
    session.last_time = 0.0
    try:
        value = session.call(entry, list(args), dict(test.kwargs or {}))
    except CandidateFailure as exc:
        name = type(exc).__name__.removeprefix("Candidate") if type(exc) is not CandidateFailure else exc.status
        return _Outcome(TestResult(exc.status, session.last_time, error=tail(str(exc))), f"<{name}>")
    canonical = json.dumps(to_json_value(value), sort_keys=True, ensure_ascii=False)
    if not compare or compare_return(value, test.output):
        return _Outcome(TestResult(PASS, session.last_time), canonical)
    return _Outcome(TestResult(WRONG_ANSWER, session.last_time, output=_trim(canonical),
                               expected=_trim(test.output)), canonical)


def _assert_test(session: CallSession, problem: Problem, test: TestCase, limits: Limits, plan: bool = False,
                 canonical: bool = True) -> _Outcome:
    """Run trusted test code here; the entry point and the code's functions are proxies.

    ``plan``: send the calls the test code will make (:func:`planned_calls`) ahead, as one
    batch; only where the run stops at this test if it fails, so a failed test's unused
    replies are never read by a later one. ``canonical``: also give the calls' values as
    JSON (for :meth:`Executor.run_outputs`; a verdict does not need it)."""
    start = time.monotonic()
    session.deadline = start + limits.timeout
    session.values = []
    planned = planned_calls(test.code or "", problem.entry_point) if plan and problem.entry_point else ()
    session.begin_test(planned)
    try:
        ns = _check_namespace() if limits.lcb_prelude else {"__name__": "__check__", "__builtins__": builtins}
        if problem.setup_code:
            exec(_compiled(problem.setup_code, "<setup>"), ns)
        for name in session.names:
            ns[name] = Proxy(session, name)
        entry = problem.entry_point
        if entry:
            ns[entry] = ns["candidate"] = Proxy(session, entry)
        code = test.code or ""
        exec(_compiled(code, "<test>"), ns)
        if callable(ns.get("check")) and not _calls_check(code):
            ns["check"](ns.get("candidate"))
        session.end_test()
        status, error = PASS, None
    except CandidateFailure as exc:
        status, error = exc.status, tail(str(exc))
    except SandboxFailure:
        raise  # the sandbox failed, not the candidate: retried on a fresh worker
    except AssertionError as exc:
        status, error = WRONG_ANSWER, _assert_text(exc, test.code or "")
    except Exception as exc:  # the test code failed on what the candidate returned
        status, error = RUNTIME_ERROR, f"{type(exc).__name__}: {tail(str(exc))}"
    if session.mispredicted:
        raise Mispredicted
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
        except Mispredicted:
            pass
    return _run_tests_once(worker, problem, code, tests, limits, compare, plan=False)


def _run_tests_once(worker: SandboxWorker, problem: Problem, code: str, tests: list[TestCase], limits: Limits,
                    compare: bool, plan: bool) -> tuple[ExecResult, list[str]]:
    start = time.monotonic()
    results: list[TestResult] = []
    canon: list[str] = []
    session: CallSession | None = None
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
                    ahead = planned_calls(test.code or "", problem.entry_point) \
                        if plan and test.kind == "assert" and problem.entry_point else ()
                    session = CallSession(worker, code, problem.setup_code, limits, n_calls, ahead)
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


def _tree_memory(worker: SandboxWorker, killed: int, out: _Outcome, session: CallSession | None) -> tuple[_Outcome, int]:
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
    error = tail(str(reply.get("error") or status))
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
