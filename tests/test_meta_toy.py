"""Label correction on a controlled problem: logistic regression with 30% flipped labels.

Runs the library's real correction (:class:`Correction` with its default settings) and the real
training step (:func:`prm.train.inner_step`) on a linear model over fixed features, so the
result says what the schedule and the update rule do, without a language model's noise.
"""

from __future__ import annotations

import pytest
import torch

from dreamprm_code.errors import UserError
from dreamprm_code.meta.correction import CorrectionConfig, NoCorrection, make_correction
from dreamprm_code.prm.train import TrainConfig, inner_step
from meta_toy import ToyPRM, batches, make_problem, meta_batches

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(mode: str, seed: int, **meta):
    problem = make_problem(n=480, seed=seed)
    cfg = TrainConfig(learning_rate=0.05, num_train_epochs=2, per_device_train_batch_size=4, grad_clip=0, meta=CorrectionConfig(mode=mode, **meta))
    model = ToyPRM(problem.train_x.shape[1], seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0)
    corr = make_correction(mode, problem.noisy, cfg.meta, meta_batches=meta_batches(problem, cfg.meta.batch_size, seed),
                           loss=cfg.loss, seed=seed)
    for step, batch in enumerate(batches(problem, cfg.per_device_train_batch_size, cfg.num_train_epochs, seed)):
        inner_step(model, model, batch, opt, corr, cfg, step)
    side = (torch.tensor(corr.corrected_labels()) >= 0.5).float()
    recovered = int((side[problem.flipped] == problem.truth[problem.flipped]).sum())
    broken = int((side[~problem.flipped] != problem.truth[~problem.flipped]).sum())
    return recovered, int(problem.flipped.sum()), broken, int((~problem.flipped).sum()), corr, model


def test_defaults_recover_flipped_labels_and_keep_clean_ones():
    """Pooled over three draws of the problem: >= 60% of flipped labels fixed, <= 10% of clean ones broken."""
    rec = flip = broke = clean = 0
    for seed in range(3):
        r, f, b, c, corr, _ = _run("labels", seed)
        rec, flip, broke, clean = rec + r, flip + f, broke + b, clean + c
        move = corr.movement()
        assert move["touches_min"] >= 10, move  # every label takes part in at least ten updates
    assert rec / flip >= 0.6, (rec, flip)
    assert broke / clean <= 0.10, (broke, clean)


def test_without_correction_nothing_is_recovered():
    r, f, b, _, corr, _ = _run("none", 0)
    assert r == 0 and b == 0 and corr.movement()["touches_min"] == 0


def test_before_any_update_labels_mode_trains_exactly_like_none():
    """No confound: the targets of every mode are the MC values until a label is corrected."""
    problem = make_problem(n=40, seed=3)
    cfg = TrainConfig(learning_rate=0.05, per_device_train_batch_size=4, grad_clip=0)
    params = {}
    for mode in ("labels", "weights", "none"):
        model = ToyPRM(problem.train_x.shape[1], 0)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0)
        corr = make_correction(mode, problem.noisy, {"refresh": 10**6}, meta_batches=meta_batches(problem, 8))
        for step, batch in enumerate(batches(problem, cfg.per_device_train_batch_size, 1)):
            inner_step(model, model, batch, opt, corr, cfg, step + 1)  # step 0 would refresh
        params[mode] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.equal(params["labels"], params["none"]) and torch.equal(params["weights"], params["none"])


def test_fixed_labels_never_move():
    problem = make_problem(n=120, seed=1)
    fixed = torch.zeros(120, dtype=torch.bool)
    fixed[::3] = True
    cfg = TrainConfig(learning_rate=0.05, per_device_train_batch_size=4, grad_clip=0)
    model = ToyPRM(problem.train_x.shape[1], 0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0)
    corr = make_correction("labels", problem.noisy, {}, fixed=fixed, meta_batches=meta_batches(problem, 8))
    for step, batch in enumerate(batches(problem, cfg.per_device_train_batch_size, 2)):
        inner_step(model, model, batch, opt, corr, cfg, step)
    after = torch.tensor(corr.corrected_labels())
    assert torch.equal(after[fixed], problem.noisy[fixed])
    assert (after[~fixed] != problem.noisy[~fixed]).any()
    assert corr.touches[fixed].sum() == 0


def test_label_values_stay_in_the_unit_interval_and_weights_bounded():
    for mode in ("labels", "weights"):
        _, _, _, _, corr, _ = _run(mode, 0, meta_lr=1.0)
        values = torch.tensor(corr.corrected_labels() if mode == "labels" else corr.sample_weights())
        hi = 1.0 if mode == "labels" else corr.config.max_weight
        assert values.min() >= 0 and values.max() <= hi


def test_a_meta_set_of_one_class_is_refused(tmp_path):
    from dreamprm_code.prm.data import Example
    from dreamprm_code.prm.train import make_correction_for
    from dreamprm_code.records import StepLabel

    labels = [StepLabel(solution_id="s#0", problem_id="p", step_index=0, num_steps=2, prefix="x", rollouts=4,
                        passed=1, mc_value=0.25, hard_label=1)]
    meta = [Example([1, 2], [1], [0], [1.0], [-1], [True], f"m{i}#0", f"m{i}") for i in range(3)]
    with pytest.raises(UserError, match="3 passing and 0 failing"):
        make_correction_for(TrainConfig(), labels, meta, pad_id=0)
    assert isinstance(make_correction_for(TrainConfig(meta={"mode": "none"}), labels, meta, pad_id=0), NoCorrection)
