"""CLI: ``dreamprm-code steps`` (how a program splits), ``prompt`` and ``templates``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dreamprm_code.cof.steps import MAX_BLOCKS, SplitInfo, split_info
from dreamprm_code.errors import UserError


def read_code(path: Path) -> str:
    """A source file exactly as stored (CRLF kept), so offsets index the file's characters."""
    if not path.is_file():
        raise UserError("file not found", path=path)
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start})", path=path) from None


def render_marked(code: str, info: SplitInfo) -> str:
    """The code with a marker line before each step, for reading the boundaries by eye."""
    out = []
    for k, (step, (first, last)) in enumerate(zip(info.steps, info.lines, strict=True), start=1):
        out.append(
            f"# ──── step {k}/{len(info.steps)}: {step.name} ({step.kind}), "
            f"chars {step.start}-{step.end}, lines {first}-{last} ────\n"
        )
        text = code[step.start : step.end]
        out.append(text if text.endswith(("\n", "\r")) or not text else text + "\n")
    out.append(f"# ──── end; mode: {info.mode} ({info.reason}) ────\n")
    return "".join(out)


def steps_command(
    file: Path = typer.Argument(..., help="a Python source file"),
    show: bool = typer.Option(False, "--show", help="print the code with step boundaries marked"),
    max_blocks: int = typer.Option(
        MAX_BLOCKS, "--max-blocks", min=1, help="cap on fallback blocks (functions are never merged)"
    ),
) -> None:
    """Split a program into steps (docs/architecture.md#steps-come-from-the-syntax-tree) and print them as JSON (or marked up with --show)."""
    code = read_code(file)
    info = split_info(code, max_blocks=max_blocks)
    if show:
        typer.echo(render_marked(code, info), nl=False)
        return
    typer.echo(
        json.dumps({"file": str(file), "chars": len(code), **info.to_dict()}, indent=2, ensure_ascii=False)
    )


def prompt_command(
    problems: str = typer.Option(
        ..., "--problems", help="problem source: humaneval, mbpp[:PATH], a JSONL, ..."
    ),
    problem_id: str = typer.Option(..., "--id", help="the problem's id"),
    style: str = typer.Option("cof", "--style", help="cof | plain | a style your --templates add"),
    form: str = typer.Option("chat", "--form", help="chat | completion"),
    templates: Path | None = typer.Option(None, "--templates", help="directory of template overrides"),
    prefix_file: Path | None = typer.Option(
        None, "--prefix", help="a code prefix file: print the continuation prompt for it"
    ),
) -> None:
    """Print the prompt a problem gets, as JSON (messages + prefill, or text)."""
    from dreamprm_code.cof.prompts import build_prompt, continuation_prompt
    from dreamprm_code.data import load_problems

    found = [p for p in load_problems(problems) if p.id == problem_id]
    if not found:
        raise UserError(f"no problem with id {problem_id!r} in {problems}", field="id")
    if form not in ("chat", "completion"):
        raise UserError(f"--form must be chat or completion, got {form!r}", field="form")
    if prefix_file is not None:
        prompt = continuation_prompt(found[0], read_code(prefix_file), style, form, templates)  # type: ignore[arg-type]
    else:
        prompt = build_prompt(found[0], style, form, templates)  # type: ignore[arg-type]
    typer.echo(json.dumps(prompt.to_dict() | {"prefill": prompt.prefill}, indent=2, ensure_ascii=False))


def templates_command(
    out: Path = typer.Argument(..., help="directory to copy the packaged templates into, for editing"),
    force: bool = typer.Option(False, "--force", help="overwrite files that exist"),
) -> None:
    """Copy the packaged prompt templates to a directory; edit them and pass --templates DIR."""
    from importlib import resources

    from dreamprm_code.io import atomic_write_text

    packaged = resources.files("dreamprm_code.cof") / "templates"
    entries = [e for e in sorted(packaged.iterdir(), key=lambda e: e.name) if e.name.endswith(".txt")]
    for entry in entries:
        if (out / entry.name).exists() and not force:
            raise UserError("exists; pass --force to overwrite", path=out / entry.name)
    for entry in entries:
        atomic_write_text(out / entry.name, entry.read_text(encoding="utf-8"))
    written = [e.name for e in entries]
    typer.echo(f"wrote {len(written)} templates to {out}: {', '.join(written)}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``dreamprm-code`` app."""
    app.command("steps")(steps_command)
    app.command("prompt")(prompt_command)
    app.command("templates")(templates_command)
