"""CLI: ``dreamprm-code train`` and ``dreamprm-code score``, thin layers over ``dreamprm_code.prm``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from dreamprm_code.errors import UserError
from dreamprm_code.labeling import load_labels as load_step_labels
from dreamprm_code.progress import console


def train_command(
    ctx: typer.Context,
    labels: Path = typer.Option(..., "--labels", help="step labels JSONL (from `dreamprm-code label`)"),
    problems: str = typer.Option(..., "--problems", help="problem source for statements: apps[:PATH], leetcode[:PATH], a JSONL, ..."),
    out: Path = typer.Option(..., "--out", help="checkpoint directory; run again to resume"),
    backbone: str = typer.Option("embedded:smollm2-135m-instruct", "--backbone", help="embedded:NAME, a model dir or a hub id"),
    meta: Path | None = typer.Option(None, "--meta", help="meta set: solutions JSONL with verdicts, problems apart from --labels"),
    eval_labels: Path | None = typer.Option(None, "--eval-labels", help="held-out labels JSONL (default: hold out --val-fraction of problems)"),
    correction: str = typer.Option("labels", "--correction", help="labels | weights | none (needs --meta)"),
    outcome_only: bool = typer.Option(False, "--outcome-only", help="train an ORM: final-step labels only"),
    lora_r: int = typer.Option(8, "--lora-r", help="LoRA rank; 0 = full fine-tuning"),
    lr: float = typer.Option(2e-4, "--lr"),
    epochs: int = typer.Option(2, "--epochs"),
    max_steps: int = typer.Option(0, "--max-steps", help="stop after this many steps (0 = no limit)"),
    batch_size: int = typer.Option(4, "--batch-size"),
    max_length: int = typer.Option(1024, "--max-length"),
    loss: str = typer.Option("bce", "--loss", help="bce | mse"),
    meta_refresh: int = typer.Option(4, "--meta-refresh", help="inner steps between refreshes of the meta direction"),
    meta_lr: float = typer.Option(0.1, "--meta-lr", help="step size of a corrected label per update"),
    meta_batch_size: int = typer.Option(8, "--meta-batch-size", help="meta-set solutions per refresh"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | bf16"),
    seed: int = typer.Option(0, "--seed"),
    freeze_backbone: bool = typer.Option(False, "--freeze-backbone", help="cache step features once, train the head only"),
    frozen_epochs: int = typer.Option(20, "--frozen-epochs", help="head epochs with --freeze-backbone"),
    config_file: Path | None = typer.Option(None, "--config", help="JSON of TrainConfig fields (options given here win)"),
) -> None:
    """Train a process reward model on Monte-Carlo step labels (with label correction)."""
    from dreamprm_code.data import load_problems, load_solutions
    from dreamprm_code.prm.train import TrainConfig, train_prm

    given = {
        "backbone": backbone, "out": str(out), "outcome_only": outcome_only,
        "lora_r": lora_r, "lr": lr, "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size,
        "max_length": max_length, "loss": loss, "precision": precision, "seed": seed,
        "freeze_backbone": freeze_backbone, "frozen_epochs": frozen_epochs,
    }
    meta_given = {"mode": ("correction", correction), "refresh": ("meta_refresh", meta_refresh),
                  "meta_lr": ("meta_lr", meta_lr), "batch_size": ("meta_batch_size", meta_batch_size)}
    base: dict[str, Any] = {}
    if config_file is not None:
        try:
            base = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read config: {exc}", path=config_file) from None
    explicit = {k: v for k, v in given.items() if k not in base or _is_explicit(ctx, k)}
    base_meta = dict(base.pop("meta", None) or {})
    explicit["meta"] = {**base_meta, **{k: v for k, (opt, v) in meta_given.items()
                                        if k not in base_meta or _is_explicit(ctx, opt)}}
    config = TrainConfig.from_dict({**base, **explicit})
    probs = load_problems(problems)
    train_labels = load_step_labels(labels)
    meta_set = load_solutions(meta, probs) if meta else None
    eval_set = load_step_labels(eval_labels) if eval_labels else None
    console.print(f"{len(train_labels)} labels, {len({lab.solution_id for lab in train_labels})} candidates"
                  + (f", meta set of {len(meta_set)} solutions" if meta_set else ""))
    path = train_prm(config, train_labels, meta_set, eval_set, problems=probs)
    _print_last_validation(path)
    console.print(f"checkpoint: {path}")


def _is_explicit(ctx: typer.Context, name: str) -> bool:
    """Whether an option was typed on the command line (so it overrides --config).

    typer's context is its own click's, so its parameter source is asked by name, not compared
    with another click's enum (which made every default count as typed).
    """
    source = ctx.get_parameter_source(name.replace("-", "_"))
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

def _print_last_validation(path: Path) -> None:
    log = path / "train_log.jsonl"
    if not log.exists():
        return
    vals = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines() if '"val_steps"' in x]
    if not vals:
        return
    table = Table(title="validation")
    for col in ("epoch", "step", "step AUC", "best-of-N", "random", "oracle"):
        table.add_column(col, justify="right")
    for v in vals:
        bon = next((x for k, x in v.items() if k.startswith("val_best_of_n")), float("nan"))
        table.add_row(str(v["epoch"]), str(v["step"]), f"{v['val_step_auc']:.3f}", f"{bon:.3f}",
                      f"{v['val_random']:.3f}", f"{v['val_oracle']:.3f}")
    console.print(table)


def score_command(
    prm: Path = typer.Option(..., "--prm", help="PRM checkpoint directory"),
    solutions: Path = typer.Option(..., "--solutions", help="candidates: our JSONL, a LiveCodeBench export, or a pool"),
    problems: str = typer.Option(..., "--problems", help="problem source (statements go into the PRM's input)"),
    out: Path = typer.Option(..., "--out", help="step scores JSONL; run again to resume"),
    batch_tokens: int = typer.Option(16384, "--batch-tokens", help="padded tokens per forward pass"),
    chunk: int = typer.Option(64, "--chunk", help="candidates scored (and saved) per chunk"),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if present)"),
    ray: str | None = typer.Option(None, "--ray", help="score on Ray PRM actors: auto, HOST:PORT, ray://HOST:PORT, local"),
    ray_actors: int | None = typer.Option(None, "--ray-actors", help="PRM actors on Ray (default: one per GPU, else per node)"),
) -> None:
    """Score every step of every candidate with a PRM (one forward pass per candidate)."""
    import torch

    from dreamprm_code.data import load_problems, load_solutions
    from dreamprm_code.prm.checkpoint import load_prm
    from dreamprm_code.prm.score import score_to_file

    probs = load_problems(problems)
    sols = load_solutions(solutions, probs)
    from dreamprm_code.distributed import as_options

    ray_opts = as_options(ray, ray_actors)
    model = prm if ray_opts else load_prm(prm, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    done = score_to_file(model, probs, sols, out, batch_tokens=batch_tokens, chunk=chunk, ray=ray_opts)
    console.print(f"{len(sols)} candidates, {len(sols) - done} were already scored")
    console.print(f"step scores: {out}")


def export_command(
    prm: Path = typer.Argument(..., help="PRM checkpoint directory"),
    out: Path = typer.Option(..., "--out", help="directory to write the checkpoint to"),
    merge: bool = typer.Option(False, "--merge", help="fold LoRA adapters into full weights (no base model needed)"),
) -> None:
    """Rewrite a checkpoint in the current layout (AutoModelForTokenClassification / AutoPeftModel
    load it); converts checkpoints from older versions, and with --merge writes full weights."""
    from dreamprm_code.prm.checkpoint import load_prm, read_meta, save_prm

    meta = read_meta(prm)
    model = load_prm(prm, merge=merge)
    keep = {k: meta[k] for k in ("train", "data", "epochs_done", "steps") if k in meta}
    if (prm / "train_log.jsonl").exists() and prm.resolve() != out.resolve():
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_log.jsonl").write_bytes((prm / "train_log.jsonl").read_bytes())
    path = save_prm(model, out, keep)
    console.print(f"checkpoint ({json.loads((path / 'prm.json').read_text())['layout']} layout): {path}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("score")(score_command)
    app.command("export-prm")(export_command)
