"""The process reward model: a causal LM's base model plus a tiny head on each step's last token.

The backbone is loaded as its *base* model (``AutoModel``: no LM head), so no full-vocabulary
logits are ever computed, and only the last hidden layer is read (docs/architecture.md#one-forward-pass-scores-every-step). Because the
backbone is causal, the hidden state at the last token of step k depends only on tokens up to
k: one forward pass over a candidate yields every prefix's score.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dreamprm_code.errors import UserError
from dreamprm_code.prm.data import Example, StepBatch, collate, token_batches
from dreamprm_code.prm.format import PromptFormat

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def resolve_backbone(spec: str) -> str:
    """A local directory ``transformers`` can load, from ``embedded:NAME``, a path or a hub id."""
    if not spec or not str(spec).strip():
        raise UserError("no backbone given", field="backbone")
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path)
    from dreamprm_code.embedded import resolve_model

    return str(resolve_model(spec))


def attention_kernels(device: torch.device) -> contextlib.AbstractContextManager:
    """SDPA without the cuDNN kernel on CUDA: cuDNN builds a graph for every new sequence length
    (hundreds of ms each), and PRM batches have a new padded length almost every step. On an H100
    a bf16 LoRA training step took 1.5 s with it (docs/benchmarks.md, GPU paths)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.backends import cuda
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # keep what an enclosing context allows (the forward-mode JVP allows only the math kernel)
    enabled = [
        (SDPBackend.FLASH_ATTENTION, cuda.flash_sdp_enabled()),
        (SDPBackend.EFFICIENT_ATTENTION, cuda.mem_efficient_sdp_enabled()),
        (SDPBackend.MATH, cuda.math_sdp_enabled()),
    ]
    return sdpa_kernel([kernel for kernel, on in enabled if on] or [SDPBackend.MATH])


class StepHead(nn.Module):
    """Hidden state -> one logit: a linear layer, or a one-hidden-layer MLP when ``hidden > 0``."""

    def __init__(self, in_features: int, hidden: int = 0) -> None:
        super().__init__()
        self.in_features = in_features
        self.hidden = hidden
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, 1))
        else:
            self.net = nn.Linear(in_features, 1)
        for m in self.net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=1.0 / math.sqrt(m.in_features))
                nn.init.zeros_(m.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).squeeze(-1)


class ProcessRewardModel(nn.Module):
    """``backbone`` (an ``AutoModel`` base model, optionally wrapped by ``peft``) + :class:`StepHead`.

    The head always runs in fp32, whatever the backbone's precision.
    """

    def __init__(self, backbone: nn.Module, hidden_size: int, head_hidden: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = StepHead(hidden_size, head_hidden).float()
        self.tokenizer: Any = None
        self.prompt_format: PromptFormat | None = None
        self.spec: dict[str, Any] = {}

    def attach_format(self, tokenizer: Any, max_length: int, max_statement_tokens: int = 0) -> PromptFormat:
        """Set the tokenizer and input format that scoring and training use with this model."""
        self.tokenizer = tokenizer
        self.prompt_format = PromptFormat(tokenizer, max_length, max_statement_tokens)
        return self.prompt_format

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def is_lora(self) -> bool:
        return hasattr(self.backbone, "peft_config")

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The last hidden layer ``[B, T, H]`` (no other layer is kept, no LM head is run).

        A batch without padding passes no mask, so attention can take the fused causal kernel
        instead of materialising a [B, heads, T, T] mask and score matrix.
        """
        if bool(attention_mask.all()):
            attention_mask = None
        with attention_kernels(input_ids.device):
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, return_dict=True)
        return out.last_hidden_state

    def prefix_cache(self, prefix_ids: torch.Tensor) -> Any:
        """The key/value cache of one prefix ``[P]`` that many sequences share (a problem's header)."""
        with attention_kernels(prefix_ids.device):
            out = self.backbone(input_ids=prefix_ids[None], use_cache=True, return_dict=True)
        return out.cache if "cache" in out else out.past_key_values

    @property
    def _cache_argument(self) -> str:
        """The forward argument that takes a cache: ``cache`` (newer transformers) or ``past_key_values``."""
        base = self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone
        return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    def hidden_states_after(self, cache: Any, prefix_len: int, batch: StepBatch) -> torch.Tensor:
        """The last hidden layer ``[B, L, H]`` of ``batch``'s sequences, each continuing the cached
        prefix: the same states a full pass over prefix + sequence gives at those positions."""
        rows = batch.input_ids.shape[0]
        past = copy.deepcopy(cache)  # the forward pass appends to the cache it is given
        if rows > 1:
            past.batch_repeat_interleave(rows)
        mask = torch.cat([batch.attention_mask.new_ones(rows, prefix_len), batch.attention_mask], dim=1)
        with attention_kernels(batch.input_ids.device):
            out = self.backbone(input_ids=batch.input_ids, attention_mask=mask, use_cache=True, return_dict=True,
                                **{self._cache_argument: past})
        return out.last_hidden_state

    def step_features(self, batch: StepBatch) -> torch.Tensor:
        """The hidden state the head reads at each step's last token ``[S, H]`` (fp32)."""
        hidden = self.hidden_states(batch.input_ids, batch.attention_mask)
        return hidden[batch.step_batch_index, batch.step_token_index].float()

    def step_logits(self, batch: StepBatch) -> torch.Tensor:
        """One logit per step ``[S]`` from ONE forward pass over the batch's sequences."""
        return self.head(self.step_features(batch))

    def forward(self, batch: StepBatch, with_features: bool = False) -> Any:
        """Step logits; with ``with_features``, ``(logits, step features)`` from the same pass."""
        if not with_features:
            return self.step_logits(batch)
        features = self.step_features(batch)
        return self.head(features), features

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Named parameters that training updates (LoRA adapters + head, or everything)."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for seq in seqs[1:]:
        k = 0
        while k < n and seq[k] == first[k]:
            k += 1
        n = k
    return n


@torch.inference_mode()
def step_feature_batches(
    prm: ProcessRewardModel,
    examples: Sequence[Example],
    *,
    batch_tokens: int = 16384,
    share_prefix: bool = True,
    min_prefix: int = 16,
) -> Iterator[tuple[list[int], torch.Tensor, int]]:
    """The step features of ``examples``, one backbone pass per distinct sequence, in batches.

    Yields ``(indices into examples, features [S, H] in those examples' step order, tokens run)``.
    Identical sequences (duplicate candidates) run once. With ``share_prefix``, the sequences of a
    problem run after one pass over their common prefix (the statement header, about 60% of a
    HumanEval candidate's tokens), whose key/value cache they all reuse; the features equal a full
    pass's up to float rounding (tested). Batches are length-bucketed under ``batch_tokens``.
    """
    device = next(prm.parameters()).device
    share_prefix = share_prefix and hasattr(prm, "prefix_cache")  # a cached-feature head has no backbone
    distinct: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        distinct[tuple(ex.input_ids)].append(i)
    # one representative per distinct sequence, scoring the union of its copies' positions
    reps: list[Example] = []
    for idx in distinct.values():
        positions = sorted({t for i in idx for t in examples[i].step_token_index})
        ex = examples[idx[0]]
        reps.append(dataclasses.replace(ex, step_token_index=positions, step_index=list(range(len(positions)))))
    groups: dict[str, list[int]] = defaultdict(list)
    for r, ex in enumerate(reps):
        groups[ex.problem_id].append(r)
    jobs: list[tuple[int, list[int]]] = []  # (shared prefix length, representatives)
    plain: list[int] = []
    for idx in groups.values():
        prefix = 0
        if share_prefix and len(idx) > 1:
            prefix = min(_common_prefix([reps[r].input_ids for r in idx]),
                         min(t for r in idx for t in reps[r].step_token_index))
        if prefix >= min_prefix:
            jobs.append((prefix, idx))
        else:
            plain += idx
    if plain:
        jobs.insert(0, (0, plain))

    def fan_out(rep_idx: list[int], feats: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """Each original example's rows, from its representative's (positions -> rows)."""
        out_idx: list[int] = []
        rows: list[int] = []
        base = 0
        for r in rep_idx:
            rep = reps[r]
            where = {t: base + k for k, t in enumerate(rep.step_token_index)}
            for i in distinct[tuple(rep.input_ids)]:
                out_idx.append(i)
                rows += [where[t] for t in examples[i].step_token_index]
            base += len(rep.step_token_index)
        return out_idx, feats[torch.tensor(rows, dtype=torch.long)]

    for prefix, idx in jobs:
        cache = None
        if prefix:
            cache = prm.prefix_cache(torch.tensor(reps[idx[0]].input_ids[:prefix], device=device))
        tails = [
            dataclasses.replace(reps[r], input_ids=reps[r].input_ids[prefix:],
                                step_token_index=[t - prefix for t in reps[r].step_token_index])
            for r in idx
        ]
        for n, part in enumerate(token_batches([len(t.input_ids) for t in tails], batch_tokens)):
            batch = collate([tails[j] for j in part], prm.pad_id).to(device)
            if cache is None:
                feats = prm.step_features(batch)
            else:
                hidden = prm.hidden_states_after(cache, prefix, batch)
                feats = hidden[batch.step_batch_index, batch.step_token_index].float()
            out_idx, out_feats = fan_out([idx[j] for j in part], feats)
            yield out_idx, out_feats, batch.num_tokens + (prefix if n == 0 else 0)


def build_prm(
    backbone: str,
    *,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    lora_targets: str | list[str] = "all-linear",
    precision: str = "fp32",
    head_hidden: int = 0,
    gradient_checkpointing: bool = False,
) -> tuple[ProcessRewardModel, Any]:
    """Load ``backbone`` (spec or path) as a base model, add LoRA (``lora_r > 0``) and a head.

    Returns ``(prm, tokenizer)``. ``lora_r == 0`` means full fine-tuning.
    """
    from transformers import AutoModel, AutoTokenizer

    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}", field="precision")
    path = resolve_backbone(backbone)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        base = AutoModel.from_pretrained(path, dtype=PRECISIONS[precision])
    except OSError as exc:
        raise UserError(f"cannot load backbone {backbone!r}: {exc}", field="backbone") from None
    return wrap_backbone(
        base,
        tokenizer,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_targets=lora_targets,
        head_hidden=head_hidden,
        gradient_checkpointing=gradient_checkpointing,
    )


def wrap_backbone(
    base: nn.Module,
    tokenizer: Any,
    *,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    lora_targets: str | list[str] = "all-linear",
    head_hidden: int = 0,
    gradient_checkpointing: bool = False,
) -> tuple[ProcessRewardModel, Any]:
    """Wrap an already-loaded base model (tests build tiny random ones) into a PRM."""
    if hasattr(base, "get_output_embeddings") and base.get_output_embeddings() is not None:
        raise UserError("the PRM backbone must be a base model (AutoModel), not one with an LM head", field="backbone")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora_r > 0:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=lora_targets)
        base = get_peft_model(base, cfg)
    hidden = int(base.config.hidden_size)
    return ProcessRewardModel(base, hidden, head_hidden), tokenizer
