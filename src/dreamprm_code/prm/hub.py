"""The Hugging Face side of a checkpoint: token-classification weights and a model card.

A PRM with a linear head is exactly a ``*ForTokenClassification`` model read at step ends, so
the checkpoint is written in that layout and plain ``transformers`` / ``peft`` load it with the
trained head:

- full fine-tuning: ``config.json`` names ``Qwen2ForTokenClassification`` (or the backbone's
  own class) and ``model.safetensors`` holds ``model.*`` (the backbone) and ``score.*``;
- LoRA: ``adapter_config.json`` has ``task_type: TOKEN_CLS``, ``modules_to_save: [score]`` and
  the base model's hub id; ``adapter_model.safetensors`` holds the adapters and ``score.*``.

The head is exported with two labels (0 = step wrong, 1 = step right), the layout TRL's
``PRMTrainer`` and ``AutoModelForTokenClassification``'s default ``num_labels=2`` use: row 0 is
zero and row 1 is our head, so ``softmax(logits)[..., 1]`` at a step's last token is exactly
``sigmoid(step logit)``, the step score ``dreamprm-code score`` gives. An MLP head
(``head_hidden > 0``) has no such layout; those checkpoints keep the backbone-plus-``head.safetensors``
layout, readable only through this package.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

LABELS = {0: "step_wrong", 1: "step_right"}
PREFIX = "base_model.model."  # where peft puts the wrapped model's keys


def token_classification_class(config: Any) -> type | None:
    """The ``*ForTokenClassification`` class of a backbone config, ``None`` when there is none."""
    from transformers import AutoModelForTokenClassification

    try:
        return AutoModelForTokenClassification._model_mapping[type(config)]
    except KeyError:
        return None


def export_head(head: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``score`` weight ``[2, H]`` and bias ``[2]`` from a linear step head (see module doc)."""
    linear = head.net
    weight = torch.zeros(2, linear.in_features, dtype=linear.weight.dtype)
    bias = torch.zeros(2, dtype=linear.weight.dtype)
    weight[1] = linear.weight.detach().cpu()[0]
    bias[1] = linear.bias.detach().cpu()[0]
    return weight, bias


def import_head(head: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """The inverse of :func:`export_head`: logit difference of the two labels."""
    with torch.no_grad():
        head.net.weight.copy_((weight[1] - weight[0]).unsqueeze(0).float())
        head.net.bias.copy_((bias[1] - bias[0]).reshape(1).float())


def _head_name(cls: type, config: Any) -> str:
    with torch.device("meta"):
        model = cls(config)
    names = [n for n, m in model.named_children() if isinstance(m, nn.Linear)]
    if len(names) != 1:
        raise ValueError(f"{cls.__name__} has {len(names)} linear heads, expected one")
    return names[0]


def token_config(backbone_config: Any, cls: type) -> Any:
    config = copy.deepcopy(backbone_config)
    config.architectures = [cls.__name__]
    config.id2label = dict(LABELS)
    config.label2id = {v: k for k, v in LABELS.items()}
    return config


def save_full(backbone: nn.Module, head: nn.Module, cls: type, out: Path) -> str:
    """Write backbone + head as one ``*ForTokenClassification`` model; returns the head's name."""
    config = token_config(backbone.config, cls)
    name = _head_name(cls, config)
    with torch.device("meta"):
        model = cls(config)
    setattr(model, cls.base_model_prefix, backbone)
    weight, bias = export_head(head)
    score = nn.Linear(weight.shape[1], 2)
    score.weight = nn.Parameter(weight)
    score.bias = nn.Parameter(bias)
    setattr(model, name, score)
    model.save_pretrained(out)
    return name


def save_adapter(peft_model: Any, head: nn.Module, cls: type, base_model: str, out: Path) -> str:
    """Write the LoRA adapters re-keyed for ``*ForTokenClassification`` and the head as a
    ``modules_to_save`` layer, with an ``adapter_config.json`` naming ``base_model``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    base_config = peft_model.get_base_model().config
    name = _head_name(cls, token_config(base_config, cls))
    prefix = cls.base_model_prefix
    state = {
        PREFIX + prefix + "." + k.removeprefix(PREFIX): v.detach().cpu().contiguous()
        for k, v in get_peft_model_state_dict(peft_model).items()
    }
    weight, bias = export_head(head)
    state[f"{PREFIX}{name}.weight"] = weight.contiguous()
    state[f"{PREFIX}{name}.bias"] = bias.contiguous()
    save_file(state, out / "adapter_model.safetensors", metadata={"format": "pt"})
    config = copy.deepcopy(next(iter(peft_model.peft_config.values())))
    config.task_type = "TOKEN_CLS"
    config.modules_to_save = [name]
    config.base_model_name_or_path = base_model
    config.inference_mode = True
    if isinstance(config.target_modules, str):  # "all-linear" would wrap the head too
        config.target_modules = sorted(
            {n.rsplit(".", 1)[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
        )
    config.save_pretrained(out)
    return name


def load_adapter(base: nn.Module, path: Path, base_prefix: str) -> Any:
    """The LoRA-wrapped base model (``AutoModel``, as training had it) from an exported adapter."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    raw = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    fields = {k: v for k, v in raw.items() if k in LoraConfig.__dataclass_fields__}
    fields.update(task_type=None, modules_to_save=None, inference_mode=False)
    model = get_peft_model(base, LoraConfig(**fields))
    inner = f"{PREFIX}{base_prefix}."
    state = load_file(path / "adapter_model.safetensors")
    adapters = {PREFIX + k.removeprefix(inner): v for k, v in state.items() if k.startswith(inner)}
    result = set_peft_model_state_dict(model, adapters)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"adapter keys that fit no layer: {result.unexpected_keys[:3]}")
    return model


def _last_validation(out: Path) -> dict[str, Any] | None:
    log = out / "train_log.jsonl"
    if not log.exists():
        return None
    last = None
    for line in log.read_text(encoding="utf-8").splitlines():
        if '"val_steps"' in line:
            try:
                last = json.loads(line)
            except json.JSONDecodeError:
                continue
    return last


def model_card(out: Path, meta: dict[str, Any]) -> str:
    """README.md: hub metadata (base model, library, tags) and what the PRM is, was trained on,
    with which settings, how it scored on held-out problems, and how to load it."""
    from huggingface_hub import ModelCardData

    base = meta.get("base_model") or meta.get("backbone", "")
    lora = bool(meta.get("lora"))
    exported = meta.get("layout") == "token-classification"
    data = ModelCardData(
        base_model=base if base and "/" in base and not Path(base).exists() else None,
        library_name="peft" if lora else "transformers",
        pipeline_tag="token-classification" if exported else None,
        tags=["process-reward-model", "dreamprm-code", "code", "reward-model"],
    )
    from dreamprm_code.prm.config import TrainConfig

    train = TrainConfig.current_keys(meta.get("train") or {})  # older checkpoints: older names
    data_info = meta.get("data", {})
    val = _last_validation(out)
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# {meta.get('name') or out.name}: a process reward model for code", "",
        "Scores each step of a candidate program (a statement-level chunk of its code, from Python's `ast`) "
        "with the probability that the candidate can still be completed into a correct solution. Trained "
        "with [dreamprm-code](https://pypi.org/project/dreamprm-code/) on Monte-Carlo step labels "
        "(rollouts from each step prefix, run against the problem's tests).", "",
        "## Base model", "",
        f"- `{base}`" + (f" (loaded from the local copy `{meta['backbone_path']}`)"
                         if meta.get("backbone_path") not in (None, base) else ""),
    ]
    if meta.get("base_model_note"):
        lines.append(f"- {meta['base_model_note']}")
    lines += ["", "## Training data", ""]
    if data_info:
        lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in data_info.items()]
    else:
        lines.append("- not recorded")
    lines += ["", "## Settings", ""]
    keys = ("lora_r", "lora_alpha", "learning_rate", "num_train_epochs", "per_device_train_batch_size", "max_length", "loss",
            "outcome_only", "precision", "head_hidden", "seed")
    lines += [f"- `{k}`: {train[k]}" for k in keys if k in train]
    meta_cfg = train.get("meta") or {}
    if meta_cfg:
        lines.append(f"- label correction: `{meta_cfg.get('mode')}` (" + ", ".join(
            f"{k} {meta_cfg[k]}" for k in ("refresh", "meta_lr", "batch_size") if k in meta_cfg) + ")")
    lines += [f"- steps trained: {meta.get('steps', '?')}, epochs done: {meta.get('epochs_done', '?')}", ""]
    lines += ["## Held-out results", ""]
    if val:
        lines += [
            f"On {val.get('val_problems', '?')} held-out problems ({val.get('val_steps', '?')} steps):", "",
            "| metric | value |", "|---|---|",
            *(f"| {k.removeprefix('val_')} | {v:.4f} |" for k, v in val.items()
              if k.startswith("val_") and isinstance(v, float)),
        ]
    else:
        lines.append("No held-out evaluation was logged.")
    lines += ["", "## Use", ""]
    if exported:
        cls = "AutoPeftModelForTokenClassification" if lora else "AutoModelForTokenClassification"
        lines += [
            "The step score is `softmax(logits, -1)[..., 1]` read at the last token of each step, with the input "
            f"built by dreamprm-code's template (format version {meta.get('format_version')}):", "",
            "```python",
            ("import torch\nfrom peft import AutoPeftModelForTokenClassification" if lora
             else "from transformers import AutoModelForTokenClassification"),
            f"model = {cls}.from_pretrained(PATH"
            + (", dtype=torch.float32)  # trained in fp32; the base may be stored in bf16" if lora and
               meta.get("precision", "fp32") == "fp32" else ")"),
            "```", "",
            "or, with the same input formatting as training: `dreamprm-code score --prm PATH ...`.",
        ]
        if lora:
            lines += [
                "", "`AutoPeftModelForTokenClassification` loads the base model by the hub id above. To use a "
                "local copy instead: `PeftModel.from_pretrained(AutoModelForTokenClassification.from_pretrained(LOCAL), PATH)`, "
                "or write merged weights with `dreamprm-code export-prm PATH --out DIR --merge`.",
            ]
    else:
        lines.append("This checkpoint has an MLP step head, which no `*ForTokenClassification` class holds: "
                     "load it with `dreamprm_code.prm.load_prm(PATH)` (only linear heads are exported).")
    lines += ["", "Upload with `huggingface_hub.upload_folder(folder_path=PATH, repo_id=..., "
              "ignore_patterns=['train_state*', '.save-*'])` (`train_state/` only serves resuming).", ""]
    return "\n".join(lines)
