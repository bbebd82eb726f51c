"""Verifying the ledger: walk the hash chains and checkpoints, cross-check with Temporal."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import multiprocessing
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg
from cryptography.exceptions import InvalidSignature
from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.ledger.chain import (
    GENESIS_HASH,
    LedgerRow,
    checkpoint_hash,
    event_content,
    row_hash,
)
from activities.ledger.store import CONNECT_TIMEOUT, Checkpoint, Ledger, read_row
from signoff.models import ActionStatus, ApprovalWindow, canonical_json
from workflows.messages import WINDOW_ID_PREFIX, AuditKind
from workflows.signing import KeySet

WORKFLOW_NAME = "SignoffAction"  # workflows.action's, without importing the workflow here

# How far from its place a moved row is searched for, by rehashing at each position.
REORDER_WINDOW = 5000


class BreakReason(StrEnum):
    """What kind of tampering a broken link points to."""

    EDITED = "edited"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    FORGED = "forged"


class Break(BaseModel):
    """The first broken link of a chain (or of the checkpoints, when `checkpoint` is set)."""

    chain_seq: int
    id: int
    reason: BreakReason
    message: str
    part: int = 0
    checkpoint: int | None = None


class PartReport(BaseModel):
    """The result of walking one partition's chain."""

    part: int
    rows: int
    head_seq: int
    head_hash: str
    broken: Break | None = None


class VerifyReport(BaseModel):
    """The result of walking every chain and the checkpoints over them."""

    rows: int
    head_hash: str
    broken: Break | None = None
    partitions: int = 1
    checkpoints: int = 0
    latest_checkpoint: str | None = None
    signatures_checked: bool = False
    anchor: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the ledger is intact."""
        return self.broken is None


def record_hash(record: asyncpg.Record) -> str:
    """The hash a stored record should have: `row_hash` without building a LedgerRow."""
    content = event_content(
        record["action_id"],
        record["seq"],
        record["kind"],
        record["digest"],
        record["actor"],
        record["channel"],
        record["at"],
        json.loads(record["payload"]),
        run_id=record["run_id"],
        part=record["part"],
    )
    return row_hash(record["chain_seq"], content, record["prev_hash"])


async def verify_partition(
    ledger: Ledger, part: int, *, advance: Callable[[int], None] | None = None
) -> PartReport:
    """Recompute every hash of one partition in chain order; report its first broken link."""
    expected_seq = 0
    prev_hash = GENESIS_HASH
    previous: asyncpg.Record | None = None
    failing: asyncpg.Record | None = None
    walked = 0
    async for record in ledger.records(part):
        walked += 1
        if advance is not None and walked % 1000 == 0:
            advance(1000)
        if (
            record["chain_seq"] != expected_seq
            or record["prev_hash"] != prev_hash
            or record_hash(record) != record["hash"]
        ):
            failing = record
            break
        expected_seq += 1
        prev_hash = record["hash"]
        previous = record
    if advance is not None:
        advance(walked % 1000)
    report = PartReport(part=part, rows=walked, head_seq=expected_seq - 1, head_hash=prev_hash)
    if failing is not None:
        report.broken = await _diagnose(
            ledger,
            read_row(failing),
            expected_seq,
            prev_hash,
            None if previous is None else read_row(previous),
        )
    return report


async def verify_chain(
    ledger: Ledger,
    *,
    advance: Callable[[int], None] | None = None,
    keys: KeySet | None = None,
    anchor: str | None = None,
) -> VerifyReport:
    """Walk every partition's chain, then the checkpoints; report the first broken link."""
    parts = sorted(await ledger.heads())
    reports = [await verify_partition(ledger, p, advance=advance) for p in parts]
    return await conclude(ledger, reports, keys=keys, anchor=anchor)


def verify_ledger(
    url: str,
    *,
    workers: int,
    keys: KeySet | None = None,
    anchor: str | None = None,
    advance: Callable[[int], None] | None = None,
) -> VerifyReport:
    """`verify_chain` with the partitions walked by `workers` processes side by side.

    Hashing is CPU-bound Python, so processes (not tasks) make it scale with cores; each
    walks its partitions through its own connection and server-side cursors. Call it from
    synchronous code: the processes are forked before any event loop runs here.
    """
    heads = asyncio.run(_heads(url))
    groups: list[list[int]] = [[] for _ in range(max(1, min(workers, len(heads))))]
    loads = [0] * len(groups)
    for part, (head_seq, _) in sorted(heads.items(), key=lambda h: -h[1][0]):
        lightest = loads.index(min(loads))
        groups[lightest].append(part)
        loads[lightest] += head_seq + 1
    reports: list[PartReport] = []
    if len(groups) <= 1:
        reports = asyncio.run(_verify_parts(url, sorted(heads), advance))
    else:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=len(groups), mp_context=context) as pool:
            futures = [pool.submit(_verify_parts_sync, url, g) for g in groups]
            for future in as_completed(futures):
                done = future.result()
                reports.extend(done)
                if advance is not None:
                    advance(sum(r.rows for r in done))
    reports.sort(key=lambda r: r.part)
    return asyncio.run(_conclude(url, reports, keys, anchor))


async def _heads(url: str) -> dict[int, tuple[int, str]]:
    ledger = await Ledger.connect(url, max_size=1)
    try:
        return await ledger.heads()
    finally:
        await ledger.close()


def _verify_parts_sync(url: str, parts: list[int]) -> list[PartReport]:
    """One verifying process: walk its partitions (run in a forked child)."""
    return asyncio.run(_verify_parts(url, parts, None))


async def _verify_parts(
    url: str, parts: list[int], advance: Callable[[int], None] | None
) -> list[PartReport]:
    ledger = await Ledger.connect(url, max_size=1)
    try:
        return [await verify_partition(ledger, p, advance=advance) for p in parts]
    finally:
        await ledger.close()


async def _conclude(
    url: str, reports: list[PartReport], keys: KeySet | None, anchor: str | None
) -> VerifyReport:
    ledger = await Ledger.connect(url, max_size=1)
    try:
        return await conclude(ledger, reports, keys=keys, anchor=anchor)
    finally:
        await ledger.close()


def heads_digest(reports: list[PartReport]) -> str:
    """One hash over every partition's head; the single chain's head hash when there is one."""
    if not reports:
        return GENESIS_HASH
    if [r.part for r in reports] == [0]:
        return reports[0].head_hash
    heads = {str(r.part): [r.head_seq, r.head_hash] for r in reports}
    return hashlib.sha256(canonical_json(heads).encode("utf-8")).hexdigest()


async def conclude(
    ledger: Ledger,
    reports: list[PartReport],
    *,
    keys: KeySet | None = None,
    anchor: str | None = None,
) -> VerifyReport:
    """Combine partition walks, then check the checkpoints and the anchor against them."""
    report = VerifyReport(
        rows=sum(r.rows for r in reports),
        head_hash=heads_digest(reports),
        partitions=len(reports),
        signatures_checked=keys is not None,
        anchor=anchor,
    )
    report.broken = next((r.broken for r in reports if r.broken is not None), None)
    if report.broken is not None:
        return report
    checkpoints = await ledger.checkpoints()
    report.checkpoints = len(checkpoints)
    report.latest_checkpoint = checkpoints[-1].hash if checkpoints else None
    report.broken = _check_checkpoints(checkpoints, keys)
    if report.broken is None:
        ends = {r.part: r.head_seq for r in reports}
        report.broken = await _check_heads(ledger, checkpoints, ends)
    if report.broken is None and anchor is not None:
        report.broken = await _check_anchor(ledger, checkpoints, anchor)
    return report


def _checkpoint_break(checkpoint: Checkpoint, reason: BreakReason, message: str) -> Break:
    return Break(
        chain_seq=checkpoint.seq,
        id=checkpoint.seq,
        reason=reason,
        message=message,
        checkpoint=checkpoint.seq,
    )


def _check_checkpoints(checkpoints: list[Checkpoint], keys: KeySet | None) -> Break | None:
    """The checkpoints form an unbroken chain, each hash right and (with keys) signed."""
    prev_hash = GENESIS_HASH
    for expected, checkpoint in enumerate(checkpoints):
        name = f"checkpoint #{checkpoint.seq}"
        if checkpoint.seq != expected:
            missing = (
                f"#{expected}"
                if checkpoint.seq == expected + 1
                else f"#{expected}..#{checkpoint.seq - 1}"
            )
            return _checkpoint_break(
                checkpoint,
                BreakReason.DELETED,
                f"deleted checkpoint: {missing} missing before {name}",
            )
        body = checkpoint.body()
        if checkpoint_hash(body) != checkpoint.hash:
            return _checkpoint_break(
                checkpoint, BreakReason.EDITED, f"edited checkpoint: {name} does not match its hash"
            )
        if checkpoint.prev_hash != prev_hash:
            return _checkpoint_break(
                checkpoint,
                BreakReason.FORGED,
                f"forged checkpoint: {name} does not link to the checkpoint before it",
            )
        if keys is not None:
            public = keys.keys.get(checkpoint.kid)
            if public is None:
                return _checkpoint_break(
                    checkpoint,
                    BreakReason.FORGED,
                    f"forged checkpoint: {name} is signed with key {checkpoint.kid!r}, "
                    "which is not among the trusted keys",
                )
            try:
                public.verify(
                    base64.urlsafe_b64decode(checkpoint.sig.encode("ascii")), body.encode()
                )
            except (InvalidSignature, binascii.Error, ValueError):
                return _checkpoint_break(
                    checkpoint,
                    BreakReason.FORGED,
                    f"forged checkpoint: {name}'s signature does not match it",
                )
        prev_hash = checkpoint.hash
    return None


async def _check_heads(
    ledger: Ledger, checkpoints: list[Checkpoint], ends: dict[int, int]
) -> Break | None:
    """Every head a checkpoint names is still in its chain, with the hash it had."""
    named = [
        (cp, place, digest) for cp in checkpoints for place, digest in cp.head_places().items()
    ]
    stored = await ledger.hashes_at([place for _, place, _ in named])
    for checkpoint, (part, chain_seq), digest in named:
        found = stored.get((part, chain_seq))
        if found == digest:
            continue
        where = f"partition {part} chain_seq {chain_seq}, named by checkpoint #{checkpoint.seq}"
        if found is None:
            end = ends.get(part, -1)
            return Break(
                chain_seq=end + 1,
                id=checkpoint.seq,
                reason=BreakReason.DELETED,
                part=part,
                checkpoint=checkpoint.seq,
                message=f"deleted rows: {where}, is gone (the partition now ends at "
                f"chain_seq {end})",
            )
        return Break(
            chain_seq=chain_seq,
            id=checkpoint.seq,
            reason=BreakReason.EDITED,
            part=part,
            checkpoint=checkpoint.seq,
            message=f"rewritten rows: the row at {where}, is not the row the checkpoint signed",
        )
    return None


async def _check_anchor(ledger: Ledger, checkpoints: list[Checkpoint], anchor: str) -> Break | None:
    """A kept hash (a checkpoint's or a row's) must still be in the verified ledger."""
    if any(cp.hash == anchor for cp in checkpoints):
        return None
    if await ledger.find_hash(anchor) is not None:
        return None
    return Break(
        chain_seq=len(checkpoints),
        id=0,
        reason=BreakReason.DELETED,
        message=f"deleted rows: the anchor {anchor} is neither a checkpoint nor a row of this "
        "ledger any more; what it proved was removed or rewritten",
    )


async def _diagnose(
    ledger: Ledger,
    row: LedgerRow,
    expected_seq: int,
    prev_hash: str,
    previous: LedgerRow | None,
) -> Break:
    """Name what happened at a broken link, as a Break in the row's partition."""
    broken = await _diagnose_in_part(ledger, row, expected_seq, prev_hash, previous)
    broken.part = row.part
    return broken


async def _diagnose_in_part(
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
            "SELECT chain_seq FROM audit_events WHERE hash = $1 AND part = $2",
            row.prev_hash,
            row.part,
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
    run_id: str | None = None
    status: str | None = None
    decisions: list[tuple[str, str]] = []
    refused: int = 0
    started_at: datetime | None = None


def ledger_view(action_id: str, rows: list[LedgerRow]) -> LedgerView:
    """Summarise an action's ledger rows for comparison."""
    if action_id.startswith(WINDOW_ID_PREFIX):
        return _window_ledger_view(action_id, rows)
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


def _window_ledger_view(window_id: str, rows: list[LedgerRow]) -> LedgerView:
    """An approval window's rows: how it ended, each use (as a decision 'use'), refusals."""
    view = LedgerView(action_id=window_id)
    for row in rows:
        if row.kind == AuditKind.WINDOW_USED:
            view.decisions.append((str(row.payload.get("action_id")), "use"))
        elif row.kind == AuditKind.REFUSED:
            view.refused += 1
        elif row.kind == AuditKind.WINDOW_EXPIRED:
            view.status = "expired"
        elif row.kind == AuditKind.WINDOW_REVOKED:
            view.status = "revoked"
        elif row.kind == AuditKind.WINDOW_CREATED:
            view.started_at = row.at
    return view


async def _window_temporal_view(client: Client, window_id: str) -> LedgerView | None:
    """What the window workflow says, in the same terms as `_window_ledger_view`."""
    handle = client.get_workflow_handle(window_id, result_type=ApprovalWindow)
    try:
        description = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if description.status == WorkflowExecutionStatus.COMPLETED:
        window: ApprovalWindow = await handle.result()
    elif description.status == WorkflowExecutionStatus.RUNNING:
        window = await handle.query(
            "status", result_type=ApprovalWindow, rpc_timeout=timedelta(seconds=10)
        )
    else:
        closed = (
            _CLOSED_STATUS.get(description.status, "workflow closed")
            if description.status
            else "unknown"
        )
        return LedgerView(action_id=window_id, run_id=description.run_id, status=closed)
    return LedgerView(
        action_id=window_id,
        run_id=description.run_id,
        status=None if window.live else window.status,
        decisions=[(u.action_id, "use") for u in window.uses],
        refused=len(window.refused),
        started_at=window.created_at,
    )


_CLOSED_STATUS = {
    WorkflowExecutionStatus.FAILED: "workflow failed",
    WorkflowExecutionStatus.TERMINATED: "workflow terminated",
    WorkflowExecutionStatus.TIMED_OUT: "workflow timed out",
    WorkflowExecutionStatus.CANCELED: "workflow cancelled",
}


async def temporal_view(client: Client, action_id: str) -> LedgerView | None:
    """What Temporal says about an action; None when its history is past retention."""
    if action_id.startswith(WINDOW_ID_PREFIX):
        return await _window_temporal_view(client, action_id)
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
        return LedgerView(action_id=action_id, run_id=description.run_id, status=closed)
    return LedgerView(
        action_id=action_id,
        run_id=description.run_id,
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


class TemporalRun(BaseModel):
    """One run of a workflow id as Temporal's visibility lists it."""

    action_id: str
    run_id: str
    start_time: datetime
    running: bool


def _quoted(value: str) -> str:
    """A value for a visibility query; ids with quotes or backslashes cannot be queried."""
    if '"' in value or "\\" in value:
        raise ValueError(f"{value!r} cannot be put in a visibility query")
    return f'"{value}"'


async def temporal_runs(client: Client, query: str) -> list[TemporalRun]:
    """The runs a visibility query lists, oldest first."""
    runs = [
        TemporalRun(
            action_id=w.id,
            run_id=w.run_id,
            start_time=w.start_time,
            running=w.status == WorkflowExecutionStatus.RUNNING,
        )
        async for w in client.list_workflows(query)
    ]
    return sorted(runs, key=lambda r: r.start_time)


def run_rows(rows: list[LedgerRow], run_id: str) -> list[LedgerRow]:
    """The rows that make up one run's story: its own, after those of the run it was reset from.

    A reset run replays the history before the reset point, so its first events were written
    by the run it was reset from (and that one's, if it was reset too): its own rows start at
    a later seq.
    """
    order = list(dict.fromkeys(r.run_id for r in rows))
    if run_id not in order:
        return []
    story: list[LedgerRow] = []
    below: int | None = None
    for run in reversed(order[: order.index(run_id) + 1]):
        own = [r for r in rows if r.run_id == run and (below is None or r.seq < below)]
        story = own + story
        if own:
            below = min(r.seq for r in own)
        if below == 0:
            break
    return story


def run_mismatches(
    action_id: str, rows: list[LedgerRow], runs: list[TemporalRun]
) -> list[Mismatch]:
    """Runs Temporal has that the ledger lacks, and runs the ledger has that Temporal lacks."""
    recorded = list(dict.fromkeys(r.run_id for r in rows))
    known = {r.run_id for r in runs}
    unmatched = [r for r in runs if r.run_id not in recorded]
    legacy = "" in recorded
    if legacy and unmatched:
        # Rows from before runs were recorded (run_id ''): they stand for the oldest run.
        unmatched, legacy = unmatched[1:], False
    missing = [r for r in unmatched if not r.running]
    found = [
        Mismatch(
            action_id=action_id,
            field="run",
            ledger=None,
            temporal=f"run {r.run_id} (started {r.start_time.isoformat()}) missing from ledger",
        )
        for r in missing
    ]
    if runs:
        found.extend(
            Mismatch(
                action_id=action_id,
                field="run",
                ledger=f"run {run} missing from Temporal",
                temporal=None,
            )
            for run in recorded
            if run and run not in known
        )
        if legacy:
            found.append(
                Mismatch(
                    action_id=action_id,
                    field="run",
                    ledger="rows without a run id match no run Temporal has",
                    temporal=None,
                )
            )
    return found


async def cross_check(
    ledger: Ledger,
    client: Client,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    task_queue: str | None = None,
    advance: Callable[[int], None] | None = None,
) -> CrossCheckReport:
    """Compare each action in the ledger with its Temporal history while one is retained.

    Each run counts: a run Temporal has but the ledger lacks (or the reverse) is a mismatch.
    With `task_queue`, every action workflow Temporal lists on it in the period is also
    looked for in the ledger.
    """
    report = CrossCheckReport()
    current: list[LedgerRow] = []
    walked: set[str] = set()

    async def check(rows: list[LedgerRow]) -> None:
        if advance is not None:
            advance(1)
        action_id = rows[0].action_id
        walked.add(action_id)
        try:
            runs = await temporal_runs(client, f"WorkflowId = {_quoted(action_id)}")
        except ValueError as err:
            report.mismatches.append(
                Mismatch(action_id=action_id, field="id", ledger=str(err), temporal=None)
            )
            return
        report.mismatches.extend(run_mismatches(action_id, rows, runs))
        temporal = await temporal_view(client, action_id)
        if temporal is None:
            if not runs:
                report.out_of_retention += 1
            return
        report.checked += 1
        story = run_rows(rows, temporal.run_id or "")
        if not story and {r.run_id for r in rows} == {""}:
            story = rows  # recorded before runs were: one run, the one Temporal has
        if story:
            report.mismatches.extend(compare(ledger_view(action_id, story), temporal))

    async for row in ledger.action_rows(since, until):
        if current and current[0].action_id != row.action_id:
            await check(current)
            current = []
        current.append(row)
    if current:
        await check(current)
    if task_queue is not None:
        await _unrecorded_workflows(ledger, client, task_queue, since, until, walked, report)
    return report


async def _unrecorded_workflows(
    ledger: Ledger,
    client: Client,
    task_queue: str,
    since: datetime | None,
    until: datetime | None,
    walked: set[str],
    report: CrossCheckReport,
) -> None:
    """Action workflows on the task queue in the period whose runs the ledger never saw."""
    query = f"WorkflowType = {_quoted(WORKFLOW_NAME)} AND TaskQueue = {_quoted(task_queue)}"
    if since is not None:
        query += f" AND StartTime >= {_quoted(since.isoformat())}"
    if until is not None:
        query += f" AND StartTime < {_quoted(until.isoformat())}"
    by_id: dict[str, list[TemporalRun]] = {}
    for run in await temporal_runs(client, query):
        if run.action_id not in walked:
            by_id.setdefault(run.action_id, []).append(run)
    for action_id, runs in by_id.items():
        rows = await ledger.events(action_id)
        report.mismatches.extend(
            m for m in run_mismatches(action_id, rows, runs) if m.ledger is None
        )
