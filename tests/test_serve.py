"""The PRM scoring service, as a real server on 127.0.0.1: scores, batching, bad requests."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from dreamprm_code.scaling.serve import ServerThread, make_app, openapi_schema, prm_scorer

CODE = '''def main():
    """Read n, print the sum."""
    n = int(input())
    print(solve(n))


def solve(n):
    """Closed form."""
    return n * (n + 1) // 2


main()
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


def test_score_and_schema():
    scorer = RecordingScorer()
    with ServerThread(make_app(scorer, model_name="fake")) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/score", json={"statement": "sum 1..n", "code": CODE})
        assert r.status_code == 200, r.text
        data = r.json()
        assert [s["name"] for s in data["steps"]] == ["main", "solve"]
        assert data["steps"][1]["start"] == data["steps"][0]["end"]
        assert data["steps"][-1]["end"] == len(CODE)
        assert data["aggregates"]["min"] == pytest.approx(min(data["scores"]))
        assert data["aggregates"]["last"] == pytest.approx(data["scores"][-1])
        assert data["model"] == "fake"
        r = c.post("/score", json={"problem": {"statement": "x", "difficulty": "hard"}, "code": CODE,
                                   "aggregations": ["mean"]})
        assert r.status_code == 200 and list(r.json()["aggregates"]) == ["mean"]
        schema = c.get("/openapi.json").json()
        assert schema == openapi_schema()
        assert "/score" in schema["paths"] and schema["openapi"].startswith("3.")
        assert c.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"statement": "x"}', 422, "missing field 'code'"),
        (b'{"code": 5, "statement": "x"}', 422, "'code' must be a string"),
        (b'{"code": "x = 1"}', 422, "missing field 'problem'"),
        (b'{"code": "x = 1", "problem": {"title": "t"}}', 422, "problem.statement"),
        (b'{"code": "x", "statement": "s", "aggregations": ["median"]}', 422, "aggregations"),
        (b'{"code": "x", "statement": "' + b"a" * 5000 + b'"}', 413, "larger than"),
    ],
)
def test_bad_requests_get_4xx_and_server_keeps_serving(body, status, reason):
    with ServerThread(make_app(RecordingScorer(), max_body=4096)) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/score", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert reason in r.json()["error"]
        ok = c.post("/score", json={"statement": "s", "code": CODE})
        assert ok.status_code == 200


def test_scorer_failure_is_500_for_that_batch_only():
    scorer = RecordingScorer(fail_on="BOOM")
    app = make_app(scorer, max_wait_ms=0)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/score", json={"statement": "BOOM", "code": CODE})
        assert r.status_code == 500 and "scorer exploded" in r.json()["error"]
        assert c.post("/score", json={"statement": "fine", "code": CODE}).status_code == 200


def test_concurrent_requests_are_batched():
    scorer = RecordingScorer()
    app = make_app(scorer, max_batch=8, max_wait_ms=50)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:

        def one(i: int) -> dict:
            r = c.post("/score", json={"statement": f"problem {i}", "code": CODE + "\n" * (i % 3)})
            assert r.status_code == 200
            return r.json()

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(32)))
        stats = c.get("/stats").json()
    assert stats["requests"] == 32
    assert stats["largest"] > 1  # requests arriving together were scored together
    assert sum(scorer.batches) == 32 and len(scorer.batches) < 32
    # Each answer is that request's own scores.
    assert all(len(r["scores"]) == 2 for r in results)


@pytest.mark.slow
def test_real_tiny_prm_over_http():
    from dreamprm_code.prm.model import wrap_backbone
    from tiny_models import tiny_backbone, tiny_tokenizer

    tok = tiny_tokenizer()
    prm, _ = wrap_backbone(tiny_backbone(tok), tok, lora_r=0)
    prm.attach_format(tok, 512)
    with ServerThread(make_app(prm_scorer(prm))) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/score", json={"statement": "sum 1..n", "code": CODE})
        assert r.status_code == 200, r.text
        scores = r.json()["scores"]
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
