"""The ``dreamprm-code`` command line: a thin layer over the library functions.

Each stage's subpackage has a ``commands`` module with ``register(app)`` that adds its
commands; this file only wires them and turns :class:`UserError` into a clean exit.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import typer
from rich.markup import escape

from dreamprm_code.errors import UserError
from dreamprm_code.options import RenamedOptionWarning
from dreamprm_code.progress import console

app = typer.Typer(
    name="dreamprm-code",
    help="Process reward models for code: chain-of-functions generation, Monte-Carlo step "
    "labels, meta-learned label correction and best-of-N test-time scaling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

STAGES = ("data", "execution", "cof", "generate", "labeling", "prm", "meta", "scaling", "serve", "report", "pipeline")

for _stage in STAGES:
    try:
        _module = importlib.import_module(f"dreamprm_code.{_stage}.commands")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"dreamprm_code.{_stage}.commands":
            raise
        continue
    _module.register(app)


def _one_line_warnings() -> None:
    """Show an old option name's deprecation (a config key, a YAML key) as one line on stderr."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, RenamedOptionWarning):
            console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.filterwarnings("default", category=RenamedOptionWarning)


def main() -> None:
    """Entry point: user errors are one line on stderr and exit code 2, no traceback."""
    _one_line_warnings()
    try:
        app(standalone_mode=False)
    except UserError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; finished work is saved, run the same command to resume[/]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        # Usage errors from click (typer vendors its own copy): print them the click way.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
