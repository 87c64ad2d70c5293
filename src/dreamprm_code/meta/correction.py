"""Meta-learned label correction: ``labels`` (default), ``weights``, ``none``.

The PRM trainer (and any loop that follows the :class:`CorrectionHook` contract) asks the
correction for the targets of every training batch and gives it two chances per inner step:

1. :meth:`Correction.correct`, before the batch is trained on (MW-Net order): the batch's
   learnable labels move along their hypergradient, the one-step formula of
   :mod:`dreamprm_code.meta.hypergrad` with the meta direction ``v`` of the last refresh; the
   per-label part is a Jacobian-vector product of the batch's logits along ``v`` (one extra
   forward pass without a graph, ``jvp="fd1"``).
2. :meth:`Correction.refresh`, after the backward pass and before the optimiser step, every
   ``refresh`` inner steps: the look-ahead ``theta' = theta - inner_lr * P grad L_train`` takes
   the trainer's own gradient and the inner optimiser's preconditioner ``P`` (Adam's), and
   ``v = P grad L_meta(theta')`` is computed on a class-balanced meta batch. With ``sweep``,
   every label seen so far then moves along the head part of the same hypergradient, from the
   step features cached when its batch was last trained (exact for the head; see
   docs/label-correction.md for what this approximates).

Where it approximates: ``v`` is up to ``refresh - 1`` inner steps old when a batch uses it
(stale v), the look-ahead takes Adam's current second moment as fixed, and the sweep uses only
the head's parameters and features up to an epoch old. :meth:`Correction.outer_step` keeps the
exact one-step outer step (its own look-ahead on one batch), tested against finite differences.

- ``labels``: each learnable label is a value ``y_k`` in [0, 1], starting at its MC value, so
  with no update every mode trains on the same targets. The final step of a solution is its
  unit-test verdict: fixed, never corrected.
- ``weights``: a per-example loss weight ``w_k = max_weight * sigmoid(b_k)`` (starts at 1,
  bounded in (0, max_weight), no weight decay).
- ``none``: the MC labels as they are.

The learnable values are updated by a *lazy* Adam (only the entries touched move, each with
its own step count) fed the hypergradient of the value itself (natural gradient for the
weights' logit), with one running second moment over all entries (``normaliser="global"``)
so that relative sizes survive; label values are kept in [0, 1].
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from dreamprm_code.errors import UserError
from dreamprm_code.meta.config import MODES, CorrectionConfig
from dreamprm_code.meta.hypergrad import (
    LogitsFn,
    MetaFn,
    default_logits_fn,
    default_meta_fn,
    jvp_along,
    lookahead,
    loss_derivatives,
    meta_gradient,
    split_batch,
    train_loss,
    trainable_parameters,
)


class CorrectionHook(Protocol):
    """What the trainer calls; :class:`Correction` and :class:`NoCorrection` implement it."""

    def targets(self, batch: Any) -> tuple[Tensor, Tensor | None]: ...
    def correct(self, model: nn.Module, batch: Any, z: Tensor, features: Tensor | None = None) -> dict[str, Any]: ...
    def refresh(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int) -> dict[str, Any]: ...
    def corrected_labels(self) -> list[float]: ...
    def summary(self) -> dict[str, Any]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class NoCorrection:
    """``none``: the MC labels as they are; every hook is a no-op."""

    mode = "none"

    def __init__(self, init_labels: Tensor) -> None:
        self.init = torch.as_tensor(init_labels, dtype=torch.float32)

    def targets(self, batch: Any) -> tuple[Tensor, None]:
        return batch.targets.float(), None

    def correct(self, model: nn.Module, batch: Any, z: Tensor, features: Tensor | None = None) -> dict[str, Any]:
        return {}

    def refresh(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int) -> dict[str, Any]:
        return {}

    def corrected_labels(self) -> list[float]:
        return [float(x) for x in self.init]

    def summary(self) -> dict[str, Any]:
        return {"mode": "none", "corrected_labels": self.corrected_labels()}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class _LazyAdam:
    """Adam on selected entries of one vector; entries not selected do not move."""

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
        return {"m": self.m.clone(), "v": self.v.clone(), "t": self.t.clone(),
                "v_global": self.v_global, "t_global": self.t_global}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m, self.v, self.t = state["m"].clone(), state["v"].clone(), state["t"].clone()
        self.v_global, self.t_global = float(state["v_global"]), int(state["t_global"])


def _ids_of(batch: Any) -> Tensor:
    ids = getattr(batch, "label_ids", None)
    if ids is None:
        raise TypeError("a train batch needs `label_ids` (index of each step's label, -1 = not learnable)")
    return ids.to("cpu", torch.long)


def _over_all_ranks(grad: Tensor, touched: Tensor) -> tuple[Tensor, Tensor]:
    """Sum the hypergradient and unite the touched entries over all training processes.

    Each process corrects the labels of its own batch, so the sum holds every rank's entries;
    all ranks then take the same Adam step and keep identical labels, as DDP keeps identical
    weights. One process: unchanged.
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


def _adam_preconditioner(optimizer: torch.optim.Optimizer | None, params: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """``1 / (sqrt(v_hat) + eps)`` per parameter from a torch Adam/AdamW state (None: no state yet)."""
    if optimizer is None:
        return None
    out: dict[str, Tensor] = {}
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for name, p in params.items():
        state = optimizer.state.get(p)
        if not state or "exp_avg_sq" not in state or id(p) not in group_of:
            return None
        group = group_of[id(p)]
        step = float(state["step"])
        beta2 = group["betas"][1]
        v_hat = state["exp_avg_sq"].float() / (1 - beta2 ** max(step, 1.0))
        out[name] = 1.0 / (v_hat.sqrt() + group["eps"])
    return out


class Correction:
    """Targets for the PRM's inner steps, and the updates that correct them.

    ``init_labels[k]`` is the MC value of learnable label k; a batch's ``label_ids`` index into
    it. ``fixed[k]`` marks labels that are verdicts (final steps): never moved. ``rollouts[k]``
    (optional) weights the prior. ``meta_batches`` is an endless iterator of meta batches.
    """

    def __init__(
        self,
        init_labels: Tensor,
        config: CorrectionConfig,
        *,
        fixed: Tensor | None = None,
        rollouts: Tensor | None = None,
        meta_batches: Iterator[Any] | None = None,
        loss: str = "bce",
        seed: int = 0,
        logits_fn: LogitsFn = default_logits_fn,
        meta_fn: MetaFn = default_meta_fn,
    ) -> None:
        init = torch.as_tensor(init_labels, dtype=torch.float32).detach().cpu().flatten()
        if init.numel() and (not torch.isfinite(init).all() or init.min() < 0 or init.max() > 1):
            raise UserError("initial labels must be finite values in [0, 1]", field="mc_value")
        self.config = config
        self.init = init
        self.fixed = torch.zeros(self.n, dtype=torch.bool) if fixed is None else torch.as_tensor(fixed, dtype=torch.bool)
        self.rollouts = None if rollouts is None else torch.as_tensor(rollouts, dtype=torch.float32)
        self.meta_batches = meta_batches
        self.meta_batches_used = 0
        self.loss = loss
        self.logits_fn = logits_fn
        self.meta_fn = meta_fn
        self.outer_steps = 0
        self.refreshes = 0
        self.param = self._initial_param()
        self.touches = torch.zeros(self.n, dtype=torch.long)
        self._adam = _LazyAdam(self.n, config)
        rng = random.Random(seed)
        learnable = [i for i in range(self.n) if not bool(self.fixed[i])]
        k = min(config.trajectory_size, len(learnable))
        self.sample_ids: list[int] = sorted(rng.sample(learnable, k)) if k else []
        self.trajectory: list[dict[str, Any]] = []
        self.last_log: dict[str, Any] = {}
        self._jvp_method = config.jvp
        self._v: dict[str, Tensor] | None = None
        self._features: Tensor | None = None  # [n, d] step features of each label's last visit
        self._seen = torch.zeros(self.n, dtype=torch.bool)
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
            return self.init.clone()
        if self.mode == "weights":
            return torch.zeros(self.n, dtype=torch.float32)
        return torch.zeros(0, dtype=torch.float32)

    def label_values(self) -> Tensor:
        """The current value of every label (``none``/``weights``: the MC values)."""
        return self.param.clone() if self.mode == "labels" else self.init.clone()

    def weight_values(self) -> Tensor:
        """The current per-example weights (1 everywhere outside ``weights`` mode)."""
        if self.mode == "weights":
            return self.config.max_weight * torch.sigmoid(self.param)
        return torch.ones(self.n)

    def targets(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        """Targets (and weights, ``weights`` mode only) for the batch's scored steps.

        A step with ``label_ids == -1`` keeps its own ``targets`` value and weight 1.
        """
        base = batch.targets
        if self.mode == "none":
            return base.float(), None
        ids = _ids_of(batch)
        mask = ids >= 0
        if mask.any() and int(ids[mask].max()) >= self.n:
            raise IndexError(f"label id {int(ids[mask].max())} out of range ({self.n} learnable labels)")
        if self.mode == "labels":
            out = base.detach().float().cpu().clone()
            out[mask] = self.param[ids[mask]]
            return out.to(base.device), None
        w = torch.ones(ids.numel(), dtype=torch.float32)
        w[mask] = self.config.max_weight * torch.sigmoid(self.param[ids[mask]])
        return base.float(), w.to(base.device)

    def train_loss(self, z: Tensor, batch: Any) -> Tensor:
        """The inner loss for the batch: mean over its steps of weight * l(z, target)."""
        t, w = self.targets(batch)
        return train_loss(z, t, w, self.loss)

    # --- the amortised schedule -------------------------------------------------------------
    def correct(self, model: nn.Module, batch: Any, z: Tensor, features: Tensor | None = None) -> dict[str, Any]:
        """Move this batch's learnable labels along the hypergradient with the current ``v``.

        ``z``: the batch's logits at theta (the trainer's forward pass, detached here);
        ``features``: the step features the head read (cached for the sweep). Before the first
        refresh there is no ``v``: only the features are cached.
        """
        if self.mode == "none":
            return {}
        ids = _ids_of(batch)
        if features is not None:
            self.observe(batch, features, z)
        if self._v is None:
            return {}
        t0 = time.perf_counter()
        if self.config.scope == "head" and features is not None:
            head_jvp = self._head_jvp(model, features)
            if head_jvp is None:
                return {}
            g = self._value_grad(z.detach().float().cpu(), head_jvp[1], batch)
            log = self._apply(ids, g)
            log.update(jvp_method="head", correct_seconds=time.perf_counter() - t0)
            return log
        theta = trainable_parameters(model)
        was = model.training
        method = self._jvp_method
        if method in ("auto", "fd1") and _has_active_dropout(model):
            method = "fd"  # the trainer's z saw dropout; the difference needs one function
        model.eval()
        try:
            dz, used = jvp_along(model, self.logits_fn, theta, self._v, [(batch, None)], method=method,
                                 fd_eps=self.config.fd_eps, z=z.detach() if method in ("auto", "fd1") else None)
        finally:
            model.train(was)
        if dz.numel() == 0:
            return {}
        g = self._value_grad(z.detach().float().cpu(), dz.detach().float().cpu(), batch)
        log = self._apply(ids, g)
        log.update(jvp_method=used, correct_seconds=time.perf_counter() - t0)
        return log

    def refresh_due(self, step: int) -> bool:
        """Whether inner step ``step`` (0-based) refreshes ``v``."""
        return self.mode != "none" and self.meta_batches is not None and step % int(self.config.refresh) == 0

    def refresh(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int) -> dict[str, Any]:
        """After the backward pass of inner step ``step``: a new ``v`` from a meta batch, and the sweep.

        The look-ahead uses the gradient the trainer just computed (``.grad`` of the trainable
        parameters) and, with ``preconditioner="adam"``, the optimiser's second moment:
        ``theta' = theta - eta P g`` and, as the chain rule then gives, ``v = P grad L_meta(theta')``.
        """
        if not self.refresh_due(step):
            return {}
        t0 = time.perf_counter()
        theta = trainable_parameters(model)
        eta = float(self.config.inner_lr or _lr_of(optimizer) or 1e-3)
        pre = _adam_preconditioner(optimizer, theta) if self.config.preconditioner == "adam" else None
        new = {}
        for name, p in theta.items():
            acc = torch.promote_types(p.dtype, torch.float32)
            d = torch.zeros_like(p, dtype=acc) if p.grad is None else p.grad.detach().to(acc)
            if pre is not None:
                d = d * pre[name].to(acc)
            new[name] = (p.detach().to(acc) - eta * d).to(p.dtype).requires_grad_(True)
        meta_batch = next(self.meta_batches)  # type: ignore[arg-type]
        self.meta_batches_used += 1
        meta_batch = meta_batch.to(next(model.parameters()).device) if hasattr(meta_batch, "to") else meta_batch
        wrt = None
        if self.config.scope == "head":
            prefix = _head_prefix(model)
            wrt = [n for n in new if prefix is not None and n.startswith(prefix)] or None
        was = model.training
        model.eval()
        try:
            v, meta_loss = meta_gradient(model, new, meta_batch, meta_fn=self.meta_fn, wrt=wrt,
                                         micro_batch=0 if wrt else self._micro_batch(model), balance=self.config.balance)
        finally:
            model.train(was)
        if pre is not None:
            v = {n: t * pre[n].to(t.dtype) for n, t in v.items()}
        self._v = v
        self.refreshes += 1
        log: dict[str, Any] = {"meta_loss": meta_loss, "v_norm": math.sqrt(sum(float(t.pow(2).sum()) for t in v.values()))}
        if self.config.sweep:
            log.update(self._sweep(model))
        log["refresh_seconds"] = time.perf_counter() - t0
        self._record()
        return log

    @property
    def needs_features(self) -> bool:
        """Whether the sweep still lacks the step features of some learnable label."""
        return self.mode != "none" and self.config.sweep and not bool((self._seen | self.fixed).all())

    def observe(self, batch: Any, features: Tensor, z: Tensor) -> None:
        """Cache the step features the head read (and its logits) for the sweep."""
        if not self.config.sweep or self.mode == "none":
            return
        ids = _ids_of(batch)
        mask = ids >= 0
        if not bool(mask.any()):
            return
        f = features.detach().float().cpu()
        if self._features is None:
            self._features = torch.zeros(self.n, f.shape[-1])
            self._z = torch.zeros(self.n)
        self._features[ids[mask]] = f[mask]
        self._z[ids[mask]] = z.detach().float().cpu()[mask]
        self._seen[ids[mask]] = True

    def _head_jvp(self, model: nn.Module, features: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(z, <v_head, dz/dtheta_head>)`` for rows of step features: the head's logits and its part of the JVP."""
        head = getattr(model, "head", None)
        prefix = _head_prefix(model)
        if head is None or prefix is None or self._v is None or not any(n.startswith(prefix) for n in self._v):
            return None
        from torch.func import functional_call, jvp

        params = {k: p.detach() for k, p in head.named_parameters()}
        tangents = {k: self._v.get(prefix + k, torch.zeros_like(p, dtype=torch.float32)).to(p.dtype)
                    for k, p in params.items()}
        dtype = next(iter(params.values())).dtype
        feats = features.detach().to(next(head.parameters()).device, dtype)
        with torch.no_grad():
            z, dz = jvp(lambda p: functional_call(head, p, (feats,)).flatten(), (params,), (tangents,))
        return z.float().cpu(), dz.float().cpu()

    def _sweep(self, model: nn.Module) -> dict[str, Any]:
        """Every label seen so far, along the head part of its hypergradient (cached features)."""
        if self._features is None:
            return {}
        idx = torch.nonzero(self._seen & ~self.fixed).flatten()
        if idx.numel() == 0:
            return {}
        head_jvp = self._head_jvp(model, self._features[idx])
        if head_jvp is None:
            return {}
        z, dz = head_jvp
        y = self.param[idx] if self.mode == "labels" else self.init[idx]
        dl_dz, dl_dzdy = loss_derivatives(z, y, self.loss)
        g = dl_dzdy * dz if self.mode == "labels" else dl_dz * dz
        return self._apply(idx, g.double(), key="sweep")

    def _value_grad(self, z: Tensor, dz: Tensor, batch: Any) -> Tensor:
        """Per-step d L_meta / d(value), up to the positive factor eta / B shared by every step."""
        t, w = self.targets(batch)
        t = t.detach().float().cpu()
        dl_dz, dl_dzdy = loss_derivatives(z, t, self.loss)
        if self.mode == "labels":
            wi = 1.0 if w is None else w.detach().float().cpu()
            return (wi * dl_dzdy * dz).double()  # dL/dy = -(eta/B) w l_zy <v, dz>; sign below
        return (dl_dz * dz).double()

    def _apply(self, ids: Tensor, per_step: Tensor, key: str = "batch") -> dict[str, Any]:
        """Sum per-step gradients into entries, take one lazy Adam step on the learnable ones."""
        mask = ids >= 0
        grad = torch.zeros(self.n, dtype=torch.float64)
        grad.index_add_(0, ids[mask], -per_step[mask])
        touched = torch.unique(ids[mask])
        touched = touched[~self.fixed[touched]] if touched.numel() else touched
        grad, touched = _over_all_ranks(grad, touched)
        if touched.numel() == 0:
            return {}
        before = self._values()[touched]
        self._adam.step(self.param, touched, grad[touched])
        self._after_update(touched)
        self.touches[touched] += 1
        self.outer_steps += key == "batch"
        moved = (self._values()[touched] - before).abs()
        return {f"{key}_touched": int(touched.numel()), f"{key}_change_mean_abs": float(moved.mean())}

    def _after_update(self, idx: Tensor) -> None:
        """Keep label values in [0, 1]; apply the prior's pull towards the MC values."""
        if self.config.prior > 0:
            r = self.rollouts[idx] if self.rollouts is not None else torch.ones(idx.numel())
            pull = (self.config.prior * r / (r + 4)).clamp(max=1.0)
            target = self.init[idx] if self.mode == "labels" else torch.zeros(idx.numel())
            self.param[idx] -= (pull * (self.param[idx] - target)).to(self.param.dtype)
        if self.mode == "labels":
            self.param[idx] = self.param[idx].clamp(0.0, 1.0)

    def _values(self) -> Tensor:
        return self.label_values() if self.mode == "labels" else self.weight_values()

    # --- the exact one-step outer step -------------------------------------------------------
    def outer_step(self, model: nn.Module, train_batch: Any, meta_batch: Any, inner_lr: float) -> dict[str, Any]:
        """One exact hypergradient step on the labels of ``train_batch`` (its own SGD look-ahead).

        Returns a log: ``meta_loss`` (L_meta after the look-ahead), ``train_loss``, the size of
        the hypergradient and of the change, how many labels moved, the JVP method, seconds.
        """
        if self.mode == "none":
            return {}
        t0 = time.perf_counter()
        targets, weights = self.targets(train_batch)
        look = lookahead(
            model, train_batch, targets, weights, meta_batch, inner_lr,
            logits_fn=self.logits_fn, meta_fn=self.meta_fn, method=self._jvp_method if self._jvp_method != "fd1" else "fd",
            fd_eps=self.config.fd_eps, loss=self.loss, micro_batch=self._micro_batch(model), balance=self.config.balance,
        )
        if look.method == "fd":
            self._jvp_method = "fd"  # after one fallback to differences, stay there
        value_grad = self.grad_of(look.jvp, look.dl_dz, look.dl_dzdy, look.scale, train_batch)
        ids = _ids_of(train_batch)
        touched = torch.unique(ids[ids >= 0])
        touched = touched[~self.fixed[touched]] if touched.numel() else touched
        grad, touched = _over_all_ranks(value_grad, touched)
        before = self._values()
        delta = self._adam.step(self.param, touched, grad[touched]) if touched.numel() else torch.zeros(0)
        if touched.numel():
            self._after_update(touched)
            self.touches[touched] += 1
        self.outer_steps += 1
        self._record()
        moved = (self._values() - before).abs()[touched] if touched.numel() else torch.zeros(1)
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
        """The exact hypergradient w.r.t. the *values* (labels y, or weights w) of every entry.

        ``labels``: dL/dy_i = -scale * w_i * l_zy_i * jvp_i; ``weights``: dL/dw_i = -scale * l_z_i * jvp_i,
        summed over the steps that share an entry (``scale`` = eta / B). The finite-difference
        test checks exactly this.
        """
        ids = _ids_of(batch)
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
        if self.mode == "none":
            return
        vals = self._values()
        self.trajectory.append({"outer_step": self.outer_steps, "refresh": self.refreshes,
                                "values": [round(float(vals[i]), 6) for i in self.sample_ids]})

    def corrected_labels(self) -> list[float]:
        """The label value of every label now (``weights``/``none``: the MC values)."""
        return [float(x) for x in self.label_values()]

    def sample_weights(self) -> list[float]:
        """The per-example weights now (all 1 outside ``weights`` mode)."""
        return [float(x) for x in self.weight_values()]

    def movement(self) -> dict[str, Any]:
        """How far the labels moved from their initial targets, and how often each was updated."""
        learnable = ~self.fixed
        now, init = self.label_values(), self.init
        crossed = ((now >= 0.5) != (init >= 0.5)) & learnable
        t = self.touches[learnable].float()
        return {
            "learnable": int(learnable.sum()),
            "fixed": int(self.fixed.sum()),
            "mean_abs_change": float((now - init).abs()[learnable].mean()) if learnable.any() else 0.0,
            "crossed_half": int(crossed.sum()),
            "touches_min": int(t.min()) if t.numel() else 0,
            "touches_mean": float(t.mean()) if t.numel() else 0.0,
        }

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record for the checkpoint directory (``correction.json``)."""
        return {
            "mode": self.mode,
            "config": self.config.to_dict(),
            "outer_steps": self.outer_steps,
            "refreshes": self.refreshes,
            "meta_batches": self.meta_batches_used,
            "movement": self.movement(),
            "initial_labels": [float(x) for x in self.init],
            "corrected_labels": self.corrected_labels(),
            "fixed": [bool(x) for x in self.fixed],
            "touches": [int(x) for x in self.touches],
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
            "refreshes": self.refreshes,
            "meta_batches": self.meta_batches_used,
            "touches": self.touches.clone(),
            "sample_ids": list(self.sample_ids),
            "trajectory": [dict(r) for r in self.trajectory],
            "v": None if self._v is None else {k: t.clone() for k, t in self._v.items()},
            "features": None if self._features is None else self._features.clone(),
            "z": None if self._features is None else self._z.clone(),
            "seen": self._seen.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["mode"] != self.mode:
            raise UserError(
                f"checkpoint was trained with correction mode {state['mode']!r}, not {self.mode!r}",
                field="meta.mode",
            )
        init = torch.as_tensor(state["init"], dtype=torch.float32)
        if init.numel() != self.n or not torch.allclose(init, self.init):
            raise UserError("checkpoint's correction was made for different training labels", field="meta.init")
        self.param = torch.as_tensor(state["param"], dtype=torch.float32).clone()
        self._adam.load_state_dict(state["adam"])
        self.outer_steps = int(state["outer_steps"])
        self.refreshes = int(state.get("refreshes", 0))
        self.touches = torch.as_tensor(state.get("touches", torch.zeros(self.n)), dtype=torch.long).clone()
        self.sample_ids = list(state["sample_ids"])
        self.trajectory = [dict(r) for r in state["trajectory"]]
        self._v = None if state.get("v") is None else {k: t.clone() for k, t in state["v"].items()}
        if state.get("features") is not None:
            self._features, self._z = state["features"].clone(), state["z"].clone()
        self._seen = torch.as_tensor(state.get("seen", torch.zeros(self.n)), dtype=torch.bool).clone()
        used = int(state.get("meta_batches", 0))
        if self.meta_batches is not None:
            for _ in range(used - self.meta_batches_used):
                next(self.meta_batches)
        self.meta_batches_used = used


def _head_prefix(model: nn.Module) -> str | None:
    """The parameter-name prefix of ``model.head`` (``"head."``), or None without a head."""
    head = getattr(model, "head", None)
    return next((f"{name}." for name, m in model.named_modules() if m is head and name), None)


def _has_active_dropout(model: nn.Module) -> bool:
    return model.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


def _lr_of(optimizer: torch.optim.Optimizer | None) -> float | None:
    return None if optimizer is None else float(optimizer.param_groups[0]["lr"])


def make_correction(
    mode: str,
    init_labels: Tensor | list[float],
    config: CorrectionConfig | dict[str, Any] | None = None,
    **kwargs: Any,
) -> Correction | NoCorrection:
    """The correction for ``mode`` (``labels``, ``weights``, ``none``) over the MC labels.

    ``kwargs`` go to :class:`Correction` (``fixed``, ``rollouts``, ``meta_batches``, ``loss``,
    ``seed``, ``logits_fn``, ``meta_fn``).
    """
    if config is None:
        config = CorrectionConfig.from_dict({"mode": mode})
    elif isinstance(config, dict):
        config = CorrectionConfig.from_dict({**config, "mode": mode})
    elif config.mode != mode:
        config = CorrectionConfig.from_dict({**config.to_dict(), "mode": mode})
    return Correction(torch.as_tensor(init_labels, dtype=torch.float32), config, **kwargs)


__all__ = ["MODES", "Correction", "CorrectionConfig", "CorrectionHook", "NoCorrection", "make_correction", "split_batch"]
