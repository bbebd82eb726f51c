"""`signoff worker`: run the Temporal worker that holds the credentials."""

from __future__ import annotations

import asyncio
import logging

import typer

from workers.settings import Settings


def worker(
    task_queue: str = typer.Option(None, help="Override SIGNOFF_TASK_QUEUE."),
    log_level: str = typer.Option("INFO", help="Python log level."),
) -> None:
    """Run a worker: the action workflow, policy, notifications, executors and audit."""
    from policies.loader import PolicyError
    from workers.worker import run_worker
    from workflows.signing import SigningError

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    if task_queue:
        settings = settings.model_copy(update={"task_queue": task_queue})
    try:
        asyncio.run(run_worker(settings))
    except (PolicyError, SigningError) as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(2) from None
