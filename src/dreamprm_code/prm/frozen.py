"""Frozen-backbone training: one backbone pass per candidate, then the head trains on cached features.

With the backbone frozen, the hidden state the head reads at a step's last token never changes,
so it is computed once (:meth:`ProcessRewardModel.step_features` over length-bucketed batches)
and kept; every later epoch, validation and label-correction pass is the head alone on those
rows. :class:`CachedFeatureModel` is the PRM's own head over the cache: its ``step_features``
looks each step of a ``StepBatch`` up instead of running the backbone, so the trainer's
``inner_step``, :class:`~dreamprm_code.meta.correction.Correction` and ``validate`` run on it
unchanged. There the head is all of theta, so the correction's sweep over every label's cached
features is the exact head hypergradient, and each label is touched at every refresh.

The cache lives in ``OUT/features/``: ``fingerprint.json`` (which backbone made it) and shards
``shard-NNNNN.safetensors``, each written to a temporary file and renamed, so a killed run keeps
every finished shard and extracts only what is missing. Rows are keyed by the sequence's token
ids (a hash) and the token position, so the training, validation and meta examples share them.
The checkpoint is what :func:`~dreamprm_code.prm.train.train_prm` writes with ``lora_r = 0``:
the (unchanged) base model and the trained head, which ``load_prm`` and ``score`` read as is.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from dreamprm_code.data.split import held_out
from dreamprm_code.errors import UserError
from dreamprm_code.io import JsonlAppender, atomic_write_json
from dreamprm_code.prm.checkpoint import save_prm
from dreamprm_code.prm.data import (
    Example,
    StepBatch,
    collate,
    epoch_batches,
    examples_from_labels,
    examples_from_solutions,
)
from dreamprm_code.prm.model import (
    ProcessRewardModel,
    StepHead,
    build_prm,
    resolve_backbone,
    step_feature_batches,
)
from dreamprm_code.progress import make_progress
from dreamprm_code.records import Problem, Solution, StepLabel

if TYPE_CHECKING:
    from dreamprm_code.prm.config import TrainConfig

FEATURES_DIR = "features"
FINGERPRINT = "fingerprint.json"


def sequence_key(ids: Sequence[int] | torch.Tensor) -> str:
    """A stable name for a token sequence (the cache key, with a token position)."""
    t = torch.as_tensor(ids, dtype=torch.int64).cpu().contiguous()
    return hashlib.sha1(t.numpy().tobytes()).hexdigest()


class FeatureStore:
    """Step features by (sequence key, token position), on disk as append-only shards.

    ``fingerprint`` names the backbone that made the rows; a cache made by another one is refused
    (its rows would silently be wrong for this backbone).
    """

    def __init__(self, root: str | Path, fingerprint: dict[str, Any]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        fp_path = self.root / FINGERPRINT
        if fp_path.exists():
            old = json.loads(fp_path.read_text(encoding="utf-8"))
            if old != fingerprint:
                diff = next(k for k in sorted({*old, *fingerprint}) if old.get(k) != fingerprint.get(k))
                raise UserError(f"the feature cache was made with a different {diff!r}; use a new --output-dir", path=self.root)
        else:
            atomic_write_json(fp_path, fingerprint)
        self.index: dict[tuple[str, int], int] = {}
        self._parts: list[torch.Tensor] = []
        self._matrix: torch.Tensor | None = None
        for tmp in self.root.glob(".shard-*"):  # a shard a killed run did not finish
            tmp.unlink(missing_ok=True)
        self.shards = 0
        for shard in sorted(self.root.glob("shard-*.safetensors")):
            with safe_open(str(shard), "pt") as fh:
                rows = json.loads(fh.metadata()["rows"])
                self._add(rows, fh.get_tensor("features"))
            self.shards = max(self.shards, int(shard.stem.split("-")[1]) + 1)

    def __len__(self) -> int:
        return len(self.index)

    def _add(self, rows: list[list[Any]], feats: torch.Tensor) -> None:
        base = len(self.index)
        for i, (key, pos) in enumerate(rows):
            self.index[(key, int(pos))] = base + i
        self._parts.append(feats.float())
        self._matrix = None

    def add(self, rows: list[tuple[str, int]], feats: torch.Tensor) -> None:
        """Append one shard (written to a temporary name, then renamed: whole or absent)."""
        feats = feats.detach().float().cpu().contiguous()
        name = f"shard-{self.shards:05d}.safetensors"
        tmp = self.root / f".{name}.{os.getpid()}.tmp"
        save_file({"features": feats}, str(tmp), metadata={"rows": json.dumps([[k, p] for k, p in rows])})
        os.replace(tmp, self.root / name)
        self.shards += 1
        self._add([[k, p] for k, p in rows], feats)

    @property
    def matrix(self) -> torch.Tensor:
        if self._matrix is None:
            self._matrix = torch.cat(self._parts) if self._parts else torch.zeros(0, 0)
            self._parts = [self._matrix]
        return self._matrix

    def missing(self, examples: Sequence[Example]) -> list[Example]:
        """One example per sequence with the step positions the cache lacks (for extraction)."""
        need: dict[str, Example] = {}
        for ex in examples:
            key = sequence_key(ex.input_ids)
            for pos in ex.step_token_index:
                if (key, pos) in self.index:
                    continue
                got = need.setdefault(key, Example(list(ex.input_ids), [], [], [], [], [], ex.solution_id, ex.problem_id))
                if pos not in got.step_token_index:
                    got.step_token_index.append(pos)
        for ex in need.values():
            ex.step_token_index.sort()
            n = len(ex.step_token_index)
            ex.step_index, ex.targets, ex.label_ids, ex.is_final = list(range(n)), [math.nan] * n, [-1] * n, [False] * n
        return list(need.values())

    def gather(self, batch: StepBatch) -> torch.Tensor:
        """The cached features of a batch's steps ``[S, H]``, in its step order."""
        lengths = batch.attention_mask.sum(1).tolist()
        keys = [sequence_key(batch.input_ids[b, : int(n)]) for b, n in enumerate(lengths)]
        try:
            rows = [self.index[(keys[b], t)] for b, t in zip(batch.step_batch_index.tolist(),
                                                             batch.step_token_index.tolist(), strict=True)]
        except KeyError as exc:
            raise KeyError(f"step {exc.args[0]} has no cached feature (extract before training)") from None
        return self.matrix[torch.tensor(rows, dtype=torch.long)]


class CachedFeatureModel(nn.Module):
    """A PRM's head over cached step features: the same ``step_logits``/``forward`` contract as
    :class:`ProcessRewardModel`, with the backbone's pass replaced by a look-up."""

    def __init__(self, head: StepHead, store: FeatureStore, pad_id: int) -> None:
        super().__init__()
        self.head = head
        self.store = store
        self.pad_id = pad_id

    def step_features(self, batch: StepBatch) -> torch.Tensor:
        return self.store.gather(batch).to(next(self.head.parameters()).device)

    def step_logits(self, batch: StepBatch) -> torch.Tensor:
        return self.head(self.step_features(batch))

    def forward(self, batch: StepBatch, with_features: bool = False) -> Any:
        features = self.step_features(batch)
        logits = self.head(features)
        return (logits, features) if with_features else logits

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]


@torch.inference_mode()
def extract_features(prm: ProcessRewardModel, examples: Sequence[Example], store: FeatureStore, *,
                     batch_tokens: int = 16384, shard_sequences: int = 64, progress: bool = False) -> dict[str, Any]:
    """Run the backbone once over every sequence whose step features the store lacks.

    Batches by length under a token budget, each problem's header cache shared
    (:func:`~dreamprm_code.prm.model.step_feature_batches`); a shard is written every ``shard_sequences``
    sequences, so a kill loses at most that much work. Returns counts and the throughput.
    """
    todo = store.missing(examples)
    was = prm.training
    prm.eval()
    t0, tokens = time.perf_counter(), 0
    rows: list[tuple[str, int]] = []
    feats: list[torch.Tensor] = []
    pending = 0
    with make_progress(disable=not progress) as bar:
        task = bar.add_task("features", total=len(todo), info="", unit="seq")
        for idx, batch_feats, run in step_feature_batches(prm, todo, batch_tokens=batch_tokens):
            feats.append(batch_feats.cpu())
            rows += [(sequence_key(todo[i].input_ids), p) for i in idx for p in todo[i].step_token_index]
            pending += len(idx)
            tokens += run
            bar.advance(task, len(idx))
            if pending >= shard_sequences:
                store.add(rows, torch.cat(feats))
                rows, feats, pending = [], [], 0
        if rows:
            store.add(rows, torch.cat(feats))
    prm.train(was)
    seconds = time.perf_counter() - t0
    return {"phase": "features", "sequences": len(todo), "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds if tokens else 0.0, "cached_rows": len(store)}


def train_frozen(
    config: TrainConfig,
    labels: Sequence[StepLabel],
    meta_set: Sequence[Solution] | None = None,
    eval_set: Sequence[StepLabel] | Sequence[Solution] | None = None,
    *,
    problems: Sequence[Problem] | Mapping[str, Problem] | None = None,
    progress: bool = True,
) -> Path:
    """:func:`~dreamprm_code.prm.train.train_prm` with the backbone frozen (``config.freeze_backbone``).

    Same data handling, correction and checkpoint; the backbone runs once per sequence, then the
    head trains for ``config.frozen_epochs`` epochs (``config.num_train_epochs`` is for the fine-tuning
    path, where an epoch costs a backbone pass per candidate). ``lora_r`` is not used.
    """
    from accelerate.utils import set_seed

    from dreamprm_code.prm import train as tr

    if config.frozen_epochs < 1:
        raise UserError(f"must be at least 1, got {config.frozen_epochs!r}", field="frozen_epochs")
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pmap = dict(problems) if isinstance(problems, Mapping) else {p.id: p for p in problems or []}
    if not labels:
        raise UserError("no training labels", field="labels")
    set_seed(config.seed)
    if eval_set is None:
        held = held_out([lab.problem_id for lab in labels], config.val_fraction, config.seed)
        eval_set = [lab for lab in labels if lab.problem_id in held]
        labels = [lab for lab in labels if lab.problem_id not in held]
    if {s.problem_id for s in meta_set or []} & {lab.problem_id for lab in labels}:
        raise UserError("the meta set must hold problems apart from the training labels", field="meta")
    prm, tokenizer = build_prm(config.backbone, lora_r=0, precision=config.precision, head_hidden=config.head_hidden)
    prm.backbone.requires_grad_(False)
    if torch.cuda.is_available():
        prm.backbone.to("cuda")
    fmt = prm.attach_format(tokenizer, config.max_length, config.max_statement_tokens)
    prm.spec = {"backbone": config.backbone, "precision": config.precision, "name": out.name}
    try:
        prm.spec["backbone_path"] = resolve_backbone(config.backbone)
    except UserError:
        pass
    train_ex = examples_from_labels(labels, fmt, pmap, outcome_only=config.outcome_only)
    if not train_ex:
        raise UserError("the labels yield no training examples (outcome_only without final-step labels?)", field="labels")
    val_ex = tr._eval_examples(eval_set, fmt, pmap) if eval_set else []
    meta_ex = examples_from_solutions(meta_set, fmt, pmap, final_only=True, with_verdicts=True) if meta_set else []

    store = FeatureStore(out / FEATURES_DIR, {
        "backbone": config.backbone, "backbone_path": prm.spec.get("backbone_path", ""),
        "precision": config.precision, "hidden_size": prm.head.in_features,
    })
    log = JsonlAppender(out / "train_log.jsonl")
    extraction = extract_features(prm, [*train_ex, *val_ex, *meta_ex], store, batch_tokens=config.eval_batch_tokens,
                                  progress=progress)
    log.append(extraction)
    model = CachedFeatureModel(prm.head, store, prm.pad_id)
    correction = tr.make_correction_for(config, labels, meta_ex, prm.pad_id)
    optimizer = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)))
    step, epoch, skip = tr._resume(out, config, model, optimizer, scheduler, correction)  # type: ignore[arg-type]
    if getattr(correction, "needs_features", False):  # the sweep moves every label from the first refresh
        for lo in range(0, len(train_ex), config.per_device_train_batch_size):
            batch = collate(train_ex[lo : lo + config.per_device_train_batch_size], prm.pad_id)
            with torch.no_grad():
                z, features = model(batch, with_features=True)
            correction.observe(batch, features, z)
    atomic_write_json(out / "train_config.json", config.to_dict())
    data_info = {
        "training step labels": len(labels), "training candidates": len({lab.solution_id for lab in labels}),
        "training problems": len({lab.problem_id for lab in labels}), "held-out examples": len(val_ex),
        "meta-set solutions": len(meta_set or []), "backbone": "frozen (features cached once, head trained)",
    }

    def checkpoint(epoch_: int, batch_in_epoch: int) -> None:
        tr.save_progress(out, model, config, optimizer, scheduler, correction, labels, step, epoch_, batch_in_epoch)

    def validate() -> None:
        if config.eval_each_epoch and val_ex:
            log.append({"step": step, "epoch": epoch - 1,
                        **tr.validate(model, val_ex, config.eval_aggregate, config.eval_batch_tokens)})

    lengths = [len(e.input_ids) for e in train_ex]
    total = config.frozen_epochs * math.ceil(len(train_ex) / config.per_device_train_batch_size)
    total = min(total, config.max_steps) if config.max_steps else total
    done = lambda: bool(config.max_steps) and step >= config.max_steps  # noqa: E731
    with make_progress(disable=not progress) as bar:
        task = bar.add_task("train head", total=total, completed=step, info="")
        while epoch < config.frozen_epochs and not done():
            batches = epoch_batches(lengths, config.per_device_train_batch_size, config.seed, epoch)
            seen, t0, stopped = skip, time.perf_counter(), False
            model.train()
            for idx in batches[skip:]:
                t_step = time.perf_counter()
                batch = collate([train_ex[i] for i in idx], prm.pad_id)
                rec = tr.inner_step(model, model, batch, optimizer, correction, config, step)
                scheduler.step()
                step, seen = step + 1, seen + 1
                log.append({"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0], **rec,
                            "tokens": batch.num_tokens, "seconds": time.perf_counter() - t_step})
                bar.update(task, advance=1, info=f"loss {rec['loss']:.4f}")
                if step % config.save_steps == 0:
                    checkpoint(epoch, seen)
                if done():
                    stopped = True
                    break
            if stopped:
                checkpoint(epoch, seen)
            else:
                epoch, skip = epoch + 1, 0
                log.append({"step": step, "epoch": epoch - 1, "epoch_seconds": time.perf_counter() - t0})
                validate()
                checkpoint(epoch, 0)
    if val_ex and config.eval_each_epoch and not any(r.get("step") == step and "val_steps" in r for r in log.records):
        log.append({"step": step, "epoch": epoch, **tr.validate(model, val_ex, config.eval_aggregate,
                                                                 config.eval_batch_tokens)})
    save_prm(prm, out, {"train": config.to_dict(), "data": data_info, "epochs_done": epoch, "steps": step,
                        "frozen_backbone": True})
    log.close()
    return out

