"""Verifying the ledger: walk the hash chain, and cross-check it with Temporal histories."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.audit import CONNECT_TIMEOUT, Ledger, LedgerRow
from activities.migrations import GENESIS_HASH
from signoff.models import ActionStatus, AuditKind

# How far from its place a moved row is searched for, by rehashing at each position.
REORDER_WINDOW = 5000


class BreakReason(StrEnum):
    """What kind of tampering a broken link points to."""

    EDITED = "edited"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"


class Break(BaseModel):
    """The first broken link of the chain."""

    chain_seq: int
    id: int
    reason: BreakReason
    message: str


class VerifyReport(BaseModel):
    """The result of walking the chain."""

    rows: int
    head_hash: str
    broken: Break | None = None

    @property
    def ok(self) -> bool:
        """Whether the chain is intact."""
        return self.broken is None


async def verify_chain(
    ledger: Ledger, *, advance: Callable[[int], None] | None = None
) -> VerifyReport:
    """Recompute every hash in chain order and report the first broken link, if any."""
    expected_seq = 0
    prev_hash = GENESIS_HASH
    previous: LedgerRow | None = None
    failing: LedgerRow | None = None
    walked = 0
    async for row in ledger.rows():
        walked += 1
        if advance is not None:
            advance(1)
        if (
            row.chain_seq != expected_seq
            or row.prev_hash != prev_hash
            or row.computed_hash() != row.hash
        ):
            failing = row
            break
        expected_seq += 1
        prev_hash = row.hash
        previous = row
    if failing is None:
        return VerifyReport(rows=walked, head_hash=prev_hash)
    broken = await _diagnose(ledger, failing, expected_seq, prev_hash, previous)
    return VerifyReport(rows=walked, head_hash=prev_hash, broken=broken)


async def _diagnose(
    ledger: Ledger,
    row: LedgerRow,
    expected_seq: int,
    prev_hash: str,
    previous: LedgerRow | None,
) -> Break:
    where = f"row id {row.id} (action {row.action_id}, event {row.seq} {row.kind})"
    if row.chain_seq > expected_seq:
        missing = (
            f"chain_seq {expected_seq}"
            if row.chain_seq == expected_seq + 1
            else f"chain_seq {expected_seq}..{row.chain_seq - 1}"
        )
        return Break(
            chain_seq=expected_seq,
            id=row.id,
            reason=BreakReason.DELETED,
            message=f"deleted row: {missing} missing before {where} at chain_seq {row.chain_seq}",
        )
    if row.chain_seq < expected_seq:
        return Break(
            chain_seq=row.chain_seq,
            id=row.id,
            reason=BreakReason.INSERTED,
            message=f"inserted row: {where} repeats chain_seq {row.chain_seq}",
        )
    if row.computed_hash() == row.hash:
        # The row is self-consistent but does not link to its predecessor: the predecessor
        # was forged in place (its successor still names the original's hash).
        assert previous is not None, "row 0 with a valid hash always links to genesis"
        return Break(
            chain_seq=previous.chain_seq,
            id=previous.id,
            reason=BreakReason.INSERTED,
            message=(
                f"inserted row: row id {previous.id} at chain_seq {previous.chain_seq} is not the "
                f"row that {where} at chain_seq {row.chain_seq} was chained to"
            ),
        )
    original = _original_position(row)
    if original is None:
        return Break(
            chain_seq=row.chain_seq,
            id=row.id,
            reason=BreakReason.EDITED,
            message=f"edited row: {where} at chain_seq {row.chain_seq} does not match its hash",
        )
    if original < row.chain_seq:
        return Break(
            chain_seq=row.chain_seq,
            id=row.id,
            reason=BreakReason.INSERTED,
            message=(
                f"inserted row: {where} was written at chain_seq {original} but now sits at "
                f"{row.chain_seq}; {row.chain_seq - original} row(s) were inserted before it"
            ),
        )
    async with ledger.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
        predecessor = await conn.fetchval(
            "SELECT chain_seq FROM audit_events WHERE hash = $1", row.prev_hash
        )
    if predecessor is not None:
        return Break(
            chain_seq=row.chain_seq,
            id=row.id,
            reason=BreakReason.REORDERED,
            message=(
                f"reordered rows: {where} was written at chain_seq {original} but sits at "
                f"{row.chain_seq}; the row it was chained to is now at chain_seq {predecessor}"
            ),
        )
    return Break(
        chain_seq=row.chain_seq,
        id=row.id,
        reason=BreakReason.DELETED,
        message=(
            f"deleted row: {where} was written at chain_seq {original} but sits at "
            f"{row.chain_seq}; the rows before it were deleted and the rest renumbered"
        ),
    )


def _original_position(row: LedgerRow) -> int | None:
    """The chain_seq at which the row's content and prev_hash give its stored hash."""
    for distance in range(1, REORDER_WINDOW + 1):
        for candidate in (row.chain_seq - distance, row.chain_seq + distance):
            if candidate >= 0 and row.computed_hash(chain_seq=candidate) == row.hash:
                return candidate
    return None


# --- cross-check with Temporal --------------------------------------------------------------


class Mismatch(BaseModel):
    """A difference between the ledger and the Temporal history of one action."""

    action_id: str
    field: str
    ledger: Any
    temporal: Any


class CrossCheckReport(BaseModel):
    """What the cross-check compared and what differed."""

    checked: int = 0
    out_of_retention: int = 0
    mismatches: list[Mismatch] = []


class LedgerView(BaseModel):
    """What the ledger says about one action, in the terms the workflow status uses."""

    action_id: str
    status: str | None = None
    decisions: list[tuple[str, str]] = []
    refused: int = 0
    started_at: datetime | None = None


def ledger_view(action_id: str, rows: list[LedgerRow]) -> LedgerView:
    """Summarise an action's ledger rows for comparison."""
    view = LedgerView(action_id=action_id)
    for row in rows:
        if row.kind == AuditKind.DECISION:
            view.decisions.append((str(row.payload.get("approver")), str(row.payload["decision"])))
        elif row.kind == AuditKind.REFUSED:
            view.refused += 1
        elif row.kind == AuditKind.OUTCOME:
            view.status = str(row.payload.get("status"))
        elif row.kind == AuditKind.REQUESTED:
            view.started_at = row.at
    return view


_CLOSED_STATUS = {
    WorkflowExecutionStatus.FAILED: "workflow failed",
    WorkflowExecutionStatus.TERMINATED: "workflow terminated",
    WorkflowExecutionStatus.TIMED_OUT: "workflow timed out",
    WorkflowExecutionStatus.CANCELED: "workflow cancelled",
}


async def temporal_view(client: Client, action_id: str) -> LedgerView | None:
    """What Temporal says about an action; None when its history is past retention."""
    handle = client.get_workflow_handle(action_id, result_type=ActionStatus)
    try:
        description = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if description.status == WorkflowExecutionStatus.COMPLETED:
        status: ActionStatus = await handle.result()
    elif description.status == WorkflowExecutionStatus.RUNNING:
        # A running workflow answers only while a worker is polling; don't wait forever.
        status = await handle.query(
            "status", result_type=ActionStatus, rpc_timeout=timedelta(seconds=10)
        )
    else:
        closed = (
            _CLOSED_STATUS.get(description.status, "workflow closed")
            if description.status
            else "unknown"
        )
        return LedgerView(action_id=action_id, status=closed)
    return LedgerView(
        action_id=action_id,
        status=status.status.value if status.status.terminal else None,
        decisions=[(d.approver, d.decision) for d in status.decisions],
        refused=len(status.refused),
        started_at=status.created_at,
    )


def compare(ledger: LedgerView, temporal: LedgerView) -> list[Mismatch]:
    """The fields on which the ledger and Temporal disagree."""
    found = []
    if ledger.status != temporal.status:
        found.append(
            Mismatch(
                action_id=ledger.action_id,
                field="status",
                ledger=ledger.status,
                temporal=temporal.status,
            )
        )
    if temporal.status is not None and not temporal.status.startswith("workflow "):
        if Counter(ledger.decisions) != Counter(temporal.decisions):
            found.append(
                Mismatch(
                    action_id=ledger.action_id,
                    field="decisions",
                    ledger=[f"{a}:{d}" for a, d in ledger.decisions],
                    temporal=[f"{a}:{d}" for a, d in temporal.decisions],
                )
            )
        if ledger.refused != temporal.refused:
            found.append(
                Mismatch(
                    action_id=ledger.action_id,
                    field="refused",
                    ledger=ledger.refused,
                    temporal=temporal.refused,
                )
            )
    return found


async def cross_check(
    ledger: Ledger,
    client: Client,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    advance: Callable[[int], None] | None = None,
) -> CrossCheckReport:
    """Compare each action in the ledger with its Temporal history while one is retained."""
    report = CrossCheckReport()
    current: list[LedgerRow] = []

    async def check(rows: list[LedgerRow]) -> None:
        if advance is not None:
            advance(1)
        temporal = await temporal_view(client, rows[0].action_id)
        if temporal is None:
            report.out_of_retention += 1
            return
        report.checked += 1
        report.mismatches.extend(compare(ledger_view(rows[0].action_id, rows), temporal))

    async for row in ledger.action_rows(since, until):
        if current and current[0].action_id != row.action_id:
            await check(current)
            current = []
        current.append(row)
    if current:
        await check(current)
    return report
