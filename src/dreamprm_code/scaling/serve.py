"""An HTTP scoring service for a PRM: ``POST /score`` -> step scores and their aggregates.

Why a queue: the PRM is much cheaper per candidate in a batch than one at a time, and a service
under load receives many small requests at once. Requests wait in an asyncio queue; a single
worker takes the first one, collects whatever else arrives within ``max_wait_ms`` (up to
``max_batch``), and scores the lot in one call on a worker thread (one at a time, so the model
is never used concurrently), while the event loop keeps accepting and rejecting requests.

Bad requests (malformed JSON, a body over ``max_body`` bytes, missing or mistyped fields) get a
4xx answer with a reason; an exception while scoring answers 500 for that batch only. Either way
the server keeps serving.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from dreamprm_code.errors import UserError
from dreamprm_code.records import Problem, Solution, Step
from dreamprm_code.scaling.select import AGGREGATIONS, aggregate

#: Scores a batch: problems and solutions in the same order -> per-step probabilities of each.
Scorer = Callable[[Sequence[Problem], Sequence[Solution]], list[list[float]]]

MAX_CODE_CHARS = 200_000


class BadRequest(Exception):
    """A client error: answered with ``status`` and ``reason``; the server carries on."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def split_code(code: str) -> list[Step]:
    """Steps of the code as every stage cuts them (decision 1); one step if the splitter is missing."""
    try:
        from dreamprm_code.cof import split_steps
    except ImportError:
        return [Step("module", "module", 0, len(code))]
    return list(split_steps(code))


_ids = itertools.count()


def parse_request(body: Any) -> tuple[Problem, Solution, list[str]]:
    """Check a ``/score`` body and build the records to score; raises :class:`BadRequest`."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    code = body.get("code")
    if code is None:
        raise BadRequest("missing field 'code'", 422)
    if not isinstance(code, str):
        raise BadRequest("field 'code' must be a string", 422)
    if len(code) > MAX_CODE_CHARS:
        raise BadRequest(f"field 'code' is longer than {MAX_CODE_CHARS} characters", 413)
    pid = f"request-{next(_ids)}"
    if "problem" in body:
        prob = body["problem"]
        if isinstance(prob, str):
            statement, extra = prob, {}
        elif isinstance(prob, dict):
            statement = prob.get("statement")
            if not isinstance(statement, str):
                raise BadRequest("field 'problem.statement' is missing or not a string", 422)
            extra = prob
        else:
            raise BadRequest("field 'problem' must be an object or a string", 422)
    elif "statement" in body:
        statement, extra = body["statement"], {}
        if not isinstance(statement, str):
            raise BadRequest("field 'statement' must be a string", 422)
    else:
        raise BadRequest("missing field 'problem' (an object with 'statement') or 'statement'", 422)
    starter = extra.get("starter_code", "")
    if not isinstance(starter, str):
        raise BadRequest("field 'problem.starter_code' must be a string", 422)
    difficulty = extra.get("difficulty", "medium")
    if difficulty not in ("easy", "medium", "hard"):
        raise BadRequest("field 'problem.difficulty' must be easy, medium or hard", 422)
    problem = Problem(
        id=pid,
        title=str(extra.get("title", "")),
        statement=statement,
        platform=str(extra.get("platform", "")),
        difficulty=difficulty,
        tests=[],
        starter_code=starter,
        entry_point=extra.get("entry_point") if isinstance(extra.get("entry_point"), str) else None,
    )
    aggs = body.get("aggregations", list(AGGREGATIONS))
    if not isinstance(aggs, list) or any(a not in AGGREGATIONS for a in aggs):
        raise BadRequest(f"field 'aggregations' must be a list drawn from {list(AGGREGATIONS)}", 422)
    solution = Solution(pid, 0, code, steps=split_code(code))
    return problem, solution, aggs


@dataclass
class _Pending:
    problem: Problem
    solution: Solution
    future: asyncio.Future


@dataclass
class BatchStats:
    """What the batcher did, for the load test and ``GET /stats``."""

    batches: int = 0
    requests: int = 0
    largest: int = 0
    sizes: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        mean = self.requests / self.batches if self.batches else 0.0
        return {"batches": self.batches, "requests": self.requests, "largest": self.largest, "mean_batch": mean}


class Batcher:
    """Collects concurrent requests for a few milliseconds and scores them together."""

    def __init__(self, scorer: Scorer, *, max_batch: int = 16, max_wait_ms: float = 5.0) -> None:
        self.scorer = scorer
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.stats = BatchStats()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="prm")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, problem: Problem, solution: Solution) -> list[float]:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(problem, solution, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            batch = [p for p in batch if not p.future.cancelled()]  # clients that hung up
            if not batch:
                continue
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            try:
                scores = await loop.run_in_executor(
                    self._pool, self.scorer, [p.problem for p in batch], [p.solution for p in batch]
                )
                if len(scores) != len(batch):
                    raise RuntimeError(f"scorer returned {len(scores)} results for {len(batch)} requests")
            except Exception as exc:  # one bad batch must not stop the service
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            for p, s in zip(batch, scores, strict=True):
                if not p.future.done():
                    p.future.set_result(s)


BATCHER = web.AppKey("batcher", Batcher)


def openapi_schema() -> dict[str, Any]:
    """The service's OpenAPI 3 description, served at ``GET /openapi.json``."""
    problem = {
        "type": "object",
        "required": ["statement"],
        "properties": {
            "statement": {"type": "string"},
            "title": {"type": "string"},
            "starter_code": {"type": "string"},
            "platform": {"type": "string"},
            "difficulty": {"type": "string", "enum": ["easy", "medium", "hard"]},
            "entry_point": {"type": "string"},
        },
    }
    request = {
        "type": "object",
        "required": ["code"],
        "properties": {
            "code": {"type": "string", "description": "the candidate program"},
            "problem": {"oneOf": [problem, {"type": "string"}]},
            "statement": {"type": "string", "description": "shorthand for problem.statement"},
            "aggregations": {"type": "array", "items": {"type": "string", "enum": list(AGGREGATIONS)}},
        },
    }
    step = {
        "type": "object",
        "properties": {
            "index": {"type": "integer"},
            "name": {"type": "string"},
            "kind": {"type": "string"},
            "start": {"type": "integer"},
            "end": {"type": "integer"},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }
    response = {
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": step},
            "scores": {"type": "array", "items": {"type": "number"}},
            "aggregates": {"type": "object", "additionalProperties": {"type": "number"}},
            "model": {"type": "string"},
            "latency_ms": {"type": "number"},
        },
    }
    error = {"type": "object", "properties": {"error": {"type": "string"}}}
    err = {"content": {"application/json": {"schema": error}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "dreamprm-code PRM scoring service", "version": "1"},
        "paths": {
            "/score": {
                "post": {
                    "summary": "Score every step (function) of one candidate program",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
                    "responses": {
                        "200": {"description": "step scores", "content": {"application/json": {"schema": response}}},
                        "400": {"description": "malformed JSON", **err},
                        "413": {"description": "body or code too large", **err},
                        "422": {"description": "missing or mistyped field", **err},
                        "500": {"description": "scoring failed", **err},
                    },
                }
            },
            "/health": {"get": {"summary": "liveness", "responses": {"200": {"description": "ok"}}}},
            "/stats": {"get": {"summary": "batching statistics", "responses": {"200": {"description": "stats"}}}},
            "/openapi.json": {"get": {"summary": "this schema", "responses": {"200": {"description": "schema"}}}},
        },
    }


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def make_app(
    scorer: Scorer,
    *,
    model_name: str = "",
    max_body: int = 1 << 20,
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
) -> web.Application:
    """The aiohttp application; bodies over ``max_body`` bytes are refused with 413."""
    batcher = Batcher(scorer, max_batch=max_batch, max_wait_ms=max_wait_ms)

    @web.middleware
    async def errors(request: web.Request, handler):
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body larger than {max_body} bytes")
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, exc.reason)
            raise

    async def score(request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        if request.content_length is not None and request.content_length > max_body:
            return _error(413, f"body larger than {max_body} bytes")
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, f"malformed JSON: {exc}")
        try:
            problem, solution, aggs = parse_request(body)
        except BadRequest as exc:
            return _error(exc.status, exc.reason)
        try:
            scores = await batcher.submit(problem, solution)
        except Exception as exc:
            return _error(500, f"scoring failed: {type(exc).__name__}: {exc}")
        steps = solution.steps or []
        return web.json_response(
            {
                "steps": [
                    {"index": i, "name": st.name, "kind": st.kind, "start": st.start, "end": st.end,
                     "score": scores[i] if i < len(scores) else None}
                    for i, st in enumerate(steps)
                ],
                "scores": scores,
                "aggregates": {a: aggregate(scores, a) for a in aggs} if scores else {},
                "model": model_name,
                "latency_ms": 1000 * (time.perf_counter() - t0),
            }
        )

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": model_name})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(batcher.stats.to_dict())

    async def schema(request: web.Request) -> web.Response:
        return web.json_response(openapi_schema())

    async def on_startup(app: web.Application) -> None:
        batcher.start()

    async def on_cleanup(app: web.Application) -> None:
        await batcher.stop()

    app = web.Application(client_max_size=max_body, middlewares=[errors])
    app[BATCHER] = batcher
    app.router.add_post("/score", score)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    app.router.add_get("/openapi.json", schema)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def prm_scorer(prm: Any, *, batch_tokens: int = 16384) -> Scorer:
    """A :data:`Scorer` over a loaded PRM: one ``score_solutions`` call per batch."""
    from dreamprm_code.prm.score import score_solutions

    def score(problems: Sequence[Problem], solutions: Sequence[Solution]) -> list[list[float]]:
        recs = score_solutions(prm, {p.id: p for p in problems}, solutions, batch_tokens=batch_tokens)
        return [r.scores for r in recs]

    return score


def load_scorer(prm_dir: str | Path, *, device: str | None = None) -> tuple[Scorer, str]:
    """Load a PRM checkpoint directory and wrap it as a scorer; returns (scorer, model name)."""
    path = Path(prm_dir)
    if not path.is_dir():
        raise UserError("PRM checkpoint directory not found", path=path)
    from dreamprm_code.prm import load_prm  # type: ignore[attr-defined]

    prm = load_prm(path) if device is None else load_prm(path, device=device)
    return prm_scorer(prm), str(getattr(prm, "spec", {}).get("name", path.name))


def serve(
    prm_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
    max_body: int = 1 << 20,
) -> None:
    """Load the PRM and serve it until interrupted."""
    scorer, name = load_scorer(prm_dir)
    app = make_app(scorer, model_name=name, max_body=max_body, max_batch=max_batch, max_wait_ms=max_wait_ms)
    web.run_app(app, host=host, port=port, print=None)


class ServerThread:
    """Runs an app on ``host`` (a free port when ``port`` is 0) in a background thread.

    For tests and the load benchmark: a real server on 127.0.0.1 that a client reaches over TCP.
    """

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        import threading

        self.app = app
        self.host = host
        self.port = port
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="prm-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _main(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the port the OS gave for port 0

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
