"""Executors against real parts: embedded Postgres, a local HTTP server, real subprocesses."""

from __future__ import annotations

import asyncio
import csv
import io
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import BaseModel, Field, JsonValue
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import activities.targets as targets_module
import signoff.executor as executor_module
from activities.execution import ExecutionActivities
from activities.executors import BUILTINS, register_builtins
from activities.executors.noop import noop
from activities.targets import GenericTarget, TargetError, Targets, load_targets
from signoff.executor import ExecutionContext, ExecutorRegistry, registry
from signoff.models import ActionRequest
from workflows.messages import ExecuteInput, ExecuteResult

SECRET_TOKEN = "Bearer s3cr3t-token-value"


def request(action: str, target: str = "anything", **params: Any) -> ActionRequest:
    """An approved request as the workflow would pass it."""
    return ActionRequest(
        action=action, target=target, params=params, justification="test", requester="alice"
    )


async def run(
    executors: ExecutionActivities,
    req: ActionRequest,
    key: str = "wf-1",
    env: ActivityEnvironment | None = None,
) -> Any:
    """Call the activity inside a real activity context and return the executor's result."""
    env = env or ActivityEnvironment()
    result: ExecuteResult = await env.run(
        executors.execute_action, ExecuteInput(request=req, idempotency_key=key)
    )
    return result.result


async def failure(executors: ExecutionActivities, req: ActionRequest) -> ApplicationError:
    """The ApplicationError the activity raises for `req`."""
    with pytest.raises(ApplicationError) as info:
        await run(executors, req)
    return info.value


# --- fixtures -------------------------------------------------------------------------------


class Recorder:
    """What the test HTTP server saw."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []


@pytest.fixture(scope="session")
async def http_server() -> AsyncIterator[tuple[str, Recorder]]:
    """A real aiohttp server on a random local port that records every request."""
    recorder = Recorder()

    async def handle(req: web.Request) -> web.StreamResponse:
        body = await req.text()
        recorder.requests.append(
            {
                "method": req.method,
                "path": req.path,
                "query": dict(req.query),
                "headers": dict(req.headers),
                "body": body,
            }
        )
        if req.path.endswith("/big"):
            return web.Response(text="x" * 200_000)
        return web.json_response({"method": req.method, "path": req.path, "body": body})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", recorder
    await runner.cleanup()


@pytest.fixture
def targets_file(
    tmp_path: Path, postgres_url: str, http_server: tuple[str, Recorder], monkeypatch: Any
) -> Path:
    """A targets file naming the real Postgres and HTTP server; secrets via env and file."""
    dsn_file = tmp_path / "pg_dsn"
    dsn_file.write_text(postgres_url + "\n")
    monkeypatch.setenv("TEST_BILLING_AUTH", SECRET_TOKEN)
    monkeypatch.setenv("TEST_TICKET_TOKEN", "tkt-secret")
    monkeypatch.setenv("TEST_BAD_DSN", "postgresql://bob:hunter2@127.0.0.1:1/db")
    path = tmp_path / "targets.yaml"
    path.write_text(
        f"""
targets:
  db: {{kind: postgres, dsn_file: {dsn_file}, allow_privileged_role: true}}
  dead-db: {{kind: postgres, dsn_env: TEST_BAD_DSN, connect_timeout: 2s}}
  api:
    kind: http
    base_url: {http_server[0]}/v1
    headers_env: {{Authorization: TEST_BILLING_AUTH}}
    allowed_methods: [GET, POST]
  unset-api: {{kind: http, base_url: http://127.0.0.1:1, headers_env: {{X-Key: TEST_NOT_SET}}}}
  shell:
    kind: shell
    allowed: [["echo"], ["sleep"], ["env"], ["sh", "-c", "sleep 37.5 & sleep 37.5"]]
    timeout: 1s
  tickets: {{kind: generic, config: {{project: OPS}}, secrets_env: {{token: TEST_TICKET_TOKEN}}}}
"""
    )
    return path


@pytest.fixture
def executors(targets_file: Path) -> ExecutionActivities:
    """The activity class with the default registry and the test targets."""
    return ExecutionActivities(registry, load_targets(targets_file))


# --- registry -------------------------------------------------------------------------------


async def test_noop_echoes_params(executors: ExecutionActivities) -> None:
    assert await run(executors, request("noop", a=1, b=["x"])) == {"echo": {"a": 1, "b": ["x"]}}


async def test_noop_fail_is_not_retryable(executors: ExecutionActivities) -> None:
    error = await failure(executors, request("noop", fail="boom"))
    assert error.non_retryable
    assert error.type == "ExecutorError"
    assert error.message == "boom"


async def test_unknown_action_is_not_retryable(executors: ExecutionActivities) -> None:
    error = await failure(executors, request("no.such"))
    assert error.non_retryable
    assert "no.such" in error.message


class Ticket(BaseModel):
    title: str = Field(min_length=1)
    priority: int = Field(default=3, ge=1, le=5)


async def test_custom_executor_gets_context(targets_file: Path) -> None:
    own = ExecutorRegistry()
    seen: list[ExecutionContext[Ticket]] = []

    @own.executor("ticket.create", idempotent=True, timeout="2m", params_model=Ticket)
    async def create_ticket(ctx: ExecutionContext[Ticket]) -> JsonValue:
        """Create a ticket."""
        seen.append(ctx)
        assert isinstance(ctx.target, GenericTarget)
        ctx.heartbeat("working")
        return {"title": ctx.params.title, "token_len": len(ctx.target.secret("tickets", "token"))}

    executors = ExecutionActivities(own, load_targets(targets_file))
    result = await run(executors, request("ticket.create", "tickets", title="disk"), key="wf-42")
    assert result == {"title": "disk", "token_len": len("tkt-secret")}
    assert seen[0].idempotency_key == "wf-42"
    assert seen[0].params == Ticket(title="disk")
    assert own.actions() == ["ticket.create"]
    spec = executors.spec("ticket.create", timedelta(seconds=7))
    assert spec is not None
    assert (spec.idempotent, spec.timeout, spec.heartbeat_timeout) == (
        True,
        timedelta(minutes=2),
        timedelta(seconds=7),
    )
    assert own.get("ticket.create") is not None
    assert own.get("ticket.create").description == "Create a ticket."  # type: ignore[union-attr]
    assert own.params_schema("ticket.create")["required"] == ["title"]  # type: ignore[index]
    assert executors.spec("nope", timedelta(seconds=7)) is None

    error = await failure(executors, request("ticket.create", "tickets", priority=9))
    assert error.non_retryable
    assert "title: Field required" in error.message
    assert "priority: Input should be less than or equal to 5" in error.message


def test_duplicate_registration_is_an_error() -> None:
    own = ExecutorRegistry()

    @own.executor("a.b", idempotent=True)
    async def first(ctx: ExecutionContext[Any]) -> JsonValue:
        return None

    with pytest.raises(ValueError, match="already registered"):

        @own.executor("a.b", idempotent=False)
        async def second(ctx: ExecutionContext[Any]) -> JsonValue:
            return None

    with pytest.raises(ValueError, match="invalid action name"):
        own.executor("Bad Name", idempotent=True)(first)


BUILTIN_IDEMPOTENT = {
    "data.export": True,
    "postgres.grant_role": False,
    "http.request": False,
    "noop": True,
    "shell.run": False,
    "sql.execute": False,
    "sql.query": True,
}


def test_builtins_and_specs() -> None:
    own = ExecutorRegistry()
    assert own.actions() == []  # importing the built-ins registered nothing
    register_builtins(own)
    assert own.actions() == sorted(BUILTIN_IDEMPOTENT)
    idempotent = {a: own.spec(a).idempotent for a in own.actions()}  # type: ignore[union-attr]
    assert idempotent == BUILTIN_IDEMPOTENT
    assert own.spec("missing") is None
    schema = own.params_schema("http.request")
    assert schema is not None
    assert "json" in schema["properties"]
    assert own.get("noop").description.startswith("Echo the params")  # type: ignore[union-attr]
    # The processes (and the test session) prepare the SDK's registry the same way.
    assert set(BUILTIN_IDEMPOTENT) <= set(registry.actions())


def test_register_builtins_twice_keeps_them_and_refuses_others() -> None:
    own = ExecutorRegistry()
    register_builtins(own)
    register_builtins(own)
    assert own.actions() == sorted(e.action for e in BUILTINS)
    taken = ExecutorRegistry()

    @taken.executor("noop", idempotent=False)
    async def other(ctx: ExecutionContext[Any]) -> JsonValue:
        return None

    with pytest.raises(ValueError, match="already registered"):
        register_builtins(taken)
    with pytest.raises(ValueError, match="already registered"):
        own.executor("noop", idempotent=True)(noop)


def test_load_modules(tmp_path: Path, monkeypatch: Any) -> None:
    fresh = ExecutorRegistry()
    monkeypatch.setattr(executor_module, "registry", fresh)
    (tmp_path / "signoff_test_plugin.py").write_text(
        "from signoff.executor import registry\n"
        "@registry.executor('plugin.hello', idempotent=True)\n"
        "async def hello(ctx):\n"
        "    return 'hi'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "signoff_test_plugin", raising=False)
    fresh.load_modules(["signoff_test_plugin"])
    assert fresh.actions() == ["plugin.hello"]
    with pytest.raises(ImportError, match="no_such_plugin"):
        fresh.load_modules(["no_such_plugin"])


async def beats_of_noop(targets_file: Path, *, every: float, sleep: float) -> list[tuple[Any, ...]]:
    """The heartbeats (their details) of a `noop` sleeping `sleep` s, beating every `every` s."""
    executors = ExecutionActivities(
        registry, load_targets(targets_file), heartbeat_every=timedelta(seconds=every)
    )
    beats: list[tuple[Any, ...]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    assert await run(executors, request("noop", sleep_seconds=sleep), env=env) == {
        "echo": {"sleep_seconds": sleep}
    }
    return beats


async def test_heartbeats_during_long_runs(targets_file: Path) -> None:
    beats = await beats_of_noop(targets_file, every=0.2, sleep=1.5)
    assert len([b for b in beats if b == ()]) >= 5  # the activity's own background beat
    assert any(b and "sleeping" in b[0] for b in beats)  # the executor's progress beats


async def test_an_action_done_within_one_interval_sends_no_heartbeat(targets_file: Path) -> None:
    # Each beat the SDK sends is a write to the run's state in Temporal; the heartbeat
    # timeout counts from the start, so a quick action is as safe without any.
    beats = await beats_of_noop(targets_file, every=0.5, sleep=0.1)
    assert [b for b in beats if b == ()] == []


# --- targets file ---------------------------------------------------------------------------


def test_example_targets_file_loads() -> None:
    targets = load_targets(targets_module.DEFAULT_TARGETS_PATH)
    assert {"prod-db", "billing-api", "ops-shell"} <= set(targets.names())


def test_targets_typo_names_file_target_and_field(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text("targets:\n  prod-db: {kind: postgres, dsn_evn: postgres://u:pw@h/db}\n")
    with pytest.raises(TargetError) as info:
        load_targets(path)
    message = str(info.value)
    assert str(path) in message
    assert "target 'prod-db': field dsn_evn: Extra inputs are not permitted" in message
    assert "pw@h" not in message

    path.write_text("targets:\n  web: {kind: htp, base_url: http://x}\n")
    with pytest.raises(TargetError, match=r"target 'web'.*htp"):
        load_targets(path)


def test_missing_targets_file(tmp_path: Path, monkeypatch: Any) -> None:
    with pytest.raises(TargetError, match="not found"):
        load_targets(tmp_path / "nope.yaml")
    monkeypatch.setattr(targets_module, "DEFAULT_TARGETS_PATH", tmp_path / "default.yaml")
    assert load_targets() == Targets()


async def test_missing_secret_names_variable(executors: ExecutionActivities) -> None:
    error = await failure(executors, request("http.request", "unset-api", path="/x"))
    assert error.non_retryable
    assert error.message == "target 'unset-api': environment variable TEST_NOT_SET is not set"


async def test_wrong_or_unknown_target(executors: ExecutionActivities) -> None:
    error = await failure(executors, request("sql.query", "api", statement="SELECT 1"))
    assert error.non_retryable
    assert "sql.query needs a postgres target; 'api' is http" in error.message
    error = await failure(executors, request("sql.query", "nowhere", statement="SELECT 1"))
    assert "unknown target 'nowhere'" in error.message


# --- sql ------------------------------------------------------------------------------------


async def test_sql_execute_and_query(executors: ExecutionActivities) -> None:
    create = "CREATE TABLE IF NOT EXISTS exec_t (id int, price numeric, at timestamptz, doc jsonb)"
    assert await run(executors, request("sql.execute", "db", statement=create)) == {
        "status": "CREATE TABLE"
    }
    insert = "INSERT INTO exec_t VALUES ($1, 1.10, '2025-01-02T03:04:05Z', $2::text::jsonb)"
    result = await run(
        executors, request("sql.execute", "db", statement=insert, args=[7, '{"k": [1]}'])
    )
    assert result == {"status": "INSERT 0 1"}

    rows = await run(
        executors,
        request("sql.query", "db", statement="SELECT * FROM exec_t WHERE id = $1", args=[7]),
    )
    assert rows == {
        "rows": [{"id": 7, "price": "1.10", "at": "2025-01-02T03:04:05+00:00", "doc": {"k": [1]}}],
        "row_count": 1,
        "truncated": False,
    }


async def test_sql_query_refuses_writes(executors: ExecutionActivities) -> None:
    error = await failure(
        executors, request("sql.query", "db", statement="CREATE TABLE sneaky (id int)")
    )
    assert error.non_retryable
    assert "must be a plain query" in error.message
    assert "CreateStmt" in error.message
    # One statement only: it cannot switch the transaction to read-write first.
    sneaky = "SET TRANSACTION READ WRITE; CREATE TABLE sneaky (id int)"
    error = await failure(executors, request("sql.query", "db", statement=sneaky))
    assert error.non_retryable
    assert "exactly one SQL statement" in error.message
    # A plain SELECT that writes through a function still meets the READ ONLY transaction.
    await run(
        executors, request("sql.execute", "db", statement="CREATE SEQUENCE IF NOT EXISTS q_seq")
    )
    error = await failure(
        executors, request("sql.query", "db", statement="SELECT nextval('q_seq')")
    )
    assert "read-only transaction" in error.message


async def test_sql_query_caps_rows(executors: ExecutionActivities) -> None:
    result = await run(
        executors, request("sql.query", "db", statement="SELECT generate_series(1, 1500) AS n")
    )
    assert result["row_count"] == 1000
    assert result["truncated"] is True


async def test_data_export_returns_csv_read_only_and_capped(executors: ExecutionActivities) -> None:
    query = "SELECT n, 'r' || n AS name, (n % 2 = 0) AS even FROM generate_series(1, 5) AS n"
    result = await run(executors, request("data.export", "db", query=query, max_rows=3))
    assert result["columns"] == ["n", "name", "even"]
    assert result["csv"] == "n,name,even\r\n1,r1,false\r\n2,r2,true\r\n3,r3,false\r\n"
    assert (result["row_count"], result["truncated"]) == (3, True)
    wide = "SELECT repeat('x', 1000) AS blob FROM generate_series(1, 1000)"
    big = await run(executors, request("data.export", "db", query=wide, max_rows=1000))
    assert big["truncated"] is True
    assert len(big["csv"]) <= 256 * 1024
    assert big["csv"].endswith("\n")
    assert big["csv"].count("\n") == big["row_count"] + 1
    error = await failure(executors, request("data.export", "db", query="DROP TABLE exec_t"))
    assert "must be a plain query" in error.message


async def test_sql_errors(executors: ExecutionActivities) -> None:
    error = await failure(executors, request("sql.execute", "db", statement="SELEC 1"))
    assert error.non_retryable
    assert "syntax error" in error.message
    error = await failure(executors, request("sql.query", "db", statement="SELECT $1::int"))
    assert error.non_retryable
    assert "expects 1 argument" in error.message

    # Connection refused is transient: retryable, so idempotent actions get another go.
    error = await failure(executors, request("sql.query", "dead-db", statement="SELECT 1"))
    assert not error.non_retryable
    assert "hunter2" not in error.message
    assert "hunter2" not in str(error.__cause__)


# --- http -----------------------------------------------------------------------------------


async def test_http_get_and_post(
    executors: ExecutionActivities, http_server: tuple[str, Recorder]
) -> None:
    _, recorder = http_server
    recorder.requests.clear()
    result = await run(
        executors, request("http.request", "api", path="/invoices/7", query={"full": True})
    )
    assert result["status"] == 200
    assert result["body"]["path"] == "/v1/invoices/7"
    assert result["headers"]["content-type"].startswith("application/json")
    seen = recorder.requests[-1]
    assert seen["headers"]["Authorization"] == SECRET_TOKEN
    assert seen["headers"]["Idempotency-Key"] == "wf-1"
    assert seen["query"] == {"full": "true"}

    result = await run(
        executors,
        request("http.request", "api", method="post", path="refunds", json={"amount": 5}),
        key="wf-post",
    )
    assert result["body"] == {"method": "POST", "path": "/v1/refunds", "body": '{"amount":5}'}
    assert recorder.requests[-1]["headers"]["Idempotency-Key"] == "wf-post"

    result = await run(executors, request("http.request", "api", path="big"))
    assert result["truncated"] is True
    assert len(result["body"]) == 64 * 1024


@pytest.mark.parametrize(
    "path",
    [
        "http://169.254.169.254/latest",
        "//evil.example/x",
        "../admin",
        "/v1/../../admin",
        "/%2e%2e/admin",
        "a\\..\\b",
        "/x#frag",
    ],
)
async def test_http_path_must_stay_under_base(executors: ExecutionActivities, path: str) -> None:
    error = await failure(executors, request("http.request", "api", path=path))
    assert error.non_retryable
    assert "path:" in error.message


async def test_http_method_not_allowed(executors: ExecutionActivities) -> None:
    error = await failure(executors, request("http.request", "api", method="DELETE", path="/x"))
    assert error.non_retryable
    assert "DELETE is not allowed" in error.message


# --- shell ----------------------------------------------------------------------------------


async def test_shell_allowed_command_runs(executors: ExecutionActivities) -> None:
    result = await run(executors, request("shell.run", "shell", argv=["echo", "hello", "world"]))
    assert result == {"exit_code": 0, "stdout": "hello world\n", "stderr": "", "truncated": False}


async def test_shell_env_holds_no_worker_secrets(executors: ExecutionActivities) -> None:
    result = await run(executors, request("shell.run", "shell", argv=["env"]))
    assert "TEST_BILLING_AUTH" not in result["stdout"]
    assert SECRET_TOKEN not in result["stdout"]


@pytest.mark.parametrize("argv", [["rm", "-rf", "/tmp/x"], ["ech"], ["sh", "-c", "id"]])
async def test_shell_refuses_commands_not_allowed(
    executors: ExecutionActivities, argv: list[str]
) -> None:
    error = await failure(executors, request("shell.run", "shell", argv=argv))
    assert error.non_retryable
    assert "not allowed" in error.message


def _sleepers() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry / "cmdline").read_bytes() == b"sleep\x0037.5\x00":
                pids.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return pids


async def test_shell_timeout_kills_the_process_group(executors: ExecutionActivities) -> None:
    started = time.monotonic()
    error = await failure(
        executors, request("shell.run", "shell", argv=["sh", "-c", "sleep 37.5 & sleep 37.5"])
    )
    assert time.monotonic() - started < 5
    assert error.non_retryable
    assert "timed out after 1s" in error.message
    deadline = time.monotonic() + 2
    while _sleepers() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _sleepers() == [], "background child of the timed-out command survived"


async def test_data_export_prefixes_formula_cells(executors: ExecutionActivities) -> None:
    query = (
        "SELECT * FROM (VALUES ('=HYPERLINK(\"http://evil.test\")', -1), ('+1', 2), "
        "('-2+3', 3), ('@SUM(A1)', 4), (E'\\tx', 5), ('plain', 7)) AS t(cell, n)"
    )
    result = await run(executors, request("data.export", "db", query=query, max_rows=10))
    rows = list(csv.reader(io.StringIO(result["csv"], newline="")))[1:]
    assert [r[0] for r in rows] == [
        '\'=HYPERLINK("http://evil.test")',
        "'+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\tx",
        "plain",
    ]
    assert rows[0][1] == "-1"  # a number stays a number
    cr = await run(executors, request("data.export", "db", query="SELECT E'\\r=1+1' AS c"))
    assert cr["csv"] == 'c\r\n"\'\r=1+1"\r\n'


def test_a_generic_target_is_what_custom_executors_are_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An executor module checks targets against the SDK's interface, never the server's class."""
    monkeypatch.setenv("TICKETS_TOKEN", "s3cret")
    generic = targets_module.GenericTarget(
        kind="generic", config={"project": "OPS"}, secrets_env={"token": "TICKETS_TOKEN"}
    )
    http = targets_module.HttpTarget(kind="http", base_url="https://tickets.example.com")
    assert isinstance(generic, executor_module.ConfiguredTarget)
    assert generic.secret("ticketing", "token") == "s3cret"
    assert not isinstance(http, executor_module.ConfiguredTarget)
