"""CLI: ``dreamprm-code label``, a thin layer over :func:`label_solutions`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from dreamprm_code.labeling.config import LabelConfig
from dreamprm_code.options import options_from


def summary_paths(out: Path) -> tuple[Path, Path]:
    """Where the summary JSON and the MC-by-step plot of a labels file go."""
    return out.with_name(out.name + ".summary.json"), out.with_name(out.name + ".mc_by_step.png")


@options_from(LabelConfig)
def label_command(
    config: LabelConfig,
    solutions: Path = typer.Option(
        ..., "--solutions", help="solutions: our JSONL, a LiveCodeBench export or a pool"
    ),
    problems: str = typer.Option(
        ..., "--problems", help="problem source: humaneval, mbpp[:PATH], apps[:PATH], a JSONL, ..."
    ),
    out: Path = typer.Option(
        ..., "--out", help="labels JSONL (appended to; rerun the same command to resume)"
    ),
    policy: str = typer.Option(
        "embedded", "--policy", help="policy spec: embedded, hf:PATH, openai:MODEL@URL, vllm:PATH"
    ),
    workers: int = typer.Option(2, "--workers", help="parallel sandboxed programs"),
    exec_cache: Path | None = typer.Option(
        None, "--exec-cache", help="execution cache dir (default: next to --out)"
    ),
    limit: int | None = typer.Option(None, "--limit", help="label only the first N solutions"),
) -> None:
    """Monte-Carlo step labels: continue every step prefix N times and run the programs."""
    from dreamprm_code.data import load_problems, load_solutions
    from dreamprm_code.execution import Executor
    from dreamprm_code.io import atomic_write_json
    from dreamprm_code.labeling.label import RunStats, label_solutions
    from dreamprm_code.labeling.summary import plot_mc_by_step, summarize, summary_table
    from dreamprm_code.progress import console

    probs = load_problems(problems)
    sols = load_solutions(solutions, probs)
    if limit is not None:
        sols = sols[:limit]
    cache = exec_cache if exec_cache is not None else out.with_name(out.name + ".exec-cache")
    executor = Executor(workers=workers, cache_dir=cache)
    stats = RunStats()
    labels = label_solutions(sols, probs, policy, executor, config, out, stats=stats)
    summary = summarize(labels, run={"config": config.to_dict(), "policy": policy, **stats.to_dict()})
    json_path, png_path = summary_paths(out)
    atomic_write_json(json_path, summary)
    plot_mc_by_step(labels, png_path)
    Console().print(summary_table(summary))
    console.print(
        f"{stats.labels_written} labels written, {stats.labels_resumed} resumed; {stats.rollouts} rollouts, "
        f"{stats.tokens} policy tokens in {stats.wall_time:.1f}s; wrote {out}, {json_path}, {png_path}"
    )


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``dreamprm-code`` app."""
    app.command("label")(label_command)
    from dreamprm_code.labeling.trl_commands import labels_app

    app.add_typer(labels_app, name="labels")
