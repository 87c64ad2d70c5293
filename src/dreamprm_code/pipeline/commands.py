"""``dreamprm-code run``: the whole pipeline from one config."""

from __future__ import annotations

import typer
import yaml

from dreamprm_code.errors import UserError


def run_command(
    config: str = typer.Argument(..., help="a preset (demo, cpu-study, paper) or a YAML config file"),
    set_: list[str] = typer.Option(
        [], "--set", help="override a config key, e.g. --set generate.n_eval=8 (repeatable)"
    ),
    run_dir: str | None = typer.Option(None, help="write everything here instead of the config's run_dir"),
    no_progress: bool = typer.Option(False, help="no progress bars (logs only)"),
    ray: str | None = typer.Option(None, "--ray", help="generate, label and score on Ray: auto, HOST:PORT, local"),
) -> None:
    """Run generate -> label -> train (+ correction) -> score -> evaluate; resumable, skips finished stages."""
    from dreamprm_code.pipeline.config import load_config
    from dreamprm_code.pipeline.run import run_pipeline

    overrides: dict = {}
    for item in set_:
        if "=" not in item:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    if run_dir is not None:
        overrides["run_dir"] = run_dir
    if ray is not None:
        overrides["ray"] = ray
    cfg = load_config(config, overrides)
    run_pipeline(cfg, show_progress=not no_progress)


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
