"""`signoff worker`: run the Temporal worker that holds the credentials."""

from __future__ import annotations

from typing import Annotated

import typer

from activities.ledger.store import LedgerSchemaBehind
from policies.loader import PolicyError
from signoff.cli.common import fail
from workers import event_loop
from workers.cli import logs
from workers.settings import SettingsError, load_settings
from workflows.signing import SigningError


def worker(
    task_queue: Annotated[
        str | None, typer.Option(help="Override SIGNOFF_TASK_QUEUE.", show_default=False)
    ] = None,
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "INFO",
) -> None:
    """Run a worker: the action workflow, policy, notifications, executors and audit."""
    logs.configure(log_level)
    try:
        settings = load_settings()
    except SettingsError as err:
        raise fail(str(err), 2) from None
    if task_queue:
        settings = settings.model_copy(update={"task_queue": task_queue})
    # Imported here: every `signoff` command loads this module; only `worker` needs Temporal's.
    from workers.worker import run_worker

    try:
        event_loop.run(run_worker(settings), settings.event_loop)
    except (PolicyError, SigningError, LedgerSchemaBehind) as err:
        raise fail(str(err), 2) from None
