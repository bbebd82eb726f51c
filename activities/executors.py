"""The registry of action types and the built-in executors.

An executor is an async function that performs one approved action. Register your own:

    from activities.executors import ExecutionContext, registry

    @registry.executor("ticket.create", idempotent=True, timeout="2m", params_model=Ticket)
    async def create_ticket(ctx: ExecutionContext[Ticket]) -> JsonValue:
        ...

`idempotent` decides retries: the workflow retries an idempotent action on transient errors
and runs any other action at most once. Raise `ExecutorError` for failures retrying cannot fix.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import importlib
import io
import json
import math
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg
import httpx
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator
from temporalio import activity

from activities.targets import (
    HTTP_METHODS,
    HttpTarget,
    PostgresTarget,
    ShellTarget,
    Target,
    TargetError,
    TargetKind,
)
from signoff.models import ACTION_PATTERN, ActionRequest, ExecutorSpec, parse_duration

P = TypeVar("P")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

MAX_ROWS = 1000
MAX_BODY_BYTES = 64 * 1024
MAX_OUTPUT_BYTES = 64 * 1024


class ExecutorError(Exception):
    """The action cannot run as asked (bad params, not allowed, wrong target); do not retry."""


@dataclass
class ExecutionContext(Generic[P]):
    """What an executor gets: the request, its validated params, the target and the key."""

    request: ActionRequest
    params: P
    target: Target | None
    idempotency_key: str

    @property
    def target_name(self) -> str:
        """The target's name as the request gave it."""
        return self.request.target

    def heartbeat(self, *details: Any) -> None:
        """Tell Temporal the executor is alive; a no-op outside an activity."""
        if activity.in_activity():
            activity.heartbeat(*details)


ExecutorFn = Callable[[ExecutionContext[Any]], Awaitable[JsonValue]]


@dataclass(frozen=True)
class Executor:
    """One registered action type."""

    action: str
    fn: ExecutorFn
    idempotent: bool
    timeout: timedelta = timedelta(minutes=5)
    params_model: type[BaseModel] | None = None
    target_kind: TargetKind | None = None
    description: str = ""

    def spec(self, heartbeat_timeout: timedelta | None = None) -> ExecutorSpec:
        """The retry and timeout contract the workflow runs this action with."""
        spec = ExecutorSpec(action=self.action, idempotent=self.idempotent, timeout=self.timeout)
        if heartbeat_timeout is not None:
            spec = spec.model_copy(update={"heartbeat_timeout": heartbeat_timeout})
        return spec

    def parse_params(self, params: dict[str, JsonValue]) -> Any:
        """Validate params against the declared model; errors name the field, not the value."""
        if self.params_model is None:
            return params
        try:
            return self.params_model.model_validate(params)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ExecutorError(f"invalid params for {self.action}: {problems}") from None

    def check_target(self, name: str, target: Target | None) -> None:
        """Refuse a missing target or one of the wrong kind."""
        if self.target_kind is None:
            return
        if target is None:
            raise ExecutorError(f"unknown target {name!r}: not in the targets file")
        if target.kind != self.target_kind:
            raise ExecutorError(
                f"{self.action} needs a {self.target_kind} target; {name!r} is {target.kind}"
            )

    async def run(
        self, request: ActionRequest, target: Target | None, idempotency_key: str
    ) -> JsonValue:
        """Validate, build the context and call the executor function."""
        self.check_target(request.target, target)
        params = self.parse_params(request.params)
        ctx: ExecutionContext[Any] = ExecutionContext(
            request=request, params=params, target=target, idempotency_key=idempotency_key
        )
        return await self.fn(ctx)


@dataclass
class ExecutorRegistry:
    """Action type -> executor. Registering an action twice is an error."""

    _executors: dict[str, Executor] = field(default_factory=dict)

    def register(self, executor: Executor) -> Executor:
        """Add an executor; refuses a second one for the same action."""
        if not re.match(ACTION_PATTERN, executor.action):
            raise ValueError(f"invalid action name {executor.action!r}: e.g. ticket.create")
        if executor.action in self._executors:
            raise ValueError(f"an executor for {executor.action!r} is already registered")
        self._executors[executor.action] = executor
        return executor

    def executor(
        self,
        action: str,
        *,
        idempotent: bool,
        timeout: str | timedelta = timedelta(minutes=5),
        params_model: type[BaseModel] | None = None,
        target_kind: TargetKind | None = None,
    ) -> Callable[[F], F]:
        """Decorator registering an async function as the executor for `action`."""
        duration = parse_duration(timeout)
        if not isinstance(duration, timedelta):
            raise ValueError(f"invalid timeout {timeout!r} for {action}")

        def decorate(fn: F) -> F:
            doc = (fn.__doc__ or "").strip().splitlines()
            self.register(
                Executor(
                    action=action,
                    fn=fn,
                    idempotent=idempotent,
                    timeout=duration,
                    params_model=params_model,
                    target_kind=target_kind,
                    description=doc[0] if doc else "",
                )
            )
            return fn

        return decorate

    def get(self, action: str) -> Executor | None:
        """The executor for `action`, if registered."""
        return self._executors.get(action)

    def spec(self, action: str, heartbeat_timeout: timedelta | None = None) -> ExecutorSpec | None:
        """The executor spec for `action`, or None when no executor is registered."""
        executor = self.get(action)
        return executor.spec(heartbeat_timeout) if executor else None

    def actions(self) -> list[str]:
        """All registered action types, sorted."""
        return sorted(self._executors)

    def params_schema(self, action: str) -> dict[str, Any] | None:
        """JSON schema of the action's params, or None when it declares no model."""
        executor = self.get(action)
        if executor is None or executor.params_model is None:
            return None
        return executor.params_model.model_json_schema()

    def load_modules(self, names: list[str]) -> None:
        """Import modules that register executors as a side effect of being imported."""
        for name in names:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ImportError(f"executor module {name!r} cannot be imported: {exc}") from exc


registry = ExecutorRegistry()


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


class SqlParams(BaseModel):
    """One SQL statement with positional $1, $2... arguments."""

    model_config = ConfigDict(extra="forbid")

    statement: str = Field(min_length=1, max_length=100_000)
    args: list[JsonValue] = Field(default_factory=list)


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


@contextlib.asynccontextmanager
async def _connection(
    action: str, name: str, target: PostgresTarget
) -> AsyncIterator[asyncpg.Connection]:
    dsn = target.dsn(name)
    try:
        conn = await asyncpg.connect(dsn, timeout=target.connect_timeout.total_seconds())
    except (ValueError, asyncpg.ClientConfigurationError):
        # asyncpg's own message can quote the DSN, password included.
        raise ExecutorError(f"target {name!r}: the postgres DSN is not valid") from None
    except asyncpg.PostgresError as exc:
        raise _sql_error(action, exc) from None
    try:
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


async def _read_rows(
    ctx: ExecutionContext[Any], statement: str, args: list[JsonValue], limit: int
) -> tuple[list[dict[str, JsonValue]], bool]:
    """Up to `limit` rows of one statement run in a READ ONLY transaction; True if cut short."""
    assert isinstance(ctx.target, PostgresTarget)
    rows: list[dict[str, JsonValue]] = []
    async with (
        _connection(ctx.request.action, ctx.target_name, ctx.target) as conn,
        conn.transaction(readonly=True),
    ):
        # A cursor is a prepared statement: one statement only, so none can end the transaction.
        cursor = conn.cursor(statement, *args, prefetch=100)
        async for record in cursor:
            if len(rows) == limit:
                return rows, True
            rows.append({key: json_safe(value) for key, value in record.items()})
            if len(rows) % 100 == 0:
                ctx.heartbeat({"rows": len(rows)})
    return rows, False


@registry.executor(
    "sql.query", idempotent=True, timeout="5m", params_model=SqlParams, target_kind="postgres"
)
async def sql_query(ctx: ExecutionContext[SqlParams]) -> JsonValue:
    """Run one query in a READ ONLY transaction and return up to 1000 rows as JSON objects."""
    rows, truncated = await _read_rows(ctx, ctx.params.statement, ctx.params.args, MAX_ROWS)
    return {"rows": list[JsonValue](rows), "row_count": len(rows), "truncated": truncated}


# An export's result lands in workflow history, which caps payloads at 2 MB; a character can
# take 4 bytes.
MAX_EXPORT_CHARS = 256 * 1024


class ExportParams(BaseModel):
    """A read-only query whose rows are exported as CSV."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=100_000)
    args: list[JsonValue] = Field(default_factory=list)
    max_rows: int = Field(default=10_000, ge=1, le=100_000)


def _csv_cell(value: JsonValue) -> str:
    """NULL as empty, structures as JSON; text a spreadsheet would run gets a leading `'`."""
    from signoff.neutralise import csv_formula_safe  # here, to keep this file's imports as is

    if value is None:
        return ""
    if isinstance(value, str):
        return csv_formula_safe(value)
    return json.dumps(value)  # numbers, booleans, lists, objects: never a formula


@registry.executor(
    "data.export", idempotent=True, timeout="10m", params_model=ExportParams, target_kind="postgres"
)
async def data_export(ctx: ExecutionContext[ExportParams]) -> JsonValue:
    """Export a read-only query's rows as CSV (up to 256 Ki characters; more needs storage)."""
    rows, truncated = await _read_rows(ctx, ctx.params.query, ctx.params.args, ctx.params.max_rows)
    columns: list[JsonValue] = list(rows[0]) if rows else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    written = 0
    for row in rows:
        line_start = out.tell()
        writer.writerow(_csv_cell(v) for v in row.values())
        if out.tell() > MAX_EXPORT_CHARS:
            out.seek(line_start)
            out.truncate()
            truncated = True
            break
        written += 1
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
    """Run one statement that may write, and return its status, e.g. "INSERT 0 1"."""
    assert isinstance(ctx.target, PostgresTarget)
    async with _connection("sql.execute", ctx.target_name, ctx.target) as conn:
        status = await conn.execute(ctx.params.statement, *ctx.params.args)
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
    "Executor",
    "ExecutorError",
    "ExecutorRegistry",
    "TargetError",
    "json_safe",
    "registry",
]
