"""The built-in executors: noop, sql.query, sql.execute, data.export, http.request, shell.run.

The executor interface and the registry are the SDK's (`signoff.executor`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import io
import json
import math
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg
import httpx
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from activities.targets import (
    HTTP_METHODS,
    HttpTarget,
    PostgresTarget,
    ShellTarget,
    TargetError,
)
from policies import sql
from policies.sql import SqlError
from signoff.executor import ExecutionContext, ExecutorError, registry
from signoff.neutralise import csv_formula_safe

P = TypeVar("P")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

MAX_ROWS = 1000
MAX_BODY_BYTES = 64 * 1024
MAX_OUTPUT_BYTES = 64 * 1024


# --- noop -----------------------------------------------------------------------------------


class NoopParams(BaseModel):
    """Anything goes; two optional params change behaviour for tests and benchmarks."""

    model_config = ConfigDict(extra="allow")

    sleep_seconds: float = Field(default=0, ge=0, le=60, description="sleep, heartbeating")
    fail: str | None = Field(default=None, description="fail, not retryable, with this message")


@registry.executor("noop", idempotent=True, timeout="2m", params_model=NoopParams)
async def noop(ctx: ExecutionContext[NoopParams]) -> JsonValue:
    """Echo the params back as {"echo": params}; any target name works.

    `sleep_seconds` (at most 60) sleeps first, heartbeating every second, and `fail` raises
    a non-retryable ExecutorError with that message: both exist to exercise the workflow.
    """
    remaining = ctx.params.sleep_seconds
    while remaining > 0:
        ctx.heartbeat({"sleeping": remaining})
        await asyncio.sleep(min(1.0, remaining))
        remaining -= 1.0
    if ctx.params.fail is not None:
        raise ExecutorError(ctx.params.fail)
    return {"echo": ctx.request.params}


# --- sql ------------------------------------------------------------------------------------


def _sql_check(check: Callable[[str], str], value: str) -> str:
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
        return _sql_check(sql.one_statement, value)

    @property
    def sql_text(self) -> str:
        """The SQL this action runs (policies see its parsed facts as `sql`)."""
        return self.statement


class QueryParams(SqlParams):
    """One plain read-only query (SELECT, VALUES, TABLE or WITH of plain selects) and its args."""

    @field_validator("statement")
    @classmethod
    def _plain_query(cls, value: str) -> str:
        return _sql_check(sql.plain_query, value)


def json_safe(value: Any) -> JsonValue:
    """Turn a value asyncpg returns into JSON: ISO dates, exact decimals as strings."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)


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


# What one read may pull from the database, measured as the rows' JSON: the result lands in
# workflow history (2 MB per payload) and the worker holds it in memory meanwhile.
MAX_RESULT_BYTES = 1024 * 1024
# Rows per round trip at most; fewer when rows are wide, so a chunk stays within the budget.
MAX_CHUNK_ROWS = 100


async def _stream_rows(
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


@registry.executor(
    "sql.query", idempotent=True, timeout="5m", params_model=QueryParams, target_kind="postgres"
)
async def sql_query(ctx: ExecutionContext[QueryParams]) -> JsonValue:
    """Run one plain query in a READ ONLY transaction and return up to 1000 rows as JSON."""
    rows: list[JsonValue] = []

    def take(row: dict[str, JsonValue]) -> bool:
        if len(rows) == MAX_ROWS:
            return False
        rows.append(row)
        return True

    truncated = await _stream_rows(ctx, ctx.params.statement, ctx.params.args, take)
    return {"rows": rows, "row_count": len(rows), "truncated": truncated}


# An export's result lands in workflow history, which caps payloads at 2 MB; a character can
# take 4 bytes.
MAX_EXPORT_CHARS = 256 * 1024


class ExportParams(BaseModel):
    """A read-only query whose rows are exported as CSV."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=100_000, examples=["SELECT 1"])
    args: list[JsonValue] = Field(default_factory=list)
    max_rows: int = Field(default=10_000, ge=1, le=100_000)

    @field_validator("query")
    @classmethod
    def _plain_query(cls, value: str) -> str:
        return _sql_check(sql.plain_query, value)

    @property
    def sql_text(self) -> str:
        """The SQL this action runs (policies see its parsed facts as `sql`)."""
        return self.query


def _csv_cell(value: JsonValue) -> str:
    """NULL as empty, structures as JSON; text a spreadsheet would run gets a leading `'`."""
    if value is None:
        return ""
    if isinstance(value, str):
        return csv_formula_safe(value)
    return json.dumps(value)  # numbers, booleans, lists, objects: never a formula


@registry.executor(
    "data.export", idempotent=True, timeout="10m", params_model=ExportParams, target_kind="postgres"
)
async def data_export(ctx: ExecutionContext[ExportParams]) -> JsonValue:
    """Export a plain query's rows as CSV (up to 256 Ki characters; more needs storage)."""
    columns: list[JsonValue] = []
    out = io.StringIO()
    # RFC 4180 line ends: the writer then quotes any cell holding CR or LF, so no cell
    # can start a new row.
    writer = csv.writer(out, lineterminator="\r\n")
    written = 0

    def take(row: dict[str, JsonValue]) -> bool:
        nonlocal written
        if written == 0:
            columns.extend(row)
            writer.writerow(columns)
        if written == ctx.params.max_rows:
            return False
        line_start = out.tell()
        writer.writerow(_csv_cell(v) for v in row.values())
        if out.tell() > MAX_EXPORT_CHARS:
            out.seek(line_start)
            out.truncate()
            return False
        written += 1
        return True

    truncated = await _stream_rows(ctx, ctx.params.query, ctx.params.args, take)
    if not columns:
        writer.writerow([])
    return {
        "format": "csv",
        "columns": columns,
        "row_count": written,
        "truncated": truncated,
        "csv": out.getvalue(),
    }


@registry.executor(
    "sql.execute", idempotent=False, timeout="5m", params_model=SqlParams, target_kind="postgres"
)
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


# --- http -----------------------------------------------------------------------------------


class HttpParams(BaseModel):
    """A request to a path under the target's base URL."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    method: str = "GET"
    path: str = Field(min_length=1, max_length=4000)
    body: JsonValue = Field(default=None, alias="json", description="JSON request body")
    query: dict[str, str | int | float | bool | list[str | int | float | bool]] = Field(
        default_factory=dict
    )

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        method = value.upper()
        if method not in HTTP_METHODS:
            raise ValueError(f"must be one of {', '.join(HTTP_METHODS)}")
        return method

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        # The target decides the host; a path that could leave the base URL is refused (SSRF).
        if any(ch in value for ch in "\\#") or any(ord(ch) < 33 for ch in value):
            raise ValueError("must not contain backslashes, '#', spaces or control characters")
        parts = urlsplit(value)
        if parts.scheme or parts.netloc or value.startswith("//"):
            raise ValueError("must be a path relative to the target, not a URL")
        segments = unquote(parts.path).split("/")
        if any(segment in ("..", ".") for segment in segments):
            raise ValueError("must not contain '.' or '..' segments")
        return value


_RESPONSE_HEADERS = ("content-type", "content-length", "location", "etag", "retry-after")


@registry.executor(
    "http.request", idempotent=False, timeout="2m", params_model=HttpParams, target_kind="http"
)
async def http_request(ctx: ExecutionContext[HttpParams]) -> JsonValue:
    """Send one HTTP request to the target with its stored headers.

    Not idempotent, so at most one attempt: the registry declares retries per action type,
    and one action type covers POST as well as GET. The request carries an `Idempotency-Key`
    header (the workflow id) unless the target sets one. Any status, 4xx and 5xx included,
    is a result: the response is what the approver asked to see.
    """
    assert isinstance(ctx.target, HttpTarget)
    params, target = ctx.params, ctx.target
    if params.method not in target.allowed_methods:
        raise ExecutorError(
            f"method {params.method} is not allowed on {ctx.target_name!r}: "
            f"use {', '.join(target.allowed_methods)}"
        )
    url = f"{target.base_url}/{params.path.lstrip('/')}"
    headers = target.resolved_headers(ctx.target_name)
    headers.setdefault("Idempotency-Key", ctx.idempotency_key)
    async with (
        httpx.AsyncClient(
            headers=headers, timeout=target.timeout.total_seconds(), follow_redirects=False
        ) as client,
        client.stream(
            params.method,
            url,
            params=params.query or None,
            json=params.body if "body" in params.model_fields_set else None,
        ) as response,
    ):
        raw = bytearray()
        truncated = False
        async for chunk in response.aiter_bytes():
            raw.extend(chunk)
            if len(raw) > MAX_BODY_BYTES:
                truncated = True
                del raw[MAX_BODY_BYTES:]
                break
    body: JsonValue = bytes(raw).decode(response.encoding or "utf-8", errors="replace")
    if not truncated and "json" in response.headers.get("content-type", ""):
        with contextlib.suppress(ValueError):
            body = json.loads(raw)
    return {
        "status": response.status_code,
        "headers": {h: response.headers[h] for h in _RESPONSE_HEADERS if h in response.headers},
        "body": body,
        "truncated": truncated,
    }


# --- shell ----------------------------------------------------------------------------------


class ShellParams(BaseModel):
    """A command as an argument vector; no shell ever interprets it."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1)


async def _read_capped(stream: asyncio.StreamReader | None, limit: int) -> tuple[bytes, bool]:
    # Keep the head, drain the rest, so a chatty command never blocks on a full pipe.
    if stream is None:
        return b"", False
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = limit - len(kept)
        if len(chunk) > room:
            truncated = True
        kept.extend(chunk[: max(room, 0)])
    return bytes(kept), truncated


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@registry.executor(
    "shell.run", idempotent=False, timeout="10m", params_model=ShellParams, target_kind="shell"
)
async def shell_run(ctx: ExecutionContext[ShellParams]) -> JsonValue:
    """Run an allow-listed command without a shell; a non-zero exit is a result, not an error.

    The command's environment is PATH, LANG and the target's `env` only: the worker's own
    environment holds the secrets of every target.
    """
    assert isinstance(ctx.target, ShellTarget)
    argv, target = ctx.params.argv, ctx.target
    if not target.allows(argv):
        raise ExecutorError(f"command {argv[0]!r} with these arguments is not allowed")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")}
    env.update(target.env)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=target.cwd,
            env=env,
            start_new_session=True,  # its own process group, so a timeout kills the children too
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise ExecutorError(f"cannot run {argv[0]!r}: {exc.strerror}") from None
    outputs = asyncio.gather(
        _read_capped(process.stdout, MAX_OUTPUT_BYTES),
        _read_capped(process.stderr, MAX_OUTPUT_BYTES),
        process.wait(),
    )
    deadline = asyncio.get_running_loop().time() + target.timeout.total_seconds()
    try:
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise ExecutorError(
                    f"command timed out after {target.timeout.total_seconds():g}s and was killed"
                )
            done, _ = await asyncio.wait({outputs}, timeout=min(left, 1.0))
            if done:
                break
            ctx.heartbeat({"pid": process.pid})
    except BaseException:
        _kill_group(process)
        outputs.cancel()
        with contextlib.suppress(BaseException):
            await outputs
        with contextlib.suppress(BaseException):
            await process.wait()
        raise
    (stdout, out_cut), (stderr, err_cut), exit_code = outputs.result()
    return {
        "exit_code": exit_code,
        "stdout": stdout.decode("utf-8", errors="replace"),
        "stderr": stderr.decode("utf-8", errors="replace"),
        "truncated": out_cut or err_cut,
    }


__all__ = [
    "ExecutionContext",
    "ExecutorError",
    "TargetError",
    "json_safe",
    "registry",
]
