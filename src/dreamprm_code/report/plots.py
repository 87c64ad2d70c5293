"""PNG plots of an evaluation: the scaling curve and pass@1 per difficulty, as bytes.

Rendered with matplotlib's Agg backend (no display needed); returning bytes lets the HTML report
embed them as base64 and the CLI write them as files, from one rendering.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dreamprm_code.report.tables import distinct_methods, group_name, shown_groups  # noqa: E402
from dreamprm_code.scaling.evaluate import EvalReport  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _legend_outside(ax, fontsize: int = 8) -> None:
    """The legend to the right of the axes, so it never hides a line or a bar."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0)


def scaling_plot(report: EvalReport, *, all_aggregations: bool = False) -> bytes:
    """pass@1 of each method against the number of candidates N (log2 axis), with light 95% bands.

    ``all_aggregations`` draws one line per row of the every-aggregation table (aggregations
    whose picks score the same share a line).
    """
    if all_aggregations:
        labelled = distinct_methods(report)
    else:
        labelled = [(m, m.label) for m in report.table_methods()]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, label in labelled:
        pts = report.scaling.get(m.name, [])
        if not pts:
            continue
        ns = [p["n"] for p in pts]
        ys = [100 * p["value"] for p in pts]
        style: dict = {"linestyle": "--", "color": "grey"} if m.kind == "oracle" else {}
        if m.name == "random":
            style = {"linestyle": ":", "linewidth": 2.5}  # equals the policy line by construction
        elif m.vote is not None:
            style = {"linestyle": "-."}
        (line,) = ax.plot(ns, ys, marker="o", markersize=3, label=label, **style)
        ax.fill_between(
            ns,
            [100 * p["low"] for p in pts],
            [100 * p["high"] for p in pts],
            alpha=0.06,
            linewidth=0,
            color=line.get_color(),
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("candidates per problem (N)")
    ax.set_ylabel("pass@1 of the selected candidate (%)")
    ax.set_title("Best-of-N scaling (bands: 95% bootstrap CI)")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return _png(fig)


def difficulty_plot(report: EvalReport) -> bytes:
    """Grouped bars: pass@1 per difficulty for each table row, with 95% interval whiskers."""
    methods = report.table_methods()
    groups = shown_groups(report)
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) + 0.3 * len(methods)), 4.5))
    for i, m in enumerate(methods):
        xs = [g + (i - (len(methods) - 1) / 2) * width for g in range(len(groups))]
        vals = [100 * m.cells[g].value for g in groups]
        err = [
            [100 * (m.cells[g].value - m.cells[g].low) for g in groups],
            [100 * (m.cells[g].high - m.cells[g].value) for g in groups],
        ]
        ax.bar(xs, vals, width, yerr=err, capsize=2, label=m.label, error_kw={"elinewidth": 0.8, "alpha": 0.6})
    ax.set_xticks(range(len(groups)), [group_name(report, g) for g in groups])
    ax.set_ylabel("pass@1 (%)")
    ax.set_ylim(0, 105)
    ax.set_title("pass@1 by difficulty (95% bootstrap CI)" if len(groups) > 1 else "pass@1 (95% bootstrap CI)")
    _legend_outside(ax, fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
