"""The one small interface every policy backend implements (docs/architecture.md#backends-behind-one-small-interface).

A prompt is either a chat (``messages``, optionally with an assistant ``prefill`` that the model
continues, docs/architecture.md#step-labels-from-rollouts) or a plain completion ``text``. ``generate`` returns ``n`` samples per
prompt, in prompt order. Backends are picked by a spec string in :func:`load_policy`, so the
other stages never import a backend directly.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, runtime_checkable

from dreamprm_code.errors import UserError
from dreamprm_code.options import option

FINISH_STOP = "stop"
FINISH_LENGTH = "length"


@dataclass
class Prompt:
    """What the policy is asked: a chat, or a plain completion text.

    ``prefill`` is the start of the assistant's reply; the model continues it and the returned
    :class:`Completion` holds only the continuation (the caller knows the prefix). ``seed``
    overrides :attr:`SamplingParams.seed` for this prompt, so a problem's samples do not depend
    on which other prompts share its batch (resumed runs reproduce uninterrupted ones); sample
    ``j`` of a prompt uses seed ``seed + j`` where the backend seeds samples one by one (the
    in-process ``transformers`` backend always; the OpenAI client when it asks one per request).
    """

    messages: list[dict[str, str]] | None = None
    prefill: str = ""
    text: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.text is None):
            raise UserError("a Prompt needs exactly one of chat 'messages' or completion 'text'")
        if self.text is not None and self.prefill:
            raise UserError("'prefill' only applies to chat prompts; append it to 'text' instead")
        if self.messages is not None:
            for i, m in enumerate(self.messages):
                if not isinstance(m, dict) or "role" not in m or "content" not in m:
                    raise UserError(f"message {i} needs 'role' and 'content'", field="messages")

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def to_dict(self) -> dict[str, Any]:
        """What a solution record keeps of its prompt."""
        if self.messages is None:
            return {"text": self.text}
        d: dict[str, Any] = {"messages": self.messages}
        if self.prefill:
            d["prefill"] = self.prefill
        return d


@dataclass
class SamplingParams:
    """How to sample. ``reasoning_effort`` marks a reasoning model: no temperature/top_p sent."""

    temperature: float = option(0.7, help="sampling temperature (0 = greedy)")
    top_p: float = option(0.95, help="nucleus sampling: keep the smallest token set with this much probability")
    max_new_tokens: int = option(1024, help="most tokens per sample")
    stop: list[str] = option(default_factory=list, help="stop strings (not kept in the text)")
    seed: int | None = option(None, help="seed of the request (None: unseeded)")
    reasoning_effort: str | None = option(
        None, help="for reasoning models (o4-mini): send this instead of temperature/top_p"
    )

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise UserError(f"temperature must be >= 0, got {self.temperature}", field="temperature")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}", field="top_p")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}", field="max_new_tokens")
        if isinstance(self.stop, str):
            self.stop = [self.stop]

    def with_seed(self, seed: int | None) -> SamplingParams:
        return replace(self, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Completion:
    """One sample: the generated text (without prompt or prefill) and its token counts."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = FINISH_STOP  # "stop" (EOS or a stop string) | "length"


@runtime_checkable
class Policy(Protocol):
    """A text generator: ``n`` samples for each prompt."""

    name: str

    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        """Return ``n`` completions per prompt, in prompt order."""
        ...


def truncate_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string (OpenAI semantics: the stop is not kept)."""
    cut = -1
    for s in stop:
        if not s:
            continue
        i = text.find(s)
        if i != -1 and (cut == -1 or i < cut):
            cut = i
    if cut == -1:
        return text, False
    return text[:cut], True


def _cpu_only(opts: dict[str, Any]) -> bool:
    device = opts.get("device")
    if device:
        return str(device).startswith("cpu")
    import torch

    return not torch.cuda.is_available()


def load_policy(spec: str, **opts: Any) -> Policy:
    """Build a backend from a spec string.

    ``embedded`` (the default CPU model, Qwen2.5-Coder-0.5B-Instruct; int8 dynamic quantization
    on a CPU unless ``quantize="none"``), ``embedded:NAME``,
    ``hf:PATH_OR_ID`` (in-process ``transformers``), ``openai:MODEL@BASE_URL`` or
    ``openai:MODEL`` with ``OPENAI_BASE_URL`` set (any OpenAI-compatible server),
    ``vllm:PATH_OR_ID`` (in-process vLLM, needs the ``gpu`` extra). ``opts`` go to the backend.
    """
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    if kind == "embedded":
        from dreamprm_code.embedded import DEFAULT_POLICY
        from dreamprm_code.policy.hf import HFPolicy

        opts.setdefault("quantize", "int8" if _cpu_only(opts) else None)  # 2x faster on CPU (docs/benchmarks.md)
        if opts["quantize"] == "none":
            opts["quantize"] = None
        return HFPolicy("embedded:" + (rest or DEFAULT_POLICY), **opts)
    if kind == "hf":
        if not rest:
            raise UserError("policy spec 'hf:' needs a path or model id, e.g. hf:./my-model", field="policy")
        from dreamprm_code.policy.hf import HFPolicy

        return HFPolicy(rest, **opts)
    if kind == "openai":
        model, _, url = rest.partition("@")
        url = url or os.environ.get("OPENAI_BASE_URL", "")
        if not model:
            raise UserError("policy spec 'openai:' needs a model name: openai:MODEL@BASE_URL", field="policy")
        if not url:
            raise UserError(
                f"no server for '{spec}': write openai:{model}@http://HOST:PORT/v1 or set OPENAI_BASE_URL",
                field="policy",
            )
        from dreamprm_code.policy.openai_http import OpenAIPolicy

        return OpenAIPolicy(model, url, **opts)
    if kind == "vllm":
        if not rest:
            raise UserError("policy spec 'vllm:' needs a path or model id", field="policy")
        from dreamprm_code.policy.vllm_backend import VLLMPolicy

        return VLLMPolicy(rest, **opts)
    raise UserError(
        f"unknown policy spec '{spec}': use embedded, hf:PATH_OR_ID, openai:MODEL@BASE_URL or vllm:PATH",
        field="policy",
    )
