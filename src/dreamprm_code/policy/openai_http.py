"""OpenAI-compatible HTTP policy: OpenAI itself, and vLLM / SGLang / llama.cpp servers.

Async (``httpx``) with a concurrency limit; retries with exponential backoff and full jitter on
429, 5xx, timeouts and connection errors, honouring ``Retry-After``. ``n`` samples go in one
request; a server that returns fewer choices (or rejects ``n``) is asked for the rest one by
one, and remembered. Assistant prefill (docs/architecture.md#step-labels-from-rollouts) is a final assistant message with
vLLM's ``continue_final_message`` / ``add_generation_prompt=false`` extras; plain ``text``
prompts use the completions endpoint. The API key comes from the environment and never
appears in logs or errors.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import threading
import time
from typing import Any

import httpx

from dreamprm_code.errors import UserError
from dreamprm_code.policy.base import FINISH_LENGTH, FINISH_STOP, Completion, Prompt, SamplingParams

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


class PolicyServerError(UserError):
    """The server failed, or answered with something that is not an OpenAI-style reply."""

    status: int | None = None  # the HTTP status of a rejected request


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


class OpenAIPolicy:
    """A model behind an OpenAI-compatible ``/v1`` API."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 16,
        max_retries: int = 6,
        timeout: float = 600.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        prefill_extras: bool = True,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise UserError(f"server URL must start with http:// or https://, got '{base_url}'", field="policy")
        self.name = f"openai:{model}"
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env, "")
        self.concurrency = max(1, int(concurrency))
        self.max_retries = max(0, int(max_retries))
        self.timeout = float(timeout)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.prefill_extras = prefill_extras
        self.extra_body = dict(extra_body or {})
        self.supports_n: bool | None = None  # learnt from the first multi-sample request
        self.stats = {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIPolicy(model={self.model!r}, base_url={self.base_url!r})"

    # ----------------------------------------------------------------- requests
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _body(self, prompt: Prompt, n: int, sampling: SamplingParams, seed: int | None) -> tuple[str, dict]:
        body: dict[str, Any] = {"model": self.model, "n": n}
        if sampling.reasoning_effort:
            body["reasoning_effort"] = sampling.reasoning_effort
            body["max_completion_tokens"] = sampling.max_new_tokens
        else:
            body.update(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens)
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if seed is not None:
            body["seed"] = seed
        if prompt.messages is None:
            body["prompt"] = prompt.text
            path = "/completions"
        else:
            messages = [dict(m) for m in prompt.messages]
            if prompt.prefill:
                messages.append({"role": "assistant", "content": prompt.prefill})
                if self.prefill_extras:
                    body["continue_final_message"] = True
                    body["add_generation_prompt"] = False
            body["messages"] = messages
            path = "/chat/completions"
        body.update(self.extra_body)
        return path, body

    async def _post(self, client: httpx.AsyncClient, sem: asyncio.Semaphore, path: str, body: dict) -> dict:
        url = self.base_url + path
        last = ""
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            async with sem:
                self.stats["requests"] += 1
                try:
                    resp = await client.post(url, json=body, headers=self._headers())
                except httpx.TimeoutException:
                    last = f"timed out after {self.timeout:g}s"
                except httpx.TransportError as exc:
                    last = f"connection error ({type(exc).__name__})"
                else:
                    if resp.status_code == 200:
                        return self._json(resp, url)
                    last = f"HTTP {resp.status_code}: {_snippet(self._error_text(resp))}"
                    if resp.status_code not in RETRY_STATUS:
                        raise self._fatal(resp, url, last)
                    wait = _retry_after(resp.headers.get("retry-after"))
            if attempt == self.max_retries:
                break
            if wait is None:
                wait = min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.0)
            else:
                wait = min(wait, self.backoff_max * 10)
            self.stats["retries"] += 1
            log.warning("%s: %s; retry %d/%d in %.2fs", url, last, attempt + 1, self.max_retries, wait)
            await asyncio.sleep(wait)
        raise PolicyServerError(f"{url}: gave up after {self.max_retries + 1} attempts; last: {last}")

    @staticmethod
    def _error_text(resp: httpx.Response) -> str:
        try:
            data = resp.json()
            err = data.get("error", data) if isinstance(data, dict) else data
            if isinstance(err, dict):
                return str(err.get("message") or err)
            return str(err)
        except ValueError:
            return resp.text

    def _fatal(self, resp: httpx.Response, url: str, last: str) -> PolicyServerError:
        if resp.status_code in (401, 403):
            hint = f" (check the key in ${self.api_key_env}" + (")" if self._api_key else "; it is not set)")
            err = PolicyServerError(f"{url}: authentication failed, {last}{hint}")
        else:
            err = PolicyServerError(f"{url}: request rejected, {last}")
        err.status = resp.status_code
        return err

    @staticmethod
    def _json(resp: httpx.Response, url: str) -> dict:
        try:
            data = resp.json()
        except ValueError:
            raise PolicyServerError(f"{url}: malformed reply (not JSON): {_snippet(resp.text)}") from None
        if not isinstance(data, dict):
            raise PolicyServerError(f"{url}: malformed reply (expected a JSON object): {_snippet(resp.text)}")
        return data

    # ----------------------------------------------------------------- replies
    @staticmethod
    def _parse(data: dict, chat: bool, url: str) -> tuple[list[Completion], int]:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise PolicyServerError(f"{url}: malformed reply (no 'choices' list): {_snippet(str(data))}")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        texts, finishes = [], []
        for k, ch in enumerate(sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)):
            if not isinstance(ch, dict):
                raise PolicyServerError(f"{url}: malformed reply (choice {k} is not an object)")
            if chat:
                msg = ch.get("message")
                text = msg.get("content") if isinstance(msg, dict) else None
                if text is None and isinstance(msg, dict) and msg.get("refusal"):
                    text = ""
            else:
                text = ch.get("text")
            if not isinstance(text, str):
                where = "message.content" if chat else "text"
                raise PolicyServerError(f"{url}: malformed reply (choice {k} has no string '{where}')")
            texts.append(text)
            finishes.append(FINISH_LENGTH if ch.get("finish_reason") == "length" else FINISH_STOP)
        # usage.completion_tokens is the sum over choices: share it out by text length.
        total = int(usage.get("completion_tokens") or 0)
        weights = [max(1, len(t)) for t in texts]
        shares = [round(total * w / sum(weights)) for w in weights]
        if shares:
            shares[-1] = total - sum(shares[:-1])
        comps = [Completion(t, prompt_tokens, s, f) for t, s, f in zip(texts, shares, finishes, strict=True)]
        return comps, total

    async def _one_prompt(
        self, client: httpx.AsyncClient, sem: asyncio.Semaphore, prompt: Prompt, n: int, sampling: SamplingParams
    ) -> list[Completion]:
        seed = prompt.seed if prompt.seed is not None else sampling.seed
        out: list[Completion] = []
        if n > 1 and self.supports_n is not False:
            path, body = self._body(prompt, n, sampling, seed)
            try:
                data = await self._post(client, sem, path, body)
            except PolicyServerError as exc:
                if exc.status not in (400, 422) or self.supports_n is True:
                    raise
                self.supports_n = False  # e.g. 400 "n must be 1": fall back to one request per sample
                log.warning("%s: server rejected n=%d; asking one sample per request", self.base_url, n)
            else:
                out, _ = self._parse(data, prompt.messages is not None, self.base_url + path)
                if len(out) >= n:
                    self.supports_n = True
                    return out[:n]
                self.supports_n = False
                log.warning("%s: server returned %d of n=%d samples; asking the rest one by one", self.base_url, len(out), n)
        singles = []
        for j in range(len(out), n):
            s = None if seed is None else seed + j
            path, body = self._body(prompt, 1, sampling, s)
            singles.append(self._post(client, sem, path, body))
        for data in await asyncio.gather(*singles):
            got, _ = self._parse(data, prompt.messages is not None, self.base_url)
            out.append(got[0])
        return out

    async def agenerate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        """The async form of :meth:`generate`, for callers that already run an event loop."""
        if n < 1:
            raise UserError(f"n must be >= 1, got {n}", field="n")
        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 30.0))
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            tasks = [asyncio.ensure_future(self._one_prompt(client, sem, p, n, sampling)) for p in prompts]
            try:
                results = await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        for comps in results:
            for c in comps:
                self.stats["prompt_tokens"] += c.prompt_tokens
                self.stats["completion_tokens"] += c.completion_tokens
        return list(results)

    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        """``n`` completions per prompt; all requests run concurrently up to ``concurrency``."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(prompts, n, sampling))
        # Called from inside an event loop: run ours in a helper thread.
        box: dict[str, Any] = {}

        def runner() -> None:
            try:
                box["out"] = asyncio.run(self.agenerate(prompts, n, sampling))
            except BaseException as exc:
                box["err"] = exc

        th = threading.Thread(target=runner)
        th.start()
        th.join()
        if "err" in box:
            raise box["err"]
        return box["out"]
