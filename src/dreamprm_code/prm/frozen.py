"""Frozen-backbone training: one backbone pass per candidate, then the head trains on cached features.

With the backbone frozen, the hidden state the head reads at a step's last token never changes,
so it is computed once (:meth:`ProcessRewardModel.step_features` over length-bucketed batches)
and kept; every later epoch, validation and label-correction pass is the head alone on those
rows. :class:`CachedFeatureModel` is the PRM's own head over the cache: its ``step_features``
looks each step of a ``StepBatch`` up instead of running the backbone, so the trainer's
``inner_step``, :class:`~dreamprm_code.meta.correction.Correction` and ``validate`` run on it
unchanged. There the head is all of theta, so the correction's sweep over every label's cached
features is the exact head hypergradient, and each label is touched at every refresh.

The cache lives in ``OUT/features/`` (or ``feature_cache``, shared by runs one after another):
``fingerprint.json`` (which backbone made it) and shards
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

from dreamprm_code.errors import UserError
from dreamprm_code.io import atomic_write_json
from dreamprm_code.prm.checkpoint import save_prm
from dreamprm_code.prm.data import (
    Example,
    StepBatch,
)
from dreamprm_code.prm.model import (
    ProcessRewardModel,
    StepHead,
    build_prm,
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


def train_frozen(config: TrainConfig, out: Path, labels: Sequence[StepLabel], meta_set: Sequence[Solution] | None,
                 eval_set: Sequence[StepLabel] | Sequence[Solution],
                 problems: Sequence[Problem] | Mapping[str, Problem] | None, *, progress: bool = True) -> Path:
    """:func:`~dreamprm_code.prm.train.train_prm` with the backbone frozen (``config.freeze_backbone``),
    called by it on the labels and validation set it checked and split.

    Same data handling, correction and checkpoint; the backbone runs once per sequence, then the
    head trains for ``config.frozen_epochs`` epochs (``config.num_train_epochs`` is for the fine-tuning
    path, where an epoch costs a backbone pass per candidate). ``lora_r`` is not used.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from dreamprm_code.prm import train as tr
    from dreamprm_code.prm.tracking import open_train_log, tracker_settings

    if config.frozen_epochs < 1:
        raise UserError(f"must be at least 1, got {config.frozen_epochs!r}", field="frozen_epochs")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), **tracker_settings(config, out))  # its trackers
    set_seed(config.seed)
    prm, tokenizer = build_prm(config.backbone, lora_r=0, precision=config.precision, head_hidden=config.head_hidden)
    prm.backbone.requires_grad_(False)
    if torch.cuda.is_available():
        prm.backbone.to("cuda")
    fmt = prm.attach_format(tokenizer, config.max_length, config.max_statement_tokens)
    tr.name_backbone(prm, config, out)
    data = tr.encode_inputs(config, fmt, labels, meta_set, eval_set, problems)
    data.card["backbone"] = "frozen (features cached once, head trained)"

    store = FeatureStore(Path(config.feature_cache) if config.feature_cache else out / FEATURES_DIR, {
        "backbone": config.backbone, "backbone_path": prm.spec.get("backbone_path", ""),
        "precision": config.precision, "hidden_size": prm.head.in_features,
    })
    extraction = extract_features(prm, [*data.train_ex, *data.val_ex, *data.meta_ex], store,
                                  batch_tokens=config.eval_batch_tokens, progress=progress)
    model = CachedFeatureModel(prm.head, store, prm.pad_id)
    correction = tr.make_correction_for(config, labels, data.meta_ex, prm.pad_id)
    optimizer, scheduler = tr.make_optimizer(model, config)
    start = tr._resume(out, config, model, optimizer, scheduler, correction)  # type: ignore[arg-type]
    log = open_train_log(out, config, accelerator, start[0])
    log.append(extraction)
    if getattr(correction, "needs_features", False):  # the sweep moves every label from the first refresh
        tr._observe_all(model, data.train_ex, correction, config)
    atomic_write_json(out / "train_config.json", config.to_dict())

    def save_state(step: int, epoch: int, batch_in_epoch: int) -> None:
        tr.save_progress(out, model, config, optimizer, scheduler, correction, labels, step, epoch, batch_in_epoch)

    def epoch_time(step: int, epoch: int, seconds: float) -> None:
        log.append({"step": step, "epoch": epoch - 1, "epoch_seconds": seconds})

    step, epoch = tr.run_epochs(model, model, data, optimizer, scheduler, correction, config, log,
                                epochs=config.frozen_epochs, start=start, save_state=save_state,
                                after_epoch=epoch_time, progress=progress)
    save_prm(prm, out, {"train": config.to_dict(), "data": data.card, "epochs_done": epoch, "steps": step,
                        "frozen_backbone": True})
    log.close()
    return out
