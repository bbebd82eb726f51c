"""The SQL attacks of issue 12 against the real Postgres: each was possible, each is refused.

Read-only reads with side effects (COPY TO PROGRAM, pg_read_file, pg_terminate_backend),
several statements under one approval, destructive SQL that a regex policy missed, params a
policy saw raw, and one read that could take the worker's memory.
"""

from __future__ import annotations

import os
import resource
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.execution import ExecutionActivities
from activities.executors.sql import SqlParams, sql_execute
from activities.policy import PolicyActivities
from activities.targets import PostgresTarget, load_targets
from policies import EXAMPLES_DIR, load_directory, load_policy
from policies.lint import condition_warnings
from policies.sql import SqlError, facts, one_statement, plain_query
from signoff.executor import ExecutionContext, ExecutorError, registry
from signoff.models import ActionRequest
from tests.gateway_fixtures import api, build_app
from tests.pg import create_database, with_database
from workers.dev.postgres import ANALYTICS_READER, ANALYTICS_WRITER, sample_analytics
from workers.settings import Settings
from workflows.messages import ExecuteInput, ExecuteResult

EXAMPLE_POLICY = EXAMPLES_DIR / "policy.yaml"
DATA = Path(__file__).parent / "data"


def request(action: str, target: str, **params: Any) -> ActionRequest:
    """An approved request as the workflow would pass it."""
    return ActionRequest(
        action=action, target=target, params=params, justification="test", requester="alice"
    )


async def run(executors: ExecutionActivities, req: ActionRequest) -> Any:
    """The executor's result, run inside a real activity context."""
    result: ExecuteResult = await ActivityEnvironment().run(
        executors.execute_action, ExecuteInput(request=req, idempotency_key="wf-sql")
    )
    return result.result


async def failure(executors: ExecutionActivities, req: ActionRequest) -> ApplicationError:
    """The (non-retryable) error the execute activity raises for `req`."""
    with pytest.raises(ApplicationError) as info:
        await run(executors, req)
    return info.value


async def superuser(url: str, sql: str) -> None:
    """Run setup SQL as the cluster's superuser."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def role(postgres_url: str, name: str, *grants: str) -> str:
    """A LOGIN role (NOSUPERUSER) granted `grants`; its DSN to the session database."""
    conn = await asyncpg.connect(postgres_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
            await conn.execute(f"CREATE ROLE {name} LOGIN NOSUPERUSER")
    finally:
        await conn.close()
    for grant in grants:
        await superuser(postgres_url, f"GRANT {grant} TO {name}")
    return with_database(postgres_url, user=name)


@pytest.fixture
async def executors(tmp_path: Path, postgres_url: str) -> ExecutionActivities:
    """Targets on the session's Postgres: the superuser with and without opt-in, other roles."""
    signaller = await role(postgres_url, "sig_signaller", "pg_signal_backend")
    reader = await role(postgres_url, "sig_reader")
    await superuser(postgres_url, "GRANT pg_read_all_data TO sig_reader")
    dsns = {"su": postgres_url, "signaller": signaller, "reader": reader}
    lines = ["targets:"]
    for name, dsn in dsns.items():
        file = tmp_path / f"{name}.dsn"
        file.write_text(dsn)
        lines.append(f"  {name}: {{kind: postgres, dsn_file: {file}}}")
    file = tmp_path / "su.dsn"
    lines.append(f"  su-optin: {{kind: postgres, dsn_file: {file}, allow_privileged_role: true}}")
    lines.append(
        f"  su-quick: {{kind: postgres, dsn_file: {file}, allow_privileged_role: true,"
        " statement_timeout: 1s}"
    )
    path = tmp_path / "targets.yaml"
    path.write_text("\n".join(lines) + "\n")
    return ExecutionActivities(registry, load_targets(path))


# --- one approval, one statement -------------------------------------------------------------


def test_the_parser_counts_statements_not_semicolons() -> None:
    assert one_statement("SELECT ';' -- ; DROP TABLE t") == "SELECT ';' -- ; DROP TABLE t"
    with pytest.raises(SqlError, match=r"exactly one SQL statement.*found 2: UpdateStmt, DropStmt"):
        one_statement("UPDATE t SET x = 1; DROP TABLE t")
    with pytest.raises(SqlError, match="found 0"):
        one_statement("-- nothing ; /* at all */ ;")
    with pytest.raises(SqlError, match="not valid PostgreSQL"):
        one_statement("SELEC 1")


async def test_two_statements_are_422_at_submit(client: Client, settings: Settings) -> None:
    app: FastAPI = build_app(client, settings)
    async with api(app, "bot") as http:
        response: httpx.Response = await http.post(
            "/v1/actions",
            json={
                "action": "sql.execute",
                "target": "db",
                "params": {"statement": "UPDATE t SET x = 1; DROP TABLE t"},
                "justification": "fix one row",
            },
        )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_params"
    assert "exactly one SQL statement" in error["message"]
    assert "found 2: UpdateStmt, DropStmt" in error["message"]


async def test_two_statements_never_run_even_past_the_parser(
    executors: ExecutionActivities, postgres_url: str
) -> None:
    table = f"victim_{uuid.uuid4().hex[:8]}"
    setup = f"CREATE TABLE {table} (x int); INSERT INTO {table} VALUES (1)"  # noqa: S608
    await superuser(postgres_url, setup)
    attack = f"UPDATE {table} SET x = 2; DROP TABLE {table}"  # noqa: S608
    error = await failure(executors, request("sql.execute", "su-optin", statement=attack))
    assert error.non_retryable
    assert "exactly one SQL statement" in error.message
    # Params that skipped validation still meet the extended protocol: one statement or none.
    ctx: ExecutionContext[SqlParams] = ExecutionContext(
        request=request("sql.execute", "su-optin", statement=attack),
        params=SqlParams.model_construct(statement=attack, args=[]),
        target=executors.targets.get("su-optin"),
        idempotency_key="wf-sql",
    )
    with pytest.raises(ExecutorError, match="multiple commands"):
        await sql_execute(ctx)
    conn = await asyncpg.connect(postgres_url)
    try:
        # Neither statement ran.
        assert await conn.fetchval(f"SELECT x FROM {table}") == 1  # noqa: S608
    finally:
        await conn.close()


# --- read-only reads ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
        "/* report */ COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
        "WITH d AS (DELETE FROM pg_class WHERE false RETURNING 1) SELECT * FROM d",
        "SELECT * INTO copied FROM pg_class",
        "SELECT * FROM pg_class FOR UPDATE",
        "EXPLAIN ANALYZE DELETE FROM pg_class WHERE false",
        "SET ROLE postgres",
    ],
)
async def test_query_and_export_take_one_plain_query_only(
    executors: ExecutionActivities, tmp_path: Path, statement: str
) -> None:
    marker = tmp_path / "pwned"
    text = statement.format(marker=marker)
    for action, key in (("sql.query", "statement"), ("data.export", "query")):
        error = await failure(executors, request(action, "su-optin", **{key: text}))
        assert error.non_retryable
        assert "must be a plain query" in error.message
    assert not marker.exists()


def test_plain_queries_pass() -> None:
    for text in (
        "SELECT 1",
        "  (SELECT 1) UNION (SELECT 2)",
        "VALUES (1), (2)",
        "TABLE pg_class",
        "WITH a AS (SELECT 1 AS n) SELECT n FROM a",
    ):
        assert plain_query(text) == text


async def test_superuser_target_is_refused_unless_it_opts_in(
    executors: ExecutionActivities,
) -> None:
    read_file = "SELECT pg_read_file('PG_VERSION')"
    error = await failure(executors, request("sql.query", "su", statement=read_file))
    assert error.non_retryable
    assert "which is superuser" in error.message
    assert "allow_privileged_role: true" in error.message
    assert "least-privilege role" in error.message
    # The documented opt-in: the operator accepts the risk for this target.
    result = await run(executors, request("sql.query", "su-optin", statement=read_file))
    assert result["row_count"] == 1


async def test_signal_backend_member_is_refused(
    executors: ExecutionActivities, postgres_url: str
) -> None:
    victim = await asyncpg.connect(postgres_url)
    try:
        pid = victim.get_server_pid()
        kill = f"SELECT pg_terminate_backend({pid})"
        error = await failure(executors, request("sql.query", "signaller", statement=kill))
        assert "a member of pg_signal_backend" in error.message
        assert await victim.fetchval("SELECT 1") == 1  # the other session lives on
    finally:
        await victim.close()


async def test_least_privilege_reader_runs_queries_but_no_server_functions(
    executors: ExecutionActivities,
) -> None:
    result = await run(
        executors, request("sql.query", "reader", statement="SELECT count(*) AS n FROM pg_class")
    )
    assert result["rows"][0]["n"] > 0
    error = await failure(
        executors, request("sql.query", "reader", statement="SELECT pg_read_file('PG_VERSION')")
    )
    assert "permission denied" in error.message


async def test_every_connection_has_timeouts(executors: ExecutionActivities) -> None:
    settings = (
        "SELECT current_setting('statement_timeout') AS st,"
        " current_setting('idle_in_transaction_session_timeout') AS idle"
    )
    result = await run(executors, request("sql.query", "su-optin", statement=settings))
    assert result["rows"] == [{"st": "1min", "idle": "30s"}]
    error = await failure(
        executors, request("sql.query", "su-quick", statement="SELECT pg_sleep(5)")
    )
    assert "statement timeout" in error.message


# --- bounded output -------------------------------------------------------------------------


async def test_wide_rows_exceed_the_byte_budget_at_once(executors: ExecutionActivities) -> None:
    wide = "SELECT repeat('x', 3000000) AS blob FROM generate_series(1, 100)"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    for action, key in (("sql.query", "statement"), ("data.export", "query")):
        error = await failure(executors, request(action, "su-optin", **{key: wide}))
        assert error.non_retryable
        assert "exceeds the byte budget of 1048576 bytes (1024 KiB)" in error.message
    assert time.monotonic() - started < 10
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    # 100 x 3 MB is 300 MB; streaming holds about one row.
    assert grown_kib < 100 * 1024


# --- the dev stack's roles ------------------------------------------------------------------


async def test_dev_roles_are_least_privilege_and_cannot_reach_the_ledger(
    postgres_url: str, tmp_path: Path
) -> None:
    ledger_url = await create_database(postgres_url)
    urls = await sample_analytics(ledger_url, tmp_path)
    assert (tmp_path / "roles" / f"{ANALYTICS_READER}.password").stat().st_mode & 0o077 == 0
    path = tmp_path / "targets.yaml"
    path.write_text(
        "targets:\n  analytics: {kind: postgres, dsn_env: T_READER, write_dsn_env: T_WRITER}\n"
    )
    os.environ["T_READER"], os.environ["T_WRITER"] = urls.reader, urls.writer
    try:
        executors = ExecutionActivities(registry, load_targets(path))
        # The role check passes: neither role is privileged.
        count = await run(
            executors, request("sql.query", "analytics", statement="SELECT count(*) FROM customers")
        )
        assert count["rows"][0]["count"] >= 8
        for side_effect in ("SELECT pg_notify('x', 'y')", "SELECT pg_read_file('PG_VERSION')"):
            error = await failure(
                executors, request("sql.query", "analytics", statement=side_effect)
            )
            assert "permission denied" in error.message
        updated = await run(
            executors,
            request(
                "sql.execute",
                "analytics",
                statement="UPDATE customers SET region = region WHERE id = $1",
                args=[1],
            ),
        )
        assert updated == {"status": "UPDATE 1"}
        error = await failure(
            executors, request("sql.execute", "analytics", statement="DROP TABLE customers")
        )
        assert "must be owner" in error.message
    finally:
        del os.environ["T_READER"], os.environ["T_WRITER"]
    for user in (ANALYTICS_READER, ANALYTICS_WRITER):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(with_database(ledger_url, user=user))


# --- policies decide on facts ---------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "/* routine cleanup */ DROP TABLE users",
        "-- harmless\nDROP TABLE users",
        "\n\t  TrUnCaTe\n\tusers",
        "WITH gone AS (DELETE FROM users RETURNING id) SELECT count(*) FROM gone",
        "(WITH gone AS (DELETE FROM users RETURNING id) SELECT count(*) FROM gone)",
        "DELETE FROM users -- WHERE id = 1",
        "DELETE/**/FROM users",
        "UPDATE users SET admin = true",
        "DROP SCHEMA public CASCADE",
    ],
)
def test_destructive_sql_is_denied_however_it_is_written(statement: str) -> None:
    policy = load_policy(EXAMPLE_POLICY)
    req = request("sql.execute", "analytics", statement=statement)
    verdict = policy.evaluate(req, None, registry.parsed_params(req.action, req.params))
    assert (verdict.rule_id, verdict.effect) == ("destructive-sql", "deny")


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT pg_notify('jobs', 'run')",
        "SELECT PG_CATALOG.pg_terminate_backend(pid) FROM pg_stat_activity",
        "SELECT 1 FROM (SELECT pg_sleep(60)) AS s",
        "WITH f AS (SELECT pg_read_file('/etc/passwd') AS t) SELECT t FROM f",
    ],
)
def test_reads_with_side_effects_are_denied_by_the_example(statement: str) -> None:
    policy = load_policy(EXAMPLE_POLICY)
    for action, key in (("sql.query", "statement"), ("data.export", "query")):
        req = request(action, "analytics", **{key: statement})
        verdict = policy.evaluate(req, None, registry.parsed_params(req.action, req.params))
        assert (verdict.rule_id, verdict.effect) == ("reads-with-side-effects", "deny")


def test_sql_facts() -> None:
    found = facts("WITH d AS (DELETE FROM s.t WHERE a = 1 RETURNING *) SELECT now() FROM d")
    assert found.kind == "SelectStmt"
    assert found.kinds == ["DeleteStmt", "SelectStmt"]
    assert found.tables == ["s.t"]  # `d` is the CTE, not a table
    assert found.functions == ["now"]
    assert found.statement_count == 1
    assert not found.read_only


POLICY = """\
version: 1
default: {effect: allow}
rules:
  - id: no-http-delete
    match: {action: http.request}
    when: 'params.method == "DELETE"'
    effect: deny
  - id: customers-need-approval
    match: {action: sql.query}
    when: '"customers" in sql.tables'
    effect: require_approval
    approvals: [{group: dba, min: 1}]
    expires_after: 1h
  - id: no-sql-facts-elsewhere
    match: {action: noop}
    when: 'sql.statement_count != 0 || sql.kind != ""'
    effect: deny
"""


async def test_policy_sees_normalised_params_and_sql_facts(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    activities = PolicyActivities(
        load_policy(path), load_directory(DATA / "directory.yaml"), registry, channels=["console"]
    )

    async def verdict(action: str, **params: Any) -> tuple[str, str]:
        req = ActionRequest(
            action=action, target="t", params=params, justification="x", requester="agent:bot"
        )
        evaluation = await ActivityEnvironment().run(activities.evaluate_policy, req)
        return evaluation.verdict.rule_id, evaluation.verdict.effect

    # The executor upper-cases the method; the rule sees what would be sent.
    assert await verdict("http.request", method="delete", path="/users/1") == (
        "no-http-delete",
        "deny",
    )
    assert await verdict("sql.query", statement='SELECT * FROM "customers"') == (
        "customers-need-approval",
        "require_approval",
    )
    assert await verdict("noop") == ("default", "allow")
    # Params the executor would refuse are denied before anyone is asked.
    rule, effect = await verdict("sql.execute", statement="SELECT 1; SELECT 2")
    assert (rule, effect) == ("invalid-params", "deny")


def test_targets_reject_two_write_dsns() -> None:
    with pytest.raises(ValueError, match="at most one of write_dsn_env or write_dsn_file"):
        PostgresTarget(kind="postgres", dsn_env="A", write_dsn_env="B", write_dsn_file=Path("c"))


def test_policy_check_samples_sql_facts(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "version: 1\ndefault: {effect: allow}\nrules:\n"
        "  - id: first-table\n    match: {action: sql.execute}\n"
        "    when: 'sql.tables[0] == \"t\"'\n    effect: deny\n"
    )
    warnings = condition_warnings(load_policy(path), registry)
    # A statement without tables (the model's own example) makes the condition error.
    assert [(w.rule_id, w.action) for w in warnings] == [("first-table", "sql.execute")]
    assert "index out of bounds" in warnings[0].error
