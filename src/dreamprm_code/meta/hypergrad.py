"""The one-step unrolled hypergradient of the label correction (docs/architecture.md), without second-order autograd.

Inner step (SGD look-ahead on the trainable parameters only)::

    L_train(theta, y, w) = (1/B) * sum_i w_i * l(z_i(theta), y_i)
    theta'               = theta - eta * grad_theta L_train(theta, y, w)
                         = theta - (eta/B) * sum_i w_i * l_z(z_i, y_i) * dz_i/dtheta

so, with l_z = dl/dz and l_zy = d2l/dz dy (BCE with logits: l_z = sigmoid(z) - y, l_zy = -1),

    d theta' / d y_i = -(eta / B) * w_i * l_zy(z_i) * dz_i/dtheta     (BCE: +(eta/B) w_i dz_i/dtheta)
    d theta' / d w_i = -(eta / B) * l_z(z_i, y_i) * dz_i/dtheta

and with v = grad_theta' L_meta(theta') the chain rule gives, exactly,

    dL_meta / dy_i = -(eta / B) * w_i * l_zy(z_i) * <v, dz_i/dtheta>
    dL_meta / dw_i = -(eta / B) * l_z(z_i, y_i) * <v, dz_i/dtheta>

``<v, dz_i/dtheta>`` for every i at once is one Jacobian-vector product of the logits along v
at theta: forward-mode AD (``torch.func.jvp`` over ``functional_call``) or a central difference
of two forward passes. This module computes ``z``, ``l_z``, ``l_zy`` and that product; the
correction modes turn them into gradients of their own parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jvp

#: ``logits_fn(model, batch) -> Tensor[S]``: one logit per scored step of the batch.
LogitsFn = Callable[[nn.Module, Any], Tensor]
#: ``meta_fn(model, batch) -> (logits[M], verdicts[M])``: the final-step logit of each meta solution.
MetaFn = Callable[[nn.Module, Any], tuple[Tensor, Tensor]]


def default_logits_fn(model: nn.Module, batch: Any) -> Tensor:
    """The PRM's own step logits (``ProcessRewardModel.step_logits``)."""
    return model.step_logits(batch)


def default_meta_fn(model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
    """Final-step logits and unit-test verdicts of a meta batch (``StepBatch.is_final``, ``targets``).

    Steps that are not final, or whose target is unknown (NaN), are left out.
    """
    z = model.step_logits(batch)
    targets = batch.targets.to(z.device)
    keep = batch.is_final.to(z.device) & ~torch.isnan(targets)
    if not bool(keep.any()):
        raise ValueError("the meta batch has no final step with a verdict")
    return z[keep], targets[keep]


LOSSES = ("bce", "mse")


def meta_loss_sum(z: Tensor, verdicts: Tensor, balance: bool = True) -> tuple[Tensor, float]:
    """The meta objective over a batch of whole solutions, as ``(sum, count)``: ``sum / count`` is the loss.

    ``balance``: each class (passing, failing) carries half of the loss whatever its share, so a
    meta batch of mostly failing solutions cannot be fitted by predicting "fails" everywhere; with
    one class only, that class carries all of it. The count is the batch size either way, so
    micro-batches accumulate to the same value as the whole batch when their class counts are
    taken from the whole batch (``class_counts``).
    """
    zf = z.to(torch.promote_types(z.dtype, torch.float32))
    y = verdicts.to(zf.device, zf.dtype)
    per = F.binary_cross_entropy_with_logits(zf, y, reduction="none")
    if balance:
        per = per * balance_weights(y)
    return per.sum(), float(zf.numel())


def balance_weights(y: Tensor, counts: tuple[float, float] | None = None) -> Tensor:
    """Per-solution weights n / (2 n_class) (1 where a class is absent), mean 1 over a balanced batch."""
    pos = float((y >= 0.5).sum()) if counts is None else counts[0]
    neg = float((y < 0.5).sum()) if counts is None else counts[1]
    n = pos + neg
    if pos == 0 or neg == 0:
        return torch.ones_like(y)
    return torch.where(y >= 0.5, torch.full_like(y, n / (2 * pos)), torch.full_like(y, n / (2 * neg)))


def train_loss(z: Tensor, targets: Tensor, weights: Tensor | None = None, loss: str = "bce") -> Tensor:
    """The inner loss the hypergradient is exact for: mean over the B scored steps of w_i * l(z_i, y_i).

    ``bce``: BCE with logits; ``mse``: squared error of sigmoid(z) (the trainer's two losses).
    """
    zf = z.to(torch.promote_types(z.dtype, torch.float32))
    y = targets.to(z.device, zf.dtype)
    if loss == "bce":
        per = F.binary_cross_entropy_with_logits(zf, y, reduction="none")
    elif loss == "mse":
        per = (torch.sigmoid(zf) - y) ** 2
    else:
        raise ValueError(f"unknown loss {loss!r} ({', '.join(LOSSES)})")
    if weights is not None:
        per = per * weights.to(z.device, zf.dtype)
    return per.mean()


def loss_derivatives(z: Tensor, y: Tensor, loss: str = "bce") -> tuple[Tensor, Tensor]:
    """``(dl/dz, d2l/dz dy)`` per step: what turns the JVP into d/dw and d/dy of theta'.

    bce: ``(sigmoid(z) - y, -1)``; mse: ``(2 (s - y) s (1 - s), -2 s (1 - s))`` with s = sigmoid(z).
    """
    s = torch.sigmoid(z)
    if loss == "bce":
        return s - y, -torch.ones_like(z)
    if loss == "mse":
        ds = s * (1 - s)
        return 2 * (s - y) * ds, -2 * ds
    raise ValueError(f"unknown loss {loss!r} ({', '.join(LOSSES)})")


def trainable_parameters(model: nn.Module) -> dict[str, Tensor]:
    """The parameters the trainer updates (LoRA adapters and head, or everything): theta."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters")
    return params


class _Bound(nn.Module):
    """Lets ``functional_call`` run any logits function, not only ``forward``."""

    def __init__(self, model: nn.Module, fn: Callable[[nn.Module, Any], Any]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, batch: Any) -> Any:
        return self.fn(self.model, batch)


def call_with(
    model: nn.Module, fn: Callable[[nn.Module, Any], Any], params: dict[str, Tensor], batch: Any
) -> Any:
    """``fn(model, batch)`` with the named parameters replaced by ``params`` (the rest unchanged)."""
    bound = _Bound(model, fn)
    return functional_call(bound, {f"model.{n}": t for n, t in params.items()}, (batch,), strict=False)


#: The per-step tensors of a ``StepBatch``-like record, in the order of its scored steps.
_STEP_FIELDS = ("step_batch_index", "step_token_index", "targets", "label_ids", "is_final", "step_index")
#: A micro-batch and the positions of its scored steps in the whole batch (None: the whole batch).
Chunk = tuple[Any, Tensor | None]


def split_batch(batch: Any, size: int) -> list[Chunk]:
    """Micro-batches of at most ``size`` sequences, each cut to its own longest sequence.

    Returns ``[(micro_batch, positions)]`` where ``positions`` index the micro-batch's scored
    steps in the whole batch's step order. ``size`` 0, or a batch that is not a ``StepBatch``-like
    dataclass, gives ``[(batch, None)]``. Sequences without a scored step are left out: they add
    nothing to any loss or logit. Splitting changes no value, only how many activations are alive
    at once (every loss here is a sum over steps or sequences).
    """
    names = ("input_ids", "attention_mask", *_STEP_FIELDS)
    if size <= 0 or not dataclasses.is_dataclass(batch) or not all(hasattr(batch, n) for n in names):
        return [(batch, None)]
    n_seq = int(batch.input_ids.shape[0])
    if n_seq <= size:
        return [(batch, None)]
    sbi = batch.step_batch_index
    out: list[Chunk] = []
    for lo in range(0, n_seq, size):
        hi = min(lo + size, n_seq)
        sel = (sbi >= lo) & (sbi < hi)
        if not bool(sel.any()):
            continue
        mask = batch.attention_mask[lo:hi]
        cols = mask.bool().any(0).nonzero()
        width = max(int(cols.max()) + 1 if cols.numel() else 0, int(batch.step_token_index[sel].max()) + 1)
        fields = {n: getattr(batch, n)[sel] for n in _STEP_FIELDS}
        fields["step_batch_index"] = fields["step_batch_index"] - lo
        extra = {
            n: list(getattr(batch, n))[lo:hi]
            for n in ("solution_ids", "problem_ids")
            if len(getattr(batch, n, ())) == n_seq
        }
        chunk = dataclasses.replace(
            batch, input_ids=batch.input_ids[lo:hi, :width], attention_mask=mask[:, :width], **fields, **extra
        )
        out.append((chunk, sel.nonzero().flatten()))
    return out


def _assemble(parts: Sequence[tuple[Tensor | None, Tensor]]) -> Tensor:
    """The whole batch's ``[S]`` vector from the micro-batches' pieces."""
    if not parts:
        return torch.zeros(0)
    if len(parts) == 1 and parts[0][0] is None:
        return parts[0][1]
    first = parts[0][1]
    n = sum(int(piece.numel()) for _, piece in parts)
    out = torch.zeros(n, dtype=first.dtype, device=first.device)
    for pos, piece in parts:
        assert pos is not None
        out[pos.to(out.device)] = piece
    return out


def _add_grads(acc: list[Tensor | None], grads: Sequence[Tensor | None]) -> None:
    for k, g in enumerate(grads):
        if g is not None:
            acc[k] = g if acc[k] is None else acc[k] + g  # type: ignore[operator]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off during the outer step, so the look-ahead and the JVP see one function."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


@contextlib.contextmanager
def _math_attention() -> Iterator[None]:
    """Fused SDPA kernels have no forward-mode AD; the math kernel is a composite that does."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - torch < 2.3
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield


@dataclass
class Lookahead:
    """What one outer step measured: everything the correction modes need, in fp32."""

    z: Tensor  # [S] train logits at theta
    dl_dz: Tensor  # [S] dl/dz_i (bce: sigmoid(z) - y)
    dl_dzdy: Tensor  # [S] d2l/dz_i dy_i (bce: -1)
    jvp: Tensor  # [S] <v, dz_i/dtheta> at theta
    scale: float  # eta / B
    meta_loss: float  # L_meta(theta')
    train_loss: float  # L_train(theta)
    v_norm: float
    method: str  # "forward" or "fd"


def _acc(dtype: torch.dtype) -> torch.dtype:
    """The accumulator dtype: fp32 for bf16/fp16/fp32 parameters, fp64 for fp64 ones."""
    return torch.promote_types(dtype, torch.float32)


def _low_precision(model: nn.Module) -> bool:
    """Whether any weight is bf16/fp16: there finite differences drown in rounding."""
    return any(p.dtype in (torch.bfloat16, torch.float16) for p in model.parameters())


def _jvp_forward(
    model: nn.Module,
    logits_fn: LogitsFn,
    theta: dict[str, Tensor],
    v: dict[str, Tensor],
    chunks: Sequence[Chunk],
) -> Tensor:
    names = list(theta)
    primals = {n: theta[n].detach() for n in names}
    tangents = {n: v[n].to(theta[n].dtype) for n in names}
    parts = []
    with _math_attention():
        for chunk, pos in chunks:
            _, dz = jvp(lambda p, c=chunk: call_with(model, logits_fn, p, c), (primals,), (tangents,))
            parts.append((pos, dz.detach().to(_acc(dz.dtype))))
    return _assemble(parts)


def _jvp_fd(
    model: nn.Module,
    logits_fn: LogitsFn,
    theta: dict[str, Tensor],
    v: dict[str, Tensor],
    chunks: Sequence[Chunk],
    rel_eps: float,
    z0: Tensor | None = None,
) -> Tensor:
    """Central difference (or one-sided from ``z0`` = the logits at theta); the step is ``rel_eps``
    of the parameters' norm along unit v.

    Plain forward passes (no graph); theta + e v and theta - e v are built one at a time.
    """
    theta_norm = math.sqrt(sum(float(t.detach().to(_acc(t.dtype)).pow(2).sum()) for t in theta.values()))
    v_norm = math.sqrt(sum(float(t.pow(2).sum()) for t in v.values()))
    if v_norm == 0.0:
        return torch.zeros(0)
    eps = rel_eps * max(theta_norm, 1.0) / v_norm
    out = []
    with torch.no_grad():
        for sign in (1.0,) if z0 is not None else (1.0, -1.0):
            moved = {
                n: (theta[n].detach().to(v[n].dtype) + sign * eps * v[n]).to(theta[n].dtype) for n in theta
            }
            parts = []
            for chunk, pos in chunks:
                z = call_with(model, logits_fn, moved, chunk)
                parts.append((pos, z.to(_acc(z.dtype))))
            del moved
            out.append(_assemble(parts))
    if z0 is not None:
        return (out[0] - z0.detach().to(out[0].device, out[0].dtype)) / eps
    return (out[0] - out[1]) / (2 * eps)


def _meta_class_counts(meta_batch: Any) -> tuple[float, float] | None:
    """(passing, failing) solutions of a whole meta batch, where its record says (``StepBatch``)."""
    targets, final = getattr(meta_batch, "targets", None), getattr(meta_batch, "is_final", None)
    if targets is None or final is None:
        return None
    y = targets[final.to(targets.device) & ~torch.isnan(targets)]
    return float((y >= 0.5).sum()), float((y < 0.5).sum())


def meta_gradient(
    model: nn.Module,
    params: dict[str, Tensor],
    meta_batch: Any,
    *,
    meta_fn: MetaFn = default_meta_fn,
    micro_batch: int = 0,
    balance: bool = True,
    wrt: Sequence[str] | None = None,
) -> tuple[dict[str, Tensor], float]:
    """``v = grad L_meta`` at the trainable parameters ``params`` (theta'), and ``L_meta`` there.

    The meta loss is a sum over solutions divided once by their count, so it is accumulated over
    micro-batches of ``micro_batch`` sequences (0: the whole batch) to the same value; with
    ``balance`` the class weights come from the whole batch's counts. ``wrt``: the names to
    differentiate (default all); the others enter detached, so no graph is built through the
    layers below the first of ``wrt`` (the head only: a forward pass without a backbone graph).
    """
    chunks = split_batch(meta_batch, micro_batch)
    counts = _meta_class_counts(meta_batch) if balance else None
    names = list(params) if wrt is None else list(wrt)
    params = {n: (t if n in names else t.detach()) for n, t in params.items()}
    v_sum: list[Tensor | None] = [None] * len(names)
    meta_sum, n_meta = 0.0, 0
    for chunk, _ in chunks:
        try:
            meta_z, verdicts = call_with(model, meta_fn, params, chunk)
        except ValueError:
            if len(chunks) == 1:
                raise
            continue  # this micro-batch has no final step with a verdict; others may
        if meta_z.numel() == 0:
            continue
        meta_z = meta_z.to(_acc(meta_z.dtype))
        y = verdicts.to(meta_z.device, meta_z.dtype)
        per = F.binary_cross_entropy_with_logits(meta_z, y, reduction="none")
        if balance:
            per = per * balance_weights(y, counts)
        lm = per.sum()
        _add_grads(v_sum, torch.autograd.grad(lm, [params[n] for n in names], allow_unused=True))
        meta_sum += float(lm.detach())
        n_meta += int(meta_z.numel())
        del meta_z, lm, per
    if n_meta == 0:
        raise ValueError("the meta batch has no final step with a verdict")
    v = {
        n: torch.zeros_like(params[n], dtype=_acc(params[n].dtype)) if g is None else g.to(_acc(g.dtype)) / n_meta
        for n, g in zip(names, v_sum, strict=True)
    }
    return v, meta_sum / n_meta


def jvp_along(
    model: nn.Module,
    logits_fn: LogitsFn,
    theta: dict[str, Tensor],
    v: dict[str, Tensor],
    chunks: Sequence[Chunk],
    *,
    method: str = "auto",
    fd_eps: float = 1e-3,
    z: Tensor | None = None,
) -> tuple[Tensor, str]:
    """``<v, dz_i/dtheta>`` for every scored step of the chunks' batch, and the method used.

    ``forward``: forward-mode AD; ``fd``: central difference (two forward passes); ``fd1``: a
    one-sided difference from the logits ``z`` the caller already has at theta (one forward pass,
    first-order accurate: the error is O(eps) where the central one is O(eps^2)); ``auto``:
    ``fd1`` when ``z`` is given and the weights are fp32/fp64, ``fd`` without ``z``, forward mode
    for bf16/fp16 models, falling back to ``fd`` when an operator has no forward-mode formula.
    """
    used = method
    if method == "auto" and not _low_precision(model):
        used = "fd1" if z is not None else "fd"
    if used in ("auto", "forward"):
        try:
            return _jvp_forward(model, logits_fn, theta, v, chunks), "forward"
        except (NotImplementedError, RuntimeError) as exc:
            if method == "forward":
                raise
            warnings.warn(
                f"forward-mode JVP unavailable ({exc.__class__.__name__}: {str(exc)[:120]}); using finite differences",
                stacklevel=2,
            )
            used = "fd"
    if used == "fd1":
        if z is None:
            raise ValueError("the one-sided difference needs the logits at theta")
        return _jvp_fd(model, logits_fn, theta, v, chunks, fd_eps, z0=z), "fd1"
    if used == "fd":
        return _jvp_fd(model, logits_fn, theta, v, chunks, fd_eps), "fd"
    raise ValueError(f"unknown JVP method {method!r} (auto, forward, fd, fd1)")


def lookahead(
    model: nn.Module,
    train_batch: Any,
    targets: Tensor,
    weights: Tensor | None,
    meta_batch: Any,
    inner_lr: float,
    *,
    logits_fn: LogitsFn = default_logits_fn,
    meta_fn: MetaFn = default_meta_fn,
    method: str = "auto",
    fd_eps: float = 1e-3,
    loss: str = "bce",
    micro_batch: int = 1,
    balance: bool = False,
) -> Lookahead:
    """One unrolled look-ahead step and the JVP ``<grad L_meta(theta'), dz_i/dtheta>`` for every i.

    ``method``: ``forward`` (``torch.func.jvp``), ``fd`` (two extra forward passes) or ``auto``:
    ``fd`` when every weight is fp32/fp64 (cheaper: two plain forward passes; accurate there),
    forward mode for bf16/fp16 models, falling back to ``fd`` when an operator has no
    forward-mode formula.
    ``micro_batch``: sequences per forward pass (0 = the whole batch at once). The train and
    meta losses are sums over steps and solutions, so their gradients are accumulated over
    micro-batches and the result is the same; only the activations alive at once shrink, which
    keeps the outer step's peak memory below the inner step's.
    ``balance``: the class-balanced meta loss (:func:`meta_loss_sum`).
    Parameters keep their dtype in every forward pass; the update theta', the tangent v, the
    JVP and everything derived from them are fp32, so bf16 models get fp32 hypergradients.
    The model's parameters and ``.grad`` are never modified.
    """
    theta = trainable_parameters(model)
    params = list(theta.values())
    train_chunks = split_batch(train_batch, micro_batch)
    n_steps = int(targets.numel())
    with _eval_mode(model):
        # gradient of the train loss at theta, accumulated over micro-batches
        grads: list[Tensor | None] = [None] * len(params)
        z_parts = []
        l_train = 0.0
        for chunk, pos in train_chunks:
            zc = logits_fn(model, chunk)
            idx = None if pos is None else pos.to(targets.device)
            t = targets if idx is None else targets[idx]
            w = None if weights is None else (weights if idx is None else weights[idx.to(weights.device)])
            lc = train_loss(zc, t, w, loss) * (zc.numel() / max(n_steps, 1))
            _add_grads(grads, torch.autograd.grad(lc, params, allow_unused=True))
            l_train += float(lc.detach())
            z_parts.append((pos, zc.detach().to(_acc(zc.dtype))))
            del zc, lc
        z = _assemble(z_parts)
        del z_parts
        theta_new = {}
        for (n, p), g in zip(theta.items(), grads, strict=True):
            acc = _acc(p.dtype)
            upd = p.detach().to(acc) if g is None else p.detach().to(acc) - inner_lr * g.to(acc)
            theta_new[n] = upd.to(p.dtype).requires_grad_(True)
        del grads
        v, meta_loss = meta_gradient(model, theta_new, meta_batch, meta_fn=meta_fn, micro_batch=micro_batch, balance=balance)
        del theta_new
        v_norm = math.sqrt(sum(float(t.pow(2).sum()) for t in v.values()))
        dz, used = jvp_along(model, logits_fn, theta, v, train_chunks, method=method, fd_eps=fd_eps)
        if dz.numel() == 0:
            dz = torch.zeros_like(z)
    y = targets.detach().to(z.device, z.dtype)
    dl_dz, dl_dzdy = loss_derivatives(z, y, loss)
    return Lookahead(
        z=z,
        dl_dz=dl_dz,
        dl_dzdy=dl_dzdy,
        jvp=dz.detach().to(z.device, z.dtype),
        scale=inner_lr / z.numel(),
        meta_loss=meta_loss,
        train_loss=l_train,
        v_norm=v_norm,
        method=used,
    )


def unrolled_meta_loss(
    model: nn.Module,
    train_batch: Any,
    targets: Tensor,
    weights: Tensor | None,
    meta_batch: Any,
    inner_lr: float,
    *,
    logits_fn: LogitsFn = default_logits_fn,
    meta_fn: MetaFn = default_meta_fn,
    loss: str = "bce",
    balance: bool = False,
) -> float:
    """L_meta(theta - eta * grad L_train(theta, y, w)): the objective the hypergradient differentiates.

    Used by the finite-difference check in the tests and by diagnostics.
    """
    theta = trainable_parameters(model)
    with _eval_mode(model):
        z = logits_fn(model, train_batch)
        grads = torch.autograd.grad(
            train_loss(z, targets, weights, loss), list(theta.values()), allow_unused=True
        )
        new = {
            n: p.detach() if g is None else p.detach() - inner_lr * g
            for (n, p), g in zip(theta.items(), grads, strict=True)
        }
        with torch.no_grad():
            meta_z, verdicts = call_with(model, meta_fn, new, meta_batch)
            total, count = meta_loss_sum(meta_z.double(), verdicts.double(), balance)
            return float(total) / count
