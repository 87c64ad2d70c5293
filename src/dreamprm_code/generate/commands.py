"""CLI: ``dreamprm-code generate``: sample candidate solutions with any policy backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from dreamprm_code.cof.prompts import PackagedStyle
from dreamprm_code.errors import UserError
from dreamprm_code.options import choices, options_from
from dreamprm_code.policy.base import SamplingParams
from dreamprm_code.records import Solution


def parse_opts(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs for the backend; values are read as JSON when they parse (numbers, true)."""
    opts: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"expected KEY=VALUE, got {item!r}", field="policy-opt")
        try:
            opts[key.strip().replace("-", "_")] = json.loads(value)
        except ValueError:
            opts[key.strip().replace("-", "_")] = value
    return opts


def summary(solutions: list[Solution], title: str) -> Table:
    """Samples, pass rate, problems solved by any sample, CoF compliance and reply length."""
    table = Table(title=title)
    for col in ("problems", "samples", "pass@1", "any pass", "CoF (>=2 functions)", "tokens/sample"):
        table.add_column(col, justify="right")
    problems = {s.problem_id for s in solutions}
    executed = [s for s in solutions if s.verdict is not None]
    solved = {s.problem_id for s in executed if s.passed}
    cof = sum(1 for s in solutions if (s.meta or {}).get("step_mode") == "functions")
    toks = sum((s.tokens or {}).get("completion", 0) for s in solutions)
    n = max(1, len(solutions))
    table.add_row(
        str(len(problems)),
        str(len(solutions)),
        f"{100 * sum(s.passed for s in executed) / len(executed):.1f}%" if executed else "-",
        f"{len(solved)}/{len(problems)}" if executed else "-",
        f"{100 * cof / n:.1f}%",
        f"{toks / n:.0f}",
    )
    return table


@options_from(SamplingParams, exclude=("stop", "seed"), config_flag=None)
def generate_command(
    sampling: SamplingParams,
    problems: str = typer.Option(..., "--problems", help="humaneval, leetcode[:PATH], apps[:PATH], mbpp[:PATH], livecodebench[:PATH] or a problems JSONL"),
    policy: str = typer.Option("embedded", "--policy", help="embedded, hf:PATH_OR_ID, openai:MODEL@URL, vllm:PATH"),
    n: int = typer.Option(4, "--n", help="samples per problem"),
    out: Path = typer.Option(..., "--out", help="solutions JSONL (appended; rerun the same command to resume)"),
    style: str = typer.Option("cof", "--style", help="cof (chain of functions) or plain"),
    seed: int = typer.Option(0, "--seed", help="base seed; each problem derives its own"),
    no_execute: bool = typer.Option(False, "--no-execute", help="do not run the code against the tests"),
    limit: int = typer.Option(None, "--limit", help="only the first K problems"),
    batch_size: int = typer.Option(None, "--batch-size", help="prompts per policy call"),
    form: str = typer.Option("chat", "--form", help="chat, or completion for base models"),
    open_fence: bool = typer.Option(False, "--open-fence", help="prefill the reply with an opened ```python fence"),
    code_prefill: bool = typer.Option(
        False, "--code-prefill",
        help="prefill the fence and the starter code, stop at the closing fence or top-level examples",
    ),
    templates: Path = typer.Option(None, "--templates", help="a directory of prompt templates overriding the packaged ones"),
    workers: int = typer.Option(None, "--workers", help="execution workers (default: CPU count)"),
    timeout: float = typer.Option(6.0, "--timeout", help="seconds per test"),
    policy_opt: list[str] = typer.Option([], "--policy-opt", help="backend option KEY=VALUE (repeatable), e.g. concurrency=32"),
    lcb_out: Path = typer.Option(None, "--lcb-out", help="also write LiveCodeBench's code_list/graded_list JSON"),
    ray: str = typer.Option(None, "--ray", help="sample (and run) on Ray policy actors: auto, HOST:PORT, ray://HOST:PORT, local"),
    ray_actors: int = typer.Option(None, "--ray-actors", help="policy actors on Ray (default: one per GPU, else per node)"),
) -> None:
    """Sample N candidate solutions per problem, split into steps, run against the tests."""
    from dreamprm_code.data import load_problems
    from dreamprm_code.generate.solutions import export_lcb, generate_solutions
    from dreamprm_code.policy.base import load_policy

    if style not in choices(PackagedStyle) and templates is None:
        raise UserError(f"unknown style '{style}' (cof or plain, or add one with --templates)", field="style")
    sampling = sampling.with_seed(seed)
    probs = load_problems(problems)
    from dreamprm_code.distributed import as_options

    ray_opts = as_options(ray, ray_actors)
    pol = (policy, parse_opts(policy_opt)) if ray_opts else load_policy(policy, **parse_opts(policy_opt))
    executor = None
    if not no_execute:
        from dreamprm_code.execution import Executor, Limits

        executor = Executor(limits=Limits(timeout=timeout), workers=workers)
    try:
        sols = generate_solutions(
            probs,
            pol,
            n=n,
            sampling=sampling,
            style=style,
            out=out,
            executor=executor,
            execute=not no_execute,
            limit=limit,
            batch_size=batch_size,
            form=form,
            open_fence=open_fence,
            code_prefill=code_prefill,
            templates=templates,
            ray=ray_opts,
        )
    finally:
        if executor is not None:
            executor.close()
    if lcb_out is not None:
        export_lcb(sols, lcb_out)
    name = sols[0].policy if ray_opts and sols else getattr(pol, "name", policy)
    Console().print(summary(sols, f"{name} on {problems} ({style})"))
    Console(stderr=True).print(f"wrote {out}" + (f" and {lcb_out}" if lcb_out else ""))


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
