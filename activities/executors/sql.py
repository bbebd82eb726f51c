"""The SQL executors `sql.query` (read only) and `sql.execute` (one statement that may write).

Every connection is checked before any statement runs: the connecting role must not reach
beyond the database, and the server enforces statement and idle timeouts.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from activities.executors.results import json_safe
from activities.targets import PostgresTarget
from policies import sql
from policies.sql import SqlError
from signoff.executor import ExecutionContext, Executor, ExecutorError

MAX_ROWS = 1000


def sql_check(check: Callable[[str], str], value: str) -> str:
    """Run a `policies.sql` check as a params validator: its refusal becomes a ValueError."""
    try:
        return check(value)
    except SqlError as exc:
        raise ValueError(str(exc)) from None


class SqlParams(BaseModel):
    """Exactly one SQL statement with positional $1, $2... arguments."""

    model_config = ConfigDict(extra="forbid")

    statement: str = Field(
        min_length=1, max_length=100_000, examples=["SELECT 1", "DELETE FROM t WHERE id = 1"]
    )
    args: list[JsonValue] = Field(default_factory=list)

    @field_validator("statement")
    @classmethod
    def _one_statement(cls, value: str) -> str:
        # One approval, one statement: refused at submit, before anyone is asked.
        return sql_check(sql.one_statement, value)

    @property
    def sql_text(self) -> str:
        """The SQL this action runs (policies see its parsed facts as `sql`)."""
        return self.statement


class QueryParams(SqlParams):
    """One plain read-only query (SELECT, VALUES, TABLE or WITH of plain selects) and its args."""

    @field_validator("statement")
    @classmethod
    def _plain_query(cls, value: str) -> str:
        return sql_check(sql.plain_query, value)


# SQLSTATE classes where trying again later can succeed: connection, rollback, resources, admin.
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57P", "58")


def _sql_error(action: str, exc: Exception) -> Exception:
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, asyncpg.PostgresError) and state.startswith(_TRANSIENT_SQLSTATES):
        return exc
    # The rest (syntax, constraint, read-only, wrong arguments) fail the same way every time.
    return ExecutorError(f"{action} failed: {type(exc).__name__}: {exc}")


# Roles whose members reach beyond the database: the server's OS (COPY ... TO PROGRAM), its
# files (pg_read_file, COPY FROM a file) or other sessions (pg_terminate_backend). A READ ONLY
# transaction stops none of them.
PRIVILEGED_ROLES = (
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_signal_backend",
)
_ROLE_CHECK = """
SELECT r.rolname, r.rolsuper,
       ARRAY(SELECT g FROM unnest($1::text[]) AS g
             WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = g)
               AND pg_has_role(r.oid, g, 'MEMBER')) AS privileged
FROM pg_roles r WHERE r.rolname = current_user
"""


async def _check_role(conn: asyncpg.Connection, name: str, target: PostgresTarget) -> None:
    """Refuse a superuser or a member of PRIVILEGED_ROLES unless the target opts in."""
    if target.allow_privileged_role:
        return
    row = await conn.fetchrow(_ROLE_CHECK, list(PRIVILEGED_ROLES))
    if row is None:
        raise ExecutorError(f"target {name!r}: cannot read the connecting role from pg_roles")
    powers = (["superuser"] if row["rolsuper"] else []) + [
        f"a member of {g}" for g in row["privileged"]
    ]
    if powers:
        raise ExecutorError(
            f"target {name!r} connects as role {row['rolname']!r}, which is "
            f"{' and '.join(powers)}: any statement, even a read, could run programs, read "
            "server files or end other sessions. Connect as a least-privilege role (see "
            "docs/security.md), or set `allow_privileged_role: true` on the target to accept it"
        )


def _millis(duration: timedelta) -> str:
    return str(max(1, int(duration.total_seconds() * 1000)))


@contextlib.asynccontextmanager
async def _connection(
    action: str, name: str, target: PostgresTarget, *, write: bool = False
) -> AsyncIterator[asyncpg.Connection]:
    dsn = target.dsn(name, write=write)
    try:
        conn = await asyncpg.connect(
            dsn,
            timeout=target.connect_timeout.total_seconds(),
            # Set at connect time, so no statement of the action can run without them.
            server_settings={
                "statement_timeout": _millis(target.statement_timeout),
                "idle_in_transaction_session_timeout": _millis(target.idle_in_transaction_timeout),
                "application_name": "signoff",
            },
        )
    except (ValueError, asyncpg.ClientConfigurationError):
        # asyncpg's own message can quote the DSN, password included.
        raise ExecutorError(f"target {name!r}: the postgres DSN is not valid") from None
    except asyncpg.PostgresError as exc:
        raise _sql_error(action, exc) from None
    try:
        await _check_role(conn, name, target)
        # json/jsonb come back as structures, not strings holding JSON.
        for type_name in ("json", "jsonb"):
            await conn.set_type_codec(
                type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
        yield conn
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _sql_error(action, exc) from None
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=5)


# For other executors on Postgres targets (postgres.grant_role): the same checked connection.
connection = _connection


# What one read may pull from the database, measured as the rows' JSON: the result lands in
# workflow history (2 MB per payload) and the worker holds it in memory meanwhile.
MAX_RESULT_BYTES = 1024 * 1024
# Rows per round trip at most; fewer when rows are wide, so a chunk stays within the budget.
MAX_CHUNK_ROWS = 100


async def stream_rows(
    ctx: ExecutionContext[Any],
    statement: str,
    args: list[JsonValue],
    take: Callable[[dict[str, JsonValue]], bool],
    budget: int = MAX_RESULT_BYTES,
) -> bool:
    """Feed one query's rows, read in a READ ONLY transaction, to `take` until it refuses one.

    Returns True when `take` refused a row (the result is cut short). Rows come through a
    cursor in chunks sized to what is left of the byte budget; past the budget the action
    fails at once, not retryable.
    """
    assert isinstance(ctx.target, PostgresTarget)
    used, widest, count, chunk = 0, 1, 0, 1
    async with (
        _connection(ctx.request.action, ctx.target_name, ctx.target) as conn,
        conn.transaction(readonly=True),
    ):
        # A cursor is a prepared statement (extended protocol): one statement only, so none
        # can end the transaction, even if the parse check were bypassed.
        cursor = await conn.cursor(statement, *args)
        while True:
            # Start with one row and grow: the first wide row fails before a chunk of them
            # is held in memory.
            records = await cursor.fetch(chunk)
            if not records:
                return False
            for record in records:
                row = {key: json_safe(value) for key, value in record.items()}
                size = len(json.dumps(row, ensure_ascii=False).encode("utf-8"))
                used += size
                widest = max(widest, size)
                if used > budget:
                    raise ExecutorError(
                        f"{ctx.request.action}: the result exceeds the byte budget of "
                        f"{budget} bytes ({budget // 1024} KiB) after {count} rows; "
                        "select fewer or narrower rows"
                    )
                if not take(row):
                    return True
                count += 1
                if count % 100 == 0:
                    ctx.heartbeat({"rows": count})
            chunk = max(1, min(2 * chunk, MAX_CHUNK_ROWS, (budget - used) // widest))


async def sql_query(ctx: ExecutionContext[QueryParams]) -> JsonValue:
    """Run one plain query in a READ ONLY transaction and return up to 1000 rows as JSON."""
    rows: list[JsonValue] = []

    def take(row: dict[str, JsonValue]) -> bool:
        if len(rows) == MAX_ROWS:
            return False
        rows.append(row)
        return True

    truncated = await stream_rows(ctx, ctx.params.statement, ctx.params.args, take)
    return {"rows": rows, "row_count": len(rows), "truncated": truncated}


async def sql_execute(ctx: ExecutionContext[SqlParams]) -> JsonValue:
    """Run exactly one statement that may write, and return its status, e.g. "INSERT 0 1"."""
    assert isinstance(ctx.target, PostgresTarget)
    async with _connection("sql.execute", ctx.target_name, ctx.target, write=True) as conn:
        # A prepared statement (extended protocol) holds one statement: the simple-query
        # protocol that conn.execute uses without args would run `UPDATE ...; DROP ...` whole.
        prepared = await conn.prepare(ctx.params.statement)
        await prepared.fetch(*ctx.params.args)
        status = prepared.get_statusmsg()
    return {"status": status}


SQL_QUERY = Executor.define(
    sql_query,
    "sql.query",
    idempotent=True,
    timeout=timedelta(minutes=5),
    params_model=QueryParams,
    target_kind="postgres",
)
SQL_EXECUTE = Executor.define(
    sql_execute,
    "sql.execute",
    idempotent=False,
    timeout=timedelta(minutes=5),
    params_model=SqlParams,
    target_kind="postgres",
)
