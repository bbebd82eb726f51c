"""The execution claim rides with the writes and checks around it, one statement each (real PG).

The workflow's write-ahead rows and its claim go in one statement (`append_and_claim`), and
the executor's check of the write-ahead row and its claim in another (`start_execution`).
Each keeps the order the two statements had: nothing is claimed unless the rows it follows
are in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from activities.ledger.store import Ledger, LedgerConflict
from tests.pg import worker_login
from workflows.messages import AuditEvent, AuditKind, ExecutionClaim

DIGEST = "d" * 64
OTHER = "e" * 64
AT = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


@pytest.fixture
async def ledger(db: str) -> AsyncIterator[Ledger]:
    """A ledger over several chains on the test's own database."""
    ledger = await Ledger.connect(db, partitions=4)
    yield ledger
    await ledger.close()


def write_ahead(action_id: str, run_id: str, digest: str = DIGEST) -> list[AuditEvent]:
    """A run's write-ahead row, keeping places 3 and on for its outcome."""
    return [
        AuditEvent(
            action_id=action_id,
            run_id=run_id,
            seq=2,
            kind=AuditKind.EXECUTION_STARTED,
            digest=digest,
            at=AT,
            payload={"outcome_seq": 3},
        )
    ]


def claim(action_id: str, run_id: str, digest: str = DIGEST) -> ExecutionClaim:
    """What a run asks for."""
    return ExecutionClaim(action_id=action_id, run_id=run_id, digest=digest)


async def claims(ledger: Ledger, action_id: str) -> list[str]:
    """The runs holding a claim on the action (at most one)."""
    async with ledger.pool.acquire() as conn:
        rows = await conn.fetch("SELECT run_id FROM executions WHERE action_id = $1", action_id)
    return [r["run_id"] for r in rows]


async def rows_of(ledger: Ledger, action_id: str) -> int:
    """How many ledger rows the action has."""
    return len(await ledger.events(action_id))


async def test_the_write_ahead_row_and_its_claim_go_in_together(ledger: Ledger) -> None:
    held = await ledger.append_and_claim(write_ahead("act-1", "run-a"), claim("act-1", "run-a"))
    assert held.granted
    assert (held.run_id, held.digest) == ("run-a", DIGEST)
    assert held.claimed_at is not None
    assert await ledger.write_ahead("act-1", "run-a") == {DIGEST: 3}
    assert await claims(ledger, "act-1") == ["run-a"]
    # A retry (the local activity's, after a lost answer) writes nothing twice, keeps its claim.
    again = await ledger.append_and_claim(write_ahead("act-1", "run-a"), claim("act-1", "run-a"))
    assert again.granted
    assert again.claimed_at == held.claimed_at
    assert await rows_of(ledger, "act-1") == 1
    # Another run (a reset) has its write-ahead row recorded, and finds the first run's claim.
    other = await ledger.append_and_claim(write_ahead("act-1", "run-b"), claim("act-1", "run-b"))
    assert not other.granted
    assert other.run_id == "run-a"
    assert await ledger.write_ahead("act-1", "run-b") == {DIGEST: 3}
    assert await claims(ledger, "act-1") == ["run-a"]


async def test_runs_racing_through_one_statement_get_one_holder(ledger: Ledger) -> None:
    # Group commit puts racers in the same statement: each claim there sees the one before it.
    for round_ in range(4):
        action = f"act-race-{round_}"
        held = await asyncio.gather(
            *(
                ledger.append_and_claim(write_ahead(action, f"run-{i}"), claim(action, f"run-{i}"))
                for i in range(8)
            )
        )
        assert len({c.run_id for c in held}) == 1
        assert [c.run_id for c in held if c.granted] == [held[0].run_id]
        assert await rows_of(ledger, action) == 8
        assert await claims(ledger, action) == [held[0].run_id]


async def test_a_refused_write_ahead_row_claims_nothing(ledger: Ledger) -> None:
    await ledger.append(write_ahead("act-2", "run-a", OTHER))
    # The same place with another digest (what a forged approval would bring) is refused...
    with pytest.raises(LedgerConflict, match="refusing to overwrite"):
        await ledger.append_and_claim(write_ahead("act-2", "run-a"), claim("act-2", "run-a"))
    # ...and the claim that was to follow it is not made.
    assert await claims(ledger, "act-2") == []
    # Others in the same statement are not held back by it.
    refused, fine = await asyncio.gather(
        ledger.append_and_claim(write_ahead("act-2", "run-a"), claim("act-2", "run-a")),
        ledger.append_and_claim(write_ahead("act-3", "run-a"), claim("act-3", "run-a")),
        return_exceptions=True,
    )
    assert isinstance(refused, LedgerConflict)
    assert isinstance(fine, ExecutionClaim)
    assert fine.granted
    assert await claims(ledger, "act-2") == []


async def test_the_executor_claims_only_with_its_write_ahead_row(ledger: Ledger) -> None:
    # No write-ahead row (an execute_action scheduled by something other than the workflow).
    assert await ledger.start_execution("act-4", "run-a", DIGEST) == ({}, None)
    assert await claims(ledger, "act-4") == []
    # A row for another digest: the action shown to the approvers was not this one.
    await ledger.append(write_ahead("act-4", "run-a", OTHER))
    rows, held = await ledger.start_execution("act-4", "run-a", DIGEST)
    assert (rows, held) == ({OTHER: 3}, None)
    assert await claims(ledger, "act-4") == []
    # Another run has no row of its own.
    assert await ledger.start_execution("act-4", "run-b", OTHER) == ({}, None)
    assert await claims(ledger, "act-4") == []
    # Its own row: claimed, and claimed again on a retry.
    rows, held = await ledger.start_execution("act-4", "run-a", OTHER)
    assert rows == {OTHER: 3}
    assert held is not None
    assert held.granted
    rows, again = await ledger.start_execution("act-4", "run-a", OTHER)
    assert again is not None
    assert again.granted
    assert again.claimed_at == held.claimed_at
    assert await claims(ledger, "act-4") == ["run-a"]


async def test_the_executor_finds_the_workflows_claim_and_rows_from_before_runs(
    ledger: Ledger,
) -> None:
    held = await ledger.append_and_claim(write_ahead("act-5", "run-a"), claim("act-5", "run-a"))
    rows, found = await ledger.start_execution("act-5", "run-a", DIGEST)
    assert rows == {DIGEST: 3}
    assert found == held
    # A write-ahead row from before runs were recorded (run id '') counts for any run, and a
    # row with no place kept for its outcome answers None for it.
    legacy = write_ahead("act-6", "")[0].model_copy(update={"payload": {}})
    await ledger.append([legacy])
    rows, found = await ledger.start_execution("act-6", "run-c", DIGEST)
    assert rows == {DIGEST: None}
    assert found is not None
    assert found.granted


async def test_the_worker_role_may_run_both_statements(db: str) -> None:
    worker = await Ledger.connect(await worker_login(db, "claim_worker"))
    try:
        held = await worker.append_and_claim(write_ahead("act-7", "run-a"), claim("act-7", "run-a"))
        assert held.granted
        assert await worker.start_execution("act-7", "run-a", DIGEST) == ({DIGEST: 3}, held)
    finally:
        await worker.close()
