"""The ledger's storage: an append-only, hash-chained table of audit events in Postgres.

Rows go to independent chains (partitions by action id); an append is one statement that
takes its partition's transaction-scoped advisory lock, so concurrent workers queue up for a
chain head instead of forking it, and only while Postgres runs the statement. Signed
checkpoints over all partition heads chain the partitions together. `(action_id, run_id, seq)`
is unique, so a retried batch finds its rows already there and writes nothing twice; the
same identity with different content is refused. Each run of an action (a reset or a re-run
under the same workflow id) writes rows of its own, and `executions` holds the one durable
claim to run its executor.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, JsonValue

from activities.ledger.chain import (
    GENESIS_HASH,
    LedgerRow,
    checkpoint_body,
    checkpoint_hash,
    event_content,
    event_identity,
    event_key,
    hash_template,
    identity_hash,
    iso_utc,
    partition_of,
)
from activities.ledger.migrations import MIGRATIONS, Conn, current_version, migrate
from signoff.models import canonical_json
from workflows.messages import (
    AuditEvent,
    AuditKind,
    ExecutionClaim,
    RecordedOutcome,
    kept_place,
)
from workflows.signing import Signer

# Any fixed number: all appenders must agree on it, and nothing else may use it. The
# partitioned appender (`audit_append`, migration 4) takes (CHAIN_LOCK, part) per partition and
# CHAIN_LOCK alone for partition 0, the chain older appenders extended under this lock.
CHAIN_LOCK = 0x5160_0FF1
CHECKPOINT_LOCK = 0x5160_0FF2
# What audit_append raises when a different event already sits at an event's place.
CONFLICT_STATE = "SO001"
APPEND = (
    "SELECT item, written, unchecked, conflict, holder, held_digest, held_at"
    " FROM audit_append_claim("
    "$1::int[], $2::int[], $3::bool[], $4::text[], $5::text[], $6::int[], $7::text[],"
    " $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::jsonb[], $13::text[],"
    " $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[])"
)
# Callers whose events go in one statement at most; more wait for the next.
MAX_ITEMS = 64
# The partitions that hold rows, found by skipping through the (part, chain_seq) index.
PARTS = """
WITH RECURSIVE parts AS (
    SELECT min(part) AS part FROM audit_events
    UNION ALL
    SELECT (SELECT min(part) FROM audit_events WHERE part > parts.part) FROM parts
    WHERE parts.part IS NOT NULL
)
SELECT parts.part, h.chain_seq, h.hash FROM parts
CROSS JOIN LATERAL (
    SELECT chain_seq, hash FROM audit_events e WHERE e.part = parts.part
    ORDER BY chain_seq DESC LIMIT 1
) h
WHERE parts.part IS NOT NULL ORDER BY parts.part
"""

# Fail fast while Postgres is away: the workflow retries the activity until it is back.
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0

COLUMNS = (
    "id, part, chain_seq, action_id, run_id, seq, kind, digest, actor, channel, at, "
    "payload::text AS payload, recorded_at, prev_hash, hash"
)

# An action's rows run by run (in the order the runs began), each run in event order. The row
# id orders runs: chain positions of different partitions do not compare.
RUN_ORDER = "min(id) OVER (PARTITION BY action_id, run_id), seq"


def read_row(record: asyncpg.Record) -> LedgerRow:
    """A row from a record selected with `COLUMNS` (whose payload comes back as JSON text)."""
    return LedgerRow(**{**dict(record), "payload": json.loads(record["payload"])})


def held(action_id: str, run_id: str, record: asyncpg.Record) -> ExecutionClaim:
    """The claim `run_id` asked for, answered with the holder in `record` (`execution_claim`)."""
    return ExecutionClaim(
        action_id=action_id,
        run_id=record["holder"] or "(unrecorded)",
        digest=record["held_digest"],
        claimed_at=record["held_at"],
        granted=record["holder"] == run_id,
    )


def write_ahead_places(rows: Iterable[tuple[str, str | None]]) -> dict[str, int | None]:
    """Each write-ahead row's digest, with the first place it kept for the outcome, or None.

    The place comes as jsonb's text (`payload -> 'outcome_seq'`), NULL when none was kept.
    """
    return {digest: None if kept is None else kept_place(json.loads(kept)) for digest, kept in rows}


def _plain(value: Any) -> bool:
    """Whether jsonb gives a value back exactly as it is: no floats (jsonb may rewrite those,
    1e20 comes back as 100000000000000000000), only string keys, only lists."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, str | int)


class _Item:
    """One caller's events on their way into a statement, and where its outcome goes."""

    def __init__(
        self,
        contents: list[dict[str, Any]],
        done: asyncio.Future[int],
        claim: ExecutionClaim | None = None,
    ) -> None:
        self.contents = contents
        self.done = done
        self.checked = False
        # The execution this caller claims once its events are in, and the answer.
        self.claim = claim
        self.claimed: ExecutionClaim | None = None

    def settle(self, *, written: int = 0, error: BaseException | None = None) -> None:
        """Give the caller its outcome (once)."""
        if self.done.done():
            return
        if error is None:
            self.done.set_result(written)
        else:
            self.done.set_exception(error)


def _arguments(batch: list[_Item]) -> list[list[Any]]:
    """audit_append's arrays: every caller's events in order, each tagged with its caller."""
    events = [(n, item, c) for n, item in enumerate(batch, start=1) for c in item.contents]
    templates = [hash_template(c) for _, _, c in events]
    return [
        [n for n, _, _ in events],
        [c.get("part", 0) for _, _, c in events],
        [item.checked for _, item, _ in events],
        [c["action_id"] for _, _, c in events],
        [c.get("run_id", "") for _, _, c in events],
        [c["seq"] for _, _, c in events],
        [c["kind"] for _, _, c in events],
        [c["digest"] for _, _, c in events],
        [c["actor"] for _, _, c in events],
        [c["channel"] for _, _, c in events],
        [datetime.fromisoformat(c["at"]) for _, _, c in events],
        [canonical_json(c["payload"]) for _, _, c in events],
        [identity_hash(c) for _, _, c in events],
        [t[0] for t in templates],
        [t[1] for t in templates],
        [t[2] for t in templates],
        [item.claim and item.claim.action_id for item in batch],
        [item.claim and item.claim.run_id for item in batch],
        [item.claim and item.claim.digest for item in batch],
    ]


class Checkpoint(BaseModel):
    """A signed checkpoint: every partition's head at one moment, chained to the one before."""

    seq: int
    at: datetime
    heads: dict[str, list[JsonValue]]
    prev_hash: str
    hash: str
    kid: str
    sig: str

    def body(self) -> str:
        """The canonical JSON its hash and signature cover."""
        return checkpoint_body(self.seq, self.at, self.heads, self.prev_hash)

    def head_places(self) -> dict[tuple[int, int], str]:
        """(part, chain_seq) -> the hash this checkpoint says the row there has."""
        places: dict[tuple[int, int], str] = {}
        for part, head in self.heads.items():
            chain_seq, digest = head
            places[(int(part), int(str(chain_seq)))] = str(digest)
        return places


class LedgerSchemaBehind(Exception):
    """The ledger's schema is older than this code needs: `signoff db migrate` first."""


def recorded_outcome(rows: Sequence[LedgerRow]) -> RecordedOutcome | None:
    """The outcome these stored rows record, or None when none of them is an outcome."""
    outcome = next((r for r in rows if r.kind == AuditKind.OUTCOME), None)
    if outcome is None:
        return None
    ran = next((r for r in rows if r.kind == AuditKind.EXECUTION_RESULT), None)
    error = outcome.payload.get("error")
    return RecordedOutcome(
        status=str(outcome.payload.get("status")),
        result=ran.payload.get("result") if ran is not None else None,
        error=None if error is None else str(error),
    )


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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection to the pool as it is, without asyncpg's reset round trip.

    The ledger leaves no session state behind: its locks are transaction-scoped, its cursors
    live inside transactions, it never LISTENs or SETs. asyncpg still rolls back a transaction
    left open before this runs. The default reset would cost every append a second round trip.
    """


async def create_pool(url: str, *, max_size: int = 10) -> asyncpg.Pool:
    """A pool that opens connections lazily, so it can be created while Postgres is down."""
    pool = await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


class Ledger:
    """The ledger repository over an asyncpg pool: append, claims, runs and reads."""

    def __init__(self, pool: asyncpg.Pool, *, partitions: int = 1) -> None:
        self.pool = pool
        # How many chains new actions spread over; 1 keeps the single chain of old.
        self.partitions = max(1, partitions)
        # Appends waiting for a statement, and the statements in flight (at most half the
        # pool, so reads always find a connection).
        self._pending: list[_Item] = []
        self._flushing = 0
        self._max_flushers = max(1, pool.get_max_size() // 2)
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(
        cls, url: str, *, migrate: bool = False, max_size: int = 10, partitions: int = 1
    ) -> Ledger:
        """Open a ledger on `url`, applying pending migrations first when asked."""
        pool = await create_pool(url, max_size=max_size)
        ledger = cls(pool, partitions=partitions)
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

    async def require_schema(self) -> None:
        """Refuse a ledger whose schema is behind this code, naming the command that fixes it."""
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            version = await current_version(conn)
        latest = MIGRATIONS[-1].version
        if version < latest:
            raise LedgerSchemaBehind(
                f"the audit ledger's schema is at version {version}, this signoff needs "
                f"{latest}: run `signoff db migrate` first"
            )

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

    async def run_recorded(self, action_id: str, run_id: str) -> bool:
        """Whether this run of the action (its own run id, not '') wrote any ledger row."""
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            found = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM audit_events WHERE action_id = $1 AND run_id = $2)",
                action_id,
                run_id,
            )
        return bool(found)

    async def write_ahead(self, action_id: str, run_id: str) -> dict[str, int | None]:
        """A run's write-ahead rows (`execution_started`), none if it wrote none.

        Each row's digest, with the first of the places it kept for the outcome's rows (shape
        v10), or None. Rows of runs from before runs were recorded (run id '') count for any
        run: the execution claim still lets only one run of the action execute.
        """
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            rows = await conn.fetch(
                "SELECT digest, payload -> 'outcome_seq' AS kept FROM audit_events "
                "WHERE action_id = $1 AND run_id IN ($2, '') AND kind = 'execution_started'",
                action_id,
                run_id,
            )
        return write_ahead_places((r["digest"], r["kept"]) for r in rows)

    async def claim_execution(self, action_id: str, run_id: str, digest: str) -> ExecutionClaim:
        """Claim the one execution of an action for `run_id`; return whoever holds it.

        The claim is per run, so the same run retrying an idempotent executor finds its own
        claim; any other run (a reset, a re-run of the workflow id) finds the first one's.
        One statement (`execution_claim`, migration 5): one round trip to Postgres.
        """
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            row = await conn.fetchrow(
                "SELECT holder, held_digest, held_at FROM execution_claim($1, $2, $3)",
                action_id,
                run_id,
                digest,
            )
        assert row is not None, "the claim was inserted or already there"
        return held(action_id, run_id, row)

    async def start_execution(
        self, action_id: str, run_id: str, digest: str
    ) -> tuple[dict[str, int | None], ExecutionClaim | None]:
        """The run's write-ahead rows (as `write_ahead`), and the claim if one is for `digest`.

        The executor's two checks in one statement (`execution_start`, migration 6): nothing is
        claimed unless this run's write-ahead row for the digest is on record.
        """
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            row = await conn.fetchrow(
                "SELECT digests, kept::text[] AS kept, holder, held_digest, held_at"
                " FROM execution_start($1, $2, $3)",
                action_id,
                run_id,
                digest,
            )
        assert row is not None, "execution_start answers one row"
        rows = write_ahead_places(zip(row["digests"], row["kept"], strict=True))
        return rows, (held(action_id, run_id, row) if digest in rows else None)

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
        """Append events in order to their actions' chains; skip ones already there.

        Appends that arrive while others are being written go together in the next statement
        (`audit_append`, group commit): each partition is locked only while Postgres runs a
        statement, never across a round trip, and under load one round trip and one commit
        carry many callers' events. Each caller's events are written all or none. Raises
        LedgerConflict when a different event already sits at an event's place. Returns the
        number of rows written.
        """
        if not events:
            return 0
        return await asyncio.shield((await self._enqueue(events)).done)

    async def append_and_claim(
        self, events: Sequence[AuditEvent], claim: ExecutionClaim
    ) -> ExecutionClaim:
        """Append events as `append` does, then claim the execution in the same statement.

        The claim commits with the rows it follows, in one round trip. Raises as `append`
        does, and then claims nothing.
        """
        if not events:
            return await self.claim_execution(claim.action_id, claim.run_id, claim.digest)
        item = await self._enqueue(events, claim)
        await asyncio.shield(item.done)
        assert item.claimed is not None, "an item that asks for a claim is answered with one"
        return item.claimed

    async def _enqueue(
        self, events: Sequence[AuditEvent], claim: ExecutionClaim | None = None
    ) -> _Item:
        """Queue one caller's events for the next statement; its future settles once written."""
        if all(_plain(e.payload) for e in events):
            payloads = [e.payload for e in events]
        else:
            async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                payloads = await self._stored_payloads(conn, events)
        contents = [
            event_content(
                e.action_id,
                e.seq,
                e.kind,
                e.digest,
                e.actor,
                e.channel,
                e.at,
                payload,
                run_id=e.run_id,
                part=partition_of(e.action_id, self.partitions),
            )
            for e, payload in zip(events, payloads, strict=True)
        ]
        item = _Item(contents, asyncio.get_running_loop().create_future(), claim)
        self._pending.append(item)
        if self._flushing < self._max_flushers:
            self._flushing += 1
            self._tasks.add(task := asyncio.create_task(self._flush()))
            task.add_done_callback(self._tasks.discard)
        return item

    async def append_outcome(self, events: Sequence[AuditEvent]) -> RecordedOutcome | None:
        """Append an outcome's rows: None once they are in, else the outcome already there.

        Two writers may race for one outcome's places (shape v10): the executor's activity
        writes a success's rows, and the run writes them when it cannot tell whether the
        activity did (its completion was lost). Whoever comes second takes the first's outcome
        as the truth; rows of any other kind at those places are a conflict, as ever.
        """
        try:
            await self.append(events)
        except LedgerConflict:
            stored = await self._rows_at(events)
            outcome = recorded_outcome(stored)
            if outcome is None:
                raise
            return outcome
        return None

    async def _rows_at(self, events: Sequence[AuditEvent]) -> list[LedgerRow]:
        """The stored rows at these events' places, in event order."""
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            found = await conn.fetch(
                f"SELECT {COLUMNS} FROM audit_events "  # noqa: S608 - constant column list
                "WHERE (action_id, run_id, seq) IN "
                "(SELECT * FROM unnest($1::text[], $2::text[], $3::int[])) ORDER BY seq",
                [e.action_id for e in events],
                [e.run_id for e in events],
                [e.seq for e in events],
            )
        return [read_row(r) for r in found]

    async def _flush(self) -> None:
        """Write what is pending, in statements of up to MAX_ITEMS callers, until none is."""
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_ITEMS], self._pending[MAX_ITEMS:]
                await self._write(batch)
        finally:
            self._flushing -= 1

    async def _write(self, batch: list[_Item], attempt: int = 0) -> None:
        """One statement for a batch of callers; each caller's future gets its outcome."""
        try:
            async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                results = await conn.fetch(APPEND, *_arguments(batch))
                for row in results:
                    item = batch[row["item"] - 1]
                    if row["conflict"] is not None:
                        item.settle(error=LedgerConflict(row["conflict"]))
                    elif row["unchecked"]:
                        # Rows from before identities were stored: compare them here, then
                        # write the caller's events in a later statement.
                        first = sum(len(i.contents) for i in batch[: row["item"] - 1])
                        old = [item.contents[i - 1 - first] for i in row["unchecked"]]
                        try:
                            await self._unwritten(conn, old)
                        except LedgerConflict as err:
                            item.settle(error=err)
                        else:
                            item.checked = True
                            self._pending.insert(0, item)
                    else:
                        if item.claim is not None:
                            claim = item.claim
                            item.claimed = held(claim.action_id, claim.run_id, row)
                        item.settle(written=int(row["written"]))
        except CONNECTION_ERRORS as err:
            for item in batch:
                item.settle(error=err)
        except asyncpg.PostgresError as err:
            if len(batch) > 1:
                # One caller's events broke the statement: write each on its own.
                for item in batch:
                    await self._write([item])
            elif isinstance(err, asyncpg.UniqueViolationError) and attempt < 2:
                # Another appender put the same events in another partition (a worker with
                # a different partition count) or in the same statement: look again.
                await self._write(batch, attempt + 1)
            else:
                batch[0].settle(error=err)
        except BaseException as err:
            for item in batch:
                item.settle(error=err)
            raise

    async def _stored_payloads(self, conn: Conn, events: Sequence[AuditEvent]) -> list[Any]:
        """The payloads as jsonb gives them back, which is what the hash must cover."""
        stored = await conn.fetch(
            "SELECT p::text AS payload FROM unnest($1::jsonb[]) WITH ORDINALITY AS t(p, n) "
            "ORDER BY n",
            [canonical_json(e.payload) for e in events],
        )
        return [json.loads(r["payload"]) for r in stored]

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

    async def rows(
        self, *, part: int | None = None, batch_size: int = 2000
    ) -> AsyncIterator[LedgerRow]:
        """Every row (of one partition) in chain order, streamed through a server-side cursor."""
        query = (
            f"SELECT {COLUMNS} FROM audit_events"  # noqa: S608 - constant column list
            " WHERE ($1::int IS NULL OR part = $1) ORDER BY part, chain_seq"
        )
        async for row in self._stream(query, part, batch_size=batch_size):
            yield row

    async def records(self, part: int, *, batch_size: int = 10000) -> AsyncIterator[asyncpg.Record]:
        """One partition's raw records in chain order (for the verifier's fast path)."""
        query = f"SELECT {COLUMNS} FROM audit_events WHERE part = $1 ORDER BY chain_seq"  # noqa: S608
        async with (
            self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            async for record in conn.cursor(query, part, prefetch=batch_size):
                yield record

    async def heads(self) -> dict[int, tuple[int, str]]:
        """Each partition that holds rows: its head's chain_seq and hash."""
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            return {r["part"]: (r["chain_seq"], r["hash"]) for r in await conn.fetch(PARTS)}

    async def hashes_at(self, places: Sequence[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """The stored hash at each (part, chain_seq) asked for that exists."""
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            found = await conn.fetch(
                "SELECT part, chain_seq, hash FROM audit_events WHERE (part, chain_seq) IN "
                "(SELECT * FROM unnest($1::int[], $2::bigint[]))",
                [p for p, _ in places],
                [c for _, c in places],
            )
        return {(r["part"], r["chain_seq"]): r["hash"] for r in found}

    async def find_hash(self, digest: str) -> tuple[int, int] | None:
        """Where a row with this hash sits: (part, chain_seq)."""
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            row = await conn.fetchrow(
                "SELECT part, chain_seq FROM audit_events WHERE hash = $1", digest
            )
        return None if row is None else (row["part"], row["chain_seq"])

    async def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, in order."""
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            found = await conn.fetch(
                "SELECT seq, at, heads::text AS heads, prev_hash, hash, kid, sig"
                " FROM ledger_checkpoints ORDER BY seq"
            )
        return [Checkpoint(**{**dict(r), "heads": json.loads(r["heads"])}) for r in found]

    async def checkpoint(
        self, signer: Signer, *, now: datetime | None = None, if_changed: bool = False
    ) -> Checkpoint | None:
        """Write a signed checkpoint over every partition's head, chained to the last one.

        With `if_changed`, nothing is written (None) when no row was added since the last.
        """
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CHECKPOINT_LOCK)
            last = await conn.fetchrow(
                "SELECT seq, hash, heads::text AS heads FROM ledger_checkpoints"
                " ORDER BY seq DESC LIMIT 1"
            )
            heads: dict[str, list[JsonValue]] = {
                str(r["part"]): [r["chain_seq"], r["hash"]] for r in await conn.fetch(PARTS)
            }
            if if_changed and last is not None and json.loads(last["heads"]) == heads:
                return None
            at = now or datetime.now(UTC)
            seq = 0 if last is None else last["seq"] + 1
            prev = GENESIS_HASH if last is None else last["hash"]
            body = checkpoint_body(seq, at, heads, prev)
            signature = signer.private.sign(body.encode("utf-8"))
            made = Checkpoint(
                seq=seq,
                at=datetime.fromisoformat(iso_utc(at)),
                heads=heads,
                prev_hash=prev,
                hash=checkpoint_hash(body),
                kid=signer.kid,
                sig=base64.urlsafe_b64encode(signature).decode("ascii"),
            )
            await conn.execute(
                "INSERT INTO ledger_checkpoints (seq, at, heads, prev_hash, hash, kid, sig)"
                " VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7)",
                made.seq,
                made.at,
                canonical_json(made.heads),
                made.prev_hash,
                made.hash,
                made.kid,
                made.sig,
            )
        return made

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
