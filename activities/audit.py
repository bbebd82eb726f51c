"""The audit ledger: an append-only, hash-chained table of audit events in Postgres.

Every row links to the one before it by `prev_hash`, in a single global chain ordered by
`chain_seq`. Appends take a transaction-scoped advisory lock, so concurrent workers queue up
for the chain head instead of forking it. `(action_id, run_id, seq)` is unique, so a retried
batch finds its rows already there and writes nothing twice; the same identity with different
content is refused. Each run of an action (a reset or a re-run under the same workflow id)
writes rows of its own, and `executions` holds the one durable claim to run its executor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, JsonValue
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.migrations import GENESIS_HASH, Conn, migrate
from signoff.models import canonical_json
from workflows.messages import AuditBatch, AuditEvent, ExecutionClaim, RunCheck, RunCheckResult

# Any fixed number: all appenders must agree on it, and nothing else may use it.
CHAIN_LOCK = 0x5160_0FF1

# Fail fast while Postgres is away: the workflow retries the activity until it is back.
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0

LEDGER_UNAVAILABLE = "LedgerUnavailable"
LEDGER_CONFLICT = "LedgerConflict"
ALREADY_EXECUTED = "AlreadyExecuted"

COLUMNS = (
    "id, chain_seq, action_id, run_id, seq, kind, digest, actor, channel, at, "
    "payload::text AS payload, recorded_at, prev_hash, hash"
)

# An action's rows run by run (in the order the runs began), each run in event order.
RUN_ORDER = "min(chain_seq) OVER (PARTITION BY action_id, run_id), seq"


class LedgerRow(BaseModel):
    """One stored ledger row, as read back for verification and export."""

    id: int
    chain_seq: int
    action_id: str
    run_id: str = ""
    seq: int
    kind: str
    digest: str
    actor: str | None
    channel: str | None
    at: datetime
    payload: dict[str, JsonValue]
    recorded_at: datetime
    prev_hash: str
    hash: str

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> LedgerRow:
        """Build a row from an asyncpg record selected with `COLUMNS`."""
        return cls(**{**dict(record), "payload": json.loads(record["payload"])})

    def content(self) -> dict[str, Any]:
        """The fields the event's content is made of (what a retry must match)."""
        return event_content(
            self.action_id,
            self.seq,
            self.kind,
            self.digest,
            self.actor,
            self.channel,
            self.at,
            self.payload,
            run_id=self.run_id,
        )

    def computed_hash(self, chain_seq: int | None = None, prev_hash: str | None = None) -> str:
        """The hash this row should have (optionally as if it sat elsewhere in the chain)."""
        return row_hash(
            self.chain_seq if chain_seq is None else chain_seq,
            self.content(),
            self.prev_hash if prev_hash is None else prev_hash,
        )


class RunSummary(BaseModel):
    """One run of an action as the ledger has it."""

    action_id: str
    run_id: str
    started_at: datetime
    executed: bool = False
    status: str | None = None
    error: str | None = None

    def describe(self) -> str:
        """One line: which run, when, and how it ended."""
        run = self.run_id or "(run not recorded)"
        outcome = self.status or "no outcome recorded"
        if self.error:
            outcome += f": {self.error}"
        return f"run {run} requested {iso_utc(self.started_at)}, {outcome}"


def iso_utc(at: datetime) -> str:
    """ISO-8601 in UTC with microseconds: the one spelling of a time that goes into a hash."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def event_content(
    action_id: str,
    seq: int,
    kind: str,
    digest: str,
    actor: str | None,
    channel: str | None,
    at: datetime,
    payload: Any,
    *,
    run_id: str = "",
) -> dict[str, Any]:
    """The content fields of an event in the form they are hashed and compared.

    `run_id` is part of the content only when set, so rows written before runs were recorded
    (run_id '') hash exactly as they did and keep verifying.
    """
    content = {
        "action_id": action_id,
        "seq": seq,
        "kind": str(kind),
        "digest": digest,
        "actor": actor,
        "channel": channel,
        "at": iso_utc(at),
        "payload": payload,
    }
    if run_id:
        content["run_id"] = run_id
    return content


def row_hash(chain_seq: int, content: dict[str, Any], prev_hash: str) -> str:
    """SHA-256 hex over the canonical JSON of a row's content, its chain position and prev_hash."""
    body = canonical_json({**content, "chain_seq": chain_seq, "prev_hash": prev_hash})
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def unavailable(err: BaseException) -> ApplicationError:
    """A retryable error saying the ledger cannot be reached right now."""
    return ApplicationError(
        f"audit ledger unavailable: {type(err).__name__}: {err}", type=LEDGER_UNAVAILABLE
    )


# What a lost or refused connection looks like from asyncpg: retry later, never skip.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


async def create_pool(url: str, *, max_size: int = 10) -> asyncpg.Pool:
    """A pool that opens connections lazily, so it can be created while Postgres is down."""
    pool = await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
    )
    assert pool is not None
    return pool


def _key(content: dict[str, Any]) -> tuple[str, str, int]:
    """Where an event sits: its action, its run and its place in that run."""
    return (content["action_id"], content.get("run_id", ""), content["seq"])


def _identity(content: dict[str, Any]) -> tuple[Any, ...]:
    """What makes an event the same event: everything but the time it was taken at.

    A local activity whose result was not yet in history runs again after a workflow task
    retry (a crashed worker), with a later workflow time (`at`, and the `at` a decision or
    refusal carries in its payload). That is the same event; the first write stands. Any other
    difference at the same (action, run, seq) is a real conflict.
    """
    payload = content["payload"]
    if isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if k != "at"}
    fields = ("action_id", "seq", "kind", "digest", "actor", "channel")
    return (*(content[k] for k in fields), content.get("run_id", ""), canonical_json(payload))


class Ledger:
    """The ledger over an asyncpg pool; `record_audit_events` is its Temporal activity."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, url: str, *, migrate: bool = False, max_size: int = 10) -> Ledger:
        """Open a ledger on `url`, applying pending migrations first when asked."""
        pool = await create_pool(url, max_size=max_size)
        ledger = cls(pool)
        if migrate:
            await ledger.migrate()
        return ledger

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()

    async def migrate(self) -> list[int]:
        """Apply pending schema migrations; return the versions applied."""
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            return await migrate(conn)

    @activity.defn(name="record_audit_events")
    async def record_audit_events(self, batch: AuditBatch) -> None:
        """Append a batch of events to the chain, idempotently; retried until Postgres is back."""
        try:
            await self.append(batch.events)
        except CONNECTION_ERRORS as err:
            raise unavailable(err) from err

    @activity.defn(name="check_run")
    async def check_run(self, check: RunCheck) -> RunCheckResult:
        """Whether another run of this workflow id already started executing the action."""
        try:
            found = await self.executed_by(check.action_id, other_than=check.run_id)
        except CONNECTION_ERRORS as err:
            raise unavailable(err) from err
        if found is None:
            return RunCheckResult()
        return RunCheckResult(executed_by=found[0] or "(unrecorded)", at=found[1])

    async def executed_by(self, action_id: str, *, other_than: str) -> tuple[str, datetime] | None:
        """The first other run that claimed, started or finished executing the action."""
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            row = await conn.fetchrow(
                """
                SELECT run_id, at FROM (
                    SELECT run_id, claimed_at AS at FROM executions
                    WHERE action_id = $1 AND run_id <> $2
                    UNION ALL
                    SELECT run_id, at FROM audit_events
                    WHERE action_id = $1 AND run_id <> $2
                      AND kind IN ('execution_started', 'execution_result')
                ) AS earlier ORDER BY at LIMIT 1
                """,
                action_id,
                other_than,
            )
        return None if row is None else (row["run_id"], row["at"])

    @activity.defn(name="claim_execution")
    async def claim_execution_activity(self, claim: ExecutionClaim) -> ExecutionClaim:
        """Claim the action's one execution for this run; answer with whoever holds it."""
        try:
            return await self.claim_execution(claim.action_id, claim.run_id, claim.digest)
        except CONNECTION_ERRORS as err:
            raise unavailable(err) from err

    async def claim_execution(self, action_id: str, run_id: str, digest: str) -> ExecutionClaim:
        """Claim the one execution of an action for `run_id`; return whoever holds it.

        The claim is per run, so the same run retrying an idempotent executor finds its own
        claim; any other run (a reset, a re-run of the workflow id) finds the first one's.
        """
        async with (
            self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn,
            conn.transaction(),
        ):
            # Runs from before claims existed left only their result row (run_id '').
            legacy = await conn.fetchrow(
                "SELECT run_id, at FROM audit_events WHERE action_id = $1 AND run_id <> $2"
                " AND kind = 'execution_result' ORDER BY chain_seq LIMIT 1",
                action_id,
                run_id,
            )
            if legacy is not None:
                return ExecutionClaim(
                    action_id=action_id,
                    run_id=legacy["run_id"] or "(unrecorded)",
                    digest=digest,
                    claimed_at=legacy["at"],
                )
            await conn.execute(
                "INSERT INTO executions (action_id, run_id, digest) VALUES ($1, $2, $3)"
                " ON CONFLICT (action_id) DO NOTHING",
                action_id,
                run_id,
                digest,
            )
            row = await conn.fetchrow(
                "SELECT action_id, run_id, digest, claimed_at FROM executions WHERE action_id = $1",
                action_id,
            )
        assert row is not None, "the claim was inserted or already there, in this transaction"
        return ExecutionClaim(**dict(row), granted=row["run_id"] == run_id)

    async def runs(self, action_id: str) -> list[RunSummary]:
        """Each run of an action the ledger holds, in the order they began."""
        summaries: dict[str, RunSummary] = {}
        for row in await self.events(action_id):
            run = summaries.setdefault(
                row.run_id, RunSummary(action_id=action_id, run_id=row.run_id, started_at=row.at)
            )
            if row.kind == "execution_started":
                run.executed = True
            elif row.kind == "outcome":
                run.status = str(row.payload.get("status"))
                error = row.payload.get("error")
                run.error = None if error is None else str(error)
        return list(summaries.values())

    async def append(self, events: Sequence[AuditEvent]) -> int:
        """Append events in order under the chain lock; skip ones already there; return count."""
        if not events:
            return 0
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            # Let Postgres normalise the payloads first, so the hash covers exactly what
            # jsonb gives back when the chain is verified (it rewrites numbers like 1e20).
            stored = await conn.fetch(
                "SELECT p::text AS payload FROM unnest($1::jsonb[]) WITH ORDINALITY AS t(p, n) "
                "ORDER BY n",
                [canonical_json(e.payload) for e in events],
            )
            contents = [
                event_content(
                    e.action_id,
                    e.seq,
                    e.kind,
                    e.digest,
                    e.actor,
                    e.channel,
                    e.at,
                    json.loads(r["payload"]),
                    run_id=e.run_id,
                )
                for e, r in zip(events, stored, strict=True)
            ]
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
                fresh = await self._unwritten(conn, contents)
                if not fresh:
                    return 0
                head = await conn.fetchrow(
                    "SELECT chain_seq, hash FROM audit_events ORDER BY chain_seq DESC LIMIT 1"
                )
                chain_seq = -1 if head is None else head["chain_seq"]
                prev_hash = GENESIS_HASH if head is None else head["hash"]
                rows = []
                for content in fresh:
                    chain_seq += 1
                    digest = row_hash(chain_seq, content, prev_hash)
                    rows.append((chain_seq, content, prev_hash, digest))
                    prev_hash = digest
                await conn.execute(
                    """
                    INSERT INTO audit_events
                        (chain_seq, action_id, seq, kind, digest, actor, channel, at, payload,
                         prev_hash, hash, run_id)
                    SELECT * FROM unnest(
                        $1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
                        $7::text[], $8::timestamptz[], $9::jsonb[], $10::text[], $11::text[],
                        $12::text[])
                    """,
                    [r[0] for r in rows],
                    [r[1]["action_id"] for r in rows],
                    [r[1]["seq"] for r in rows],
                    [r[1]["kind"] for r in rows],
                    [r[1]["digest"] for r in rows],
                    [r[1]["actor"] for r in rows],
                    [r[1]["channel"] for r in rows],
                    [datetime.fromisoformat(r[1]["at"]) for r in rows],
                    [canonical_json(r[1]["payload"]) for r in rows],
                    [r[2] for r in rows],
                    [r[3] for r in rows],
                    [r[1].get("run_id", "") for r in rows],
                )
                return len(rows)

    async def _unwritten(self, conn: Conn, contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The contents not yet in the ledger; a stored event that differs is a conflict."""
        existing = await conn.fetch(
            f"SELECT {COLUMNS} FROM audit_events "  # noqa: S608 - constant column list
            "WHERE (action_id, run_id, seq) IN "
            "(SELECT * FROM unnest($1::text[], $2::text[], $3::int[]))",
            [c["action_id"] for c in contents],
            [c.get("run_id", "") for c in contents],
            [c["seq"] for c in contents],
        )
        stored = {_key(r.content()): r for r in map(LedgerRow.from_record, existing)}
        fresh = []
        for content in contents:
            row = stored.get(_key(content))
            if row is None:
                fresh.append(content)
            elif _identity(row.content()) != _identity(content):
                run = content.get("run_id") or "(no run recorded)"
                raise ApplicationError(
                    f"ledger already holds a different event {content['seq']} for action "
                    f"{content['action_id']} run {run} (chain_seq {row.chain_seq}, "
                    f"{row.kind}): refusing to overwrite it with {content['kind']}",
                    type=LEDGER_CONFLICT,
                    non_retryable=True,
                )
        return fresh

    async def events(self, action_id: str) -> list[LedgerRow]:
        """All rows of one action, in event order."""
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            records = await conn.fetch(
                f"SELECT {COLUMNS} FROM audit_events WHERE action_id = $1 "  # noqa: S608
                f"ORDER BY {RUN_ORDER}",
                action_id,
            )
        return [LedgerRow.from_record(r) for r in records]

    async def count(self) -> int:
        """Number of rows in the ledger."""
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            return int(await conn.fetchval("SELECT count(*) FROM audit_events"))

    async def rows(self, *, batch_size: int = 2000) -> AsyncIterator[LedgerRow]:
        """Every row in chain order, streamed through a server-side cursor."""
        query = f"SELECT {COLUMNS} FROM audit_events ORDER BY chain_seq"  # noqa: S608
        async for row in self._stream(query, batch_size=batch_size):
            yield row

    async def action_rows(
        self, since: datetime | None, until: datetime | None, *, batch_size: int = 2000
    ) -> AsyncIterator[LedgerRow]:
        """Rows of actions requested in [since, until), grouped by action, in event order."""
        query = (
            f"SELECT {COLUMNS} FROM audit_events WHERE action_id IN ("  # noqa: S608
            "  SELECT action_id FROM audit_events WHERE kind = 'requested'"
            "  AND ($1::timestamptz IS NULL OR at >= $1)"
            "  AND ($2::timestamptz IS NULL OR at < $2))"
            f" ORDER BY action_id, {RUN_ORDER}"
        )
        async for row in self._stream(query, since, until, batch_size=batch_size):
            yield row

    async def _stream(self, query: str, *args: Any, batch_size: int) -> AsyncIterator[LedgerRow]:
        # One snapshot for the whole walk, so rows appended meanwhile can't shift it.
        async with (
            self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            async for record in conn.cursor(query, *args, prefetch=batch_size):
                yield LedgerRow.from_record(record)

    async def count_actions(self, since: datetime | None, until: datetime | None) -> int:
        """Number of actions requested in [since, until)."""
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            return int(
                await conn.fetchval(
                    "SELECT count(DISTINCT action_id) FROM audit_events WHERE kind = 'requested'"
                    " AND ($1::timestamptz IS NULL OR at >= $1)"
                    " AND ($2::timestamptz IS NULL OR at < $2)",
                    since,
                    until,
                )
            )
