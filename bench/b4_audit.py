"""B4 audit: verify and export a ledger of N events (100,000 by default).

The events are appended through `Ledger.append` in batches, as the workflow's
`record_audit_events` does, into a database of their own on the stack's Postgres: six events
per approved action (requested, verdict, decision, execution_started, execution_result,
outcome). Then `signoff audit verify` and `signoff audit export` run on it as a user would.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from activities.ledger.store import Ledger
from bench.common import PROFILES, ROOT, Section, Stack, console, fmt
from signoff.models import ActionRequest
from workflows.messages import AuditEvent, AuditKind

EVENTS_PER_ACTION = 6


def add_options(parser: argparse.ArgumentParser) -> None:
    """B4's options."""
    group = parser.add_argument_group("B4 audit")
    group.add_argument("--b4-events", type=int, default=100_000, metavar="N")
    group.add_argument("--b4-batch", type=int, default=600, help="events per append")


def action_events(i: int, start: datetime) -> list[AuditEvent]:
    """The six ledger events of one approved, executed action."""
    action_id = f"act-{uuid.UUID(int=i).hex}"
    request = ActionRequest(
        action="sql.execute",
        target="prod-db",
        params={"statement": f"UPDATE accounts SET tier = 'gold' WHERE id = {i}"},  # noqa: S608
        justification="customer upgrade requested in ticket",
        requester="agent:etl-bot",
        idempotency_key=f"ticket-{i}",
    )
    digest = request.digest
    at = start + timedelta(seconds=i)
    decided = at + timedelta(minutes=3)

    def event(
        seq: int, kind: AuditKind, when: datetime, payload: dict[str, object], **kw: str
    ) -> AuditEvent:
        return AuditEvent.model_validate(
            {
                "action_id": action_id,
                "seq": seq,
                "kind": kind,
                "digest": digest,
                "at": when,
                "payload": payload,
                **kw,
            }
        )

    return [
        event(0, AuditKind.REQUESTED, at, request.model_dump(mode="json"), actor="agent:etl-bot"),
        event(
            1,
            AuditKind.VERDICT,
            at,
            {
                "effect": "require_approval",
                "rule_id": "prod-migrations",
                "reason": "Schema changes on production need a DBA",
                "risk": "high",
                "approvals": [{"group": "dba", "min": 1}],
                "escalation": [],
                "expires_after": "4h",
                "policy_digest": hashlib.sha256(b"policy").hexdigest(),
            },
        ),
        event(
            2,
            AuditKind.DECISION,
            decided,
            {
                "decision": "approve",
                "digest": digest,
                "reason": "looks fine",
                "approver": "alice@example.com",
                "channel": "slack",
                "at": decided.isoformat(),
                "groups": ["dba", "data-owners"],
            },
            actor="alice@example.com",
            channel="slack",
        ),
        event(
            3,
            AuditKind.EXECUTION_STARTED,
            decided,
            {"executor": {"action": "sql.execute", "idempotent": False}, "runs_in": "worker"},
        ),
        event(
            4,
            AuditKind.EXECUTION_RESULT,
            decided + timedelta(seconds=1),
            {"result": {"rowcount": 1}, "error": None},
        ),
        event(
            5,
            AuditKind.OUTCOME,
            decided + timedelta(seconds=1),
            {"status": "succeeded", "error": None},
        ),
    ]


async def create_database(base_url: str) -> str:
    """A fresh database on the stack's Postgres; its URL."""
    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(base_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(base_url)._replace(path=f"/{name}"))


async def fill(url: str, events: int, batch: int) -> tuple[int, float]:
    """Append `events` events in batches; (rows written, seconds)."""
    ledger = await Ledger.connect(url, migrate=True)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    written = 0
    pending: list[AuditEvent] = []
    began = time.perf_counter()
    try:
        i = 0
        while written + len(pending) < events:
            pending += action_events(i, start)[: events - written - len(pending)]
            i += 1
            if len(pending) >= batch:
                written += await ledger.append(pending)
                pending = []
        if pending:
            written += await ledger.append(pending)
    finally:
        await ledger.close()
    return written, time.perf_counter() - began


async def timed_cli(argv: list[str]) -> tuple[float, str]:
    """Run a `signoff` CLI command; (seconds, last line of its output)."""
    signoff = Path(sys.executable).parent / "signoff"
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        str(signoff),
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    out, _ = await process.communicate()
    elapsed = time.perf_counter() - began
    text = out.decode(errors="replace").strip().splitlines()
    if process.returncode != 0:
        raise RuntimeError(f"signoff {argv[:2]} exited {process.returncode}: {text[-3:]}")
    return elapsed, (text[-1] if text else "")


async def profile_library(url: str, tag: str) -> list[str]:
    """pyinstrument of verify_chain and the export's records+render, in this process."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return ["pyinstrument not installed: no profile"]
    from workers.audit.report import records, render
    from workers.audit.verify import verify_chain

    PROFILES.mkdir(exist_ok=True)
    ledger = await Ledger.connect(url)
    notes = []
    try:
        profiler = Profiler(async_mode="enabled")
        with profiler:
            await verify_chain(ledger)
        out = PROFILES / f"{tag}-verify.pyinstrument.txt"
        out.write_text(profiler.output_text(show_all=False, color=False))
        notes.append(f"profile of verify: {out.relative_to(ROOT)}")
        profiler = Profiler(async_mode="enabled")
        with profiler:
            items = [r async for r in records(ledger, None, None)]
            render(items, "json", generated_at=datetime.now(UTC))
        out = PROFILES / f"{tag}-export.pyinstrument.txt"
        out.write_text(profiler.output_text(show_all=False, color=False))
        notes.append(f"profile of export: {out.relative_to(ROOT)}")
    finally:
        await ledger.close()
    return notes


async def run(stack: Stack, args: argparse.Namespace) -> Section:
    """Fill a ledger, then time the CLI's verify and export on it."""
    events = 10_000 if args.quick else args.b4_events
    url = await create_database(stack.database_url)
    console.print(f"[bold]B4[/bold] appending {events:,} events in batches of {args.b4_batch} ...")
    written, fill_s = await fill(url, events, args.b4_batch)
    section = Section(
        title=f"B4 audit ledger of {written:,} events ({written // EVENTS_PER_ACTION:,} actions)",
        columns=["operation", "seconds", "events/s", "output"],
    )
    section.rows.append(
        ["append (Ledger.append, batches)", fmt(fill_s, 2), fmt(written / fill_s, 0), ""]
    )
    out_dir = stack.data_dir / "export"
    out_dir.mkdir(exist_ok=True)
    commands = {
        "signoff audit verify": ["audit", "verify", "--database-url", url, "--no-progress"],
        "signoff audit export --format json": [
            "audit", "export", "--database-url", url, "--format", "json",
            "--out", str(out_dir / "ledger.json"), "--no-progress",
        ],
        "signoff audit export --format csv": [
            "audit", "export", "--database-url", url, "--format", "csv",
            "--out", str(out_dir / "ledger.csv"), "--no-progress",
        ],
    }  # fmt: skip
    for name, argv in commands.items():
        console.print(f"[bold]B4[/bold] {name} ...")
        seconds, last = await timed_cli(argv)
        section.rows.append([name, fmt(seconds, 2), fmt(written / seconds, 0), last[:80]])
    if args.profile:
        import os

        section.notes += await profile_library(url, os.environ.get("BENCH_PROFILE_TAG", "b4"))
    section.notes.append("CLI times include interpreter start-up and connecting (~1 s).")
    return section


if __name__ == "__main__":
    from bench.run_all import standalone

    standalone("b4")
