"""Meta-learned label correction (DESIGN decision 4): ``labels`` (default), ``weights``, ``none``.

The PRM trainer asks a :class:`Correction` for the targets of every training batch
(:meth:`Correction.targets`), and every ``config.every`` inner steps calls
:meth:`Correction.outer_step`, which moves the learnable variables so that the PRM, after one
look-ahead SGD step on the current labels, better predicts the unit-test verdicts of a meta set
of whole solutions. The exact hypergradient is in :mod:`dreamprm_code.meta.hypergrad`.

- ``labels``: every learnable step label is a logit ``a_i`` initialised from its MC value
  (clamped to ``[clamp, 1 - clamp]``); the target is ``sigmoid(a_i)``.
  dL_meta/da_i = (eta/B) <v, dz_i/dtheta> * y_i (1 - y_i).
- ``weights``: the reference implementation's per-example loss weight, here
  ``w_i = max_weight * sigmoid(b_i)`` with ``b_i = 0`` at the start (w = max_weight / 2 = 1),
  so weights stay positive and bounded. There is *no* weight decay: the reference's decay pulls
  every weight, also those of examples never seen in a meta step, towards 0.
  dL_meta/db_i = -(eta/B) (sigmoid(z_i) - y_i) <v, dz_i/dtheta> * w_i (1 - w_i / max_weight).
- ``none``: the MC labels as they are; ``outer_step`` does nothing.

The learnable variables are updated by a *lazy* Adam: only the entries present in the train
batch of an outer step move, each with its own step count, so entries absent from a batch keep
their value (dense Adam would keep moving them on stale momentum).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from dreamprm_code.errors import UserError
from dreamprm_code.meta.hypergrad import (
    LOSSES,
    LogitsFn,
    MetaFn,
    default_logits_fn,
    default_meta_fn,
    lookahead,
    train_loss,
)

MODES = ("labels", "weights", "none")
JVP_METHODS = ("auto", "forward", "fd")
NORMALISERS = ("entry", "global")


@dataclass
class CorrectionConfig:
    """Settings of the label correction; saved with the checkpoint.

    ``every`` (M) is how many inner steps pass between outer steps: the outer step costs about
    two to three inner steps, so M sets the overhead (see docs/label-correction.md).
    ``normaliser``: Adam's second moment per entry (``entry``, textbook lazy Adam) or one running
    mean over all entries (``global``), which keeps the relative size of the hypergradients of
    different labels instead of moving every touched label by about ``meta_lr``.
    ``micro_batch``: sequences per forward pass in the outer step (0 = the whole batch at once;
    None = 1 on a CPU, where it keeps the outer step's peak memory below the inner step's, and 0
    on a GPU, where one sequence at a time made the outer step 6x slower and the whole batch still
    peaks below the inner step; docs/benchmarks.md). The hypergradient is the same either way.
    """

    mode: str = "labels"
    meta_lr: float = 0.1
    every: int = 12
    clamp: float = 0.02
    max_weight: float = 2.0
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    normaliser: str = "global"
    jvp: str = "auto"
    loss: str = "bce"
    fd_eps: float = 1e-3
    trajectory_size: int = 64
    seed: int = 0
    micro_batch: int | None = None

    def __post_init__(self) -> None:
        checks = [
            ("mode", self.mode in MODES, f"one of {', '.join(MODES)}"),
            ("jvp", self.jvp in JVP_METHODS, f"one of {', '.join(JVP_METHODS)}"),
            ("normaliser", self.normaliser in NORMALISERS, f"one of {', '.join(NORMALISERS)}"),
            ("loss", self.loss in LOSSES, f"one of {', '.join(LOSSES)}"),
            ("meta_lr", self.meta_lr > 0, "positive"),
            ("every", int(self.every) >= 1, "at least 1"),
            ("clamp", 0 < self.clamp < 0.5, "in (0, 0.5)"),
            ("max_weight", self.max_weight > 0, "positive"),
            ("fd_eps", self.fd_eps > 0, "positive"),
            ("trajectory_size", self.trajectory_size >= 0, "at least 0"),
            ("micro_batch", self.micro_batch is None or self.micro_batch >= 0, "at least 0, or None (auto)"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise UserError(f"must be {what}, got {getattr(self, name)!r}", field=f"meta.{name}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorrectionConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"unknown setting {unknown[0]!r}", field=f"meta.{unknown[0]}")
        return cls(**data)


class _LazyAdam:
    """Adam on selected entries of one fp32 vector; entries not selected do not move."""

    def __init__(self, n: int, cfg: CorrectionConfig) -> None:
        self.cfg = cfg
        self.m = torch.zeros(n, dtype=torch.float64)
        self.v = torch.zeros(n, dtype=torch.float64)
        self.t = torch.zeros(n, dtype=torch.long)
        self.v_global = 0.0
        self.t_global = 0

    def step(self, param: Tensor, idx: Tensor, grad: Tensor) -> Tensor:
        """Update ``param[idx]`` in place with gradient ``grad``; returns the change."""
        c = self.cfg
        g = grad.to(torch.float64)
        self.t[idx] += 1
        t = self.t[idx].to(torch.float64)
        self.m[idx] = c.beta1 * self.m[idx] + (1 - c.beta1) * g
        m_hat = self.m[idx] / (1 - c.beta1**t)
        if c.normaliser == "entry":
            self.v[idx] = c.beta2 * self.v[idx] + (1 - c.beta2) * g * g
            v_hat = self.v[idx] / (1 - c.beta2**t)
        else:
            self.t_global += 1
            self.v_global = c.beta2 * self.v_global + (1 - c.beta2) * float((g * g).mean())
            v_hat = torch.full_like(g, self.v_global / (1 - c.beta2**self.t_global))
        delta = -c.meta_lr * m_hat / (v_hat.sqrt() + c.adam_eps)
        param[idx] += delta.to(param.dtype)
        return delta

    def state_dict(self) -> dict[str, Any]:
        return {
            "m": self.m.clone(),
            "v": self.v.clone(),
            "t": self.t.clone(),
            "v_global": self.v_global,
            "t_global": self.t_global,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m, self.v, self.t = state["m"].clone(), state["v"].clone(), state["t"].clone()
        self.v_global, self.t_global = float(state["v_global"]), int(state["t_global"])


def _labels_of(batch: Any) -> Tensor:
    labels = getattr(batch, "targets", None)
    if labels is None:
        raise TypeError("a train batch needs `targets` (the MC value of each scored step)")
    return labels


def _ids_of(batch: Any) -> Tensor:
    ids = getattr(batch, "label_ids", None)
    if ids is None:
        raise TypeError("a train batch needs `label_ids` (index of each step's label, -1 = not learnable)")
    return ids


def _over_all_ranks(grad: Tensor, touched: Tensor) -> tuple[Tensor, Tensor]:
    """Sum the hypergradient and unite the touched entries over all training processes.

    Each process runs the outer step on its own training batch (different examples), so the sum
    holds every rank's entries; all ranks then take the same Adam step and keep identical labels,
    as DDP keeps identical weights. One process: unchanged.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return grad, touched
    on_gpu = dist.get_backend() == "nccl"
    mask = torch.zeros_like(grad)
    mask[touched] = 1.0
    both = torch.stack([grad, mask])
    both = both.to(torch.device("cuda", torch.cuda.current_device())) if on_gpu else both
    dist.all_reduce(both)
    both = both.cpu()
    return both[0], torch.nonzero(both[1]).flatten()


class Correction:
    """Targets for the PRM's inner steps and the outer step that corrects them.

    ``init_labels[k]`` is the MC value of learnable label k; a batch's ``label_ids`` index into it.
    """

    def __init__(
        self,
        init_labels: Tensor,
        config: CorrectionConfig,
        *,
        logits_fn: LogitsFn = default_logits_fn,
        meta_fn: MetaFn = default_meta_fn,
    ) -> None:
        init = torch.as_tensor(init_labels, dtype=torch.float32).detach().cpu().flatten()
        if init.numel() and (not torch.isfinite(init).all() or init.min() < 0 or init.max() > 1):
            raise UserError("initial labels must be finite values in [0, 1]", field="mc_value")
        self.config = config
        self.init = init
        self.logits_fn = logits_fn
        self.meta_fn = meta_fn
        self.outer_steps = 0
        self.param = self._initial_param()
        self._adam = _LazyAdam(self.n, config)
        rng = random.Random(config.seed)
        k = min(config.trajectory_size, self.n)
        self.sample_ids: list[int] = sorted(rng.sample(range(self.n), k)) if k else []
        self.trajectory: list[dict[str, Any]] = []
        self.last_log: dict[str, Any] = {}
        self._jvp_method = config.jvp
        if config.mode != "none":
            self._record()

    # --- per mode -------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def n(self) -> int:
        return int(self.init.numel())

    def _initial_param(self) -> Tensor:
        if self.mode == "labels":
            c = self.config.clamp
            return torch.logit(self.init.clamp(c, 1 - c))
        if self.mode == "weights":
            return torch.zeros(self.n, dtype=torch.float32)
        return torch.zeros(0, dtype=torch.float32)

    def label_values(self) -> Tensor:
        """The current value of every learnable label (``none``/``weights``: the MC values)."""
        return torch.sigmoid(self.param) if self.mode == "labels" else self.init.clone()

    def weight_values(self) -> Tensor:
        """The current per-example weights (1 everywhere outside ``weights`` mode)."""
        if self.mode == "weights":
            return self.config.max_weight * torch.sigmoid(self.param)
        return torch.ones(self.n)

    def targets(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        """Targets (and weights, ``weights`` mode only) for the batch's scored steps.

        A step with ``label_ids == -1`` keeps its own ``targets`` value and weight 1.
        """
        base = _labels_of(batch)
        if self.mode == "none":
            return base.float(), None
        ids = _ids_of(batch).to("cpu", torch.long)
        mask = ids >= 0
        if mask.any() and int(ids[mask].max()) >= self.n:
            raise IndexError(f"label id {int(ids[mask].max())} out of range ({self.n} learnable labels)")
        if self.mode == "labels":
            out = base.detach().float().cpu().clone()
            out[mask] = torch.sigmoid(self.param[ids[mask]])
            return out.to(base.device), None
        w = torch.ones(ids.numel(), dtype=torch.float32)
        w[mask] = self.config.max_weight * torch.sigmoid(self.param[ids[mask]])
        return base.float(), w.to(base.device)

    def train_loss(self, z: Tensor, batch: Any) -> Tensor:
        """The inner loss for the batch: mean over its steps of weight * BCE(z, target).

        The hypergradient is exact for this loss; a trainer that uses it gets what was derived.
        """
        t, w = self.targets(batch)
        return train_loss(z, t, w, self.config.loss)

    # --- outer step -----------------------------------------------------------------------
    def should_step(self, inner_step: int) -> bool:
        """Whether the trainer runs an outer step after inner step ``inner_step`` (1-based)."""
        return self.mode != "none" and inner_step > 0 and inner_step % int(self.config.every) == 0

    def outer_step(
        self, model: nn.Module, train_batch: Any, meta_batch: Any, inner_lr: float
    ) -> dict[str, Any]:
        """One hypergradient step on the learnable variables of the labels in ``train_batch``.

        Returns a log: ``meta_loss`` (L_meta after the look-ahead), ``train_loss``, the size
        of the hypergradient and of the change, how many labels moved, the JVP method, seconds.
        """
        if self.mode == "none":
            return {}
        t0 = time.perf_counter()
        targets, weights = self.targets(train_batch)
        look = lookahead(
            model,
            train_batch,
            targets,
            weights,
            meta_batch,
            inner_lr,
            logits_fn=self.logits_fn,
            meta_fn=self.meta_fn,
            method=self._jvp_method,
            fd_eps=self.config.fd_eps,
            loss=self.config.loss,
            micro_batch=self._micro_batch(model),
        )
        self._jvp_method = look.method  # after one fallback to differences, stay there
        ids = _ids_of(train_batch).to("cpu", torch.long)
        mask = ids >= 0
        value_grad = self.grad_of(look.jvp, look.dl_dz, look.dl_dzdy, look.scale, train_batch)
        # Natural gradient: the step on the logit a (or b) is preconditioned by the inverse Fisher
        # information of the parameterisation, y (1 - y) for y = sigmoid(a), which cancels the chain
        # factor dy/da. Adam thus receives dL/dy (dL/dw): a label at the clamp moves as readily as
        # one at 0.5, where the plain chain would shrink its step ~50x.
        grad, touched = _over_all_ranks(value_grad, torch.unique(ids[mask]))
        before = self.label_values() if self.mode == "labels" else self.weight_values()
        delta = self._adam.step(self.param, touched, grad[touched]) if touched.numel() else torch.zeros(0)
        after = self.label_values() if self.mode == "labels" else self.weight_values()
        self.outer_steps += 1
        self._record()
        moved = (after - before).abs()[touched] if touched.numel() else torch.zeros(1)
        self.last_log = {
            "meta_loss": look.meta_loss,
            "lookahead_train_loss": look.train_loss,
            "hypergrad_norm": float(grad.norm()),
            "param_step_mean_abs": float(delta.abs().mean()) if delta.numel() else 0.0,
            "value_change_mean_abs": float(moved.mean()),
            "touched": int(touched.numel()),
            "v_norm": look.v_norm,
            "jvp_method": look.method,
            "outer_seconds": time.perf_counter() - t0,
        }
        return dict(self.last_log)

    def _micro_batch(self, model: nn.Module) -> int:
        if self.config.micro_batch is not None:
            return int(self.config.micro_batch)
        return 0 if next(model.parameters()).is_cuda else 1

    def grad_of(self, jvp: Tensor, dl_dz: Tensor, dl_dzdy: Tensor, scale: float, batch: Any) -> Tensor:
        """The hypergradient w.r.t. the *values* (labels y, or weights w) of every learnable entry.

        ``labels``: dL/dy_i = -scale * w_i * l_zy_i * jvp_i; ``weights``: dL/dw_i = -scale * l_z_i * jvp_i,
        summed over the steps that share an entry (``scale`` = eta / B). Before the chain to the
        logit parameterisation; the finite-difference test checks exactly this.
        """
        ids = _ids_of(batch).to("cpu", torch.long)
        mask = ids >= 0
        jv = jvp.detach().cpu().double()
        if self.mode == "labels":
            _, w = self.targets(batch)
            wi = 1.0 if w is None else w.cpu().double()
            per = -scale * wi * dl_dzdy.detach().cpu().double() * jv
        elif self.mode == "weights":
            per = -scale * dl_dz.detach().cpu().double() * jv
        else:
            return torch.zeros(self.n, dtype=torch.float64)
        grad = torch.zeros(self.n, dtype=torch.float64)
        grad.index_add_(0, ids[mask], per[mask])
        return grad

    # --- visibility and state -------------------------------------------------------------
    def _record(self) -> None:
        vals = self.label_values() if self.mode != "weights" else self.weight_values()
        self.trajectory.append(
            {"outer_step": self.outer_steps, "values": [round(float(vals[i]), 6) for i in self.sample_ids]}
        )

    def corrected_labels(self) -> list[float]:
        """The label value of every learnable label now (``weights``/``none``: the MC values)."""
        return [float(x) for x in self.label_values()]

    def sample_weights(self) -> list[float]:
        """The per-example weights now (all 1 outside ``weights`` mode)."""
        return [float(x) for x in self.weight_values()]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record for the checkpoint directory (``correction.json``)."""
        return {
            "mode": self.mode,
            "config": self.config.to_dict(),
            "outer_steps": self.outer_steps,
            "initial_labels": [float(x) for x in self.init],
            "corrected_labels": self.corrected_labels(),
            "weights": self.sample_weights() if self.mode == "weights" else None,
            "trajectory_ids": list(self.sample_ids),
            "trajectory": list(self.trajectory),
            "last_log": dict(self.last_log),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly (tensors and plain values)."""
        return {
            "mode": self.mode,
            "config": self.config.to_dict(),
            "init": self.init.clone(),
            "param": self.param.clone(),
            "adam": self._adam.state_dict(),
            "outer_steps": self.outer_steps,
            "sample_ids": list(self.sample_ids),
            "trajectory": [dict(r) for r in self.trajectory],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["mode"] != self.mode:
            raise UserError(
                f"checkpoint was trained with correction mode {state['mode']!r}, not {self.mode!r}",
                field="meta.mode",
            )
        init = torch.as_tensor(state["init"], dtype=torch.float32)
        if init.numel() != self.n or not torch.allclose(init, self.init):
            raise UserError(
                "checkpoint's correction was made for different training labels", field="meta.init"
            )
        self.param = torch.as_tensor(state["param"], dtype=torch.float32).clone()
        self._adam.load_state_dict(state["adam"])
        self.outer_steps = int(state["outer_steps"])
        self.sample_ids = list(state["sample_ids"])
        self.trajectory = [dict(r) for r in state["trajectory"]]


def make_correction(
    mode: str,
    init_labels: Tensor | list[float],
    config: CorrectionConfig | dict[str, Any] | None = None,
    *,
    logits_fn: LogitsFn = default_logits_fn,
    meta_fn: MetaFn = default_meta_fn,
) -> Correction:
    """Build the correction for ``mode`` (``labels``, ``weights``, ``none``) over the MC labels."""
    if config is None:
        config = CorrectionConfig(mode=mode)
    elif isinstance(config, dict):
        config = CorrectionConfig.from_dict({**config, "mode": mode})
    elif config.mode != mode:
        config = CorrectionConfig.from_dict({**config.to_dict(), "mode": mode})
    if not math.isfinite(config.meta_lr):
        raise UserError("must be finite", field="meta.meta_lr")
    return Correction(
        torch.as_tensor(init_labels, dtype=torch.float32), config, logits_fn=logits_fn, meta_fn=meta_fn
    )


__all__ = ["MODES", "Correction", "CorrectionConfig", "make_correction"]
