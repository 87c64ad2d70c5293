"""Training the PRM on Monte-Carlo step labels, with the meta-learned label correction hook.

One readable loop (:func:`run_epochs`, which the frozen-backbone trainer shares):
length-bucketed batches, soft-label BCE (or MSE),
AdamW, gradient clipping, validation each epoch (step AUC, best-of-N on held-out problems),
and a resumable state saved every ``save_steps`` steps. ``accelerate`` wraps model, optimizer
and data loaders, so the same code runs on one CPU process or several GPUs, and its experiment
trackers (``report_to``, :mod:`~dreamprm_code.prm.tracking`) get every log record. The correction
contract is in docs/usage-prm.md ("Correction hook").
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dreamprm_code.data.split import held_out
from dreamprm_code.errors import UserError
from dreamprm_code.io import JsonlAppender, atomic_write_json, check_resume
from dreamprm_code.meta.correction import Correction, CorrectionHook, NoCorrection
from dreamprm_code.meta.hypergrad import train_loss
from dreamprm_code.prm.checkpoint import load_train_state, save_prm, save_train_state
from dreamprm_code.prm.config import RESUMABLE_CHANGES, TrainConfig
from dreamprm_code.prm.data import (
    Example,
    StepBatch,
    collate,
    cycle_batches,
    epoch_batches,
    examples_from_labels,
    examples_from_solutions,
)
from dreamprm_code.prm.model import ProcessRewardModel, build_prm, resolve_backbone
from dreamprm_code.prm.score import aggregate, score_examples
from dreamprm_code.prm.tracking import open_train_log, tracker_settings
from dreamprm_code.progress import make_progress
from dreamprm_code.records import Problem, Solution, StepLabel


def step_auc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """ROC AUC by ranks (ties get half credit); NaN when one class is missing."""
    pos = [s for s, y in zip(scores, positives, strict=True) if y]
    neg = [s for s, y in zip(scores, positives, strict=True) if not y]
    if not pos or not neg:
        return float("nan")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_pos = sum(r for r, y in zip(ranks, positives, strict=True) if y)
    return (rank_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def validate(prm: ProcessRewardModel, examples: Sequence[Example], how: str = "min", batch_tokens: int = 16384) -> dict[str, Any]:
    """Step AUC (target > 0 is positive: some rollout passed) and best-of-N on the candidates
    whose final step carries a verdict, grouped by problem."""
    if not examples:
        return {}
    probs = score_examples(prm, examples, batch_tokens=batch_tokens)
    flat_p, flat_y = [], []
    per_sol: dict[str, dict[int, float]] = defaultdict(dict)
    verdict: dict[str, float] = {}
    problem_of: dict[str, str] = {}
    for ex, ps in zip(examples, probs, strict=True):
        problem_of[ex.solution_id] = ex.problem_id
        for k, p, t, fin in zip(ex.step_index, ps, ex.targets, ex.is_final, strict=True):
            per_sol[ex.solution_id][k] = p
            if not math.isnan(t):
                flat_p.append(p)
                flat_y.append(t > 0)
                if fin:
                    verdict[ex.solution_id] = t
    by_problem: dict[str, list[str]] = defaultdict(list)
    for sid in verdict:
        by_problem[problem_of[sid]].append(sid)
    chosen, mean_pass, oracle = [], [], []
    for sids in by_problem.values():
        sids.sort()
        agg = [aggregate([per_sol[s][k] for k in sorted(per_sol[s])], how) for s in sids]
        best = max(range(len(sids)), key=lambda i: agg[i])
        chosen.append(verdict[sids[best]] >= 0.5)
        mean_pass.append(sum(verdict[s] >= 0.5 for s in sids) / len(sids))
        oracle.append(any(verdict[s] >= 0.5 for s in sids))
    n = len(by_problem)
    return {
        "val_steps": len(flat_p),
        "val_step_auc": step_auc(flat_p, flat_y),
        "val_problems": n,
        f"val_best_of_n_{how}": sum(chosen) / n if n else float("nan"),
        "val_random": sum(mean_pass) / n if n else float("nan"),
        "val_oracle": sum(oracle) / n if n else float("nan"),
    }


def make_correction_for(config: TrainConfig, labels: Sequence[StepLabel], meta_ex: Sequence[Example],
                        pad_id: int) -> CorrectionHook:
    """The correction of ``config.meta`` over the labels; :class:`NoCorrection` without a meta set.

    A meta set without both a passing and a failing solution cannot teach anything: refused.
    """
    init = torch.tensor([lab.mc_value for lab in labels], dtype=torch.float32)
    if config.meta.mode == "none" or not meta_ex:
        return NoCorrection(init)
    verdicts = [t for e in meta_ex for t, fin in zip(e.targets, e.is_final, strict=True) if fin and not math.isnan(t)]
    passing = sum(t >= 0.5 for t in verdicts)
    if passing == 0 or passing == len(verdicts):
        raise UserError(
            f"the meta set has {passing} passing and {len(verdicts) - passing} failing solutions; label correction "
            "needs both (or use --correction none)", field="meta")
    return Correction(
        init, config.meta,
        fixed=torch.tensor([lab.step_index == lab.num_steps - 1 for lab in labels]),
        rollouts=torch.tensor([float(lab.rollouts) for lab in labels]),
        meta_batches=cycle_batches(meta_ex, config.meta.batch_size, pad_id, config.seed),
        loss=config.loss, seed=config.seed,
    )


def inner_step(model: torch.nn.Module, prm: ProcessRewardModel, batch: StepBatch, optimizer: torch.optim.Optimizer,
               correction: CorrectionHook, config: TrainConfig, step: int, backward: Any = None) -> dict[str, Any]:
    """One optimiser step in MW-Net order: correct this batch's labels, train on them, refresh v.

    ``model`` is what the forward and backward go through (accelerate's wrapper), ``prm`` the
    module itself (the correction's extra passes), ``optimizer`` the torch optimiser (its state
    is the look-ahead's preconditioner). Returns the step's log.
    """
    z, features = model(batch, with_features=True)
    log = correction.correct(prm, batch, z.detach(), features.detach())
    targets, weights = correction.targets(batch)
    loss = train_loss(z, targets, weights, config.loss)
    (backward or (lambda x: x.backward()))(loss)
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_([p for _, p in prm.trainable_parameters()], config.grad_clip)
    log.update(correction.refresh(prm, optimizer, step))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), **log}


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_prm(
    config: TrainConfig,
    labels: Sequence[StepLabel],
    meta_set: Sequence[Solution] | None = None,
    eval_set: Sequence[StepLabel] | Sequence[Solution] | None = None,
    *,
    problems: Sequence[Problem] | Mapping[str, Problem] | None = None,
    progress: bool = True,
) -> Path:
    """Train a PRM on ``labels`` and write a checkpoint to ``config.output_dir``; resumes if stopped.

    ``meta_set``: whole solutions with verdicts, on problems held apart from ``labels`` (the
    label correction's outer objective). ``eval_set``: held-out labels or solutions; without
    it, ``val_fraction`` of the labels' problems are held out. ``problems`` supply statements
    and starter code for the input template (without them the template has empty statements).
    """
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels, eval_set = split_inputs(config, labels, meta_set, eval_set)
    if config.freeze_backbone:
        from dreamprm_code.prm.frozen import train_frozen
        return train_frozen(config, out, labels, meta_set, eval_set, problems, progress=progress)
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), **tracker_settings(config, out))
    set_seed(config.seed)

    # --- data and model ----------------------------------------------------------------------
    prm, tokenizer = build_prm(
        config.backbone,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        lora_targets=config.lora_targets if config.lora_targets == "all-linear" else config.lora_targets.split(","),
        precision=config.precision,
        head_hidden=config.head_hidden,
        gradient_checkpointing=config.gradient_checkpointing,
    )
    fmt = prm.attach_format(tokenizer, config.max_length, config.max_statement_tokens)
    name_backbone(prm, config, out)
    data = encode_inputs(config, fmt, labels, meta_set, eval_set, problems)
    correction = make_correction_for(config, labels, data.meta_ex, prm.pad_id)
    optimizer, scheduler = make_optimizer(prm, config)
    start = _resume(out, config, prm, optimizer, scheduler, correction)
    if getattr(correction, "needs_features", False):
        _observe_all(prm, data.train_ex, correction, config, accelerator.device)
    model, _ = accelerator.prepare(prm, optimizer)
    atomic_write_json(out / "train_config.json", config.to_dict())
    log = open_train_log(out, config, accelerator, start[0])

    def save_model(step: int, epoch: int) -> None:
        if accelerator.is_main_process:
            save_prm(prm, out, {"train": config.to_dict(), "data": data.card, "epochs_done": epoch, "steps": step})

    def save_state(step: int, epoch: int, batch_in_epoch: int) -> None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_progress(out, prm, config, optimizer, scheduler, correction, labels, step, epoch, batch_in_epoch)

    def batches(order: list[list[int]], skip: int) -> Iterable[StepBatch]:
        loader = torch.utils.data.DataLoader(data.train_ex, batch_sampler=order,
                                             collate_fn=lambda exs: collate(exs, prm.pad_id))
        loader = accelerator.prepare(loader)
        return accelerator.skip_first_batches(loader, skip) if skip else loader

    step, epoch = run_epochs(
        model, prm, data, optimizer, scheduler, correction, config, log, epochs=config.num_train_epochs, start=start,
        batches=batches, save_state=save_state, after_epoch=lambda step, epoch, _seconds: save_model(step, epoch),
        backward=accelerator.backward, progress=progress and accelerator.is_main_process,
    )
    save_model(step, epoch)
    log.close()
    return out


@dataclass
class TrainData:
    """The encoded examples of a run and its model card's data section."""

    train_ex: list[Example]
    val_ex: list[Example]
    meta_ex: list[Example]
    card: dict[str, Any]


def split_inputs(config: TrainConfig, labels: Sequence[StepLabel], meta_set: Sequence[Solution] | None,
                 eval_set: Sequence[StepLabel] | Sequence[Solution] | None
                 ) -> tuple[Sequence[StepLabel], Sequence[StepLabel] | Sequence[Solution]]:
    """The training labels and the validation set (``val_fraction`` of the labels' problems when
    none is given). A meta solution must not be a labelled training solution (by id); other
    solutions of the training problems may be in the meta set (their verdicts are clean)."""
    if not labels:
        raise UserError("no training labels", field="labels")
    if eval_set is None:
        held = held_out([lab.problem_id for lab in labels], config.val_fraction, config.seed)
        eval_set = [lab for lab in labels if lab.problem_id in held]
        labels = [lab for lab in labels if lab.problem_id not in held]
    shared = sorted({s.id for s in meta_set or []} & {lab.solution_id for lab in labels})
    if shared:
        raise UserError(f"{len(shared)} meta-set solution(s) are also training solutions (first: {shared[0]!r}); "
                        "the meta set must hold other solutions", field="meta")
    return labels, eval_set


def encode_inputs(config: TrainConfig, fmt: Any, labels: Sequence[StepLabel], meta_set: Sequence[Solution] | None,
                  eval_set: Sequence[StepLabel] | Sequence[Solution],
                  problems: Sequence[Problem] | Mapping[str, Problem] | None) -> TrainData:
    """Training, validation and meta examples in the model's input format."""
    pmap = dict(problems) if isinstance(problems, Mapping) else {p.id: p for p in problems or []}
    train_ex = examples_from_labels(labels, fmt, pmap, outcome_only=config.outcome_only)
    if not train_ex:
        raise UserError("the labels yield no training examples (outcome_only without final-step labels?)", field="labels")
    if eval_set and isinstance(eval_set[0], Solution):
        val_ex = examples_from_solutions(eval_set, fmt, pmap, with_verdicts=True)  # type: ignore[arg-type]
    else:
        val_ex = examples_from_labels(eval_set, fmt, pmap)  # type: ignore[arg-type]
    meta_ex = examples_from_solutions(meta_set, fmt, pmap, final_only=True, with_verdicts=True) if meta_set else []
    card = {
        "training step labels": len(labels), "training candidates": len({lab.solution_id for lab in labels}),
        "training problems": len({lab.problem_id for lab in labels}), "held-out examples": len(val_ex),
        "meta-set solutions": len(meta_set or []),
    }
    return TrainData(train_ex, val_ex, meta_ex, card)


def name_backbone(prm: ProcessRewardModel, config: TrainConfig, out: Path) -> None:
    """What the checkpoint says it was trained from (``prm.spec``), with the backbone's local path when known."""
    prm.spec = {"backbone": config.backbone, "precision": config.precision, "name": out.name}
    try:
        prm.spec["backbone_path"] = resolve_backbone(config.backbone)
    except UserError:
        pass


def make_optimizer(model: Any, config: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters, with a linear warm-up then a constant rate."""
    optimizer = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)))
    return optimizer, scheduler


def run_epochs(
    model: torch.nn.Module,
    prm: Any,
    data: TrainData,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    correction: CorrectionHook,
    config: TrainConfig,
    log: JsonlAppender,
    *,
    epochs: int,
    start: tuple[int, int, int],
    save_state: Callable[[int, int, int], None],
    batches: Callable[[list[list[int]], int], Iterable[StepBatch]] | None = None,
    after_epoch: Callable[[int, int, float], None] | None = None,
    backward: Any = None,
    progress: bool = True,
) -> tuple[int, int]:
    """The training loop of both trainers: from ``start`` (step, epoch, batch in epoch) until
    ``epochs`` or ``config.max_steps``, one :func:`inner_step` and one log line per batch.

    ``model`` is what the forward and backward go through, ``prm`` the module itself (validated
    with ``data.val_ex`` after each epoch). ``batches(order, skip)``: the epoch's batches from its
    index order, less the first ``skip`` (default: collated in this process). ``save_state(step,
    epoch, batch_in_epoch)`` saves the resumable state every ``save_steps`` steps, at each epoch's
    end and where ``max_steps`` stops; ``after_epoch(step, epoch, seconds)`` runs after it at an epoch's
    end. Returns (step, epoch) where it stopped.
    """
    step, epoch, skip = start
    if batches is None:
        def batches(order: list[list[int]], skip: int) -> Iterable[StepBatch]:
            return (collate([data.train_ex[i] for i in idx], prm.pad_id) for idx in order[skip:])

    def validate_now() -> dict[str, Any]:
        return validate(prm, data.val_ex, config.eval_aggregate, config.eval_batch_tokens)

    lengths = [len(e.input_ids) for e in data.train_ex]
    total = epochs * math.ceil(len(data.train_ex) / config.per_device_train_batch_size)
    total = min(total, config.max_steps) if config.max_steps else total
    done = lambda: bool(config.max_steps) and step >= config.max_steps  # noqa: E731
    with make_progress(disable=not progress) as bar:
        task = bar.add_task("train", total=total, completed=step, info="")
        while epoch < epochs and not done():
            order = epoch_batches(lengths, config.per_device_train_batch_size, config.seed, epoch)
            seen, t0, tokens, stopped = skip, time.perf_counter(), 0, False
            model.train()
            for batch in batches(order, skip):
                t_step = time.perf_counter()
                rec = inner_step(model, prm, batch, optimizer, correction, config, step, backward)
                scheduler.step()
                step, seen, tokens = step + 1, seen + 1, tokens + batch.num_tokens
                now = time.perf_counter()
                rate = tokens / max(now - t0, 1e-9)
                log.append({"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0], **rec,
                            "tokens": batch.num_tokens, "seconds": now - t_step, "tokens_per_s": rate})
                bar.update(task, advance=1, info=f"loss {rec['loss']:.4f}  {rate:,.0f} tok/s")
                if step % config.save_steps == 0:
                    save_state(step, epoch, seen)
                if done():
                    stopped = True
                    break
            if stopped:
                save_state(step, epoch, seen)
                break
            epoch, skip = epoch + 1, 0
            if config.eval_each_epoch and data.val_ex:
                log.append({"step": step, "epoch": epoch - 1, **validate_now()})
            save_state(step, epoch, 0)
            if after_epoch is not None:
                after_epoch(step, epoch, time.perf_counter() - t0)
    if data.val_ex and config.eval_each_epoch and not any(r.get("step") == step and "val_steps" in r for r in log.records):
        log.append({"step": step, "epoch": epoch, **validate_now()})
    return step, epoch


def save_progress(out: Path, module: torch.nn.Module, config: TrainConfig, optimizer: Any, scheduler: Any,
                  correction: Any, labels: Sequence[StepLabel], step: int, epoch: int, batch_in_epoch: int) -> None:
    """The resumable state (``train_state/``) and the correction's JSON files (``correction.json``,
    ``corrected_labels.json``), written atomically."""
    save_train_state(out, module, {
        "config": config.to_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "correction": correction.state_dict(), "rng": _rng_state(), "step": step, "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
    })
    atomic_write_json(out / "correction.json", correction.summary())
    atomic_write_json(out / "corrected_labels.json", [
        {"key": lab.key, "mc_value": lab.mc_value, "corrected": c}
        for lab, c in zip(labels, correction.corrected_labels(), strict=True)
    ])


def _observe_all(prm: Any, examples: Sequence[Example], correction: Any, config: TrainConfig,
                 device: torch.device | None = None) -> None:
    """One forward pass without a graph over the training set, so that the sweep moves every
    label from the first refresh on (not only those of batches already trained); ``device``:
    where the batches go (None: they stay, as for cached features)."""
    order = sorted(examples, key=lambda e: len(e.input_ids))  # little padding
    prm.eval()
    with torch.no_grad():
        for lo in range(0, len(order), config.per_device_train_batch_size):
            batch = collate(order[lo : lo + config.per_device_train_batch_size], prm.pad_id)
            batch = batch.to(device) if device is not None else batch
            z, features = prm(batch, with_features=True)
            correction.observe(batch, features, z)
    prm.train()


def _resume(out: Path, config: TrainConfig, prm: ProcessRewardModel, optimizer: torch.optim.Optimizer,
            scheduler: Any, correction: CorrectionHook) -> tuple[int, int, int]:
    """Load ``train_state/`` if a stopped run left one: (step, epoch, batch in epoch) to go on from."""
    state = load_train_state(out, prm)
    if state is None:
        return 0, 0, 0
    now = config.to_dict()
    saved = TrainConfig.current_keys(state["config"])  # a state saved before a rename still resumes
    check_resume(saved, now, where=out, ignore=RESUMABLE_CHANGES, keys=now, what="train_state/",
                 hint="use a new --output-dir")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    correction.load_state_dict(state["correction"])
    _set_rng_state(state["rng"])
    return state["step"], state["epoch"], state["batch_in_epoch"]
