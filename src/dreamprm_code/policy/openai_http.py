"""OpenAI-compatible policy on the ``openai`` SDK: OpenAI itself, and vLLM / SGLang / llama.cpp servers.

``AsyncOpenAI`` does the HTTP work: connection pooling, timeouts, and retries with exponential
backoff on 408/409/429/5xx, timeouts and connection errors, honouring ``Retry-After``. What is
ours: a concurrency limit; ``n`` samples asked in one request, with a fallback for servers that
return fewer choices (or reject ``n``): the rest are asked one by one, and that is remembered;
assistant prefill (docs/architecture.md#step-labels-from-rollouts) as a final assistant message plus vLLM's ``continue_final_message`` /
``add_generation_prompt=false`` (sent through ``extra_body``); plain ``text`` prompts on the
completions endpoint; SDK errors turned into :class:`PolicyServerError` with the URL and the
server's message. The API key comes from the environment and never appears in logs or errors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

import openai
from openai import AsyncOpenAI

from dreamprm_code.errors import UserError
from dreamprm_code.policy.base import FINISH_LENGTH, FINISH_STOP, Completion, Prompt, SamplingParams

log = logging.getLogger(__name__)

#: Sent as the key to servers that need none (vLLM's convention); the SDK requires some key.
NO_KEY = "EMPTY"


class PolicyServerError(UserError):
    """The server failed, or answered with something that is not an OpenAI-style reply."""

    status: int | None = None  # the HTTP status of a rejected request


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
        self.prefill_extras = prefill_extras
        self.extra_body = dict(extra_body or {})
        self.supports_n: bool | None = None  # learnt from the first multi-sample request
        self.stats = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIPolicy(model={self.model!r}, base_url={self.base_url!r})"

    def _client(self) -> AsyncOpenAI:
        return AsyncOpenAI(
            api_key=self._api_key or NO_KEY,
            base_url=self.base_url,
            max_retries=self.max_retries,
            timeout=self.timeout,
        )

    # ----------------------------------------------------------------- requests
    def _args(self, prompt: Prompt, n: int, sampling: SamplingParams, seed: int | None) -> dict[str, Any]:
        args: dict[str, Any] = {"model": self.model, "n": n}
        if sampling.reasoning_effort:
            args["reasoning_effort"] = sampling.reasoning_effort
            args["max_completion_tokens"] = sampling.max_new_tokens
        else:
            args.update(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens)
        if sampling.stop:
            args["stop"] = list(sampling.stop)
        if seed is not None:
            args["seed"] = seed
        extra = {}
        if prompt.messages is None:
            args["prompt"] = prompt.text
        else:
            messages = [dict(m) for m in prompt.messages]
            if prompt.prefill:
                messages.append({"role": "assistant", "content": prompt.prefill})
                if self.prefill_extras:
                    extra = {"continue_final_message": True, "add_generation_prompt": False}
            args["messages"] = messages
        extra.update(self.extra_body)
        if extra:
            args["extra_body"] = extra
        return args

    def _url(self, chat: bool) -> str:
        return self.base_url + ("/chat/completions" if chat else "/completions")

    async def _create(self, client: AsyncOpenAI, sem: asyncio.Semaphore, args: dict) -> Any:
        chat = "messages" in args
        url = self._url(chat)
        async with sem:
            self.stats["requests"] += 1
            try:
                if chat:
                    return await client.chat.completions.create(**args)
                return await client.completions.create(**args)
            except openai.APIStatusError as exc:
                raise self._status_error(exc, url) from None
            except openai.APITimeoutError:
                raise PolicyServerError(
                    f"{url}: timed out after {self.timeout:g}s ({self.max_retries + 1} attempts)"
                ) from None
            except openai.APIConnectionError as exc:
                raise PolicyServerError(
                    f"{url}: connection error after {self.max_retries + 1} attempts ({_snippet(str(exc))})"
                ) from None

    def _status_error(self, exc: openai.APIStatusError, url: str) -> PolicyServerError:
        status = exc.status_code
        body = exc.body
        if isinstance(body, dict):
            message = str(body.get("message") or body)
        elif body is not None:
            message = str(body)
        else:
            message = exc.response.text
        last = f"HTTP {status}: {_snippet(message)}"
        if status in (401, 403):
            hint = f" (check the key in ${self.api_key_env}" + (")" if self._api_key else "; it is not set)")
            err = PolicyServerError(f"{url}: authentication failed, {last}{hint}")
        elif status in (408, 409, 429) or status >= 500:  # what the SDK retries
            err = PolicyServerError(f"{url}: gave up after {self.max_retries + 1} attempts; last: {last}")
        else:
            err = PolicyServerError(f"{url}: request rejected, {last}")
        err.status = status
        return err

    # ----------------------------------------------------------------- replies
    @staticmethod
    def _parse(reply: Any, chat: bool, url: str) -> list[Completion]:
        choices = getattr(reply, "choices", None)
        if not isinstance(choices, list) or not choices:
            what = "not JSON" if isinstance(reply, str) else "no 'choices' list"
            raise PolicyServerError(f"{url}: malformed reply ({what}): {_snippet(str(reply))}")
        usage = getattr(reply, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        texts, finishes = [], []
        for k, ch in enumerate(sorted(choices, key=lambda c: getattr(c, "index", 0) or 0)):
            if chat:
                msg = getattr(ch, "message", None)
                text = getattr(msg, "content", None)
                if text is None and getattr(msg, "refusal", None):
                    text = ""
            else:
                text = getattr(ch, "text", None)
            if not isinstance(text, str):
                where = "message.content" if chat else "text"
                raise PolicyServerError(f"{url}: malformed reply (choice {k} has no string '{where}')")
            texts.append(text)
            finishes.append(FINISH_LENGTH if getattr(ch, "finish_reason", None) == "length" else FINISH_STOP)
        # usage.completion_tokens is the sum over choices: share it out by text length.
        total = int(getattr(usage, "completion_tokens", 0) or 0)
        weights = [max(1, len(t)) for t in texts]
        shares = [round(total * w / sum(weights)) for w in weights]
        shares[-1] = total - sum(shares[:-1])
        return [Completion(t, prompt_tokens, s, f) for t, s, f in zip(texts, shares, finishes, strict=True)]

    async def _one_prompt(
        self, client: AsyncOpenAI, sem: asyncio.Semaphore, prompt: Prompt, n: int, sampling: SamplingParams
    ) -> list[Completion]:
        seed = prompt.seed if prompt.seed is not None else sampling.seed
        chat = prompt.messages is not None
        out: list[Completion] = []
        if n > 1 and self.supports_n is not False:
            try:
                reply = await self._create(client, sem, self._args(prompt, n, sampling, seed))
            except PolicyServerError as exc:
                if exc.status not in (400, 422) or self.supports_n is True:
                    raise
                self.supports_n = False  # e.g. 400 "n must be 1": fall back to one request per sample
                log.warning("%s: server rejected n=%d; asking one sample per request", self.base_url, n)
            else:
                out = self._parse(reply, chat, self._url(chat))
                if len(out) >= n:
                    self.supports_n = True
                    return out[:n]
                self.supports_n = False
                log.warning("%s: server returned %d of n=%d samples; asking the rest one by one", self.base_url, len(out), n)
        singles = [
            self._create(client, sem, self._args(prompt, 1, sampling, None if seed is None else seed + j))
            for j in range(len(out), n)
        ]
        for reply in await asyncio.gather(*singles):
            out.append(self._parse(reply, chat, self._url(chat))[0])
        return out

    async def agenerate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        """The async form of :meth:`generate`, for callers that already run an event loop."""
        if n < 1:
            raise UserError(f"n must be >= 1, got {n}", field="n")
        sem = asyncio.Semaphore(self.concurrency)
        async with self._client() as client:
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
