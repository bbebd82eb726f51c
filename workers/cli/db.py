"""`signoff db`: the audit database's schema, and the options every database command takes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from activities.ledger.migrations import MIGRATIONS, current_version, migrate
from signoff.cli.common import fail
from workers.database import DatabaseNotConfigured, resolve_database_url

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SIGNOFF_DATABASE_URL",
        help="Postgres URL of the audit ledger.",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Use the embedded Postgres of this `signoff dev` data dir (default .signoff).",
        show_default=False,
    ),
]
ShowProgress = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="Show a progress bar (default: when stderr is a terminal).",
        show_default=False,
    ),
]

# Ledgers smaller than this finish before a progress bar is worth drawing.
PROGRESS_THRESHOLD = 5000

# Progress goes to stderr, so an export to stdout stays clean.
progress_console = Console(stderr=True)


def database_url(url: str | None, data_dir: Path | None, *, create: bool = False) -> str:
    """Resolve the database or exit with a clear message."""
    try:
        return resolve_database_url(url, data_dir, create=create)
    except DatabaseNotConfigured as err:
        raise fail(str(err), 2) from err


@contextmanager
def progress_bar(
    description: str, total: int | None, enabled: bool | None
) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr, or None when it is off or the job is small."""
    if enabled is None:
        enabled = sys.stderr.isatty() and (total is None or total >= PROGRESS_THRESHOLD)
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=progress_console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


app = typer.Typer(no_args_is_help=True, help="Manage the audit database.")


@app.command("migrate")
def migrate_command(url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Apply pending schema migrations (safe to run any number of times)."""
    resolved = database_url(url, data_dir, create=True)
    applied = asyncio.run(_migrate(resolved))
    latest = MIGRATIONS[-1].version
    if applied:
        typer.echo(f"applied migrations {', '.join(map(str, applied))}; schema at {latest}")
    else:
        typer.echo(f"schema up to date at {latest}")


async def _migrate(url: str) -> list[int]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


@app.command("status")
def status_command(url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Show the schema version; exit 1 when migrations are pending."""
    resolved = database_url(url, data_dir)
    version = asyncio.run(_version(resolved))
    latest = MIGRATIONS[-1].version
    typer.echo(f"schema at {version}, latest {latest}")
    if version < latest:
        raise typer.Exit(1)


async def _version(url: str) -> int:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await current_version(conn)
    finally:
        await conn.close()
