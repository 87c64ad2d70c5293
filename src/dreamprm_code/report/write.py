"""Write an evaluation's files: report.json, report.md, report.html and the PNG plots.

Every file is written atomically, so an interrupted run leaves either the old report or the new.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from dreamprm_code.io import atomic_write_json, atomic_write_text
from dreamprm_code.progress import console
from dreamprm_code.records import Problem, Solution, StepScores
from dreamprm_code.report.plots import difficulty_plot, scaling_plot
from dreamprm_code.report.render import Figure, render_html, render_markdown
from dreamprm_code.report.tables import shows_all_aggregations
from dreamprm_code.scaling.evaluate import EvalReport


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def figures_for(
    report: EvalReport, checkpoints: Mapping[str, str | Path] | None = None
) -> list[Figure]:
    """The evaluation's plots, plus the label-correction plots of each PRM checkpoint given."""
    figs = [
        Figure("scaling.png", "Best-of-N scaling: pass@1 against N", scaling_plot(report)),
        Figure("difficulty.png", "pass@1 by difficulty", difficulty_plot(report)),
    ]
    if shows_all_aggregations(report):
        figs.append(
            Figure("scaling-all.png", "Scaling curve of every aggregation", scaling_plot(report, all_aggregations=True))
        )
    for name, path in (checkpoints or {}).items():
        figs += label_correction_figures(path, name)
    return figs


def label_correction_figures(checkpoint: str | Path, name: str = "") -> list[Figure]:
    """The meta stage's plots of how the correction moved the labels (``meta.plots``).

    A checkpoint trained without a meta set (ORM, PRM without correction) has no
    ``correction.json``: it contributes no figure, with a note on the console.
    """
    import tempfile

    from dreamprm_code.errors import UserError
    from dreamprm_code.meta.plots import plot_correction

    label = name or Path(checkpoint).name
    with tempfile.TemporaryDirectory(prefix="dreamprm-plots-") as tmp:
        try:
            paths = plot_correction(checkpoint, tmp)
        except UserError as exc:
            console.print(f"[yellow]no label-correction plots for {label}:[/] {exc}")
            return []
        out = []
        for path in paths:
            stem = path.stem
            file = f"{name}-{stem}.png" if name else f"{stem}.png"
            title = f"Label correction ({label}): {stem.replace('_', ' ')}"
            out.append(Figure(file, title, path.read_bytes()))
    return out


def write_report(
    report: EvalReport,
    out_dir: str | Path,
    *,
    problems: Sequence[Problem] = (),
    solutions: Sequence[Solution] = (),
    score_sets: Mapping[str, Sequence[StepScores]] | None = None,
    checkpoint: str | Path | None = None,
    checkpoints: Mapping[str, str | Path] | None = None,
    sample: int = 5,
    title: str = "Best-of-N evaluation",
) -> dict[str, Path]:
    """Write the report files into ``out_dir``; returns what was written, by kind.

    ``checkpoint`` (one PRM checkpoint) or ``checkpoints`` (score-set name -> checkpoint) add the
    label-correction plots of those checkpoints.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpts = dict(checkpoints or {})
    if checkpoint is not None:
        ckpts.setdefault(Path(checkpoint).name, checkpoint)
    figs = figures_for(report, ckpts)
    written: dict[str, Path] = {}
    for f in figs:
        _atomic_write_bytes(out / f.name, f.png)
        written[f.name] = out / f.name
    atomic_write_json(out / "report.json", report.to_dict())
    written["json"] = out / "report.json"
    atomic_write_text(out / "report.md", render_markdown(report, figs, title=title))
    written["md"] = out / "report.md"
    page = render_html(
        report, figs, problems=problems, solutions=solutions, score_sets=score_sets, sample=sample, title=title
    )
    atomic_write_text(out / "report.html", page)
    written["html"] = out / "report.html"
    return written
