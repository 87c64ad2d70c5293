"""The label correction's settings, apart from its torch code so the CLI and the pipeline read them cheaply."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from dreamprm_code.errors import UserError
from dreamprm_code.options import build, option

Mode = Literal["labels", "weights", "none"]
JvpMethod = Literal["auto", "forward", "fd", "fd1"]
Scope = Literal["head", "all"]
Normaliser = Literal["entry", "global"]
Preconditioner = Literal["adam", "sgd"]
MODES: tuple[str, ...] = get_args(Mode)


@dataclass
class CorrectionConfig:
    """Every setting of the label correction; saved with the checkpoint (``correction.json``).

    The defaults make every learnable label take part in at least ten updates over a default
    run (two epochs of the trainer): one per epoch from its own batch, and one per refresh from
    the sweep, at a step size (``meta_lr`` in label units, Adam-normalised) with which ten
    agreeing updates carry a label across 0.5 (docs/label-correction.md).
    """

    mode: Mode = option("labels", help="labels, weights or none: what the meta objective moves", flag="--correction")
    meta_lr: float = option(0.1, flag="--meta-lr", help="step size of a label (in [0, 1] units) or of a weight's logit per update")
    refresh: int = option(4, help="inner steps between refreshes of the meta direction v (one meta batch each)")
    batch_size: int = option(8, help="meta-set solutions per refresh")
    inner_lr: float | None = option(None, help="look-ahead step size (default: the trainer's learning rate)")
    preconditioner: Preconditioner = option(
        "adam", help="adam: the look-ahead and v use the inner Adam's second moment, as the real inner step; sgd: plain"
    )
    scope: Scope = option(
        "head", help="hypergradient through the head's parameters (last layer: no extra pass) or all trainable ones "
        "(one extra forward pass per step and a meta backward through the backbone)")
    sweep: bool = option(True, help="at each refresh, move every label seen so far along the head part of its hypergradient")
    balance: bool = option(True, help="class-balanced meta loss: passing and failing solutions carry half each")
    prior: float = option(
        0.0, help="each update pulls a label back towards its MC value by prior * r/(r+4) of the gap (r: its rollouts)"
    )
    max_weight: float = option(2.0, help="weights mode: weights live in (0, max_weight), starting at max_weight/2")
    beta1: float = option(0.9, help="Adam's first-moment decay of the label updates")
    beta2: float = option(0.999, help="Adam's second-moment decay of the label updates")
    adam_eps: float = option(1e-8, help="Adam's epsilon of the label updates")
    normaliser: Normaliser = option("global", help="Adam second moment: one running mean over all labels, or per entry")
    jvp: JvpMethod = option("auto", help="per-label JVP: auto, forward (AD), fd (central difference), fd1 (one-sided)")
    fd_eps: float = option(1e-3, help="finite-difference step, relative to the parameters' norm")
    trajectory_size: int = option(64, help="labels whose path is recorded for the plots")
    micro_batch: int | None = option(None, help="sequences per forward pass of the meta batch (0: all; None: 1 on CPU, 0 on GPU)")

    def __post_init__(self) -> None:
        checks = [
            ("mode", self.mode in MODES, f"one of {', '.join(MODES)}"),
            ("jvp", self.jvp in get_args(JvpMethod), f"one of {', '.join(get_args(JvpMethod))}"),
            ("normaliser", self.normaliser in get_args(Normaliser), "entry or global"),
            ("preconditioner", self.preconditioner in get_args(Preconditioner), "adam or sgd"),
            ("scope", self.scope in get_args(Scope), "head or all"),
            ("meta_lr", math.isfinite(self.meta_lr) and self.meta_lr > 0, "positive"),
            ("refresh", int(self.refresh) >= 1, "at least 1"),
            ("batch_size", int(self.batch_size) >= 1, "at least 1"),
            ("inner_lr", self.inner_lr is None or self.inner_lr > 0, "positive, or None"),
            ("prior", self.prior >= 0, "at least 0"),
            ("max_weight", self.max_weight > 0, "positive"),
            ("fd_eps", self.fd_eps > 0, "positive"),
            ("trajectory_size", self.trajectory_size >= 0, "at least 0"),
            ("micro_batch", self.micro_batch is None or self.micro_batch >= 0, "at least 0, or None (auto)"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise UserError(f"must be {what}, got {getattr(self, name)!r}", field=name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorrectionConfig:
        """From a mapping of fields (``TrainConfig.meta``): errors name ``meta.FIELD``."""
        return build(cls, data, path=("meta",))
