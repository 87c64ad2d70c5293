"""PNG plots of an evaluation: the scaling curve and pass@1 per difficulty, as bytes.

Rendered with matplotlib's Agg backend (no display needed); returning bytes lets the HTML report
embed them as base64 and the CLI write them as files, from one rendering.
"""

from __future__ import annotations

import io
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dreamprm_code.report.tables import distinct_methods, group_name, shown_groups  # noqa: E402
from dreamprm_code.scaling.evaluate import EvalReport, MethodResult  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


ORACLE_COLOUR = "#555555"


def _colours(methods: list[MethodResult], *, by_score_set: bool) -> dict[str, str]:
    """A colour per method: the oracle grey; with ``by_score_set`` a score set's rows (its
    aggregations and weighted votes) share their set's colour, else every row has its own."""
    if by_score_set:
        palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # 7 is grey
    else:
        palette = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)]  # greys
    out: dict[str, str] = {}
    families: dict[str, str] = {}
    for m in methods:
        if m.kind == "oracle":
            out[m.name] = ORACLE_COLOUR
            continue
        family = (m.score_set or m.name) if by_score_set else m.name
        if family not in families:
            families[family] = matplotlib.colors.to_hex(palette[len(families) % len(palette)])
        out[m.name] = families[family]
    return out


def _legend_outside(ax, fontsize: int = 8) -> None:
    """The legend to the right of the axes, so it never hides a line or a bar."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0)


def scaling_plot(report: EvalReport, *, all_aggregations: bool = False) -> bytes:
    """pass@1 of each method against the number of candidates N (log2 axis), with light 95% bands.

    ``all_aggregations`` draws one line per row of the every-aggregation table (methods whose
    picks score the same share a line), without bands: the table has the intervals.
    """
    if all_aggregations:
        labelled = distinct_methods(report)
    else:
        labelled = [(m, m.label) for m in report.table_methods()]
    colours = _colours([m for m, _ in labelled], by_score_set=not all_aggregations)
    # Merged rows of the every-aggregation table have long labels: wrap them, and give the axes room.
    labelled = [(m, textwrap.fill(label, 60, subsequent_indent="  ")) for m, label in labelled]
    fig, ax = plt.subplots(figsize=(7, max(4.5, 0.28 * sum(label.count("\n") + 1 for _, label in labelled))))
    for i, (m, label) in enumerate(labelled):
        pts = report.scaling.get(m.name, [])
        if not pts:
            continue
        ns = [p["n"] for p in pts]
        ys = [100 * p["value"] for p in pts]
        # Colours repeat past the palette's length: the marker then tells the lines apart.
        style: dict = {"color": colours[m.name], "marker": "osD^v"[(i // 18) % 5]}
        if m.kind == "oracle":
            style["linestyle"] = "--"
        elif m.name == "random":
            style.update(linestyle=":", linewidth=2.5)  # equals the policy line by construction
        elif m.vote is not None:
            style["linestyle"] = "-." if m.vote == "sum" else ":"
        ax.plot(ns, ys, markersize=3, label=label, **style)
        if not all_aggregations:  # two dozen overlapping bands would hide every line
            lows, highs = [100 * p["low"] for p in pts], [100 * p["high"] for p in pts]
            ax.fill_between(ns, lows, highs, alpha=0.06, linewidth=0, color=colours[m.name])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("candidates per problem (N)")
    ax.set_ylabel("pass@1 of the selected candidate (%)")
    ax.set_title("Best-of-N scaling, every aggregation" if all_aggregations else "Best-of-N scaling (bands: 95% bootstrap CI)")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return _png(fig)


def difficulty_plot(report: EvalReport) -> bytes:
    """Grouped bars: pass@1 per difficulty for each table row, with 95% interval whiskers."""
    methods = report.table_methods()
    groups = shown_groups(report)
    colours = _colours(methods, by_score_set=True)
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) + 0.3 * len(methods)), 4.5))
    for i, m in enumerate(methods):
        xs = [g + (i - (len(methods) - 1) / 2) * width for g in range(len(groups))]
        vals = [100 * m.cells[g].value for g in groups]
        err = [
            [100 * (m.cells[g].value - m.cells[g].low) for g in groups],
            [100 * (m.cells[g].high - m.cells[g].value) for g in groups],
        ]
        ax.bar(
            xs,
            vals,
            width,
            yerr=err,
            capsize=2,
            label=m.label,
            color=colours[m.name],
            hatch="//" if m.vote is not None else None,
            edgecolor="white",
            error_kw={"elinewidth": 0.8, "alpha": 0.6},
        )
    ax.set_xticks(range(len(groups)), [group_name(report, g) for g in groups])
    ax.set_ylabel("pass@1 (%)")
    ax.set_ylim(0, 105)
    ax.set_title("pass@1 by difficulty (95% bootstrap CI)" if len(groups) > 1 else "pass@1 (95% bootstrap CI)")
    _legend_outside(ax, fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
