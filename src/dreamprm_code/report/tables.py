"""The paper-layout table as plain rows, shared by the terminal, Markdown and HTML renderers.

Rows: Policy, Random, Majority vote, one row per score set (named from the set), Oracle.
Columns: Easy / Medium / Hard / Overall pass@1 in percent with 95% bootstrap intervals (one
column when every problem has the same difficulty), then the paired difference to the policy and
to the best baseline with the verdict ("win" / "loss" only when the interval excludes 0, and only
with at least ``MIN_PROBLEMS_FOR_VERDICT`` problems: below that no row is called either).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.table import Table

from dreamprm_code.scaling.evaluate import (
    MIN_PROBLEMS_FOR_VERDICT,
    OVERALL,
    EvalReport,
    MethodResult,
    row_label,
)
from dreamprm_code.scaling.metrics import Comparison, Interval


def pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}"


def cell(iv: Interval) -> str:
    """``80.2 [76.3, 84.0]`` in percent."""
    return f"{pct(iv.value)} [{pct(iv.low)}, {pct(iv.high)}]"


def diff_cell(c: Comparison, *, verdict: bool = True) -> str:
    """``+1.5 [-0.8, 3.8] within CI`` in percentage points; without the verdict when ``verdict`` is off."""
    if math.isnan(c.diff):
        return "-"
    text = f"{100 * c.diff:+.1f} [{100 * c.low:+.1f}, {100 * c.high:+.1f}]"
    return f"{text} {c.verdict}" if verdict else text


def verdict_note(report: EvalReport) -> str:
    """How to read the differences; below the threshold, why none is called a win or a loss."""
    n = report.counts[OVERALL]["problems"]
    if report.verdicts_allowed:
        return "A difference is a win or a loss only when its paired 95% interval excludes 0."
    return (
        f"Only {n} problems: too small a sample (under {MIN_PROBLEMS_FOR_VERDICT}) to call any method better "
        "or worse than another. Differences are shown with their paired 95% intervals and no verdict."
    )


@dataclass
class Row:
    method: MethodResult
    label: str
    cells: list[str]
    vs_policy: str
    vs_best: str


def group_title(group: str) -> str:
    return group.capitalize()


def shown_groups(report: EvalReport) -> list[str]:
    """The groups given a column: one (overall) when every problem has the same difficulty."""
    return [OVERALL] if len(report.groups) == 2 else list(report.groups)


def group_name(report: EvalReport, group: str) -> str:
    """``Easy``; the lone column of a one-difficulty set names that difficulty."""
    if group == OVERALL and len(report.groups) == 2:
        return f"Overall, all {report.groups[0]}"
    return group_title(group)


def group_header(report: EvalReport, group: str) -> str:
    return f"{group_name(report, group)} (n={report.counts[group]['problems']})"


#: How to read the every-aggregation table's merged rows.
MERGED_ROWS_NOTE = (
    "Methods of one score set whose picks score the same on every problem share a row, named as in "
    "report.json: min/vote-sum is the weighted vote summing the min aggregates of each behaviour cluster."
)


def _outcome(m: MethodResult) -> tuple:
    """A score-set method's identity for merging: its set and how its pick scored on each problem."""
    return (m.score_set, tuple(sorted(m.per_problem.items())))


def distinct_methods(report: EvalReport) -> list[tuple[MethodResult, str]]:
    """Every method once, except that a score set's methods (aggregations and weighted votes)
    whose picks score the same on every problem share one row, labelled with all of them by
    their names in ``report.json`` (e.g. ``ORM: min = last = min/vote-sum``)."""
    same: dict[tuple, list[MethodResult]] = {}
    order: list[MethodResult | tuple] = []
    for m in report.methods:
        if m.score_set is None:
            order.append(m)
            continue
        key = _outcome(m)
        if key not in same:
            same[key] = []
            order.append(key)
        same[key].append(m)
    rows: list[tuple[MethodResult, str]] = []
    for item in order:
        if isinstance(item, MethodResult):
            rows.append((item, item.label))
            continue
        first, *rest = same[item]
        if not rest:
            rows.append((first, first.label))
            continue
        names = " = ".join(x.name.split("/", 1)[1] for x in same[item])
        rows.append((first, f"{row_label(str(first.score_set))}: {names}"))
    return rows


def table_rows(report: EvalReport, *, all_aggregations: bool = False) -> tuple[list[str], list[Row]]:
    """Header and rows of the table; ``all_aggregations`` adds a row per (score set, aggregation,
    vote) that differs from the others (see :func:`distinct_methods`)."""
    if all_aggregations:
        labelled = distinct_methods(report)
    else:
        labelled = [(m, m.label) for m in report.table_methods()]
    groups = shown_groups(report)
    verdict = report.verdicts_allowed
    header = (
        ["Method"]
        + [group_header(report, g) for g in groups]
        + ["vs Policy (overall)", f"vs best baseline ({report.method(report.best_baseline).label})"]
    )
    rows = []
    for m, label in labelled:
        vs_policy = "" if m.name == "policy" else diff_cell(m.vs_policy[OVERALL], verdict=verdict)
        vs_best = "" if m.name == report.best_baseline else diff_cell(m.vs_best_baseline[OVERALL], verdict=verdict)
        rows.append(Row(m, label, [cell(m.cells[g]) for g in groups], vs_policy, vs_best))
    return header, rows


def shows_all_aggregations(report: EvalReport) -> bool:
    """Whether some aggregation or weighted vote picks differently from every main-table row of
    its score set (else the every-aggregation table would repeat the main one)."""

    shown = {_outcome(m) for m in report.table_methods() if m.score_set is not None}
    return any(_outcome(m) not in shown for m in report.methods if m.score_set is not None)


def rich_table(report: EvalReport, *, all_aggregations: bool = False, title: str | None = None) -> Table:
    """The table for the terminal; wins are green, losses red, the oracle dim."""
    header, rows = table_rows(report, all_aggregations=all_aggregations)
    table = Table(title=title or f"pass@1 % of the selected candidate (95% CI; aggregation: {report.primary_aggregation})")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        style = "dim" if r.method.kind == "oracle" else None
        cells = [r.label, *r.cells, _colour(r.vs_policy), _colour(r.vs_best)]
        table.add_row(*cells, style=style)
    return table


def _colour(text: str) -> str:
    if text.endswith(" win"):
        return f"[green]{text}[/]"
    if text.endswith(" loss"):
        return f"[red]{text}[/]"
    return text


def pass_at_k_table(report: EvalReport) -> tuple[list[str], list[list[str]]]:
    """Unbiased pass@k of the policy per difficulty (k where every pool has at least k)."""
    ks = sorted({k for g in report.groups for k in report.pass_at_k[g]}, key=lambda s: int(s.split("@")[1]))
    header = ["Difficulty", "problems", "candidates", *ks]
    rows = []
    for g in shown_groups(report):
        vals = report.pass_at_k[g]
        rows.append(
            [group_name(report, g), str(report.counts[g]["problems"]), str(report.counts[g]["candidates"])]
            + ["-" if vals[k] is None else pct(vals[k]) for k in ks]
        )
    return header, rows


def rich_pass_at_k(report: EvalReport) -> Table:
    header, rows = pass_at_k_table(report)
    table = Table(title="Policy pass@k % (unbiased estimator)")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    return table
