"""Markdown and self-contained HTML reports of an evaluation.

The HTML file carries everything it shows (CSS inline, plots as base64 PNG ``data:`` URIs), so it
can be mailed or archived as one file and opened offline. The candidate view colours every step
(function) of each candidate by its PRM score, next to the candidate's verdict, so a reader can
see where the PRM thought a program went wrong.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dreamprm_code.cof import solution_steps
from dreamprm_code.records import Problem, Solution, StepScores
from dreamprm_code.report.tables import pass_at_k_table, table_rows
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
    return (
        f"seed {s['seed']}, {s['resamples']} paired bootstrap resamples over problems, "
        f"{int(100 * s['confidence'])}% intervals, {s['subsamples']} subsets per N on the scaling curve, "
        f"labels from `{s['label']}`, primary aggregation `{report.primary_aggregation}`; ties: {s['tie_break']}."
    )


def render_markdown(report: EvalReport, figures: Sequence[Figure] = (), *, title: str = "Best-of-N evaluation") -> str:
    """The report as Markdown; figures are linked by file name (written beside it)."""
    header, rows = table_rows(report)
    out = [f"# {title}", "", _settings_line(report), ""]
    out += ["## pass@1 of the selected candidate (%, 95% CI)", ""]
    out.append(_md_table(header, [[r.label, *r.cells, r.vs_policy, r.vs_best] for r in rows]))
    out += ["", "A difference is a win or a loss only when its paired interval excludes 0.", ""]
    if any(m.kind == "score" for m in report.methods) and len(report.settings["aggregations"]) > 1:
        header, rows = table_rows(report, all_aggregations=True)
        out += ["## Every aggregation", ""]
        out.append(_md_table(header, [[r.label, *r.cells, r.vs_policy, r.vs_best] for r in rows]))
        out.append("")
    out += ["## Policy pass@k (%)", ""]
    out.append(_md_table(*pass_at_k_table(report)))
    out.append("")
    for f in figures:
        out += [f"## {f.title}", "", f"![{f.title}]({f.name})", ""]
    if report.coverage:
        out += ["## Score coverage", ""]
        out.append(
            _md_table(
                ["score set", "scored", "missing", "extra"],
                [[k, str(v["scored"]), str(v["missing"]), str(v["extra"])] for k, v in report.coverage.items()],
            )
        )
        out.append("")
    if report.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
tr.oracle td{color:#777}
.win{color:#1a7f37;font-weight:600}.loss{color:#cf222e;font-weight:600}
img{max-width:100%;border:1px solid #eee}
pre.code{font-size:12px;line-height:1.35;border:1px solid #ddd;padding:6px;overflow-x:auto;margin:0}
span.step{display:block;border-left:4px solid #888;padding-left:4px}
.cand{margin:0.8em 0 1.4em 0}
.badge{display:inline-block;padding:1px 6px;border-radius:3px;font-size:12px;color:#fff}
.pass{background:#1a7f37}.fail{background:#cf222e}.unknown{background:#777}
.note{color:#555;font-size:13px}
"""


def _img(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    ident = "fig-" + fig.name.rsplit(".", 1)[0].replace(".", "-")
    return (
        f'<figure id="{html.escape(ident)}"><img alt="{html.escape(fig.title)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(fig.title)}</figcaption></figure>'
    )


def _verdict_span(text: str) -> str:
    esc = html.escape(text)
    if text.endswith(" win"):
        return f'<span class="win">{esc}</span>'
    if text.endswith(" loss"):
        return f'<span class="loss">{esc}</span>'
    return esc


def _html_table(ident: str, report: EvalReport, *, all_aggregations: bool) -> str:
    header, rows = table_rows(report, all_aggregations=all_aggregations)
    out = [f'<table id="{ident}"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for r in rows:
        cls = ' class="oracle"' if r.method.kind == "oracle" else ""
        cells = [html.escape(r.label), *map(html.escape, r.cells), _verdict_span(r.vs_policy), _verdict_span(r.vs_best)]
        out.append(f'<tr{cls} data-method="{html.escape(r.method.name)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _score_colour(p: float) -> str:
    """Red (0) through yellow to green (1), light enough to read code on."""
    if math.isnan(p):
        return "#eeeeee"
    return f"hsl({int(120 * max(0.0, min(1.0, p)))},70%,85%)"


def render_candidate(sol: Solution, scores: Mapping[str, StepScores], colour_by: str | None, chosen_by: list[str]) -> str:
    """One candidate: verdict badge, which methods chose it, and its code with steps coloured."""
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
    head = [
        f'<div class="cand" data-solution="{html.escape(sol.id)}"><b>{html.escape(sol.id)}</b> '
        f'<span class="badge {badge}">{html.escape(verdict)}</span>'
    ]
    if chosen_by:
        head.append(f' <span class="note">chosen by: {html.escape(", ".join(chosen_by))}</span>')
    for name, rec in scores.items():
        head.append(
            f'<div class="note">{html.escape(name)} step scores: '
            + html.escape(", ".join(f"{s:.2f}" for s in rec.scores))
            + "</div>"
        )
    if main is not None and not aligned:
        head.append(
            f'<div class="note">{len(main.scores)} scores for {len(steps)} steps: not coloured</div>'
        )
    body = ['<pre class="code">']
    for k, st in enumerate(steps):
        p = main.scores[k] if aligned and main is not None else float("nan")
        tip = f"step {k + 1} {st.name} ({st.kind})" + ("" if math.isnan(p) else f": {p:.3f}")
        body.append(
            f'<span class="step" style="background:{_score_colour(p)}" title="{html.escape(tip)}">'
            f"{html.escape(sol.code[st.start:st.end])}</span>"
        )
    body.append("</pre></div>")
    return "".join(head) + "".join(body)


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
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{html.escape(_settings_line(report))}</p>',
        "<h2>pass@1 of the selected candidate (%, 95% CI)</h2>",
        _html_table("main-table", report, all_aggregations=False),
        '<p class="note">A difference is a win or a loss only when its paired interval excludes 0.</p>',
    ]
    if any(m.kind == "score" for m in report.methods) and len(report.settings["aggregations"]) > 1:
        parts += ["<h2>Every aggregation</h2>", _html_table("all-aggregations", report, all_aggregations=True)]
    header, rows = pass_at_k_table(report)
    parts.append("<h2>Policy pass@k (%)</h2>")
    parts.append(
        '<table id="pass-at-k"><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        + "</table>"
    )
    if figures:
        parts.append("<h2>Plots</h2>")
        parts += [_img(f) for f in figures]
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>")
    if solutions and sample > 0:
        parts.append(_candidates_section(report, problems, solutions, score_sets, sample, max_candidates, colour_by))
    parts.append("</body></html>")
    return "\n".join(parts)


def _candidates_section(
    report: EvalReport,
    problems: Sequence[Problem],
    solutions: Sequence[Solution],
    score_sets: Mapping[str, Sequence[StepScores]],
    sample: int,
    max_candidates: int,
    colour_by: str | None,
) -> str:
    by_problem: dict[str, list[Solution]] = {}
    for s in solutions:
        by_problem.setdefault(s.problem_id, []).append(s)
    titles = {p.id: p for p in problems}
    tables = {name: {r.solution_id: r for r in recs} for name, recs in score_sets.items()}
    chosen: dict[str, list[str]] = {}
    for m in report.table_methods():
        for sid in m.chosen.values():
            chosen.setdefault(sid, []).append(m.label)
    out = ['<h2 id="candidates">Sample of candidates</h2>']
    if colour_by:
        out.append(
            f'<p class="note">Each step (function) is coloured by its <b>{html.escape(colour_by)}</b> score: '
            "red 0, yellow 0.5, green 1; grey when unscored. Hover a step for its score.</p>"
        )
    for pid in sample_problems(report, solutions, sample, int(report.settings["seed"])):
        prob = titles.get(pid)
        head = f"{pid}: {prob.title} ({prob.difficulty})" if prob else pid
        out.append(f'<section class="problem" data-problem="{html.escape(pid)}"><h3>{html.escape(head)}</h3>')
        for sol in sorted(by_problem.get(pid, []), key=lambda s: s.sample_index)[:max_candidates]:
            scores = {name: t[sol.id] for name, t in tables.items() if sol.id in t}
            out.append(render_candidate(sol, scores, colour_by, chosen.get(sol.id, [])))
        out.append("</section>")
    return "\n".join(out)
