"""`signoff audit`: verify the ledger, export evidence, and read an action's Temporal history."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from temporalio.client import Client

from activities.ledger.migrations import MIGRATIONS, current_version
from activities.ledger.store import Checkpoint, Ledger
from workers.audit.history import HistoryLine, fetch_lines
from workers.audit.report import ExportFormat, records, render
from workers.audit.verify import CrossCheckReport, cross_check, verify_ledger
from workers.cli.db import DatabaseUrl, DataDir, ShowProgress, database_url, progress_bar
from workers.settings import Settings
from workers.temporal import connect
from workflows.signing import KeySet, Signer, SigningError

FORMATS: dict[str, ExportFormat] = {"json": "json", "csv": "csv", "html": "html"}

app = typer.Typer(no_args_is_help=True, help="Verify and export the audit ledger.")

Since = Annotated[
    str | None,
    typer.Option(
        help="Start of the period (ISO date or time, UTC if no zone).", show_default=False
    ),
]
Until = Annotated[
    str | None,
    typer.Option(help="End of the period, exclusive (ISO date or time).", show_default=False),
]
Address = Annotated[
    str | None,
    typer.Option("--address", help="Temporal address (default SIGNOFF_TEMPORAL_ADDRESS)."),
]
Namespace = Annotated[
    str | None,
    typer.Option("--namespace", help="Temporal namespace (default SIGNOFF_TEMPORAL_NAMESPACE)."),
]


def parse_time(value: str | None, name: str) -> datetime | None:
    """Parse an ISO date or datetime; naive values are UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as err:
        raise typer.BadParameter(f"{value!r} is not an ISO date or time", param_hint=name) from err
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def temporal_client(address: str | None, namespace: str | None) -> Client:
    """Connect to Temporal the way the worker does, with optional overrides."""
    settings = Settings()
    if address:
        settings.temporal_address = address
    if namespace:
        settings.temporal_namespace = namespace
    return await connect(settings)


@app.command()
def verify(
    url: DatabaseUrl = None,
    data_dir: DataDir = None,
    cross_check_temporal: Annotated[
        bool,
        typer.Option(
            "--cross-check", help="Also compare the ledger with Temporal histories in retention."
        ),
    ] = False,
    since: Since = None,
    until: Until = None,
    address: Address = None,
    namespace: Namespace = None,
    task_queue: Annotated[
        str | None,
        typer.Option(
            "--task-queue",
            help="Cross-check: look for every action run on this queue in the ledger "
            "(default SIGNOFF_TASK_QUEUE).",
        ),
    ] = None,
    progress: ShowProgress = None,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            help="Public key(s) the checkpoints must be signed with: a PEM file or a directory "
            "of *.pem (default SIGNOFF_VERIFY_KEYS).",
            show_default=False,
        ),
    ] = None,
    anchor: Annotated[
        str | None,
        typer.Option(
            "--anchor",
            help="A hash you kept (a checkpoint's or an earlier head hash): it must still be "
            "in the ledger, which proves every row before it.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, help="Processes walking partitions side by side (default: cores)."
        ),
    ] = os.cpu_count() or 1,
) -> None:
    """Walk every hash chain and the checkpoints; report the first broken link.

    Exits 0 only when intact.
    """
    resolved = database_url(url, data_dir)
    window = (parse_time(since, "--since"), parse_time(until, "--until"))
    key_path = keys or Settings().verify_keys
    try:
        trusted = None if key_path is None else KeySet.load(key_path)
    except SigningError as err:
        raise typer.BadParameter(str(err), param_hint="--keys") from None
    version, total = asyncio.run(_count(resolved))
    if version < MIGRATIONS[-1].version:
        raise typer.BadParameter(
            f"the ledger's schema is at version {version}, this signoff reads "
            f"{MIGRATIONS[-1].version}: run `signoff db migrate` first",
            param_hint="--database-url",
        )
    with progress_bar("verifying chains", total, progress) as advance:
        report = verify_ledger(
            resolved, workers=workers, keys=trusted, anchor=anchor, advance=advance
        )
    checked = None
    if cross_check_temporal:
        checked = asyncio.run(
            _cross_check(
                resolved, window, address, namespace, task_queue or Settings().task_queue, progress
            )
        )
    if report.broken is None:
        parts = f" in {report.partitions} partitions" if report.partitions > 1 else ""
        typer.echo(f"ledger intact: {report.rows} rows{parts}, head hash {report.head_hash}")
        if report.checkpoints:
            signed = (
                "signatures checked"
                if report.signatures_checked
                else ("signatures NOT checked (no --keys or SIGNOFF_VERIFY_KEYS)")
            )
            typer.echo(
                f"checkpoints: {report.checkpoints}, latest {report.latest_checkpoint} ({signed})"
            )
        if report.anchor:
            typer.echo(f"anchor {report.anchor} found: every row before it is intact")
    else:
        b = report.broken
        where = f"row id {b.id}" if b.checkpoint is None else f"checkpoint #{b.checkpoint}"
        if b.part:
            where += f", partition {b.part}"
        typer.echo(f"ledger BROKEN at chain_seq {b.chain_seq} ({where}): {b.reason.value}")
        typer.echo(f"  {b.message}")
    if checked is not None:
        typer.echo(
            f"cross-check: {checked.checked} actions compared with Temporal, "
            f"{checked.out_of_retention} past retention, {len(checked.mismatches)} mismatches"
        )
        for m in checked.mismatches:
            if m.field == "run":
                typer.echo(f"  {m.action_id}: {m.ledger or m.temporal}")
            else:
                typer.echo(
                    f"  {m.action_id}: {m.field}: ledger {m.ledger!r} != temporal {m.temporal!r}"
                )
    if report.broken is not None or (checked is not None and checked.mismatches):
        raise typer.Exit(1)


async def _count(url: str) -> tuple[int, int]:
    """The ledger's schema version and, when it has the table, its number of rows."""
    ledger = await Ledger.connect(url, max_size=1)
    try:
        async with ledger.pool.acquire() as conn:
            version = await current_version(conn)
        return version, (await ledger.count() if version else 0)
    finally:
        await ledger.close()


async def _cross_check(
    url: str,
    window: tuple[datetime | None, datetime | None],
    address: str | None,
    namespace: str | None,
    task_queue: str,
    show: bool | None,
) -> CrossCheckReport:
    ledger = await Ledger.connect(url)
    try:
        client = await temporal_client(address, namespace)
        actions = await ledger.count_actions(*window)
        with progress_bar("cross-checking", actions, show) as advance:
            checked = await cross_check(
                ledger,
                client,
                since=window[0],
                until=window[1],
                task_queue=task_queue,
                advance=advance,
            )
        return checked
    finally:
        await ledger.close()


@app.command()
def checkpoint(
    url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="The Ed25519 private key (PEM) to sign with (default SIGNOFF_SIGNING_KEY).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write a signed checkpoint over every partition's head; print its hash to keep."""
    key_path = key or Settings().signing_key
    if key_path is None:
        raise typer.BadParameter("no signing key: pass --key or set SIGNOFF_SIGNING_KEY")
    try:
        signer = Signer.load(key_path)
    except SigningError as err:
        raise typer.BadParameter(str(err), param_hint="--key") from None
    made = asyncio.run(_checkpoint(database_url(url, data_dir), signer))
    assert made is not None, "written unconditionally"
    typer.echo(f"checkpoint #{made.seq} over {len(made.heads)} partition(s): {made.hash}")


async def _checkpoint(url: str, signer: Signer) -> Checkpoint | None:
    ledger = await Ledger.connect(url, max_size=1)
    try:
        return await ledger.checkpoint(signer)
    finally:
        await ledger.close()


@app.command()
def export(
    url: DatabaseUrl = None,
    data_dir: DataDir = None,
    since: Since = None,
    until: Until = None,
    fmt: Annotated[
        str, typer.Option("--format", help="json, csv or html.", case_sensitive=False)
    ] = "json",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of stdout.", dir_okay=False)
    ] = None,
    progress: ShowProgress = None,
) -> None:
    """Export one evidence record per action requested in [--since, --until)."""
    chosen = FORMATS.get(fmt.lower())
    if chosen is None:
        raise typer.BadParameter("use json, csv or html", param_hint="--format")
    resolved = database_url(url, data_dir)
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    text, count = asyncio.run(_export(resolved, start, end, chosen, progress))
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {count} actions to {out}", err=True)


async def _export(
    url: str,
    since: datetime | None,
    until: datetime | None,
    fmt: ExportFormat,
    show: bool | None,
) -> tuple[str, int]:
    ledger = await Ledger.connect(url)
    try:
        total = await ledger.count_actions(since, until)
        with progress_bar("exporting", total, show) as advance:
            items = [r async for r in records(ledger, since, until, advance=advance)]
    finally:
        await ledger.close()
    text = render(items, fmt, since=since, until=until, generated_at=datetime.now(UTC))
    return text, len(items)


@app.command()
def history(
    action_id: Annotated[str, typer.Argument(help="The action (workflow) id.")],
    address: Address = None,
    namespace: Namespace = None,
) -> None:
    """Print the lifecycle of one action from its Temporal history (no ledger needed)."""
    lines = asyncio.run(_history(action_id, address, namespace))
    for line in lines:
        typer.echo(f"{line.at.isoformat(timespec='milliseconds')}  {line.text}")


async def _history(action_id: str, address: str | None, namespace: str | None) -> list[HistoryLine]:
    client = await temporal_client(address, namespace)
    return await fetch_lines(client, action_id)
