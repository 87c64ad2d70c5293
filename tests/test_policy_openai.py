"""The OpenAI-compatible backend (the ``openai`` SDK) against a real HTTP server on 127.0.0.1 that each test scripts."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dreamprm_code.errors import UserError
from dreamprm_code.policy import Prompt, SamplingParams, load_policy
from dreamprm_code.policy.openai_http import OpenAIPolicy, PolicyServerError

SECRET = "sk-test-DO-NOT-LEAK-1234567890"

Reply = tuple[int, dict, object]  # status, headers, body (dict -> JSON, str -> raw)


class ScriptedServer:
    """A real HTTP server; ``script(n_call, path, body)`` decides each reply."""

    def __init__(self, script: Callable[[int, str, dict], Reply], delay: Callable[[int], float] | None = None):
        self.script = script
        self.delay = delay or (lambda i: 0.0)
        self.requests: list[tuple[str, dict, dict]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer.lock:
                    i = len(outer.requests)
                    outer.requests.append((self.path, body, {k.lower(): v for k, v in self.headers.items()}))
                time.sleep(outer.delay(i))
                status, headers, payload = outer.script(i, self.path, body)
                raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(script, delay=None):
        s = ScriptedServer(script, delay)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def chat_reply(body: dict, texts: list[str] | None = None, finish: str = "stop") -> dict:
    n = body.get("n", 1)
    texts = texts or [f"sample {k}" for k in range(n)]
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [
            {"index": k, "message": {"role": "assistant", "content": t}, "finish_reason": finish}
            for k, t in enumerate(texts)
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3 * len(texts)},
    }


def ok(i, path, body):
    return 200, {}, chat_reply(body)


CHAT = Prompt([{"role": "user", "content": "write f"}])


def make(server: ScriptedServer, **kw) -> OpenAIPolicy:
    kw.setdefault("max_retries", 4)
    return OpenAIPolicy("m1", server.url, **kw)


def test_success_with_n_in_one_request(serve, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    s = serve(ok)
    pol = make(s)
    out = pol.generate([CHAT, CHAT], 3, SamplingParams(temperature=0.5, top_p=0.9, max_new_tokens=50, seed=11))
    assert [[c.text for c in cs] for cs in out] == [["sample 0", "sample 1", "sample 2"]] * 2
    assert len(s.requests) == 2 and pol.supports_n is True
    path, body, headers = s.requests[0]
    assert path == "/v1/chat/completions"
    assert body["n"] == 3 and body["temperature"] == 0.5 and body["top_p"] == 0.9 and body["max_tokens"] == 50
    assert body["seed"] == 11 and body["model"] == "m1"
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert out[0][0].prompt_tokens == 7 and sum(c.completion_tokens for c in out[0]) == 9


def test_load_policy_spec_and_env_url(serve, monkeypatch):
    s = serve(ok)
    pol = load_policy(f"openai:m2@{s.url}")
    assert isinstance(pol, OpenAIPolicy) and pol.name == "openai:m2"
    monkeypatch.setenv("OPENAI_BASE_URL", s.url)
    assert load_policy("openai:m3").base_url == s.url
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(UserError, match="OPENAI_BASE_URL"):
        load_policy("openai:m3")
    with pytest.raises(UserError, match="unknown policy spec"):
        load_policy("gemini:x")


def test_server_without_n_falls_back_to_single_requests(serve):
    s = serve(lambda i, p, b: (200, {}, chat_reply(b, ["only one"])))
    pol = make(s)
    out = pol.generate([CHAT], 3, SamplingParams(seed=5))
    assert [c.text for c in out[0]] == ["only one"] * 3
    assert pol.supports_n is False
    # one n=3 request that came back short, then the 2 missing samples one by one, seeds varied
    assert [b["n"] for _, b, _ in s.requests] == [3, 1, 1]
    assert sorted(b["seed"] for _, b, _ in s.requests[1:]) == [6, 7]
    s.requests.clear()
    pol.generate([CHAT], 2, SamplingParams())
    assert [b["n"] for _, b, _ in s.requests] == [1, 1]  # remembered


def test_server_rejecting_n_with_400_falls_back(serve):
    def script(i, path, body):
        if body["n"] > 1:
            return 400, {}, {"error": {"message": "n must be 1"}}
        return 200, {}, chat_reply(body)

    s = serve(script)
    out = make(s).generate([CHAT], 2, SamplingParams())
    assert len(out[0]) == 2 and [b["n"] for _, b, _ in s.requests] == [2, 1, 1]


def test_429_with_retry_after_is_honoured(serve):
    def script(i, path, body):
        if i == 0:
            return 429, {"Retry-After": "0.6"}, {"error": {"message": "slow down"}}
        return 200, {}, chat_reply(body)

    s = serve(script)
    pol = make(s)
    t0 = time.perf_counter()
    out = pol.generate([CHAT], 1, SamplingParams())
    assert out[0][0].text == "sample 0"
    assert time.perf_counter() - t0 >= 0.55  # waited what the server asked, not the SDK's own backoff
    assert len(s.requests) == 2


def test_500s_then_success_and_giving_up(serve):
    s = serve(lambda i, p, b: (500, {}, "oops") if i < 2 else (200, {}, chat_reply(b)))
    assert make(s).generate([CHAT], 1, SamplingParams())[0][0].text == "sample 0"
    assert len(s.requests) == 3

    s2 = serve(lambda i, p, b: (503, {}, {"error": {"message": "overloaded"}}))
    with pytest.raises(PolicyServerError, match=r"gave up after 3 attempts; last: HTTP 503: overloaded"):
        make(s2, max_retries=2).generate([CHAT], 1, SamplingParams())
    assert len(s2.requests) == 3


def test_non_retryable_error_fails_fast(serve):
    s = serve(lambda i, p, b: (404, {}, {"error": {"message": "model m1 does not exist"}}))
    with pytest.raises(PolicyServerError, match="request rejected, HTTP 404: model m1 does not exist"):
        make(s).generate([CHAT], 1, SamplingParams())
    assert len(s.requests) == 1


def test_slow_reply_times_out_then_retries(serve):
    s = serve(ok, delay=lambda i: 1.0 if i == 0 else 0.0)
    pol = make(s, timeout=0.3)
    assert pol.generate([CHAT], 1, SamplingParams())[0][0].text == "sample 0"
    assert len(s.requests) == 2

    s2 = serve(ok, delay=lambda i: 1.0)
    with pytest.raises(PolicyServerError, match="timed out after 0.3s"):
        make(s2, timeout=0.3, max_retries=1).generate([CHAT], 1, SamplingParams())


def test_connection_refused_is_retried_then_reported(serve):
    s = serve(ok)
    url = s.url
    s.close()
    with pytest.raises(PolicyServerError, match="connection error"):
        OpenAIPolicy("m", url, max_retries=1).generate([CHAT], 1, SamplingParams())


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ("<html>bad gateway</html>", "not JSON"),
        ({"choices": []}, "no 'choices' list"),
        ({"choices": [{"index": 0, "message": {"role": "assistant"}}]}, "no string 'message.content'"),
        ([1, 2], "no 'choices' list"),
    ],
)
def test_malformed_replies_are_clear_errors(serve, payload, match):
    s = serve(lambda i, p, b: (200, {}, payload))
    with pytest.raises(PolicyServerError, match=match):
        make(s).generate([CHAT], 1, SamplingParams())


def test_prefill_and_plain_completion_requests(serve):
    def script(i, path, body):
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            return 200, {}, {"choices": [{"index": 0, "text": " + 1", "finish_reason": "length"}],
                             "usage": {"prompt_tokens": 2, "completion_tokens": 2}}
        return 200, {}, chat_reply(body, ["    return x\n"])

    s = serve(script)
    pol = make(s)
    pre = Prompt([{"role": "user", "content": "write f"}], prefill="def f(x):\n")
    out = pol.generate([pre, Prompt(text="x = 1")], 1, SamplingParams(stop=["\nclass"]))
    assert out[0][0].text == "    return x\n"
    assert out[1][0].text == " + 1" and out[1][0].finish_reason == "length"
    by_path = {p: b for p, b, _ in s.requests}
    chat = by_path["/v1/chat/completions"]
    assert chat["messages"][-1] == {"role": "assistant", "content": "def f(x):\n"}
    assert chat["continue_final_message"] is True and chat["add_generation_prompt"] is False
    assert chat["stop"] == ["\nclass"]
    assert by_path["/v1/completions"]["prompt"] == "x = 1"
    # servers that reject unknown fields (OpenAI itself): no vLLM extras
    s.requests.clear()
    make(s, prefill_extras=False).generate([pre], 1, SamplingParams())
    assert "continue_final_message" not in s.requests[0][1]
    # other server-specific options go through the SDK's extra_body unchanged
    s.requests.clear()
    make(s, extra_body={"top_k": 5, "repetition_penalty": 1.1}).generate([pre], 1, SamplingParams())
    body = s.requests[0][1]
    assert body["top_k"] == 5 and body["repetition_penalty"] == 1.1 and body["continue_final_message"] is True


def test_without_a_key_the_placeholder_is_sent(serve, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    s = serve(ok)
    make(s).generate([CHAT], 1, SamplingParams())
    assert s.requests[0][2]["authorization"] == "Bearer EMPTY"  # vLLM's convention for key-less servers


def test_reasoning_model_sends_effort_not_temperature(serve):
    s = serve(ok)
    make(s).generate([CHAT], 1, SamplingParams(reasoning_effort="high", max_new_tokens=900))
    body = s.requests[0][1]
    assert body["reasoning_effort"] == "high" and body["max_completion_tokens"] == 900
    assert "temperature" not in body and "top_p" not in body and "max_tokens" not in body


def test_concurrency_limit_is_respected(serve):
    active = {"now": 0, "max": 0}
    lock = threading.Lock()

    def script(i, path, body):
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        time.sleep(0.15)
        with lock:
            active["now"] -= 1
        return 200, {}, chat_reply(body)

    s = serve(script)
    out = make(s, concurrency=3).generate([CHAT] * 9, 1, SamplingParams())
    assert len(out) == 9 and active["max"] == 3


def test_key_never_in_logs_or_errors(serve, monkeypatch, caplog):
    monkeypatch.setenv("MY_KEY", SECRET)
    s = serve(lambda i, p, b: (500, {}, {"error": {"message": "boom"}}) if i < 1 else (401, {}, {"error": {"message": "bad key"}}))
    pol = make(s, api_key_env="MY_KEY")
    with caplog.at_level(logging.DEBUG), pytest.raises(PolicyServerError) as err:
        pol.generate([CHAT], 1, SamplingParams())
    assert "authentication failed" in str(err.value) and "$MY_KEY" in str(err.value)
    assert s.requests[0][2]["authorization"] == f"Bearer {SECRET}"
    assert caplog.records, "retries should be logged"
    for text in [str(err.value), repr(err.value), caplog.text, repr(pol), str(pol.__dict__.get("name"))]:
        assert SECRET not in text
    chain, exc = [], err.value
    while exc is not None:
        chain.append(repr(exc))
        exc = exc.__cause__ or exc.__context__
    assert all(SECRET not in r for r in chain)
