"""The audit Postgres down for 30 s in the middle of a burst of actions.

No audit event is lost, the chain verifies, and no action takes effect without its
write-ahead `execution_started` row: the effects live in another Postgres (the session's), so
nothing but the workflow's own ordering could hold them back while the ledger is away.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pgserver
import pytest
from temporalio.client import Client

from activities.ledger.store import Ledger
from signoff.models import Status
from tests.conftest import Gate, running_worker
from tests.faults.conftest import effect_counts, effects_table
from tests.pg import start, stop
from workers.audit.verify import verify_chain
from workers.settings import Settings
from workflows.messages import AuditKind

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

BEFORE = 15  # submitted while the ledger is up
DURING = 15  # submitted while it is down
OUTAGE_SECONDS = 30
KINDS = [
    AuditKind.REQUESTED,
    AuditKind.VERDICT,
    AuditKind.EXECUTION_STARTED,
    AuditKind.EXECUTION_RESULT,
    AuditKind.OUTCOME,
]


async def test_audit_postgres_down_for_30_seconds_during_a_burst(
    client: Client, fault_settings: Settings, effects_dsn: str, tmp_path: Path
) -> None:
    server = pgserver.get_server(tmp_path / "audit-pg", cleanup_mode="stop")
    ledger = await Ledger.connect(server.get_uri(), migrate=True)
    db = await effects_table(effects_dsn)
    gate = Gate(client, fault_settings)
    try:
        async with running_worker(client, fault_settings, ledger):
            burst = [
                gate.submit("effects-db", {"n": i}, action="scale.effect") for i in range(BEFORE)
            ]
            before = await asyncio.gather(*burst)
            await asyncio.sleep(0.5)  # some are through, some mid-flight
            stop(server)
            down_at = time.monotonic()
            during = await asyncio.gather(
                *(
                    gate.submit("effects-db", {"n": BEFORE + i}, action="scale.effect")
                    for i in range(DURING)
                )
            )
            handles = [*before, *during]
            # While the ledger is down, nothing requested meanwhile may take effect.
            while time.monotonic() - down_at < OUTAGE_SECONDS:
                assert await effect_counts(db, [h.id for h in during]) == {}
                await asyncio.sleep(1)
            unfinished = [h for h in handles if (await h.describe()).close_time is None]
            assert unfinished, "the outage held nothing up; the test proves nothing"
            start(server)
            finals = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)

        assert [f.status for f in finals] == [Status.SUCCEEDED] * len(handles)
        report = await verify_chain(ledger)
        assert report.ok, report.broken
        assert report.rows == len(KINDS) * len(handles)
        keys = [h.id for h in handles]
        assert await effect_counts(db, keys) == dict.fromkeys(keys, 1)
        effects = {
            r["idempotency_key"]: r["at"]
            for r in await db.fetch(
                "SELECT idempotency_key, at FROM scale_effects WHERE idempotency_key = ANY($1)",
                keys,
            )
        }
        for handle in handles:
            rows = await ledger.events(handle.id)
            assert [r.kind for r in rows] == KINDS, handle.id  # nothing lost, nothing twice
            assert [r.seq for r in rows] == list(range(len(KINDS)))
            started = next(r for r in rows if r.kind == AuditKind.EXECUTION_STARTED)
            # Write-ahead: the start was on record before the effect happened.
            assert started.recorded_at <= effects[handle.id], handle.id
    finally:
        await db.close()
        await ledger.close()
        server.cleanup()
