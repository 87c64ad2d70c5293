"""CLI: ``dreamprm-code execute``: grade candidate solutions in the sandbox, resumably."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dreamprm_code.distributed import RayOptions, as_options, execute_on_ray
from dreamprm_code.errors import UserError
from dreamprm_code.execution.limits import Limits
from dreamprm_code.execution.verdicts import Executor
from dreamprm_code.io import JsonlAppender, atomic_write_json
from dreamprm_code.options import options_from
from dreamprm_code.records import VERDICTS, ExecResult, Problem, Solution


def execute_solutions(
    problems: list[Problem],
    solutions: list[Solution],
    out: str | Path,
    *,
    limits: Limits | None = None,
    workers: int | None = None,
    sandbox: str = "auto",
    cache_dir: str | Path | None = None,
    fmt: str = "ours",
    memory_bound: str = "auto",
    progress: bool = True,
    ray: str | RayOptions | None = None,
) -> list[Solution]:
    """Grade every solution and append it, with ``verdict``/``result`` filled, to ``out``.

    ``out`` is an append-only JSONL log keyed by solution id, so a killed run resumes where it
    stopped; ``fmt="lcb"`` also writes LiveCodeBench's ``_eval_all`` JSON (``question_id``,
    ``code_list``, ``graded_list``, ``pass@1``, ``metadata``) next to it (``out`` with ``.lcb.json``).
    ``ray``: run on a Ray cluster instead (:func:`dreamprm_code.distributed.execute_on_ray`;
    ``workers`` is then per actor, and ``cache_dir`` is not used: ``out`` is the log).
    """
    if fmt not in ("ours", "lcb"):
        raise UserError(f"unknown format {fmt!r}; use ours or lcb", field="format")
    by_id = {p.id: p for p in problems}
    for s in solutions:
        if s.problem_id not in by_id:
            raise UserError(f"solution {s.id} names unknown problem {s.problem_id!r}", field="problem_id")
    log = JsonlAppender(out, key=lambda r: r["id"])
    graded = {r["id"]: Solution.from_dict(r) for r in log.records}
    todo = [s for s in solutions if s.id not in log.done]

    def write(i: int, res: ExecResult) -> None:
        sol = todo[i]
        sol.verdict = res.verdict
        sol.result = res
        log.append(sol.to_dict())
        graded[sol.id] = sol

    pairs = [(by_id[s.problem_id], s.code) for s in todo]
    try:
        if ray is not None:
            execute_on_ray(as_options(ray), pairs, write, limits=limits or Limits(), workers=workers or 1,
                           sandbox=sandbox, progress=progress)
        else:
            with Executor(limits, workers=workers, cache_dir=cache_dir, sandbox=sandbox,  # type: ignore[arg-type]
                          memory_bound=memory_bound) as ex:  # type: ignore[arg-type]
                ex.run_many(pairs, progress=progress, on_result=write)
    finally:
        log.close()
    ordered = [graded[s.id] for s in solutions if s.id in graded]
    if fmt == "lcb":
        atomic_write_json(Path(str(out) + ".lcb.json"), lcb_eval_all(problems, ordered))
    return ordered


def lcb_eval_all(problems: list[Problem], solutions: list[Solution]) -> list[dict]:
    """LiveCodeBench's ``*_eval_all.json`` layout: one record per problem with its candidates;
    ``contest_date`` is full ISO, :data:`~dreamprm_code.data.livecodebench.PLACEHOLDER_DATE` when unknown."""
    from dreamprm_code.data.livecodebench import contest_date

    groups: dict[str, list[Solution]] = {}
    for s in solutions:
        groups.setdefault(s.problem_id, []).append(s)
    out = []
    for p in problems:
        sols = sorted(groups.get(p.id, []), key=lambda s: s.sample_index)
        if not sols:
            continue
        graded = [s.verdict == "pass" for s in sols]
        out.append({
            "question_id": p.id,
            "question_title": p.title,
            "question_content": p.statement,
            "platform": p.platform,
            "difficulty": p.difficulty,
            "contest_date": contest_date(p),
            "starter_code": p.starter_code,
            "code_list": [s.code for s in sols],
            "output_list": [s.raw if s.raw is not None else s.code for s in sols],
            "graded_list": graded,
            "pass@1": sum(graded) / len(graded),
            "metadata": [json.dumps(_lcb_metadata(s.result)) for s in sols],
        })
    return out


def _lcb_metadata(result: ExecResult | None) -> dict:
    """The error fields LiveCodeBench records for a failing candidate (empty on a pass)."""
    if result is None or result.verdict == "pass":
        return {}
    codes = {"wrong_answer": -2, "time_limit": -3, "runtime_error": -4, "memory_limit": -4, "compile_error": -1}
    failing = next((t for t in result.tests if t.status != "pass"), None)
    meta = {"error_code": codes.get(result.verdict, -4), "error_message": result.verdict}
    if failing is not None:
        meta.update({k: v for k, v in (("output", failing.output), ("expected", failing.expected),
                                        ("error", failing.error)) if v is not None})
    return meta


def summary_table(solutions: list[Solution]) -> Table:
    """Verdict counts per platform-agnostic problem source, with pass@1 (mean over candidates)."""
    table = Table(title="execution")
    table.add_column("verdict")
    table.add_column("candidates", justify="right")
    table.add_column("share", justify="right")
    counts = Counter(s.verdict for s in solutions)
    n = max(1, len(solutions))
    for v in VERDICTS:
        if counts[v]:
            table.add_row(v, str(counts[v]), f"{100 * counts[v] / n:.1f}%")
    table.add_row("total", str(len(solutions)), "", style="bold")
    recorded = [s for s in solutions if isinstance(s.meta.get("recorded_is_solved"), bool)]
    if recorded:
        agree = sum((s.verdict == "pass") == s.meta["recorded_is_solved"] for s in recorded)
        table.add_row("agrees with recorded is_solved", f"{agree}/{len(recorded)}", f"{100 * agree / len(recorded):.1f}%")
    return table


@options_from(Limits, param="limits", config_flag=None)
def execute_command(
    limits: Limits,
    problems: str = typer.Option(..., "--problems", help="problem SOURCE as for `problems` (humaneval, apps-stdin, a JSONL, ...)"),
    solutions: Path = typer.Option(..., "--solutions", help="solutions: our JSONL, LiveCodeBench generations, a MapCoder pool file or folder"),
    out: Path = typer.Option(..., "--out", help="graded solutions JSONL (append-only; re-run to resume)"),
    fmt: str = typer.Option("ours", "--format", help="ours, or lcb to also write LiveCodeBench's _eval_all JSON"),
    workers: int | None = typer.Option(None, "--workers", help="parallel sandboxed workers (default: CPU count)"),
    memory_bound: str = typer.Option("auto", "--memory-bound",
                                     help="tree bound: auto, cgroup2, cgroup1, watchdog (/proc, 50 ms) or off"),
    sandbox: str = typer.Option("auto", "--sandbox", help="auto, bwrap, or rlimits (no file-system isolation); "
                                "each with the tree bound of --memory-bound"),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="result cache shared across runs"),
    ray: str | None = typer.Option(None, "--ray", help="run on Ray: auto, HOST:PORT, ray://HOST:PORT or local"),
    ray_actors: int | None = typer.Option(None, "--ray-actors", help="sandbox actors on Ray (default: CPUs / workers)"),
) -> None:
    """Run candidate solutions against their problems' tests in the sandbox and record verdicts."""
    from dreamprm_code.data import load_problems, load_solutions

    probs = load_problems(problems)
    sols = load_solutions(solutions, problems=probs)
    graded = execute_solutions(probs, sols, out, limits=limits, workers=workers, sandbox=sandbox,
                               cache_dir=cache_dir, fmt=fmt, memory_bound=memory_bound, ray=as_options(ray, ray_actors))
    console = Console()
    console.print(summary_table(graded))
    console.print(f"wrote {len(graded)} graded solutions to {out}" + (f" and {out}.lcb.json" if fmt == "lcb" else ""))


def register(app: typer.Typer) -> None:
    app.command("execute")(execute_command)
