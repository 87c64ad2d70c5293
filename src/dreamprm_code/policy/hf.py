"""In-process `transformers` policy (CPU or GPU): batched sampling with left padding.

Each prompt is tokenized once and its ``n`` samples are drawn in the same ``generate`` call,
together with other prompts (left padding) up to ``batch_size`` sequences per call: on a CPU the
0.5B policy decodes about 5 tokens/s for one sequence and 25 tokens/s for 16, since a decoding
step is bound by reading the weights, not by arithmetic.

Sampling is done by :class:`SeededSampler`, not by ``generate``'s global generator: every sample
has its own ``torch.Generator``, seeded ``s + j`` for sample ``j`` of a prompt whose seed is ``s``
(the prompt's seed, else the call's seed; the OpenAI client sends the same ``seed + j``). So a
sample depends neither on which other prompts share its batch nor on how many samples its
prompt asks for: samples ``j .. j+m-1`` of seed ``s`` are the ``m`` samples of seed ``s + j``,
which lets the labeller draw a prefix's rollouts in rounds that are prefixes of one stream.
"""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from dreamprm_code.errors import UserError
from dreamprm_code.policy.base import (
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    Prompt,
    SamplingParams,
    truncate_at_stop,
)


def pick_dtype(device: str, requested: str | None = None):
    """bf16 on CUDA where supported (else fp16); on CPU the measured-faster default.

    On CPU, float32 is the default: ``bench/generation_bench.py dtype`` measured the 0.5B policy
    at 0.42 tok/s in bf16 against 2.05 tok/s in fp32 (n=4, one thread; see docs/benchmarks.md):
    without AMX / AVX512-BF16 every bf16 matmul is converted on the fly. Pass ``dtype="bfloat16"``
    on CPUs that have them (it halves memory).
    """
    import torch

    if requested and requested != "auto":
        try:
            return getattr(torch, requested)
        except AttributeError:
            raise UserError(f"unknown dtype '{requested}'", field="dtype") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def quantize_linear(model: Any, scheme: str, device: str) -> Any:
    """Dynamic int8 quantization of every ``nn.Linear`` (weights per output channel), CPU only.

    A decoding step on a CPU reads every weight once per token; int8 weights are a quarter of
    fp32 and run on the int8 GEMM kernels (fbgemm / oneDNN), which made the linear layers of a
    batch of 16 about 5x faster on this machine's AVX2 CPU (docs/benchmarks.md).
    """
    import torch

    if scheme != "int8":
        raise UserError(f"unknown quantization '{scheme}' (int8)", field="quantize")
    if not device.startswith("cpu"):
        raise UserError("quantize=int8 is for CPUs; on GPUs use dtype=bfloat16", field="quantize")
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao quantization is deprecated in favour of torchao; pinned torch has it
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


class StopOnText:
    """Stop a row once its generated text contains a stop string.

    Decodes only the last few generated tokens of each row per step (enough to hold the longest
    stop string), and never the prompt, so a prefill that itself contains a stop string (an
    opened fence) does not end the reply at once. Cheaper to set up than ``stop_strings``, which
    precomputes tables over the whole vocabulary.
    """

    def __init__(self, tokenizer: Any, stop: list[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.width = prompt_width
        self.window = max((len(s) for s in self.stop), default=0) + 2

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        tails = input_ids[:, self.width :][:, -self.window :].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], dtype=torch.bool, device=input_ids.device)


class SeededSampler:
    """A logits processor that samples each row with its own generator.

    It applies temperature and nucleus (top-p) filtering, draws the token by inverse CDF from a
    uniform of the row's generator, and returns logits that are ``-inf`` everywhere but the drawn
    token, so ``generate`` in greedy mode just takes it. ``generators`` holds one generator per
    group of ``n`` consecutive rows, each drawing ``n`` uniforms per step (``n = 1``: one
    generator per row, what :class:`HFPolicy` uses), whatever the batch.
    """

    def __init__(self, generators: list[Any], n: int, temperature: float, top_p: float) -> None:
        self.generators = generators
        self.n = n
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            before = sorted_p.cumsum(dim=-1) - sorted_p  # mass of the tokens ranked above
            sorted_p = sorted_p.masked_fill(before >= self.top_p, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        u = torch.cat([torch.rand(self.n, generator=g) for g in self.generators]).to(probs.device)
        cdf = probs.cumsum(dim=-1)
        u = u.unsqueeze(1) * cdf[:, -1:]
        picked = torch.searchsorted(cdf, u).clamp_(max=probs.shape[-1] - 1)
        # never pick a zero-probability token sitting on a flat stretch of the cdf
        picked = torch.where(probs.gather(1, picked) > 0, picked, probs.argmax(dim=-1, keepdim=True))
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, picked, 0.0)


class HFPolicy:
    """A causal LM loaded with ``transformers``; ``model`` is an ``embedded:`` name, a directory or a hub id.

    ``batch_size`` is the number of sequences (prompts x samples) per ``generate`` call; the ``n``
    samples of one prompt are never split across calls.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 16,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        quantize: str | None = None,
        _loaded: tuple[Any, Any] | None = None,
    ) -> None:
        import torch

        if model == "embedded":
            from dreamprm_code.embedded import DEFAULT_POLICY

            model = f"embedded:{DEFAULT_POLICY}"
        self.name = model if model.startswith("embedded:") else f"hf:{model}"
        self.batch_size = max(1, int(batch_size))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if threads:
            torch.set_num_threads(int(threads))
        if _loaded is not None:
            self.model, self.tokenizer = _loaded
            self.device = str(next(self.model.parameters()).device)
        else:
            self.model, self.tokenizer = self._load(model, dtype, cache_dir)
        self.model.eval()
        if quantize:
            self.model = quantize_linear(self.model, quantize, self.device)
            self.name += f"+{quantize}"  # recorded with every sample: resuming with fp32 is refused
        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else tok.eos_token_id
        self.eos_ids: list[int] = sorted({eos} if isinstance(eos, int) else set(eos or []))
        self.pad_id: int = gen.pad_token_id if gen.pad_token_id is not None else tok.pad_token_id
        self.last_stats: dict[str, float] = {}

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, name: str = "hf:in-memory", **opts: Any) -> HFPolicy:
        """Wrap an already-loaded model (tests, or a caller that shares one model)."""
        policy = cls(name, _loaded=(model, tokenizer), **opts)
        policy.name = name
        return policy

    def _load(self, spec: str, dtype: str | None, cache_dir: str | Path | None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from dreamprm_code.embedded import resolve_model

        path = resolve_model(spec, cache_dir=cache_dir)
        try:
            tok = AutoTokenizer.from_pretrained(str(path))
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=pick_dtype(self.device, dtype))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load a causal LM from it: {exc}", path=path) from None
        return model.to(self.device), tok

    def render(self, prompt: Prompt) -> str:
        """The exact text the model sees: the chat template with the generation prompt, then the prefill."""
        if prompt.messages is None:
            return prompt.text or ""
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(f"model '{self.name}' has no chat template; use plain completion prompts (text=)")
        head = self.tokenizer.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)
        return head + prompt.prefill

    def prompts_per_call(self, n: int) -> int:
        """How many prompts of ``n`` samples each fit in one ``generate`` call."""
        return max(1, self.batch_size // max(1, n))

    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        """``n`` samples per prompt; stats of the last call in :attr:`last_stats`."""
        if n < 1:
            raise UserError(f"n must be >= 1, got {n}", field="n")
        out: list[list[Completion]] = [[] for _ in prompts]
        t0 = time.perf_counter()
        total = 0
        size = self.prompts_per_call(n)
        for k in range(0, len(prompts), size):
            idx = list(range(k, min(k + size, len(prompts))))
            texts = [self.render(prompts[i]) for i in idx]
            seeds = [prompts[i].seed if prompts[i].seed is not None else sampling.seed for i in idx]
            results = self.generate_texts(texts, n, sampling, seeds)
            for i, comps in zip(idx, results, strict=True):
                out[i] = comps
                total += sum(c.completion_tokens for c in comps)
        dt = time.perf_counter() - t0
        self.last_stats = {"seconds": dt, "completion_tokens": total, "tokens_per_s": total / dt if dt else 0.0}
        return out

    def generate_texts(
        self, texts: list[str], n: int, sampling: SamplingParams, seeds: list[int | None] | None = None
    ) -> list[list[Completion]]:
        """One batched ``generate`` call over already-rendered prompt texts, ``seeds`` one per text."""
        import torch

        tok = self.tokenizer
        has_template = bool(getattr(tok, "chat_template", None))
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not has_template)
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        greedy = sampling.temperature == 0
        per = 1 if greedy else n
        cache = self._prefill(enc, per) if per > 1 and enc["input_ids"].shape[1] > 1 else None
        if per > 1:  # each prompt's rows side by side: row b * n + j is sample j of prompt b
            enc = {k: v.repeat_interleave(per, dim=0) for k, v in enc.items()}
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "do_sample": False,  # greedy, or SeededSampler's one-hot logits
            "temperature": None,
            "top_p": None,
            "top_k": None,
            "pad_token_id": self.pad_id,
            "eos_token_id": self.eos_ids or None,
        }
        if not greedy:
            from transformers import LogitsProcessorList

            generators = []
            for seed in seeds or [None] * len(texts):
                base = int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,)))
                for j in range(per):  # sample j of seed s draws from seed s + j
                    g = torch.Generator()
                    g.manual_seed((base + j) % 2**63)
                    generators.append(g)
            kwargs["logits_processor"] = LogitsProcessorList(
                [SeededSampler(generators, 1, sampling.temperature, sampling.top_p)]
            )
        if sampling.stop:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [StopOnText(tok, sampling.stop, enc["input_ids"].shape[1])]
            )
        if cache is not None:
            kwargs[self._cache_kwarg] = cache
        with torch.inference_mode():
            seqs = self.model.generate(**enc, **kwargs)
        width = enc["input_ids"].shape[1]
        gen = seqs[:, width:].tolist()
        out: list[list[Completion]] = []
        for b, plen in enumerate(prompt_lens):
            comps = [self._completion(gen[b * per + j], int(plen), sampling) for j in range(per)]
            out.append([replace(comps[0]) for _ in range(n)] if greedy else comps)
        return out

    @functools.cached_property
    def _cache_kwarg(self) -> str:
        """The KV cache's keyword: ``cache`` from transformers 5.2x on (``past_key_values`` is
        deprecated there and goes in 5.40), ``past_key_values`` before."""
        import inspect

        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _prefill(self, enc: dict[str, Any], per: int) -> Any:
        """The KV cache of every prompt but its last token, computed once and copied to its ``per`` rows.

        ``generate`` with ``num_return_sequences`` (or repeated rows) encodes a prompt once per
        sample; on a CPU that prefill costs as much as decoding a few hundred tokens.
        """
        import torch
        from transformers import DynamicCache

        mask = enc["attention_mask"][:, :-1]
        positions = (mask.long().cumsum(-1) - 1).clamp_(min=0)  # left padding, as generate counts them
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            self.model(
                input_ids=enc["input_ids"][:, :-1], attention_mask=mask, position_ids=positions,
                use_cache=True, **{self._cache_kwarg: cache},
            )
        cache.batch_repeat_interleave(per)
        return cache

    def _completion(self, ids: list[int], prompt_tokens: int, sampling: SamplingParams) -> Completion:
        ended = False
        cut = len(ids)
        for k, t in enumerate(ids):
            if t in self.eos_ids or t == self.pad_id:
                cut, ended = k, True
                break
        text = self.tokenizer.decode(ids[:cut], skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, sampling.stop)
        used = cut + 1 if ended and ids[cut] in self.eos_ids else cut
        finish = FINISH_STOP if ended or stopped else FINISH_LENGTH
        return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=used, finish_reason=finish)
