"""The ledger's storage: an append-only, hash-chained table of audit events in Postgres.

Appends take a transaction-scoped advisory lock, so concurrent workers queue up for the chain
head instead of forking it. `(action_id, run_id, seq)` is unique, so a retried batch finds its
rows already there and writes nothing twice; the same identity with different content is
refused. Each run of an action (a reset or a re-run under the same workflow id) writes rows
of its own, and `executions` holds the one durable claim to run its executor.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel

from activities.ledger.chain import (
    GENESIS_HASH,
    LedgerRow,
    event_content,
    event_identity,
    event_key,
    iso_utc,
    row_hash,
)
from activities.ledger.migrations import Conn, migrate
from signoff.models import canonical_json
from workflows.messages import AuditEvent, ExecutionClaim

# Any fixed number: all appenders must agree on it, and nothing else may use it.
CHAIN_LOCK = 0x5160_0FF1

# Fail fast while Postgres is away: the workflow retries the activity until it is back.
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0

COLUMNS = (
    "id, chain_seq, action_id, run_id, seq, kind, digest, actor, channel, at, "
    "payload::text AS payload, recorded_at, prev_hash, hash"
)

# An action's rows run by run (in the order the runs began), each run in event order.
RUN_ORDER = "min(chain_seq) OVER (PARTITION BY action_id, run_id), seq"


def read_row(record: asyncpg.Record) -> LedgerRow:
    """A row from a record selected with `COLUMNS` (whose payload comes back as JSON text)."""
    return LedgerRow(**{**dict(record), "payload": json.loads(record["payload"])})


class LedgerConflict(Exception):
    """The ledger already holds a different event at the same (action, run, seq)."""


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


class Ledger:
    """The ledger repository over an asyncpg pool: append, claims, runs and reads."""

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
        """Append events in order under the chain lock; skip ones already there; return count.

        Raises LedgerConflict when a different event already sits at an event's place.
        """
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
        stored = {event_key(r.content()): r for r in map(read_row, existing)}
        fresh = []
        for content in contents:
            row = stored.get(event_key(content))
            if row is None:
                fresh.append(content)
            elif event_identity(row.content()) != event_identity(content):
                run = content.get("run_id") or "(no run recorded)"
                raise LedgerConflict(
                    f"ledger already holds a different event {content['seq']} for action "
                    f"{content['action_id']} run {run} (chain_seq {row.chain_seq}, "
                    f"{row.kind}): refusing to overwrite it with {content['kind']}"
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
        return [read_row(r) for r in records]

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
        """Rows of actions requested (and approval windows opened) in [since, until), grouped
        by action or window, in event order."""
        query = (
            f"SELECT {COLUMNS} FROM audit_events WHERE action_id IN ("  # noqa: S608
            "  SELECT action_id FROM audit_events WHERE kind IN ('requested', 'window_created')"
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
                yield read_row(record)

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
