"""The PRM reward service, as a real uvicorn server on 127.0.0.1: batches, OpenRLHF, limits, auth."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from dreamprm_code.data import extract_code
from dreamprm_code.prm.score import prm_scorer
from dreamprm_code.serve.service import TOKEN_ENV, ServerThread, make_app

CODE = '''def main():
    """Read n, print the sum."""
    n = int(input())
    print(solve(n))


def solve(n):
    """Closed form."""
    return n * (n + 1) // 2


main()
'''

OTHER = '''def solve(a, b):
    return a + b


print(solve(*map(int, input().split())))
'''


class RecordingScorer:
    """Scores a step by the share of its text that is the letter 'n'; records batch sizes."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[int] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, problems, solutions):
        with self.lock:
            self.batches.append(len(solutions))
        out = []
        for p, s in zip(problems, solutions, strict=True):
            if self.fail_on and self.fail_on in p.statement:
                raise RuntimeError("scorer exploded")
            out.append([s.code[st.start : st.end].count("n") / max(1, st.end - st.start) for st in s.steps])
        return out


def expected(code: str) -> list[float]:
    from dreamprm_code.cof import split_steps

    return [code[st.start : st.end].count("n") / max(1, st.end - st.start) for st in split_steps(code)]


def test_openapi_schema_has_the_endpoints_and_models():
    with ServerThread(make_app(RecordingScorer(), token="t")) as srv, httpx.Client(base_url=srv.url) as c:
        schema = c.get("/openapi.json").json()
        docs = c.get("/docs")
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    assert set(paths) >= {"/score", "/get_reward", "/health", "/ready", "/stats"}
    assert "post" in paths["/score"] and "post" in paths["/get_reward"] and "get" in paths["/ready"]
    models = schema["components"]["schemas"]
    for name in ("ScoreRequest", "Candidate", "ProblemIn", "ScoreResponse", "CandidateScores", "StepScore",
                 "RewardRequest", "RewardResponse", "Ready", "ErrorBody"):
        assert name in models, name
    assert models["RewardRequest"]["required"] == ["query"]
    assert set(models["RewardRequest"]["properties"]) == {"query", "prompts", "labels"}
    assert set(models["RewardResponse"]["properties"]) >= {"rewards", "scores", "extra_logs"}
    assert models["Candidate"]["properties"]["code"]["maxLength"] == 200_000
    score = paths["/score"]["post"]
    assert score["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ScoreRequest")
    assert {"200", "400", "401", "413", "422", "500", "503"} <= set(score["responses"])
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_batch_scoring_per_step_and_aggregates():
    scorer = RecordingScorer()
    with ServerThread(make_app(scorer, model_name="fake")) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/score", json={
            "problem": {"statement": "sum 1..n", "difficulty": "hard"},
            "candidates": [{"code": CODE}, {"code": OTHER, "problem": "add two numbers"}, {"code": CODE}],
        })
        assert r.status_code == 200, r.text
        data = r.json()
        r = c.post("/score", json={"problem": "x", "candidates": [{"code": CODE}], "aggregations": ["mean"]})
        assert r.status_code == 200 and list(r.json()["results"][0]["aggregates"]) == ["mean"]
    assert data["model"] == "fake" and len(data["results"]) == 3
    first, second, third = data["results"]
    assert [s["name"] for s in first["steps"]] == ["main", "solve"]
    assert first["steps"][1]["start"] == first["steps"][0]["end"] and first["steps"][-1]["end"] == len(CODE)
    assert first["scores"] == pytest.approx(expected(CODE)) and third["scores"] == first["scores"]
    assert second["scores"] == pytest.approx(expected(OTHER))
    assert first["aggregates"]["min"] == pytest.approx(min(first["scores"]))
    assert first["aggregates"]["last"] == pytest.approx(first["scores"][-1])
    assert set(first["aggregates"]) == {"min", "mean", "last", "product", "logodds"}
    assert scorer.batches == [3, 1]  # the three candidates of one request went in one scorer call


def test_openrlhf_get_reward_contract():
    """What OpenRLHF's remote_rm_fn sends (query = prompt + response, prompts, labels) -> rewards."""
    prompt = "<|user|>Sum 1..n<|assistant|>"
    queries = [
        prompt + "Here:\n```python\n" + CODE + "```\n",
        prompt + "  \n",
        "Add:\n```python\n" + OTHER + "```",
    ]
    with ServerThread(make_app(RecordingScorer(), empty_reward=-1.0)) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/get_reward", json={"query": queries, "prompts": [prompt, prompt, "Add:"], "labels": ["", "", ""]})
        assert r.status_code == 200, r.text
        data = r.json()
        bad = c.post("/get_reward", json={"query": queries, "prompts": [prompt]})
        only_query = c.post("/get_reward", json={"query": queries[:1]})
    code = extract_code(queries[0])  # what the service scores: the fenced code, without its last newline
    assert data["rewards"] == pytest.approx([min(expected(code)), -1.0, min(expected(OTHER.strip()))])
    assert data["scores"] == data["rewards"]
    assert data["extra_logs"]["prm_steps"] == [2.0, 0.0, float(len(expected(OTHER)))]
    assert data["extra_logs"]["prm_mean"][0] == pytest.approx(sum(expected(code)) / 2)
    assert bad.status_code == 422 and "'prompts' has 1 items for 3 queries" in bad.json()["error"]
    assert only_query.status_code == 200 and only_query.json()["rewards"] == pytest.approx([min(expected(code))])


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"[1, 2]", 422, "valid dictionary"),
        (b'{"problem": "x"}', 422, "field 'candidates': Field required"),
        (b'{"problem": "x", "candidates": []}', 422, "field 'candidates'"),
        (b'{"problem": "x", "candidates": [{"code": 5}]}', 422, "field 'candidates.0.code'"),
        (b'{"candidates": [{"code": "x = 1"}]}', 422, "no 'problem'"),
        (b'{"candidates": [{"code": "x", "problem": {"title": "t"}}]}', 422, "statement"),
        (b'{"problem": "s", "candidates": [{"code": "x"}], "aggregations": ["median"]}', 422, "aggregations.0"),
        (b'{"problem": "s", "candidates": [{"code": "' + b"a" * 5000 + b'"}]}', 413, "larger than 4096"),
        (b'{"problem": "s", "candidates": [' + b",".join([b'{"code": "x"}'] * 9) + b"]}", 413, "limit is 8"),
    ],
)
def test_bad_requests_get_4xx_with_a_message_and_server_keeps_serving(body, status, message):
    app = make_app(RecordingScorer(), max_body=4096, max_candidates=8)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/score", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert message in r.json()["error"]
        ok = c.post("/score", json={"problem": "s", "candidates": [{"code": CODE}]})
        assert ok.status_code == 200


def test_chunked_body_without_length_is_bounded():
    def chunks():
        yield b'{"problem": "s", "candidates": [{"code": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}]}'

    with ServerThread(make_app(RecordingScorer(), max_body=4096)) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/score", content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in {k.lower() for k in r.request.headers}
        assert r.status_code == 413 and "larger than 4096" in r.json()["error"]


def test_bearer_token(monkeypatch):
    body = {"problem": "s", "candidates": [{"code": CODE}]}
    with ServerThread(make_app(RecordingScorer(), token="s3cret")) as srv, httpx.Client(base_url=srv.url) as c:
        assert c.post("/score", json=body).status_code == 401
        wrong = c.post("/score", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "bearer token" in wrong.json()["error"]
        assert c.post("/get_reward", json={"query": ["x"]}).status_code == 401
        assert c.post("/score", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200


def test_readiness_while_the_model_loads_and_when_loading_fails():
    gate = threading.Event()

    def load():
        gate.wait(30)
        return RecordingScorer(), "late-model"

    body = {"problem": "s", "candidates": [{"code": CODE}]}
    with ServerThread(make_app(load=load)) as srv, httpx.Client(base_url=srv.url) as c:
        assert c.get("/health").json() == {"status": "ok"}
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["ready"] is False
        busy = c.post("/score", json=body)
        assert busy.status_code == 503 and "still loading" in busy.json()["error"] and busy.headers["retry-after"]
        gate.set()
        for _ in range(200):
            r = c.get("/ready")
            if r.status_code == 200:
                break
            threading.Event().wait(0.02)
        assert r.status_code == 200 and r.json() == {"ready": True, "model": "late-model", "error": None}
        assert c.post("/score", json=body).json()["model"] == "late-model"

    def broken():
        raise OSError("no such checkpoint")

    with ServerThread(make_app(load=broken)) as srv, httpx.Client(base_url=srv.url) as c:
        for _ in range(200):
            r = c.get("/ready")
            if r.json()["error"]:
                break
            threading.Event().wait(0.02)
        assert r.status_code == 503 and "no such checkpoint" in r.json()["error"]
        assert "no such checkpoint" in c.post("/score", json=body).json()["error"]


def test_scorer_failure_is_500_for_that_batch_only():
    scorer = RecordingScorer(fail_on="BOOM")
    with ServerThread(make_app(scorer, max_wait_ms=0)) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/score", json={"problem": "BOOM", "candidates": [{"code": CODE}]})
        assert r.status_code == 500 and "scorer exploded" in r.json()["error"]
        assert c.post("/score", json={"problem": "fine", "candidates": [{"code": CODE}]}).status_code == 200


def test_concurrent_requests_are_batched_together():
    scorer = RecordingScorer()
    app = make_app(scorer, max_batch=8, max_wait_ms=50)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:

        def one(i: int) -> dict:
            code = CODE + "\n" * (i % 3)
            r = c.post("/score", json={"problem": f"problem {i}", "candidates": [{"code": code}]})
            assert r.status_code == 200
            return r.json()["results"][0]["scores"] == pytest.approx(expected(code))

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(32)))
        stats = c.get("/stats").json()
    assert stats["candidates"] == 32 and stats["largest"] > 1  # requests arriving together scored together
    assert sum(scorer.batches) == 32 and len(scorer.batches) < 32 and max(scorer.batches) <= 8
    assert all(results)  # each answer is that request's own scores


def test_serve_reads_the_token_from_the_environment(monkeypatch, tmp_path):
    """``serve`` refuses a missing checkpoint before starting and takes the token from the env."""
    from dreamprm_code.errors import UserError
    from dreamprm_code.serve import service as serve_mod

    with pytest.raises(UserError, match="not found"):
        serve_mod.serve(tmp_path / "missing")
    seen = {}
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: seen.update(app=app, **kw))
    real = serve_mod.make_app
    monkeypatch.setattr(serve_mod, "make_app", lambda **kw: seen.update(kw) or real(**kw))
    serve_mod.serve(tmp_path, port=9)
    assert seen["token"] == "from-env" and seen["port"] == 9 and seen["host"] == "127.0.0.1"


@pytest.mark.slow
def test_real_tiny_prm_over_http():
    from dreamprm_code.prm.model import wrap_backbone
    from tiny_models import tiny_backbone, tiny_tokenizer

    tok = tiny_tokenizer()
    prm, _ = wrap_backbone(tiny_backbone(tok), tok, lora_r=0)
    prm.attach_format(tok, 512)
    app = make_app(prm_scorer(prm), max_batch=4)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        batch = c.post("/score", json={"problem": "sum 1..n", "candidates": [{"code": CODE}, {"code": OTHER}]})
        assert batch.status_code == 200, batch.text
        alone = c.post("/score", json={"problem": "sum 1..n", "candidates": [{"code": OTHER}]}).json()
        query = "sum 1..n\n```python\n" + CODE + "```"
        reward = c.post("/get_reward", json={"query": [query], "prompts": ["sum 1..n\n"]})
        direct = c.post("/score", json={"problem": "sum 1..n\n", "candidates": [{"code": extract_code(query)}]})
    first, second = batch.json()["results"]
    assert len(first["scores"]) == 2 and all(0.0 <= s <= 1.0 for s in first["scores"] + second["scores"])
    # batching with another candidate does not change a candidate's scores
    assert second["scores"] == pytest.approx(alone["results"][0]["scores"], abs=1e-4)
    assert reward.json()["rewards"] == pytest.approx([direct.json()["results"][0]["aggregates"]["min"]], abs=1e-4)
