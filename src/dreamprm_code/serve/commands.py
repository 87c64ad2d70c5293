"""CLI: ``dreamprm-code serve``, a thin layer over ``serve.service.serve``."""

from __future__ import annotations

from pathlib import Path

import typer

from dreamprm_code.progress import console


def serve_command(
    prm: Path = typer.Option(..., "--prm", help="PRM checkpoint directory"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (keep 127.0.0.1 unless you mean it)"),
    port: int = typer.Option(8080, "--port"),
    max_batch: int = typer.Option(16, "--max-batch", help="most candidates scored in one PRM call"),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", help="how long a batch waits for more candidates"),
    max_body: int = typer.Option(1 << 20, "--max-body", help="largest accepted request body, bytes"),
    max_candidates: int = typer.Option(256, "--max-candidates", help="most candidates in one request"),
    token: str | None = typer.Option(
        None, "--token", help="require 'Authorization: Bearer TOKEN' (default: $DREAMPRM_SERVE_TOKEN; unset: open)"
    ),
    reward_aggregation: str = typer.Option("min", "--reward-aggregation", help="step scores -> reward for /get_reward"),
) -> None:
    """Serve a PRM over HTTP for RL trainers: POST /score (batches), POST /get_reward (OpenRLHF), GET /docs."""
    from dreamprm_code.serve.service import serve

    console.print(f"serving {prm} on http://{host}:{port} (POST /score, POST /get_reward, GET /docs); Ctrl-C stops")
    serve(
        prm, host=host, port=port, token=token, max_batch=max_batch, max_wait_ms=max_wait_ms, max_body=max_body,
        max_candidates=max_candidates, reward_aggregation=reward_aggregation,
    )


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``dreamprm-code`` app."""
    app.command("serve")(serve_command)
