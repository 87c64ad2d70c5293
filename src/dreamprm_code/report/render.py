"""Markdown and self-contained HTML reports of an evaluation.

The HTML page is rendered from the jinja2 templates in ``report/templates`` (autoescaped), and
carries everything it shows (CSS inline, plots as base64 PNG ``data:`` URIs), so it can be mailed
or archived as one file and opened offline. The candidate view colours every step
(function) of each candidate by its PRM score, next to the candidate's verdict, so a reader can
see where the PRM thought a program went wrong.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jinja2
import numpy as np

from dreamprm_code.cof import solution_steps
from dreamprm_code.records import Problem, Solution, StepScores
from dreamprm_code.report.tables import (
    MERGED_ROWS_NOTE,
    pass_at_k_table,
    shows_all_aggregations,
    table_rows,
    verdict_note,
)
from dreamprm_code.scaling.evaluate import EvalReport
from dreamprm_code.scaling.metrics import tie_rng


@dataclass
class Figure:
    """A PNG to show in the report, with its title and file name."""

    name: str  # file name, e.g. ``scaling.png``
    title: str
    png: bytes


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _settings_line(report: EvalReport) -> str:
    s = report.settings
    votes = s.get("weighted_vote") or []
    vote = f", PRM-weighted vote by {' and '.join(votes)} of cluster scores" if votes else ""
    return (
        f"seed {s['seed']}, {s['resamples']} paired bootstrap resamples over problems, "
        f"{int(100 * s['confidence'])}% intervals, {s['subsamples']} subsets per N on the scaling curve, "
        f"labels from `{s['label']}`, primary aggregation `{report.primary_aggregation}`{vote}; "
        f"ties: {s['tie_break']}."
    )


def render_markdown(report: EvalReport, figures: Sequence[Figure] = (), *, title: str = "Best-of-N evaluation") -> str:
    """The report as Markdown; figures are linked by file name (written beside it)."""
    header, rows = table_rows(report)
    out = [f"# {title}", "", _settings_line(report), ""]
    if not report.verdicts_allowed:
        out += [f"> {verdict_note(report)}", ""]
    out += ["## pass@1 of the selected candidate (%, 95% CI)", ""]
    out.append(_md_table(header, [[r.label, *r.cells, r.vs_policy, r.vs_best] for r in rows]))
    if report.verdicts_allowed:
        out += ["", verdict_note(report)]
    out.append("")
    if shows_all_aggregations(report):
        header, rows = table_rows(report, all_aggregations=True)
        out += ["## Every aggregation", "", MERGED_ROWS_NOTE, ""]
        out.append(_md_table(header, [[r.label, *r.cells, r.vs_policy, r.vs_best] for r in rows]))
        out.append("")
    out += ["## Policy pass@k (%)", ""]
    out.append(_md_table(*pass_at_k_table(report)))
    out.append("")
    for f in figures:
        out += [f"## {f.title}", "", f"![{f.title}]({f.name})", ""]
    if report.coverage:
        out += ["## Score coverage", ""]
        out.append(_md_table(["score set", "scored", "missing", "extra"], _coverage_rows(report)))
        out.append("")
    if report.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(out)


def _coverage_rows(report: EvalReport) -> list[list[str]]:
    return [[k, str(v["scored"]), str(v["missing"]), str(v["extra"])] for k, v in report.coverage.items()]


@cache
def _environment() -> jinja2.Environment:
    """The templates shipped with the package, HTML-escaped unless marked safe."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("dreamprm_code.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _css() -> str:
    return resources.files("dreamprm_code.report").joinpath("templates/report.css").read_text(encoding="utf-8")


def _score_colour(p: float) -> str:
    """Red (0) through yellow to green (1), light enough to read code on."""
    if math.isnan(p):
        return "#eeeeee"
    return f"hsl({int(120 * max(0.0, min(1.0, p)))},70%,85%)"


def candidate_view(
    sol: Solution, scores: Mapping[str, StepScores], colour_by: str | None, chosen_by: list[str]
) -> dict[str, Any]:
    """What the candidate template shows: verdict, choosers, step scores and the coloured steps."""
    steps = solution_steps(sol)
    main = scores.get(colour_by) if colour_by else None
    aligned = main is not None and len(main.scores) == len(steps)
    if sol.verdict is not None:
        verdict, badge = sol.verdict, "pass" if sol.passed else "fail"
    elif "recorded_is_solved" in sol.meta:
        ok = bool(sol.meta["recorded_is_solved"])
        verdict, badge = ("pass" if ok else "fail") + " (recorded)", "pass" if ok else "fail"
    else:
        verdict, badge = "unknown", "unknown"
    view_steps = []
    for k, st in enumerate(steps):
        p = main.scores[k] if aligned and main is not None else float("nan")
        tip = f"step {k + 1} {st.name} ({st.kind})" + ("" if math.isnan(p) else f": {p:.3f}")
        view_steps.append({"colour": _score_colour(p), "tip": tip, "text": sol.code[st.start : st.end]})
    return {
        "id": sol.id,
        "verdict": verdict,
        "badge": badge,
        "chosen_by": chosen_by,
        "score_lines": [(name, ", ".join(f"{s:.2f}" for s in rec.scores)) for name, rec in scores.items()],
        "misaligned": f"{len(main.scores)} scores for {len(steps)} steps: not coloured"
        if main is not None and not aligned
        else "",
        "steps": view_steps,
    }


def render_candidate(sol: Solution, scores: Mapping[str, StepScores], colour_by: str | None, chosen_by: list[str]) -> str:
    """One candidate as HTML: verdict badge, which methods chose it, and its code with steps coloured."""
    return _environment().get_template("candidate.html.j2").render(c=candidate_view(sol, scores, colour_by, chosen_by))


def sample_problems(report: EvalReport, solutions: Sequence[Solution], k: int, seed: int) -> list[str]:
    """A seeded sample of problems, those with both right and wrong candidates first (informative)."""
    policy = report.method("policy").per_problem
    mixed = sorted(pid for pid, v in policy.items() if 0 < v < 1)
    rest = sorted(pid for pid, v in policy.items() if v in (0.0, 1.0))
    rng = tie_rng(seed, "report-sample")
    out = list(rng.permutation(np.array(mixed, dtype=object))[:k]) if mixed else []
    if len(out) < k and rest:
        out += list(rng.permutation(np.array(rest, dtype=object))[: k - len(out)])
    return [str(p) for p in out]


def render_html(
    report: EvalReport,
    figures: Sequence[Figure] = (),
    *,
    problems: Sequence[Problem] = (),
    solutions: Sequence[Solution] = (),
    score_sets: Mapping[str, Sequence[StepScores]] | None = None,
    sample: int = 5,
    max_candidates: int = 8,
    colour_by: str | None = None,
    title: str = "Best-of-N evaluation",
) -> str:
    """A self-contained HTML report: tables, embedded plots and a coloured sample of candidates.

    ``colour_by`` names the score set whose step scores colour the code (default: the last one
    given, by convention the corrected PRM).
    """
    score_sets = dict(score_sets or {})
    if colour_by is None and score_sets:
        colour_by = list(score_sets)[-1]
    header, rows = table_rows(report)
    every = None
    if shows_all_aggregations(report):
        every_header, every_rows = table_rows(report, all_aggregations=True)
        every = {"header": every_header, "rows": every_rows, "note": MERGED_ROWS_NOTE}
    pak_header, pak_rows = pass_at_k_table(report)
    sampled = []
    if solutions and sample > 0:
        sampled = _sampled_problems(report, problems, solutions, score_sets, sample, max_candidates, colour_by)
    return _environment().get_template("report.html.j2").render(
        title=title,
        css=_css(),
        settings_line=_settings_line(report),
        verdicts_allowed=report.verdicts_allowed,
        verdict_note=verdict_note(report),
        main={"header": header, "rows": rows},
        every=every,
        pass_at_k={"header": pak_header, "rows": pak_rows},
        figures=[
            {
                "ident": "fig-" + f.name.rsplit(".", 1)[0].replace(".", "-"),
                "title": f.title,
                "data": base64.b64encode(f.png).decode("ascii"),
            }
            for f in figures
        ],
        coverage=_coverage_rows(report),
        notes=report.notes,
        problems=sampled,
        colour_by=colour_by if sampled else None,
    )


def _sampled_problems(
    report: EvalReport,
    problems: Sequence[Problem],
    solutions: Sequence[Solution],
    score_sets: Mapping[str, Sequence[StepScores]],
    sample: int,
    max_candidates: int,
    colour_by: str | None,
) -> list[dict[str, Any]]:
    """The sampled problems, each with the views of its first candidates."""
    by_problem: dict[str, list[Solution]] = {}
    for s in solutions:
        by_problem.setdefault(s.problem_id, []).append(s)
    titles = {p.id: p for p in problems}
    tables = {name: {r.solution_id: r for r in recs} for name, recs in score_sets.items()}
    chosen: dict[str, list[str]] = {}
    for m in report.table_methods():
        for sid in m.chosen.values():
            chosen.setdefault(sid, []).append(m.label)
    out = []
    for pid in sample_problems(report, solutions, sample, int(report.settings["seed"])):
        prob = titles.get(pid)
        views = []
        for sol in sorted(by_problem.get(pid, []), key=lambda s: s.sample_index)[:max_candidates]:
            scores = {name: t[sol.id] for name, t in tables.items() if sol.id in t}
            views.append(candidate_view(sol, scores, colour_by, chosen.get(sol.id, [])))
        heading = f"{pid}: {prob.title} ({prob.difficulty})" if prob else pid
        out.append({"id": pid, "heading": heading, "candidates": views})
    return out
