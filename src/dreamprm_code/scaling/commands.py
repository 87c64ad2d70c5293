"""CLI: ``dreamprm-code evaluate`` and ``search``, thin layers over the library."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dreamprm_code.errors import UserError
from dreamprm_code.options import options_from
from dreamprm_code.progress import console
from dreamprm_code.scaling.config import SearchConfig
from dreamprm_code.scaling.select import AGGREGATIONS


def evaluate_command(
    problems: str = typer.Option(..., "--problems", help="problem source: humaneval, apps[:PATH], leetcode[:PATH], a JSONL, ..."),
    solutions: Path = typer.Option(..., "--solutions", help="candidates: our JSONL, a LiveCodeBench export, or a pool file/folder"),
    scores: list[str] = typer.Option([], "--scores", help="step scores JSONL, as NAME=FILE or FILE (named by its stem); repeatable"),
    out: Path = typer.Option(..., "--out", help="directory for report.json / .md / .html and the plots"),
    aggregation: list[str] = typer.Option(
        list(AGGREGATIONS), "--aggregation", help=f"step-score aggregations ({', '.join(AGGREGATIONS)}); repeatable"
    ),
    primary: str | None = typer.Option(None, "--primary", help="aggregation of the main table (default: the first)"),
    baseline: list[str] = typer.Option([], "--baseline", help="score sets that count as baselines (e.g. orm)"),
    label: str = typer.Option("verdict", "--label", help="ground truth: 'verdict' (executed) or 'recorded' (pool's own)"),
    execute: bool = typer.Option(
        False, "--execute", help="run candidates that lack a verdict on all tests first (cached in OUT)"
    ),
    majority: bool = typer.Option(True, "--majority/--no-majority", help="majority vote over execution behaviour"),
    weighted_vote: list[str] = typer.Option(
        ["sum", "mean"], "--weighted-vote", help="PRM-weighted vote over the vote's clusters: sum, mean; repeatable"
    ),
    no_weighted_vote: bool = typer.Option(False, "--no-weighted-vote", help="no PRM-weighted vote rows"),
    vote_tests: int = typer.Option(3, "--vote-tests", help="tests (public first) whose outputs define behaviour"),
    workers: int = typer.Option(2, "--workers", help="parallel sandboxed runs for the majority vote"),
    seed: int = typer.Option(0, "--seed"),
    resamples: int = typer.Option(2000, "--resamples", help="paired bootstrap resamples"),
    subsamples: int = typer.Option(20, "--subsamples", help="random subsets per N on the scaling curve"),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="PRM checkpoint dir: add label-correction plots"),
    sample: int = typer.Option(5, "--sample", help="problems whose candidates the HTML report shows"),
) -> None:
    """Best-of-N evaluation: pass@1 of every selection method by difficulty, with bootstrap CIs."""
    from dreamprm_code.data import load_problems, load_solutions
    from dreamprm_code.report.tables import rich_pass_at_k, rich_table
    from dreamprm_code.report.write import write_report
    from dreamprm_code.scaling.behaviour import compute_behaviours, fill_verdicts
    from dreamprm_code.scaling.evaluate import EvalOptions, evaluate
    from dreamprm_code.scaling.scores import load_step_scores, parse_score_spec

    probs = load_problems(problems)
    sols = load_solutions(solutions, probs)
    score_sets = {}
    for spec in scores:
        name, path = parse_score_spec(spec)
        if name in score_sets:
            raise UserError(f"two score sets are named {name!r}; use NAME=FILE to tell them apart")
        score_sets[name] = load_step_scores(path)
    if execute and label == "verdict":
        ran = fill_verdicts(probs, sols, cache_dir=out, workers=workers)
        console.print(f"executed {ran} candidates without a verdict")
    behaviours = None
    if majority:
        wanted = {s.problem_id for s in sols}
        behaviours = compute_behaviours(
            [p for p in probs if p.id in wanted],
            sols,
            max_tests=vote_tests,
            cache=out / "behaviours.jsonl",
            workers=workers,
        )
    options = EvalOptions(
        aggregations=tuple(aggregation),
        primary_aggregation=primary,
        majority=majority,
        weighted_vote=() if no_weighted_vote else tuple(weighted_vote),
        baselines=tuple(baseline),
        label=label,
        seed=seed,
        resamples=resamples,
        subsamples=subsamples,
        show_progress=True,
    )
    report = evaluate(probs, sols, score_sets, options, behaviours=behaviours)
    out_console = Console() if Console().is_terminal else Console(width=200)  # stdout: pipeable
    if score_sets:
        out_console.print(rich_table(report))
    out_console.print(rich_pass_at_k(report))
    if not score_sets:
        out_console.print(rich_table(report))
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    written = write_report(
        report, out, problems=probs, solutions=sols, score_sets=score_sets, checkpoint=checkpoint, sample=sample
    )
    console.print(f"wrote {', '.join(str(p) for p in written.values())}")


@options_from(SearchConfig, exclude=("sampling.seed", "sampling.stop"))
def search_command(
    config: SearchConfig,
    problems: str = typer.Option(..., "--problems", help="problem source (as for evaluate)"),
    policy: str = typer.Option(..., "--policy", help="policy spec: embedded, hf:PATH, openai:MODEL@URL, vllm:PATH"),
    prm: Path = typer.Option(..., "--prm", help="PRM checkpoint directory"),
    out: Path = typer.Option(..., "--out", help="directory for search.jsonl (resumable) and bon.jsonl"),
    limit: int | None = typer.Option(None, "--limit", help="only the first N problems"),
    compare: bool = typer.Option(False, "--compare", help="also run best-of-N at the same completion tokens"),
    execute: bool = typer.Option(True, "--execute/--no-execute", help="run the chosen programs on the tests"),
) -> None:
    """PRM-guided function-level beam search, with policy tokens counted for a fair comparison."""
    from dreamprm_code.data import load_problems
    from dreamprm_code.policy import load_policy
    from dreamprm_code.prm.score import load_scorer
    from dreamprm_code.scaling.search import run_search

    probs = load_problems(problems)[:limit] if limit else load_problems(problems)
    scorer, _ = load_scorer(prm)
    summary = run_search(
        probs, load_policy(policy), scorer, config, out, compare=compare, execute=execute
    )
    table = Table(title=f"PRM beam search (beam {config.beam} x expand {config.expand}) on {len(probs)} problems")
    for col in ("method", "problems", "solved", "pass@1 %", "completion tokens", "prompt tokens"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for row in summary:
        solved = "-" if row["solved"] is None else str(row["solved"])
        rate = "-" if row["solved"] is None else f"{100 * row['solved'] / max(1, row['problems']):.1f}"
        table.add_row(row["method"], str(row["problems"]), solved, rate, str(row["completion_tokens"]),
                      str(row["prompt_tokens"]))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``dreamprm-code`` app."""
    app.command("evaluate")(evaluate_command)
    app.command("search")(search_command)
