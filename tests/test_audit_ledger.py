"""The ledger on a real Postgres: chain, idempotency, concurrency, privileges, outages."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pgserver
import pytest
from temporalio.exceptions import ApplicationError

from activities.audit import LEDGER_CONFLICT, LEDGER_UNAVAILABLE, AuditActivities
from activities.ledger.chain import GENESIS_HASH, event_content, row_hash
from activities.ledger.migrations import MIGRATIONS
from activities.ledger.store import Ledger
from tests.pg import T0, action_batches, create_database, start, stop, worker_login
from workers.audit.verify import verify_chain
from workflows.messages import AuditBatch, AuditKind, RecordedOutcome, outcome_events


async def record(ledger: Ledger, batch: AuditBatch) -> None:
    """Write a batch as the workflow does, through the audit activity."""
    await AuditActivities(ledger).record_audit_events(batch)


@pytest.fixture
async def ledger(db: str) -> AsyncIterator[Ledger]:
    """A ledger on the test's database."""
    ledger = await Ledger.connect(db)
    yield ledger
    await ledger.close()


async def test_migrations_are_versioned_and_idempotent(db: str) -> None:
    ledger = await Ledger.connect(db)
    try:
        assert await ledger.migrate() == []
        async with ledger.pool.acquire() as conn:
            versions = [
                r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")
            ]
    finally:
        await ledger.close()
    assert versions == [m.version for m in MIGRATIONS]


async def test_chain_links_from_genesis_and_hashes_each_row(ledger: Ledger) -> None:
    for batch in action_batches("act-1", self_attempts=1):
        await record(ledger, batch)
    rows = [r async for r in ledger.rows()]
    assert [r.chain_seq for r in rows] == list(range(len(rows)))
    assert rows[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
    assert all(r.computed_hash() == r.hash for r in rows)
    assert [r.kind for r in rows][:2] == [AuditKind.REQUESTED, AuditKind.VERDICT]
    assert (await verify_chain(ledger)).ok


async def test_retried_batch_writes_nothing_twice(ledger: Ledger) -> None:
    batches = action_batches("act-retry")
    for batch in batches:
        await record(ledger, batch)
        await record(ledger, batch)
    # A retry of an earlier batch after later ones were written is still a no-op.
    assert await ledger.append(batches[0].events) == 0
    assert await ledger.count() == sum(len(b.events) for b in batches)
    assert (await verify_chain(ledger)).ok


async def test_a_different_event_under_an_existing_seq_is_refused(ledger: Ledger) -> None:
    batch = action_batches("act-conflict")[0]
    await record(ledger, batch)
    forged = batch.events[0].model_copy(update={"actor": "mallory"})
    with pytest.raises(ApplicationError) as caught:
        await record(ledger, AuditBatch(events=[forged]))
    assert caught.value.type == LEDGER_CONFLICT
    assert caught.value.non_retryable


async def test_a_replayed_event_with_a_later_time_is_the_same_event(ledger: Ledger) -> None:
    # After a workflow task retry a local activity runs again with a later workflow time.
    batch = action_batches("act-replayed")[0]
    await record(ledger, batch)
    later = [e.model_copy(update={"at": e.at + timedelta(seconds=3)}) for e in batch.events]
    assert await ledger.append(later) == 0
    stored = await ledger.events("act-replayed")
    assert [r.at for r in stored] == [e.at for e in batch.events]
    assert (await verify_chain(ledger)).ok


async def test_payload_numbers_hash_as_postgres_stores_them(ledger: Ledger) -> None:
    # jsonb rewrites 1e20 as 100000000000000000000: the hash must cover the stored form.
    batch = action_batches("act-numbers", params={"big": 1e20, "small": 1e-7, "n": 3.0})[0]
    await record(ledger, batch)
    await record(ledger, batch)
    assert (await verify_chain(ledger)).ok
    assert await ledger.count() == 2


@pytest.mark.slow
async def test_concurrent_workers_with_retries_make_one_chain(db: str) -> None:
    ledgers = [await Ledger.connect(db, max_size=5) for _ in range(4)]
    try:
        actions = {
            f"act-{n:03d}": action_batches(f"act-{n:03d}", self_attempts=n % 2) for n in range(200)
        }

        async def run(action_id: str) -> None:
            rng = random.Random(action_id)
            for batch in actions[action_id]:
                first, retry = rng.sample(ledgers, 2)
                if rng.random() < 0.5:
                    # A retry racing the original attempt, on another worker.
                    await asyncio.gather(record(first, batch), record(retry, batch))
                else:
                    await record(first, batch)
                    await record(retry, batch)

        await asyncio.gather(*(run(a) for a in actions))
        expected = sum(len(b.events) for batches in actions.values() for b in batches)
        report = await verify_chain(ledgers[0])
        assert report.ok, report.broken
        assert report.rows == expected
        async with ledgers[0].pool.acquire() as conn:
            duplicates = await conn.fetchval(
                "SELECT count(*) FROM (SELECT action_id, seq FROM audit_events"
                " GROUP BY 1, 2 HAVING count(*) > 1) d"
            )
            per_action = await conn.fetch(
                "SELECT action_id, array_agg(seq ORDER BY seq) AS seqs FROM audit_events GROUP BY 1"
            )
        assert duplicates == 0
        for row in per_action:
            assert row["seqs"] == list(range(len(row["seqs"])))
        assert len(per_action) == 200
    finally:
        for ledger in ledgers:
            await ledger.close()


async def test_worker_role_may_only_insert_and_select(db: str) -> None:
    worker = await Ledger.connect(await worker_login(db, "test_worker"))
    try:
        for batch in action_batches("act-role"):
            await record(worker, batch)
        assert (await verify_chain(worker)).ok
        async with worker.pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == "test_worker"
            for statement in (
                "UPDATE audit_events SET actor = 'mallory'",
                "DELETE FROM audit_events",
                "TRUNCATE audit_events",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    await conn.execute(statement)
    finally:
        await worker.close()


async def test_trigger_refuses_changes_even_for_a_superuser(ledger: Ledger) -> None:
    for batch in action_batches("act-trigger"):
        await record(ledger, batch)
    async with ledger.pool.acquire() as conn:
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        for statement in (
            "UPDATE audit_events SET actor = 'mallory' WHERE chain_seq = 1",
            "DELETE FROM audit_events WHERE chain_seq = 1",
            "TRUNCATE audit_events",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(statement)
    assert (await verify_chain(ledger)).ok


@pytest.mark.slow
async def test_postgres_outage_fails_fast_then_recovers_without_loss(tmp_path: Path) -> None:
    server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    try:
        ledger = await Ledger.connect(server.get_uri(), migrate=True)
        try:
            batches = {
                f"act-{n}": action_batches(f"act-{n}", start=T0 + timedelta(minutes=n))
                for n in range(5)
            }
            for batches_of in batches.values():
                await record(ledger, batches_of[0])
            stop(server)
            loop = asyncio.get_running_loop()
            began = loop.time()
            with pytest.raises(ApplicationError) as caught:
                await record(ledger, batches["act-0"][1])
            assert caught.value.type == LEDGER_UNAVAILABLE
            assert not caught.value.non_retryable
            assert loop.time() - began < 8
            # A second attempt while still down fails the same way, it does not hang.
            with pytest.raises(ApplicationError):
                await record(ledger, batches["act-0"][1])
            start(server)
            for batches_of in batches.values():
                for batch in batches_of:
                    await record(ledger, batch)
            report = await verify_chain(ledger)
            assert report.ok, report.broken
            assert report.rows == sum(len(b.events) for bs in batches.values() for b in bs)
        finally:
            await ledger.close()
    finally:
        server.cleanup()


def in_run(batch: AuditBatch, run_id: str) -> AuditBatch:
    """The same events, as written by run `run_id`."""
    return AuditBatch(events=[e.model_copy(update={"run_id": run_id}) for e in batch.events])


async def test_a_second_run_of_the_same_action_is_recorded_as_its_own(ledger: Ledger) -> None:
    # A reset or a re-run under the same workflow id starts again at seq 0: its rows are new
    # rows, never taken for the first run's.
    batches = action_batches("act-runs")
    for batch in batches:
        await record(ledger, in_run(batch, "run-1"))
    for batch in batches[:2]:
        await record(ledger, in_run(batch, "run-2"))
    first = sum(len(b.events) for b in batches)
    second = sum(len(b.events) for b in batches[:2])
    assert await ledger.count() == first + second
    runs = await ledger.runs("act-runs")
    assert [r.run_id for r in runs] == ["run-1", "run-2"]
    assert runs[0].executed
    assert runs[0].status is not None
    assert runs[1].status is None
    # Retried writes of either run are still no-ops.
    assert await ledger.append(in_run(batches[0], "run-2").events) == 0
    assert (await verify_chain(ledger)).ok


async def test_a_different_payload_at_the_same_identity_is_refused(ledger: Ledger) -> None:
    batch = in_run(action_batches("act-payload")[0], "run-1")
    await record(ledger, batch)
    verdict = batch.events[1]
    forged = verdict.model_copy(update={"payload": {**verdict.payload, "effect": "allow"}})
    with pytest.raises(ApplicationError) as caught:
        await record(ledger, AuditBatch(events=[forged]))
    assert caught.value.type == LEDGER_CONFLICT
    assert caught.value.non_retryable
    assert "act-payload run run-1" in caught.value.message
    assert "refusing to overwrite" in caught.value.message
    stored = await ledger.events("act-payload")
    assert stored[1].payload["effect"] == verdict.payload["effect"]


async def test_a_retried_decision_with_a_later_time_in_its_payload_is_the_same(
    ledger: Ledger,
) -> None:
    # A decision's payload carries the workflow time it was accepted at: a workflow task retry
    # re-runs the local activity with a later one. Same event, first write stands.
    batches = [in_run(b, "run-1") for b in action_batches("act-decision")]
    for batch in batches:
        await record(ledger, batch)
    decision = next(
        e for b in batches for e in b.events if e.kind == AuditKind.DECISION and "at" in e.payload
    )
    later = decision.model_copy(
        update={
            "at": decision.at + timedelta(seconds=3),
            "payload": {**decision.payload, "at": "2031-01-01T00:00:00+00:00"},
        }
    )
    assert await ledger.append([later]) == 0


async def test_rows_from_before_runs_were_recorded_keep_verifying(postgres_url: str) -> None:
    url = await create_database(postgres_url)
    conn = await asyncpg.connect(url)
    try:
        # The database as release 2 left it, with rows written by that release.
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in MIGRATIONS[:2]:
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
        prev = GENESIS_HASH
        events = [e for b in action_batches("act-old") for e in b.events]
        for chain_seq, e in enumerate(events):
            stored = await conn.fetchval("SELECT $1::jsonb::text", json.dumps(e.payload))
            payload = json.loads(stored)
            content = event_content(
                e.action_id, e.seq, e.kind, e.digest, e.actor, e.channel, e.at, payload
            )
            digest = row_hash(chain_seq, content, prev)
            await conn.execute(
                "INSERT INTO audit_events (chain_seq, action_id, seq, kind, digest, actor,"
                " channel, at, payload, prev_hash, hash)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11)",
                chain_seq,
                e.action_id,
                e.seq,
                e.kind.value,
                e.digest,
                e.actor,
                e.channel,
                e.at,
                json.dumps(payload),
                prev,
                digest,
            )
            prev = digest
    finally:
        await conn.close()
    ledger = await Ledger.connect(url, migrate=True)
    try:
        assert (await verify_chain(ledger)).ok
        old = await ledger.events("act-old")
        assert {r.run_id for r in old} == {""}
        # New rows carry their run, and the hash covers it.
        for batch in action_batches("act-new"):
            await record(ledger, in_run(batch, "run-9"))
        assert (await verify_chain(ledger)).ok
        async with ledger.pool.acquire() as admin:
            await admin.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
            await admin.execute(
                "UPDATE audit_events SET run_id = 'run-8' WHERE action_id = 'act-new' AND seq = 0"
            )
            await admin.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
        report = await verify_chain(ledger)
        assert report.broken is not None
        assert report.broken.reason == "edited"
    finally:
        await ledger.close()


def outcome_rows(
    status: str, *, result: object = None, error: str | None = None, action: str = "act-outcome"
) -> AuditBatch:
    """An outcome's two rows, at the places its run kept for them (3 and 4)."""
    return AuditBatch(
        events=outcome_events(
            action_id=action,
            run_id="run-1",
            digest="d" * 64,
            seq=3,
            at=T0,
            status=status,
            error=error,
            result=result,  # type: ignore[arg-type]
        )
    )


async def test_an_outcome_already_written_is_the_answer_not_a_conflict(ledger: Ledger) -> None:
    # Shape v10: the executor's activity writes a success's rows; if its completion is lost,
    # the run writes a failure at the same places, and the ledger's success must win.
    audit = AuditActivities(ledger)
    success = outcome_rows("succeeded", result={"rows": 3})
    assert await audit.record_outcome(success) is None
    unknown = outcome_rows("failed", error="outcome unknown, verify manually")
    stored = await audit.record_outcome(unknown)
    assert stored == RecordedOutcome(status="succeeded", result={"rows": 3})
    # An idempotent action retried after a lost completion may return something else: the
    # first success written stays the outcome.
    again = outcome_rows("succeeded", result={"rows": 4})
    assert await ledger.append_outcome(again.events) == stored
    # The same rows again (a retried write) are written once, as ever.
    assert await ledger.append_outcome(success.events) is None
    rows = await ledger.events("act-outcome")
    assert [(r.seq, r.kind) for r in rows] == [(3, "execution_result"), (4, "outcome")]
    assert rows[0].payload["result"] == {"rows": 3}
    assert rows[1].payload["status"] == "succeeded"
    # The other way round: the run gave up first, so a late success finds its failure.
    await audit.record_outcome(outcome_rows("failed", error="timed out", action="act-late"))
    late = outcome_rows("succeeded", result={"rows": 3}, action="act-late")
    assert await ledger.append_outcome(late.events) == RecordedOutcome(
        status="failed", error="timed out"
    )
    assert (await verify_chain(ledger)).ok


async def test_an_outcome_never_overwrites_rows_of_another_kind(ledger: Ledger) -> None:
    # Only an outcome answers an outcome: any other row at its places stays a conflict.
    batch = action_batches("act-outcome")[0]
    await record(ledger, batch)
    taken = outcome_events(
        action_id="act-outcome",
        run_id=batch.events[0].run_id,
        digest=batch.events[0].digest,
        seq=batch.events[0].seq,
        at=T0,
        status="succeeded",
        error=None,
    )
    with pytest.raises(ApplicationError) as caught:
        await AuditActivities(ledger).record_outcome(AuditBatch(events=taken))
    assert caught.value.type == LEDGER_CONFLICT
    assert caught.value.non_retryable
    assert [r.kind for r in await ledger.events("act-outcome")] == [e.kind for e in batch.events]
