"""Label correction (decision 4): the hypergradient against a finite difference, and behaviour."""

from __future__ import annotations

import math
import random
import types

import pytest
import torch

from dreamprm_code.errors import UserError
from dreamprm_code.meta import CorrectionConfig, make_correction
from dreamprm_code.meta.hypergrad import lookahead, unrolled_meta_loss
from dreamprm_code.prm.data import Example, StepBatch, collate
from dreamprm_code.prm.model import wrap_backbone
from tiny_models import tiny_backbone, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
#: The GPU path runs where there is one (the device machine); CI has none and skips it.
CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _rmsnorm_in_input_dtype(module: torch.nn.Module) -> None:
    """Qwen2's RMSNorm computes in fp32 even for fp64 inputs; keep fp64 for the exactness check."""
    for m in module.modules():
        if type(m).__name__.endswith("RMSNorm"):

            def forward(self, h):
                var = h.pow(2).mean(-1, keepdim=True)
                return self.weight * (h * torch.rsqrt(var + self.variance_epsilon))

            m.forward = types.MethodType(forward, m)


def _prm(tokenizer, *, lora_r: int = 0, dtype=torch.float32, seed: int = 0, hidden: int = 32):
    base = tiny_backbone(tokenizer, hidden_size=hidden, layers=2, seed=seed)
    prm, _ = wrap_backbone(base, tokenizer, lora_r=lora_r, lora_alpha=2 * max(lora_r, 1))
    if lora_r:
        # peft starts B at zero, which makes every LoRA gradient but B's vanish; perturb it
        torch.manual_seed(seed + 1)
        for n, p in prm.named_parameters():
            if "lora_B" in n:
                p.data.normal_(0, 0.05)
    if dtype == torch.float64:
        prm.double()
        _rmsnorm_in_input_dtype(prm)
    elif dtype == torch.bfloat16:
        prm.backbone.to(torch.bfloat16)
    return prm


def logits64(model, batch: StepBatch) -> torch.Tensor:
    """``step_logits`` without the head's fp32 cast (the check runs in fp64 end to end)."""
    h = model.hidden_states(batch.input_ids, batch.attention_mask)
    return model.head(h[batch.step_batch_index, batch.step_token_index])


def meta64(model, batch: StepBatch):
    z = logits64(model, batch)
    return z, batch.targets.to(z.dtype)


def _batch(rng: random.Random, n_seq: int, vocab: int, *, first_id: int = 0, meta: bool = False) -> StepBatch:
    examples = []
    lid = first_id
    for s in range(n_seq):
        length = rng.randint(6, 14)
        ids = [rng.randrange(1, vocab) for _ in range(length)]
        if meta:
            ends = [length - 1]
            targets = [float(rng.random() < 0.5)]
            label_ids = [-1]
            final = [True]
        else:
            ends = sorted(rng.sample(range(2, length), 3))
            targets = [rng.random() * 0.8 + 0.1 for _ in ends]
            label_ids = list(range(lid, lid + len(ends)))
            label_ids[0] = -1 if s == 0 else label_ids[0]  # one step that is not learnable
            lid += len(ends)
            final = [False] * (len(ends) - 1) + [True]
        examples.append(
            Example(ids, ends, list(range(len(ends))), targets, label_ids, final, f"s{s}#0", f"p{s}")
        )
    return collate(examples, pad_id=0)


def _fd_grad(model, batch, meta, values, which, eta, loss, h=1e-5, balance=False):
    """Central difference of the unrolled objective w.r.t. each learnable label or weight."""
    ids = batch.label_ids
    grads = torch.zeros(len(values), dtype=torch.float64)
    for k in range(len(values)):
        pos = (ids == k).nonzero().flatten()
        if pos.numel() == 0:
            continue
        out = []
        for sign in (1, -1):
            t = batch.targets.double().clone()
            w = torch.ones_like(t)
            if which == "labels":
                t[pos] += sign * h
            else:
                w[pos] = values[k] + sign * h
            out.append(
                unrolled_meta_loss(
                    model,
                    batch,
                    t,
                    w if which == "weights" else None,
                    meta,
                    eta,
                    logits_fn=logits64,
                    meta_fn=meta64,
                    loss=loss,
                    balance=balance,
                )
            )
        grads[k] = (out[0] - out[1]) / (2 * h)
    return grads


@pytest.mark.parametrize("micro_batch", [0, 1, 3])
@pytest.mark.parametrize(
    ("mode", "loss", "method"),
    [
        ("labels", "bce", "forward"),
        ("weights", "bce", "forward"),
        ("labels", "mse", "fd"),
        ("weights", "mse", "fd"),
        ("labels", "bce", "fd"),
    ],
)
def test_hypergradient_matches_finite_difference_of_unrolled_objective(
    tokenizer, mode, loss, method, micro_batch
):
    torch.manual_seed(0)
    model = _prm(tokenizer, dtype=torch.float64)
    rng = random.Random(1)
    batch = _batch(rng, 4, len(tokenizer))
    meta = _batch(rng, 5, len(tokenizer), meta=True)
    n = int(batch.label_ids.max()) + 1
    corr = make_correction(
        mode, torch.full((n,), 0.5), {"fd_eps": 1e-5}, loss=loss, logits_fn=logits64, meta_fn=meta64
    )
    eta = 0.5
    t = batch.targets.double()
    look = lookahead(
        model,
        batch,
        t,
        None,
        meta,
        eta,
        logits_fn=logits64,
        meta_fn=meta64,
        method=method,
        fd_eps=1e-6,
        loss=loss,
        micro_batch=micro_batch,
    )
    assert look.method == method
    analytic = corr.grad_of(look.jvp, look.dl_dz, look.dl_dzdy, look.scale, batch)
    numeric = _fd_grad(model, batch, meta, torch.ones(n, dtype=torch.float64), mode, eta, loss)
    assert numeric.abs().max() > 1e-6, "the check must see a non-trivial gradient"
    _assert_close_gradients(analytic, numeric)


@pytest.mark.parametrize("micro_batch", [0, 2])
def test_class_balanced_meta_loss_hypergradient_matches_finite_difference(tokenizer, micro_batch):
    torch.manual_seed(0)
    model = _prm(tokenizer, dtype=torch.float64)
    rng = random.Random(11)
    batch = _batch(rng, 4, len(tokenizer))
    meta = _batch(rng, 6, len(tokenizer), meta=True)
    meta.targets[:] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0], dtype=meta.targets.dtype)  # unbalanced
    n = int(batch.label_ids.max()) + 1
    corr = make_correction("labels", torch.full((n,), 0.5), {}, logits_fn=logits64, meta_fn=meta64)
    look = lookahead(model, batch, batch.targets.double(), None, meta, 0.5, logits_fn=logits64, meta_fn=meta64,
                     method="forward", micro_batch=micro_batch, balance=True)
    plain = lookahead(model, batch, batch.targets.double(), None, meta, 0.5, logits_fn=logits64, meta_fn=meta64,
                      method="forward", balance=False)
    analytic = corr.grad_of(look.jvp, look.dl_dz, look.dl_dzdy, look.scale, batch)
    numeric = _fd_grad(model, batch, meta, torch.ones(n, dtype=torch.float64), "labels", 0.5, "bce", balance=True)
    _assert_close_gradients(analytic, numeric)
    assert not math.isclose(look.meta_loss, plain.meta_loss, rel_tol=1e-3), "balancing must change the objective"


def test_amortised_update_with_a_fresh_v_is_the_exact_hypergradient(tokenizer):
    """refresh() (SGD look-ahead along the trainer's own gradient) then correct() on the same batch
    moves the labels along exactly the one-step hypergradient (up to its positive factor eta/B)."""
    from dreamprm_code.meta.hypergrad import jvp_along, train_loss

    torch.manual_seed(0)
    model = _prm(tokenizer, dtype=torch.float64)
    rng = random.Random(12)
    batch = _batch(rng, 4, len(tokenizer))
    meta = _batch(rng, 5, len(tokenizer), meta=True)
    n = int(batch.label_ids.max()) + 1
    eta = 0.5
    corr = make_correction("labels", torch.full((n,), 0.5), {"preconditioner": "sgd", "inner_lr": eta, "balance": False,
                                                              "sweep": False, "jvp": "forward", "scope": "all"},
                           meta_batches=iter([meta]), logits_fn=logits64, meta_fn=meta64)
    model.eval()
    z = logits64(model, batch)
    t, _ = corr.targets(batch)
    train_loss(z, t.double()).backward()
    corr.refresh(model, None, 0)
    for p in model.parameters():
        p.grad = None
    look = lookahead(model, batch, t.double(), None, meta, eta, logits_fn=logits64, meta_fn=meta64, method="forward")
    exact = corr.grad_of(look.jvp, look.dl_dz, look.dl_dzdy, look.scale, batch)
    theta = {k: p for k, p in model.named_parameters() if p.requires_grad}
    dz, _ = jvp_along(model, logits64, theta, corr._v, [(batch, None)], method="forward")
    assert torch.allclose(dz, look.jvp, rtol=1e-8, atol=1e-12)
    amortised = torch.zeros(n, dtype=torch.float64)
    ids = batch.label_ids
    amortised.index_add_(0, ids[ids >= 0], -corr._value_grad(z.detach(), dz, batch)[ids >= 0])
    assert torch.allclose(amortised * look.scale, exact, rtol=1e-8, atol=1e-14)
    before = corr.param.clone()
    corr.correct(model, batch, z.detach())
    moved = corr.param - before
    touched = torch.unique(ids[ids >= 0])
    assert torch.equal(torch.sign(moved[touched]).double(), -torch.sign(exact[touched]))


def test_head_scope_is_exact_when_only_the_head_trains(tokenizer):
    """scope="head" uses the head's block of the hypergradient (features of the training pass, a
    meta gradient without a backbone graph); with a frozen backbone that block is all of it."""
    from dreamprm_code.meta.hypergrad import train_loss

    torch.manual_seed(0)
    model = _prm(tokenizer, dtype=torch.float64)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("head."))
    rng = random.Random(13)
    batch = _batch(rng, 4, len(tokenizer))
    meta = _batch(rng, 5, len(tokenizer), meta=True)
    n = int(batch.label_ids.max()) + 1
    eta = 0.5
    corr = make_correction("labels", torch.full((n,), 0.5), {"preconditioner": "sgd", "inner_lr": eta, "balance": False,
                                                              "sweep": False, "scope": "head"},
                           meta_batches=iter([meta]), logits_fn=logits64, meta_fn=meta64)
    model.eval()
    h = model.hidden_states(batch.input_ids, batch.attention_mask)[batch.step_batch_index, batch.step_token_index]
    z = model.head(h)
    t, _ = corr.targets(batch)
    train_loss(z, t.double()).backward()
    corr.refresh(model, None, 0)
    for p in model.parameters():
        p.grad = None
    look = lookahead(model, batch, t.double(), None, meta, eta, logits_fn=logits64, meta_fn=meta64, method="forward")
    exact = corr.grad_of(look.jvp, look.dl_dz, look.dl_dzdy, look.scale, batch)
    _, dz = corr._head_jvp(model, h.detach())
    assert torch.allclose(dz.double(), look.jvp, rtol=1e-5, atol=1e-8)
    before = corr.param.clone()
    log = corr.correct(model, batch, z.detach(), h.detach())
    assert log["jvp_method"] == "head"
    ids = batch.label_ids
    touched = torch.unique(ids[ids >= 0])
    moved = corr.param - before
    assert torch.equal(torch.sign(moved[touched]).double(), -torch.sign(exact[touched]))


def _assert_close_gradients(analytic: torch.Tensor, numeric: torch.Tensor) -> None:
    rel = float((analytic - numeric).norm() / numeric.norm())
    assert rel < 1e-3, (rel, analytic, numeric)
    # the sign matters most: every sizeable entry agrees
    big = numeric.abs() > 0.05 * numeric.abs().max()
    assert torch.equal(torch.sign(analytic[big]), torch.sign(numeric[big]))


@pytest.mark.parametrize("mode", ["labels", "weights"])
@pytest.mark.parametrize("device", [CUDA])
def test_hypergradient_matches_finite_difference_on_a_gpu(tokenizer, mode, device):
    """The same fp64 check with model and batches on the GPU (forward-mode JVP, CUDA kernels)."""
    torch.manual_seed(0)
    model = _prm(tokenizer, dtype=torch.float64).to(device)
    rng = random.Random(1)
    batch = _batch(rng, 4, len(tokenizer)).to(device)
    meta = _batch(rng, 5, len(tokenizer), meta=True).to(device)
    n = int(batch.label_ids.max()) + 1
    corr = make_correction(mode, torch.full((n,), 0.5), {"fd_eps": 1e-5}, logits_fn=logits64, meta_fn=meta64)
    look = lookahead(model, batch, batch.targets.double(), None, meta, 0.5, logits_fn=logits64, meta_fn=meta64,
                     method="forward", loss="bce")
    analytic = corr.grad_of(look.jvp, look.dl_dz, look.dl_dzdy, look.scale, batch)
    numeric = _fd_grad(model, batch, meta, torch.ones(n, dtype=torch.float64), mode, 0.5, "bce")
    assert numeric.abs().max() > 1e-6, "the check must see a non-trivial gradient"
    _assert_close_gradients(analytic, numeric)


@pytest.mark.parametrize("method", ["forward", "fd"])
def test_micro_batches_change_no_value_of_the_lookahead(tokenizer, method):
    """Accumulating over micro-batches (cut to their own length) gives the whole batch's numbers."""
    torch.manual_seed(0)
    model = _prm(tokenizer, dtype=torch.float64)
    rng = random.Random(7)
    batch = _batch(rng, 5, len(tokenizer))
    meta = _batch(rng, 5, len(tokenizer), meta=True)
    w = torch.linspace(0.5, 1.5, batch.num_steps, dtype=torch.float64)
    looks = [
        lookahead(
            model,
            batch,
            batch.targets.double(),
            w,
            meta,
            0.5,
            logits_fn=logits64,
            meta_fn=meta64,
            method=method,
            fd_eps=1e-6,
            micro_batch=mb,
        )
        for mb in (0, 1, 2, 5)
    ]
    ref = looks[0]
    for look in looks[1:]:
        assert torch.allclose(look.z, ref.z, rtol=1e-10, atol=1e-12)
        assert torch.allclose(look.jvp, ref.jvp, rtol=1e-6, atol=1e-9 * float(ref.jvp.abs().max()))
        assert math.isclose(look.meta_loss, ref.meta_loss, rel_tol=1e-10)
        assert math.isclose(look.train_loss, ref.train_loss, rel_tol=1e-10)
        assert math.isclose(look.v_norm, ref.v_norm, rel_tol=1e-9)


def test_outer_step_moves_parameters_against_the_chained_hypergradient(tokenizer):
    """One Adam step with the global normaliser is -lr * g / rms(g), g = dL/dy (natural gradient in a)."""
    torch.manual_seed(0)
    model = _prm(tokenizer, dtype=torch.float64)
    rng = random.Random(2)
    batch = _batch(rng, 4, len(tokenizer))
    meta = _batch(rng, 4, len(tokenizer), meta=True)
    n = int(batch.label_ids.max()) + 1
    init = torch.linspace(0.1, 0.9, n)
    corr = make_correction(
        "labels",
        init,
        {"normaliser": "global", "meta_lr": 0.05, "jvp": "forward", "balance": False},
        logits_fn=logits64,
        meta_fn=meta64,
    )
    t, _ = corr.targets(batch)
    look = lookahead(
        model, batch, t.double(), None, meta, 0.3, logits_fn=logits64, meta_fn=meta64, method="forward"
    )
    g = corr.grad_of(look.jvp, look.dl_dz, look.dl_dzdy, look.scale, batch)
    before = corr.param.clone()
    log = corr.outer_step(model, batch, meta, 0.3)
    touched = torch.unique(batch.label_ids[batch.label_ids >= 0])
    expect = -0.05 * g[touched] / g[touched].pow(2).mean().sqrt()
    got = (corr.param - before)[touched].double()
    assert torch.allclose(got, expect, rtol=1e-3, atol=1e-6)
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[touched] = False
    assert torch.equal(corr.param[untouched], before[untouched])
    assert log["touched"] == touched.numel() and math.isfinite(log["meta_loss"])


def test_forward_and_finite_difference_jvp_agree_on_fp32_lora_with_sdpa(tokenizer):
    torch.manual_seed(0)
    model = _prm(tokenizer, lora_r=4)
    rng = random.Random(3)
    batch = _batch(rng, 4, len(tokenizer))
    meta = _batch(rng, 4, len(tokenizer), meta=True)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in names) and not any("embed_tokens" in n for n in names)
    a = lookahead(model, batch, batch.targets, None, meta, 1e-2, method="forward")
    b = lookahead(model, batch, batch.targets, None, meta, 1e-2, method="fd", fd_eps=1e-3)
    assert a.jvp.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(a.jvp, b.jvp, dim=0)
    assert cos > 0.999 and torch.allclose(a.jvp, b.jvp, rtol=2e-2, atol=1e-3 * float(a.jvp.abs().max()))


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_bf16_backbone_gives_fp32_hypergradient_close_to_fp32(tokenizer, device):
    rng = random.Random(4)
    batch = _batch(rng, 4, len(tokenizer)).to(device)
    meta = _batch(rng, 4, len(tokenizer), meta=True).to(device)
    torch.manual_seed(0)
    m32 = _prm(tokenizer, lora_r=4, seed=3).to(device)
    torch.manual_seed(0)
    m16 = _prm(tokenizer, lora_r=4, seed=3, dtype=torch.bfloat16).to(device)
    a = lookahead(m32, batch, batch.targets, None, meta, 1e-2)
    b = lookahead(m16, batch, batch.targets, None, meta, 1e-2)
    assert b.jvp.dtype == torch.float32 and torch.isfinite(b.jvp).all()
    assert torch.nn.functional.cosine_similarity(a.jvp, b.jvp, dim=0) > 0.95


def test_outer_step_leaves_parameters_grads_and_mode_untouched(tokenizer):
    model = _prm(tokenizer, lora_r=4)
    model.train()
    rng = random.Random(5)
    batch = _batch(rng, 3, len(tokenizer))
    meta = _batch(rng, 3, len(tokenizer), meta=True)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = None
    corr = make_correction("labels", torch.full((int(batch.label_ids.max()) + 1,), 0.3))
    corr.outer_step(model, batch, meta, 1e-2)
    assert model.training
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n]), n
        assert p.grad is None, n


def _separable(rng: random.Random, n: int, vocab: int) -> tuple[list[Example], list[float]]:
    """Sequences whose class is their last token (one of two sets): learnable in a few steps."""
    examples, truth = [], []
    for s in range(n):
        positive = s % 2 == 0
        ids = [rng.randrange(20, vocab) for _ in range(8)]
        ids[-1] = rng.choice((5, 6, 7, 8) if positive else (9, 10, 11, 12))
        y = 1.0 if positive else 0.0
        truth.append(y)
        examples.append(Example(ids, [7], [0], [y], [s], [True], f"s{s}#0", f"t{s}"))
    return examples, truth


def _train_with(mode: str, tokenizer, *, steps: int = 20, seed: int = 0):
    """16 training sequences with 4 labels flipped; the meta set holds the same inputs with true verdicts."""
    rng = random.Random(seed)
    train_ex, truth = _separable(rng, 16, len(tokenizer))
    meta_ex = [
        Example(
            e.input_ids,
            e.step_token_index,
            e.step_index,
            list(e.targets),
            [-1],
            [True],
            e.solution_id,
            e.problem_id,
        )
        for e in train_ex
    ]
    flipped = [0, 1, 2, 3]
    noisy = list(truth)
    for i in flipped:
        noisy[i] = 1.0 - noisy[i]
        train_ex[i].targets = [noisy[i]]
    torch.manual_seed(seed)
    model = _prm(tokenizer, lora_r=0, seed=seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    corr = make_correction(
        mode, torch.tensor(noisy), {"meta_lr": 0.3, "jvp": "forward", "normaliser": "global"}
    )
    batch = collate(train_ex, 0)
    meta = collate(meta_ex, 0)
    logs = []
    for _ in range(steps):
        model.train()
        loss = corr.train_loss(model.step_logits(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        opt.zero_grad()
        if mode != "none":
            logs.append(corr.outer_step(model, batch, meta, inner_lr=1.0))
    return corr, torch.tensor(truth), torch.tensor(noisy), flipped, logs


@pytest.mark.slow
def test_labels_mode_moves_flipped_labels_toward_the_truth(tokenizer):
    corr, truth, noisy, flipped, logs = _train_with("labels", tokenizer)
    after = torch.tensor(corr.corrected_labels())
    err_before = (noisy - truth).abs()[flipped]
    err_after = (after - truth).abs()[flipped]
    assert err_after.mean() < err_before.mean() - 0.5, (after[flipped], truth[flipped])
    assert (err_after < err_before - 0.2).all()
    clean = [i for i in range(len(truth)) if i not in flipped]
    assert (after - truth).abs()[clean].max() < 0.1, after[clean]
    # the meta loss after the look-ahead fell
    assert logs[-1]["meta_loss"] < 0.5 * logs[0]["meta_loss"]
    assert len(logs) == 20 and all("meta_loss" in log for log in logs)
    assert len(corr.trajectory) == 21


@pytest.mark.slow
def test_none_mode_leaves_flipped_labels_alone(tokenizer):
    corr, truth, noisy, flipped, logs = _train_with("none", tokenizer, steps=3)
    assert corr.corrected_labels() == noisy.tolist() and logs == []


def test_none_mode_changes_nothing(tokenizer):
    rng = random.Random(6)
    batch = _batch(rng, 3, len(tokenizer))
    meta = _batch(rng, 3, len(tokenizer), meta=True)
    n = int(batch.label_ids.max()) + 1
    init = torch.linspace(0, 1, n)
    corr = make_correction("none", init)
    t, w = corr.targets(batch)
    assert w is None and torch.equal(t, batch.targets)
    assert corr.outer_step(_prm(tokenizer), batch, meta, 0.1) == {}
    assert not corr.refresh_due(4)
    assert corr.corrected_labels() == [float(x) for x in init]


def test_targets_gather_by_label_id_and_keep_unlearnable_steps(tokenizer):
    rng = random.Random(7)
    batch = _batch(rng, 3, len(tokenizer))
    n = int(batch.label_ids.max()) + 1
    init = torch.linspace(0.0, 1.0, n)
    corr = make_correction("labels", init, {})
    t, w = corr.targets(batch)
    assert w is None
    for s in range(batch.num_steps):
        k = int(batch.label_ids[s])
        want = float(batch.targets[s]) if k < 0 else float(init[k])  # the MC values: no smoothing
        assert t[s].item() == pytest.approx(want, abs=1e-6)
    wc = make_correction("weights", init)
    t2, w2 = wc.targets(batch)
    assert torch.equal(t2, batch.targets) and torch.allclose(w2, torch.ones_like(w2))


def test_state_round_trip_resumes_exactly(tokenizer, tmp_path):
    rng = random.Random(8)
    batch = _batch(rng, 3, len(tokenizer))
    meta = _batch(rng, 3, len(tokenizer), meta=True)
    n = int(batch.label_ids.max()) + 1
    model = _prm(tokenizer, lora_r=4)
    for mode in ("labels", "weights"):
        a = make_correction(mode, torch.full((n,), 0.4), {"trajectory_size": 5})
        for _ in range(2):
            a.outer_step(model, batch, meta, 0.5)
        torch.save(a.state_dict(), tmp_path / "s.pt")
        b = make_correction(mode, torch.full((n,), 0.4), {"trajectory_size": 5})
        b.load_state_dict(torch.load(tmp_path / "s.pt"))
        assert b.corrected_labels() == a.corrected_labels() and b.sample_weights() == a.sample_weights()
        assert b.trajectory == a.trajectory and b.outer_steps == 2
        a.outer_step(model, batch, meta, 0.5)
        b.outer_step(model, batch, meta, 0.5)
        assert torch.equal(a.param, b.param)
        summary = a.summary()
        assert summary["outer_steps"] == 3 and len(summary["trajectory"]) == 4
        with pytest.raises(UserError, match="different training labels"):
            make_correction(mode, torch.full((n,), 0.1)).load_state_dict(a.state_dict())
        other = "weights" if mode == "labels" else "labels"
        with pytest.raises(UserError, match="mode"):
            make_correction(other, torch.full((n,), 0.4)).load_state_dict(a.state_dict())


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="meta.mode"):
        make_correction("labelz", [0.5])
    with pytest.raises(UserError) as exc:
        CorrectionConfig(meta_lr=0)
    assert exc.value.field == "meta_lr"
    with pytest.raises(UserError, match="meta.meta_lr"):
        CorrectionConfig.from_dict({"meta_lr": 0})
    with pytest.raises(UserError, match="meta.bogus"):
        make_correction("labels", [0.5], {"bogus": 1})
    with pytest.raises(UserError, match="mc_value"):
        make_correction("labels", [1.5])


class _NoForwardAD(torch.autograd.Function):
    """Identity with a backward but no forward-mode formula, like a fused kernel."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g


def test_auto_falls_back_to_differences_when_forward_mode_is_missing(tokenizer):
    model = _prm(tokenizer, lora_r=4, dtype=torch.bfloat16)  # auto tries forward mode only below fp32
    rng = random.Random(9)
    batch = _batch(rng, 3, len(tokenizer))
    meta = _batch(rng, 3, len(tokenizer), meta=True)

    def logits(m, b):
        return _NoForwardAD.apply(m.step_logits(b))

    n = int(batch.label_ids.max()) + 1
    corr = make_correction("labels", torch.full((n,), 0.5), logits_fn=logits)
    with pytest.warns(UserWarning, match="finite differences"):
        log = corr.outer_step(model, batch, meta, 1e-2)
    assert log["jvp_method"] == "fd" and log["touched"] > 0
    assert corr.outer_step(model, batch, meta, 1e-2)["jvp_method"] == "fd"
    with pytest.raises((NotImplementedError, RuntimeError)):
        lookahead(model, batch, batch.targets, None, meta, 1e-2, logits_fn=logits, method="forward")
    fp32 = _prm(tokenizer, lora_r=4)
    assert lookahead(fp32, batch, batch.targets, None, meta, 1e-2, method="auto").method == "fd"
