"""The ledger under real workflows: write-ahead, scale, outages, cross-check and history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pgserver
import pytest
from click.testing import Result
from pydantic import JsonValue
from temporalio.client import Client
from typer.testing import CliRunner

from activities.ledger.store import Ledger
from signoff.executor import ExecutionContext, ExecutorRegistry
from signoff.models import Status
from tests.cli import app
from tests.conftest import Gate, running_worker, worker_parts
from tests.pg import create_database, start, stop
from workers.audit.verify import cross_check, verify_chain
from workers.settings import Settings
from workers.worker import build_worker
from workflows.messages import AuditEvent, AuditKind

runner = CliRunner()


async def invoke(*args: str) -> Result:
    """Run the CLI in a thread: its commands call asyncio.run themselves."""
    return await asyncio.to_thread(runner.invoke, app, list(args))


@pytest.fixture
async def own_ledger(postgres_url: str) -> AsyncIterator[Ledger]:
    """A ledger on a fresh database, so chain and counts belong to this test alone."""
    ledger = await Ledger.connect(await create_database(postgres_url), migrate=True)
    yield ledger
    await ledger.close()


async def test_execution_started_is_on_record_before_the_executor_runs(
    client: Client, settings: Settings, own_ledger: Ledger
) -> None:
    seen: dict[str, list[str]] = {}
    probe = ExecutorRegistry()

    @probe.executor("noop", idempotent=True, timeout="30s")
    async def look_in_the_ledger(ctx: ExecutionContext[dict[str, JsonValue]]) -> JsonValue:
        """Record which ledger rows exist while the action runs."""
        rows = await own_ledger.events(ctx.idempotency_key)
        seen[ctx.idempotency_key] = [r.kind for r in rows]
        return None

    parts = worker_parts(settings, own_ledger)
    parts.executors = probe
    async with build_worker(client, settings, parts):
        handle = await Gate(client, settings).submit("sandbox-1")
        outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    assert seen[handle.id] == [
        AuditKind.REQUESTED,
        AuditKind.VERDICT,
        AuditKind.EXECUTION_STARTED,
    ]
    kinds = [r.kind for r in await own_ledger.events(handle.id)]
    assert kinds[-2:] == [AuditKind.EXECUTION_RESULT, AuditKind.OUTCOME]


@pytest.mark.slow
async def test_two_hundred_actions_through_workflows_make_one_chain(
    client: Client, settings: Settings, own_ledger: Ledger
) -> None:
    gate = Gate(client, settings)
    async with running_worker(client, settings, own_ledger):
        handles = await asyncio.gather(*(gate.submit(f"sandbox-{n}", {"n": n}) for n in range(200)))
        outcomes = await asyncio.gather(*(h.result() for h in handles))
    assert {o.status for o in outcomes} == {Status.SUCCEEDED}
    report = await verify_chain(own_ledger)
    assert report.ok, report.broken
    assert report.rows == 200 * 5
    for handle in handles[:10]:
        kinds = [r.kind for r in await own_ledger.events(handle.id)]
        assert kinds == [
            AuditKind.REQUESTED,
            AuditKind.VERDICT,
            AuditKind.EXECUTION_STARTED,
            AuditKind.EXECUTION_RESULT,
            AuditKind.OUTCOME,
        ]


@pytest.mark.slow
async def test_postgres_outage_mid_run_loses_nothing(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    ledger = await Ledger.connect(server.get_uri(), migrate=True)
    gate = Gate(client, settings)
    try:
        async with running_worker(client, settings, ledger):
            first = await gate.submit("one-outage")
            await gate.wait_for(first, "pending_approval")
            stop(server)
            # The decision is accepted only once it is on record, so it waits for Postgres.
            decided = asyncio.create_task(gate.decide(first, "alice@example.com"))
            second = await gate.submit("sandbox-outage")
            await asyncio.sleep(3)
            assert not decided.done()
            start(server)
            await asyncio.wait_for(decided, timeout=60)
            outcomes = await asyncio.wait_for(
                asyncio.gather(first.result(), second.result()), timeout=60
            )
        assert [o.status for o in outcomes] == [Status.SUCCEEDED, Status.SUCCEEDED]
        report = await verify_chain(ledger)
        assert report.ok, report.broken
        first_kinds = [r.kind for r in await ledger.events(first.id)]
        assert AuditKind.DECISION in first_kinds
        assert first_kinds[-3:] == [
            AuditKind.EXECUTION_STARTED,
            AuditKind.EXECUTION_RESULT,
            AuditKind.OUTCOME,
        ]
        assert [r.seq for r in await ledger.events(second.id)] == [0, 1, 2, 3, 4]
    finally:
        await ledger.close()
        server.cleanup()


async def test_cross_check_finds_a_planted_mismatch_and_history_reads_temporal(
    client: Client, settings: Settings, own_ledger: Ledger
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    gate = Gate(client, settings)
    async with running_worker(client, settings, own_ledger):
        handle = await gate.submit("one-crosscheck")
        await gate.wait_for(handle, "pending_approval")
        await gate.decide(handle, "alice@example.com", reason="ok <go>")
        outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED

    clean = await cross_check(own_ledger, client, since=since)
    assert clean.checked == 1
    assert clean.mismatches == []

    # A forged decision appended through the ledger keeps the chain valid: only Temporal
    # can tell it never happened.
    last = (await own_ledger.events(handle.id))[-1]
    await own_ledger.append(
        [
            AuditEvent(
                action_id=handle.id,
                run_id=last.run_id,
                seq=last.seq + 1,
                kind=AuditKind.DECISION,
                digest=last.digest,
                actor="mallory@example.com",
                at=last.at,
                payload={"approver": "mallory@example.com", "decision": "approve"},
            )
        ]
    )
    assert (await verify_chain(own_ledger)).ok
    planted = await cross_check(own_ledger, client, since=since)
    assert [(m.action_id, m.field) for m in planted.mismatches] == [(handle.id, "decisions")]

    address = client.service_client.config.target_host
    url = own_ledger.pool._connect_args[0]  # type: ignore[attr-defined]
    result = await invoke(
        "audit",
        "verify",
        "--database-url",
        url,
        "--cross-check",
        "--address",
        address,
        "--since",
        since.isoformat(),
    )
    assert result.exit_code == 1, result.output
    assert "ledger intact" in result.output
    assert "1 mismatches" in result.output
    assert "mallory@example.com:approve" in result.output

    history = await invoke("audit", "history", handle.id, "--address", address)
    assert history.exit_code == 0, history.output
    assert "started SignoffAction: agent:bot requests noop on one-crosscheck" in history.output
    assert "update accepted: decide by alice@example.com (approve: ok <go>)" in history.output
    assert "record_audit_events" in history.output
    assert "completed: succeeded" in history.output
