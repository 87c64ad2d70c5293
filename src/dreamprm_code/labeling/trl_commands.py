"""CLI: ``dreamprm-code labels export-trl`` / ``import-trl``, over :mod:`dreamprm_code.labeling.trl_format`."""

from __future__ import annotations

from pathlib import Path

import typer

from dreamprm_code.progress import console

labels_app = typer.Typer(help="Step labels in other tools' layouts (TRL's stepwise datasets).", no_args_is_help=True)


@labels_app.command("export-trl")
def export_trl_command(
    labels: Path = typer.Option(..., "--labels", help="our step labels JSONL (from `dreamprm-code label`)"),
    out: Path = typer.Option(..., "--out", help="a .jsonl file, or a folder for datasets' save_to_disk"),
    problems: str | None = typer.Option(None, "--problems", help="problem source: the statements become TRL's `prompt`"),
    threshold: float = typer.Option(0.0, "--threshold", help="a step is labelled True when its MC value exceeds this"),
) -> None:
    """Write step labels in TRL's stepwise layout (prompt / completions / labels), for PRMTrainer."""
    from dreamprm_code.data import load_problems
    from dreamprm_code.labeling.trl_format import labels_to_trl, write_trl
    from dreamprm_code.prm.commands import load_step_labels

    pmap = {p.id: p for p in load_problems(problems)} if problems else None
    rows, cut = labels_to_trl(load_step_labels(labels), pmap, threshold=threshold)
    write_trl(rows, out)
    note = f" ({cut} cut short at a step without a label)" if cut else ""
    console.print(f"{len(rows)} solutions{note} -> {out}")


@labels_app.command("import-trl")
def import_trl_command(
    source: str = typer.Argument(..., help="a save_to_disk folder, a JSON lines file or a hub dataset name"),
    out: Path = typer.Option(..., "--out", help="our step labels JSONL"),
    problems_out: Path = typer.Option(..., "--problems-out", help="problems JSONL (one per distinct prompt), for --problems"),
    separator: str = typer.Option("\n", "--separator", help="joins steps that do not already end with it"),
    split: str = typer.Option("train", "--split"),
) -> None:
    """Read TRL stepwise labels (e.g. trl-lib/math_shepherd layout) into our labels and problems files."""
    from dreamprm_code.io import atomic_write_jsonl
    from dreamprm_code.labeling.trl_format import read_trl, trl_to_labels

    labels, problems = trl_to_labels(read_trl(source, split=split), separator=separator, source=source)
    atomic_write_jsonl(problems_out, [p.to_dict() for p in problems])
    atomic_write_jsonl(out, [lab.to_dict() for lab in labels])
    console.print(f"{len(labels)} step labels, {len(problems)} problems -> {out}, {problems_out}")
