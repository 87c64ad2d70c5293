"""The PRM trainer's settings, apart from its torch code so the CLI and the pipeline read them cheaply.

Each field's default and help is its one definition: ``train``'s options (``options_from``) and
the pipeline's ``train`` stage (``stage_model``) are generated from it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from dreamprm_code.errors import UserError
from dreamprm_code.meta.config import CorrectionConfig
from dreamprm_code.options import RenamedOptionWarning, build, option, rename_old_keys
from dreamprm_code.scaling.select import AGGREGATIONS, Aggregation

Loss = Literal["bce", "mse"]
Precision = Literal["fp32", "bf16"]
#: Settings a resumed run may change (how long to go on, how often to save); the rest must match.
RESUMABLE_CHANGES = {"output_dir", "num_train_epochs", "frozen_epochs", "max_steps", "save_steps", "eval_each_epoch",
                     "eval_batch_tokens", "report_to", "feature_cache"}
#: The experiment trackers ``report_to`` may name (accelerate's integrations) and the pip package each needs.
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet-ml",
                    "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}


@dataclass
class TrainConfig:
    """Every setting of a PRM training run; saved in ``prm.json`` and ``train_config.json``.

    Names that mean what ``transformers.TrainingArguments``' do are spelled as there
    (``output_dir``, ``learning_rate``, ``num_train_epochs``, ``per_device_train_batch_size``,
    ``save_steps``, ``max_steps``, ``warmup_steps``, ``weight_decay``, ``report_to``); the names of earlier
    releases (``__renamed__``) still work for one release, with a deprecation message.
    """

    __renamed__: ClassVar[dict[str, str]] = {
        "out": "output_dir", "lr": "learning_rate", "epochs": "num_train_epochs",
        "batch_size": "per_device_train_batch_size", "save_every": "save_steps",
        # flat correction settings of earlier releases, now in ``meta``
        "correction": "meta.mode", "meta_lr": "meta.meta_lr", "inner_lr": "meta.inner_lr",
        "meta_batch_size": "meta.batch_size",
    }

    backbone: str = option("embedded:smollm2-135m-instruct", help="embedded:NAME, a model directory or a hub id")
    output_dir: str = option("prm", help="checkpoint directory (also holds the resumable train_state/)")
    lora_r: int = option(8, help="LoRA rank; 0 = full fine-tuning")
    lora_alpha: int = option(16, help="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = option(0.0, help="dropout on the LoRA input")
    lora_targets: str = option("all-linear", help="peft target_modules: comma-separated names, or all-linear")
    head_hidden: int = option(0, help="0 = linear head; > 0 = MLP head with this many hidden units")
    learning_rate: float = option(2e-4, help="AdamW learning rate (adapters and head)")
    weight_decay: float = option(0.0, help="AdamW weight decay")
    warmup_steps: int = option(10, help="linear warm-up steps, then constant")
    grad_clip: float = option(1.0, help="max gradient norm (0 = off)")
    num_train_epochs: int = option(2, help="passes over the training candidates")
    max_steps: int = option(0, help="stop after this many optimizer steps (0 = no limit)")
    per_device_train_batch_size: int = option(
        4, help="candidates (sequences) per batch and process; every labelled step in them is scored")
    max_length: int = option(1024, help="tokens per sequence (see prm/format.py for truncation)")
    max_statement_tokens: int = option(0, help="cap on the problem statement's tokens (0 = half of max_length)")
    loss: Loss = option("bce", help="bce (soft-label BCE with logits) or mse (on the probability)")
    outcome_only: bool = option(False, help="train on final-step labels only: the ORM baseline, same backbone")
    meta: CorrectionConfig = option(default_factory=CorrectionConfig, help="label correction (needs a meta set)")
    seed: int = option(0, help="seeds the head, LoRA init, batch order, the validation split and the correction")
    precision: Precision = option("fp32", help="fp32 or bf16 backbone weights (the head stays fp32)")
    gradient_checkpointing: bool = option(False, help="trade compute for memory on long sequences")
    val_fraction: float = option(0.1, help="share of problems held out for validation when no eval set is given")
    eval_each_epoch: bool = option(True, help="validate after every epoch")
    eval_aggregate: Aggregation = option("min", help="how best-of-N validation ranks candidates (see score.aggregate)")
    eval_batch_tokens: int = option(16384, help="token budget of a validation batch")
    save_steps: int = option(50, help="save the resumable state every N optimizer steps (and each epoch end)")
    freeze_backbone: bool = option(False, help="frozen backbone: one pass per candidate caches step features, the head trains on them")
    frozen_epochs: int = option(20, help="head epochs with freeze_backbone (there an epoch is cheap; num_train_epochs is not used)")
    feature_cache: str = option("", help="freeze_backbone: a step-feature directory shared by runs on the same backbone, "
                                         "one run at a time (default: OUTPUT_DIR/features)")
    report_to: list[str] | str = option(
        "none", help=f"where metrics go besides train_log.jsonl: none, all (every installed one) or trackers "
                     f"({', '.join(TRACKER_PACKAGES)}); repeat or comma-separate")

    def __post_init__(self) -> None:
        if isinstance(self.meta, dict):
            self.meta = CorrectionConfig.from_dict(self.meta)
        checks = [
            ("loss", self.loss in get_args(Loss), f"one of {', '.join(get_args(Loss))}"),
            ("precision", self.precision in get_args(Precision), "fp32 or bf16"),
            ("eval_aggregate", self.eval_aggregate in AGGREGATIONS, f"one of {', '.join(AGGREGATIONS)}"),
            ("lora_r", self.lora_r >= 0, "at least 0"),
            ("num_train_epochs", self.num_train_epochs >= 1, "at least 1"),
            ("per_device_train_batch_size", self.per_device_train_batch_size >= 1, "at least 1"),
            ("max_length", self.max_length >= 64, "at least 64"),
            ("learning_rate", self.learning_rate > 0, "positive"),
            ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"),
            ("save_steps", self.save_steps >= 1, "at least 1"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise UserError(f"must be {what}, got {getattr(self, name)!r}", field=name)
        trackers = self.trackers
        unknown = [t for t in trackers if t not in (*TRACKER_PACKAGES, "all", "none")]
        if unknown:
            raise UserError(f"unknown tracker {unknown[0]!r} (one of none, all, {', '.join(TRACKER_PACKAGES)})",
                            field="report_to")
        if len(trackers) > 1 and ("none" in trackers or "all" in trackers):
            raise UserError(f"'none' and 'all' stand alone, got {self.report_to!r}", field="report_to")

    @property
    def trackers(self) -> list[str]:
        """``report_to`` as a list of names (``"none"`` and ``[]`` mean none, ``"all"`` every installed one)."""
        names = self.report_to.split(",") if isinstance(self.report_to, str) else self.report_to
        return [n.strip() for n in names if n.strip()]

    @property
    def correction(self) -> str:
        """The correction mode (``meta.mode``)."""
        return self.meta.mode

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str | Path | None = None) -> TrainConfig:
        """From a mapping of fields (``meta`` a nested mapping); names of earlier releases still work."""
        return build(cls, _dropped_keys(data, warn=True), where=where)

    @classmethod
    def current_keys(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """A saved config (a checkpoint's) under the current names, quietly: its keys are not the user's to change."""
        return rename_old_keys(cls, _dropped_keys(data, warn=False), warn=False)


def _dropped_keys(data: Mapping[str, Any], *, warn: bool) -> dict[str, Any]:
    """Without the settings of earlier releases that no longer exist (``meta_options`` moves into ``meta``)."""
    data = dict(data)
    for old in ("meta_every", "meta_options"):
        if old in data:
            value = data.pop(old)
            if warn:
                warnings.warn(RenamedOptionWarning(f"{old!r} is deprecated and no longer used (see meta.refresh)"),
                              stacklevel=3)
            if old == "meta_options" and isinstance(value, Mapping):
                data["meta"] = {**value, **(data.get("meta") or {})}
    return data
