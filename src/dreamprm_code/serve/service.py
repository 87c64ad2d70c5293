"""A PRM reward service for RL trainers and tools (FastAPI + uvicorn).

``POST /score`` scores many candidates per request (per-step scores and their aggregates);
``POST /get_reward`` speaks OpenRLHF's remote reward model contract (``--remote_rm_url``:
``{"query": [...], "prompts": [...], "labels": [...]}`` -> ``{"rewards": [...], ...}``);
``GET /health`` is liveness, ``GET /ready`` readiness (the model is loaded), ``GET /docs`` and
``GET /openapi.json`` are generated from the pydantic models below.

Why a queue: the PRM is much cheaper per candidate in a batch than one at a time, and a service
under load receives many requests at once. Candidates wait in an asyncio queue; one worker takes
the first, collects whatever else arrives within ``max_wait_ms`` (up to ``max_batch``), and scores
the lot in one call on a worker thread (one at a time, so the model is never used concurrently),
while the event loop keeps accepting and rejecting requests.

Bad requests get a 4xx with an ``error`` message (400 malformed JSON, 401 missing or wrong bearer
token, 413 body or batch too large, 422 a missing or mistyped field); an exception while scoring
answers 500 for that batch only. Either way the server keeps serving.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dreamprm_code.cof import split_steps
from dreamprm_code.errors import UserError
from dreamprm_code.records import Problem, Solution
from dreamprm_code.scaling.select import AGGREGATIONS, Aggregation, aggregate

if TYPE_CHECKING:
    from dreamprm_code.prm.score import Scorer

log = logging.getLogger(__name__)

#: The environment variable read for the bearer token when ``--token`` is not given.
TOKEN_ENV = "DREAMPRM_SERVE_TOKEN"
MAX_CODE_CHARS = 200_000


# ----------------------------------------------------------------------------- the contract
class ProblemIn(BaseModel):
    """The problem a candidate answers; only ``statement`` is required."""

    model_config = ConfigDict(extra="ignore")
    statement: str
    title: str = ""
    starter_code: str = ""
    platform: str = ""
    difficulty: Literal["easy", "medium", "hard"] = "medium"
    entry_point: str | None = None


class Candidate(BaseModel):
    """One program to score, with its problem unless the request gives one for all."""

    code: str = Field(max_length=MAX_CODE_CHARS, description="the candidate program")
    problem: ProblemIn | str | None = Field(None, description="the problem, or just its statement")


class ScoreRequest(BaseModel):
    """Many candidates in one request; ``problem`` is the default for candidates without one."""

    candidates: list[Candidate] = Field(min_length=1)
    problem: ProblemIn | str | None = Field(None, description="default problem for every candidate")
    aggregations: list[Aggregation] = Field(default_factory=lambda: list(AGGREGATIONS))

    @model_validator(mode="after")
    def _every_candidate_has_a_problem(self) -> ScoreRequest:
        if self.problem is None:
            missing = [i for i, c in enumerate(self.candidates) if c.problem is None]
            if missing:
                raise ValueError(
                    f"candidates {missing[:5]} have no 'problem' and the request gives no default 'problem'"
                )
        return self


class StepScore(BaseModel):
    index: int
    name: str
    kind: str
    start: int = Field(description="character offset of the step in the code")
    end: int
    score: float = Field(ge=0.0, le=1.0, description="probability that the program is still correct")


class CandidateScores(BaseModel):
    steps: list[StepScore]
    scores: list[float] = Field(description="the step scores alone, in order")
    aggregates: dict[str, float] = Field(description="one number per requested aggregation; {} without steps")


class ScoreResponse(BaseModel):
    results: list[CandidateScores] = Field(description="one per candidate, in request order")
    model: str
    latency_ms: float


class RewardRequest(BaseModel):
    """OpenRLHF's remote reward model request (``remote_rm_fn``)."""

    query: list[str] = Field(min_length=1, description="prompt + response, as the trainer renders them")
    prompts: list[str] | None = Field(None, description="the prompt of each query; cut off to get the response")
    labels: list[Any] | None = Field(None, description="accepted and ignored (OpenRLHF sends --label_key)")

    @model_validator(mode="after")
    def _same_lengths(self) -> RewardRequest:
        for name in ("prompts", "labels"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.query):
                raise ValueError(f"'{name}' has {len(value)} items for {len(self.query)} queries")
        return self


class RewardResponse(BaseModel):
    rewards: list[float] = Field(description="the reward of each query (its PRM aggregate)")
    scores: list[float] = Field(description="the same numbers, for OpenRLHF's dynamic filtering")
    extra_logs: dict[str, list[float]] = Field(description="per-query figures a trainer may log")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    ready: bool
    model: str
    error: str | None = None


class Stats(BaseModel):
    batches: int
    candidates: int
    largest: int
    mean_batch: float


class ErrorBody(BaseModel):
    error: str


# ----------------------------------------------------------------------------- batching
@dataclass
class _Pending:
    problem: Problem
    solution: Solution
    future: asyncio.Future


class Batcher:
    """Collects concurrently submitted candidates for a few milliseconds and scores them together."""

    def __init__(self, scorer: Scorer, *, max_batch: int = 16, max_wait_ms: float = 5.0) -> None:
        self.scorer = scorer
        self.max_batch = max(1, max_batch)
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.stats = Stats(batches=0, candidates=0, largest=0, mean_batch=0.0)
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

    async def submit(self, pairs: Sequence[tuple[Problem, Solution]]) -> list[list[float]]:
        """Step scores of every (problem, solution), in order; they may share batches with others."""
        loop = asyncio.get_running_loop()
        futures = []
        for problem, solution in pairs:
            fut = loop.create_future()
            self.queue.put_nowait(_Pending(problem, solution, fut))
            futures.append(fut)
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            batch = [p for p in batch if not p.future.done()]  # clients that hung up
            if not batch:
                continue
            s = self.stats
            s.batches += 1
            s.candidates += len(batch)
            s.largest = max(s.largest, len(batch))
            s.mean_batch = s.candidates / s.batches
            try:
                scores = await loop.run_in_executor(
                    self._pool, self.scorer, [p.problem for p in batch], [p.solution for p in batch]
                )
                if len(scores) != len(batch):
                    raise RuntimeError(f"scorer returned {len(scores)} results for {len(batch)} candidates")
            except Exception as exc:  # one bad batch must not stop the service
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            for p, sc in zip(batch, scores, strict=True):
                if not p.future.done():
                    p.future.set_result(sc)


# ----------------------------------------------------------------------------- app
_ids = itertools.count()


def _problem(given: ProblemIn | str) -> Problem:
    p = ProblemIn(statement=given) if isinstance(given, str) else given
    return Problem(
        id=f"request-{next(_ids)}",
        title=p.title,
        statement=p.statement,
        platform=p.platform,
        difficulty=p.difficulty,
        tests=[],
        starter_code=p.starter_code,
        entry_point=p.entry_point,
    )


def _solution(problem: Problem, code: str) -> Solution:
    return Solution(problem.id, 0, code, steps=split_steps(code))


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        return 400, f"malformed JSON: {detail.get('ctx', {}).get('error', detail.get('msg'))}"
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"field '{loc}': {e.get('msg')}" if loc else str(e.get("msg")))
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "; ".join(parts) + more


class _BodyLimit:
    """ASGI middleware: a request body over ``max_body`` bytes is answered 413 before any parsing.

    Counts the bytes as they arrive, so a chunked body without ``Content-Length`` is bounded too.
    """

    def __init__(self, app: Any, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = _error(413, f"body larger than {self.max_body} bytes")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await too_big(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await too_big(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": what}
    for code, what in [
        (400, "malformed JSON"),
        (401, "missing or wrong bearer token"),
        (413, "body or batch too large"),
        (422, "missing or mistyped field"),
        (500, "scoring failed"),
        (503, "the model is still loading"),
    ]
}


def make_app(
    scorer: Scorer | None = None,
    *,
    load: Callable[[], tuple[Scorer, str]] | None = None,
    model_name: str = "",
    token: str | None = None,
    max_body: int = 1 << 20,
    max_candidates: int = 256,
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
    reward_aggregation: str = "min",
    empty_reward: float = 0.0,
) -> FastAPI:
    """The service. Give a ``scorer``, or ``load`` to load one in the background (``/ready`` says when).

    ``token``: when set, scoring endpoints need ``Authorization: Bearer TOKEN``; ``/health``,
    ``/ready`` and the docs stay open. ``reward_aggregation`` turns step scores into one reward
    for ``/get_reward``; a response with no code in it gets ``empty_reward``.
    """
    if (scorer is None) == (load is None):
        raise ValueError("give exactly one of scorer and load")
    if reward_aggregation not in AGGREGATIONS:
        raise UserError(f"unknown aggregation {reward_aggregation!r}; choose from {', '.join(AGGREGATIONS)}")
    state: dict[str, Any] = {"batcher": None, "model": model_name, "error": None}

    def start(sc: Scorer, name: str) -> None:
        batcher = Batcher(sc, max_batch=max_batch, max_wait_ms=max_wait_ms)
        batcher.start()
        state["batcher"], state["model"] = batcher, name or state["model"]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader: asyncio.Future | None = None
        if scorer is not None:
            start(scorer, model_name)
        else:

            async def background() -> None:
                try:
                    sc, name = await asyncio.to_thread(load)
                except Exception as exc:  # reported by /ready; the process stays up to say so
                    log.exception("loading the PRM failed")
                    state["error"] = f"{type(exc).__name__}: {exc}"
                    return
                start(sc, name)

            loader = asyncio.ensure_future(background())
        yield
        if loader is not None:
            loader.cancel()
        if state["batcher"] is not None:
            await state["batcher"].stop()

    app = FastAPI(
        title="dreamprm-code PRM reward service",
        version="2",
        summary="Per-step scores of candidate programs, and OpenRLHF-style rewards",
        lifespan=lifespan,
    )
    bearer = HTTPBearer(auto_error=False, description=f"needed when the server has a token (--token or ${TOKEN_ENV})")

    def authorize(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token and (cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode())):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def batcher() -> Batcher:
        if state["batcher"] is None:
            why = state["error"] or "the model is still loading"
            raise HTTPException(503, f"not ready: {why}", headers={"Retry-After": "5"})
        return state["batcher"]

    def check_count(n: int) -> None:
        if n > max_candidates:
            raise HTTPException(413, f"{n} candidates in one request; the limit is {max_candidates}")

    async def run(pairs: list[tuple[Problem, Solution]]) -> list[list[float]]:
        try:
            return await batcher().submit(pairs)
        except HTTPException:
            raise
        except Exception as exc:
            raise HTTPException(500, f"scoring failed: {type(exc).__name__}: {exc}") from exc

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_input(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        return _error(status, message)

    @app.post("/score", response_model=ScoreResponse, responses=_ERRORS, dependencies=[Depends(authorize)])
    async def score(body: ScoreRequest) -> ScoreResponse:
        """Score every step (function) of each candidate program."""
        t0 = time.perf_counter()
        check_count(len(body.candidates))
        pairs = []
        for c in body.candidates:
            problem = _problem(c.problem if c.problem is not None else body.problem)
            pairs.append((problem, _solution(problem, c.code)))
        all_scores = await run(pairs)
        results = []
        for (_, solution), scores in zip(pairs, all_scores, strict=True):
            steps = [
                StepScore(index=i, name=st.name, kind=st.kind, start=st.start, end=st.end, score=s)
                for i, (st, s) in enumerate(zip(solution.steps or [], scores, strict=False))
            ]
            aggregates = {a: aggregate(scores, a) for a in body.aggregations} if scores else {}
            results.append(CandidateScores(steps=steps, scores=scores, aggregates=aggregates))
        return ScoreResponse(results=results, model=state["model"], latency_ms=1000 * (time.perf_counter() - t0))

    @app.post("/get_reward", response_model=RewardResponse, responses=_ERRORS, dependencies=[Depends(authorize)])
    async def get_reward(body: RewardRequest) -> RewardResponse:
        """OpenRLHF's remote reward model: one reward per query (the PRM aggregate of its code).

        The response is the query after its prompt; its code is what :func:`extract_code` finds
        there, and the prompt is the problem statement.
        """
        from dreamprm_code.data import extract_code

        check_count(len(body.query))
        prompts = body.prompts or [""] * len(body.query)
        pairs, has_code = [], []
        for query, prompt in zip(body.query, prompts, strict=True):
            response = query[len(prompt) :] if prompt and query.startswith(prompt) else query
            code = extract_code(response)
            if len(code) > MAX_CODE_CHARS:
                raise HTTPException(413, f"a response has {len(code)} characters of code; the limit is {MAX_CODE_CHARS}")
            problem = _problem(prompt)
            solution = _solution(problem, code)
            has_code.append(bool(code.strip()) and bool(solution.steps))
            if has_code[-1]:
                pairs.append((problem, solution))
        scored = iter(await run(pairs))
        rewards, steps, mins, means = [], [], [], []
        for ok in has_code:
            s = next(scored) if ok else []
            rewards.append(aggregate(s, reward_aggregation) if s else empty_reward)
            mins.append(aggregate(s, "min") if s else empty_reward)
            means.append(aggregate(s, "mean") if s else empty_reward)
            steps.append(float(len(s)))
        return RewardResponse(
            rewards=rewards, scores=rewards, extra_logs={"prm_min": mins, "prm_mean": means, "prm_steps": steps}
        )

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        """Liveness: the process answers."""
        return Health()

    @app.get("/ready", response_model=Ready, responses={503: {"model": Ready, "description": "not ready"}})
    async def ready() -> JSONResponse:
        """Readiness: the model is loaded and requests are being scored (503 until then)."""
        ok = state["batcher"] is not None
        body = Ready(ready=ok, model=state["model"], error=state["error"])
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.get("/stats", response_model=Stats, dependencies=[Depends(authorize)])
    async def stats() -> Stats:
        """Batching counters: scorer calls, candidates scored, largest and mean batch."""
        return batcher().stats

    app.add_middleware(_BodyLimit, max_body=max_body)
    return app


def serve(
    prm_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    **options: Any,
) -> None:
    """Serve the PRM until interrupted; it loads in the background while ``/ready`` answers 503.

    ``token`` defaults to ``$DREAMPRM_SERVE_TOKEN``; ``options`` go to :func:`make_app`.
    """
    import uvicorn

    path = Path(prm_dir)
    if not path.is_dir():
        raise UserError("PRM checkpoint directory not found", path=path)
    token = token or os.environ.get(TOKEN_ENV) or None
    from dreamprm_code.prm.score import load_scorer

    app = make_app(load=lambda: load_scorer(path), model_name=path.name, token=token, **options)
    uvicorn.run(app, host=host, port=port, log_level="info")


class ServerThread:
    """Runs an app with uvicorn on ``host`` (a free port when ``port`` is 0) in a background thread.

    For an RL script that scores in-process over HTTP, the tests and the load benchmark: a real
    server on 127.0.0.1 that a client reaches over TCP.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.host = host
        self.port = port
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="prm-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.host}:{self.port} did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]  # the port the OS gave for 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(30)
