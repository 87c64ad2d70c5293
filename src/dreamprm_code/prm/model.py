"""The process reward model: a causal LM's base model plus a tiny head on each step's last token.

The backbone is loaded as its *base* model (``AutoModel``: no LM head), so no full-vocabulary
logits are ever computed, and only the last hidden layer is read (docs/architecture.md#one-forward-pass-scores-every-step). Because the
backbone is causal, the hidden state at the last token of step k depends only on tokens up to
k: one forward pass over a candidate yields every prefix's score.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dreamprm_code.errors import UserError
from dreamprm_code.prm.data import StepBatch
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
