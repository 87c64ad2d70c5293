"""CLI: ``dreamprm-code train`` and ``dreamprm-code score``, thin layers over ``dreamprm_code.prm``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from dreamprm_code.labeling import load_labels as load_step_labels
from dreamprm_code.options import options_from
from dreamprm_code.prm.config import TrainConfig
from dreamprm_code.progress import console


@options_from(TrainConfig)
def train_command(
    config: TrainConfig,
    labels: Path = typer.Option(..., "--labels", help="step labels JSONL (from `dreamprm-code label`)"),
    problems: str = typer.Option(..., "--problems", help="problem source for statements: apps[:PATH], leetcode[:PATH], a JSONL, ..."),
    meta: Path | None = typer.Option(None, "--meta", help="meta set: solutions JSONL with verdicts (not the labelled solutions themselves)"),
    eval_labels: Path | None = typer.Option(None, "--eval-labels", help="held-out labels JSONL (default: hold out --val-fraction of problems)"),
) -> None:
    """Train a process reward model on Monte-Carlo step labels (with label correction)."""
    from dreamprm_code.data import load_problems, load_solutions
    from dreamprm_code.prm.train import train_prm

    probs = load_problems(problems)
    train_labels = load_step_labels(labels)
    meta_set = load_solutions(meta, probs) if meta else None
    eval_set = load_step_labels(eval_labels) if eval_labels else None
    console.print(f"{len(train_labels)} labels, {len({lab.solution_id for lab in train_labels})} candidates"
                  + (f", meta set of {len(meta_set)} solutions" if meta_set else ""))
    path = train_prm(config, train_labels, meta_set, eval_set, problems=probs)
    _print_last_validation(path)
    console.print(f"checkpoint: {path}")


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
    prm: Path = typer.Option(..., "--prm", help="PRM checkpoint directory, or embedded:NAME (a PRM shipped with the package)"),
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
