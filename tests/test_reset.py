"""Resets and re-runs under one workflow id never execute an action twice (real Temporal, PG)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import JsonValue
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import (
    DeleteWorkflowExecutionRequest,
    ResetWorkflowExecutionRequest,
)
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode
from typer.testing import CliRunner

from activities.ledger.migrations import MIGRATIONS
from activities.ledger.store import Ledger, LedgerSchemaBehind
from signoff.executor import ExecutionContext, ExecutorRegistry
from signoff.models import ActionRequest, ActionStatus, RefusalCode, Status
from tests.cli import app
from tests.conftest import Gate, worker_parts
from tests.gateway_fixtures import api, build_app
from tests.pg import create_database
from workers.audit.history import fetch_lines
from workers.audit.verify import cross_check, verify_chain
from workers.settings import Settings
from workers.worker import build_worker
from workflows.action import ActionWorkflow
from workflows.messages import AuditEvent, AuditKind

RERUN = "a reset or re-run never executes twice"


@pytest.fixture
async def own_ledger(postgres_url: str) -> AsyncIterator[Ledger]:
    """A ledger on a fresh database, so its rows and claims belong to this test alone."""
    ledger = await Ledger.connect(await create_database(postgres_url), migrate=True)
    yield ledger
    await ledger.close()


def counting(path: Path) -> ExecutorRegistry:
    """A registry whose `noop` appends a line to `path` each time it really runs."""
    probe = ExecutorRegistry()

    @probe.executor("noop", idempotent=True, timeout="30s")
    async def append_a_line(ctx: ExecutionContext[dict[str, JsonValue]]) -> JsonValue:
        """The side effect a second execution would repeat."""
        with path.open("a") as out:
            out.write(f"{ctx.idempotency_key}\n")
        return "done"

    return probe


@asynccontextmanager
async def counting_worker(
    client: Client, settings: Settings, ledger: Ledger, effects: Path
) -> AsyncIterator[None]:
    """A real worker on `ledger` whose noop executor counts its runs in `effects`."""
    parts = worker_parts(settings, ledger)
    parts.executors = counting(effects)
    async with build_worker(client, settings, parts):
        yield


async def approved_and_run(
    gate: Gate, target: str
) -> tuple[WorkflowHandle[ActionWorkflow, ActionStatus], str]:
    """Submit to `target`, approve as alice, wait for success; the handle and its run id."""
    handle = await gate.submit(target)
    await gate.wait_for(handle, "pending_approval")
    await gate.decide(handle, "alice@example.com", reason="go")
    assert (await handle.result()).status is Status.SUCCEEDED
    assert handle.result_run_id is not None
    return handle, handle.result_run_id


def execute_scheduled(events: list[HistoryEvent]) -> int:
    """The index of the event that scheduled `execute_action`."""
    return next(
        i
        for i, e in enumerate(events)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "execute_action"
    )


def runs_of(path: Path) -> int:
    """How many times the executor ran."""
    return len(path.read_text().splitlines()) if path.exists() else 0


async def completed_task_ids(client: Client, workflow_id: str, run_id: str) -> list[int]:
    """The WorkflowTaskCompleted event ids of one run, in order."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    history = await handle.fetch_history()
    return [
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]


async def reset(client: Client, workflow_id: str, run_id: str, event_id: int) -> str:
    """Reset a run to just before the workflow task `event_id` completed; the new run's id."""
    response = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
            reason="test: replay the action",
            workflow_task_finish_event_id=event_id,
            request_id=str(uuid.uuid4()),
        )
    )
    return response.run_id


async def deleted(client: Client, workflow_id: str) -> None:
    """Delete a workflow's runs, as Temporal does once retention ends, and wait until gone."""
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id),
        )
    )
    for _ in range(600):
        try:
            await client.get_workflow_handle(workflow_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return
            raise
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id} was never deleted")


def latest(client: Client, workflow_id: str) -> WorkflowHandle[ActionWorkflow, ActionStatus]:
    """The workflow id's newest run."""
    return client.get_workflow_handle_for(ActionWorkflow.run, workflow_id)


async def test_reset_of_a_succeeded_action_to_its_start_never_executes_again(
    client: Client, settings: Settings, own_ledger: Ledger, tmp_path: Path
) -> None:
    effects = tmp_path / "runs.txt"
    async with counting_worker(client, settings, own_ledger, effects):
        handle = await Gate(client, settings).submit("sandbox-reset")
        first = await handle.result()
        assert first.status is Status.SUCCEEDED
        assert runs_of(effects) == 1
        first_run = handle.result_run_id
        assert first_run is not None

        task_ids = await completed_task_ids(client, handle.id, first_run)
        new_run = await reset(client, handle.id, first_run, task_ids[0])
        assert new_run != first_run
        second = await latest(client, handle.id).result()

    assert runs_of(effects) == 1, "the executor ran again after the reset"
    assert second.status is Status.REJECTED
    assert second.error is not None
    assert f"run {first_run}" in second.error
    assert RERUN in second.error
    assert [r.code for r in second.refused] == [RefusalCode.ALREADY_EXECUTED]
    lines = [line.text for line in await fetch_lines(client, handle.id)]
    assert any(line.startswith(f"reset from run {first_run}") for line in lines), lines

    rows = await own_ledger.events(handle.id)
    assert {r.run_id for r in rows} == {first_run, new_run}
    refused = [r for r in rows if r.kind == AuditKind.REFUSED]
    assert [(r.run_id, r.payload["code"]) for r in refused] == [(new_run, "already_executed")]
    outcomes = [(r.run_id, r.payload["status"]) for r in rows if r.kind == AuditKind.OUTCOME]
    assert outcomes == [(first_run, "succeeded"), (new_run, "rejected")]
    assert (await verify_chain(own_ledger)).ok
    # Both runs are in Temporal and in the ledger: nothing to report.
    checked = await cross_check(own_ledger, client, task_queue=settings.task_queue)
    assert checked.mismatches == []


async def test_reset_after_approval_is_refused_by_the_execution_claim(
    client: Client, settings: Settings, own_ledger: Ledger, tmp_path: Path
) -> None:
    # The reset point lies after the start check: the executor's claim is the last line.
    effects = tmp_path / "runs.txt"
    gate = Gate(client, settings)
    async with counting_worker(client, settings, own_ledger, effects):
        handle, first_run = await approved_and_run(gate, "one-reset")
        assert runs_of(effects) == 1

        history = await client.get_workflow_handle(handle.id, run_id=first_run).fetch_history()
        events = list(history.events)
        scheduled = execute_scheduled(events)
        point = max(
            e.event_id
            for e in events[:scheduled]
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        )
        new_run = await reset(client, handle.id, first_run, point)
        new = latest(client, handle.id)
        for _ in range(200):
            status = await new.query(ActionWorkflow.status)
            if status.status is not Status.EVALUATING:
                break
            await asyncio.sleep(0.05)
        if status.status is Status.PENDING_APPROVAL:
            # The reset may have dropped the approval: approve the new run again. Temporal may
            # also re-apply the first approval meanwhile, and then this one is refused as no
            # longer pending, or the run has already ended (refused by the claim) when it
            # arrives; either way the claim must stop a second execution.
            with contextlib.suppress(WorkflowUpdateFailedError, RPCError):
                await gate.decide(new, "alice@example.com", reason="again")
        second = await new.result()

    assert runs_of(effects) == 1, "the executor ran again after the reset"
    assert second.status is Status.FAILED
    assert second.error is not None
    assert f"already executed by run {first_run}" in second.error
    assert RERUN in second.error
    rows = [r for r in await own_ledger.events(handle.id) if r.run_id == new_run]
    results = [r.payload["error"] for r in rows if r.kind == AuditKind.EXECUTION_RESULT]
    assert len(results) == 1
    assert f"already executed by run {first_run}" in str(results[0])
    assert [r.payload["status"] for r in rows if r.kind == AuditKind.OUTCOME] == ["failed"]
    # The first run's approval stays on record next to the new run's rows.
    decisions = [r for r in await own_ledger.events(handle.id) if r.kind == AuditKind.DECISION]
    assert first_run in {r.run_id for r in decisions}


async def test_same_idempotency_key_after_retention_is_refused_by_the_gateway(
    client: Client, settings: Settings, own_ledger: Ledger, tmp_path: Path
) -> None:
    effects = tmp_path / "runs.txt"
    app = build_app(client, settings, ledger=own_ledger)
    body = {
        "action": "noop",
        "target": "sandbox-retention",
        "params": {},
        "justification": "nightly cleanup",
        "idempotency_key": f"key-{uuid.uuid4()}",
    }
    async with counting_worker(client, settings, own_ledger, effects), api(app, "bot") as http:
        created = await http.post("/v1/actions?wait=30", json=body)
        assert created.status_code == 202, created.text
        action_id = created.json()["id"]
        assert created.json()["status"] == "succeeded"
        assert runs_of(effects) == 1

        # Retention (here: an explicit delete) removes the first run from Temporal.
        await deleted(client, action_id)

        again = await http.post("/v1/actions?wait=5", json=body)
        await asyncio.sleep(1)

    assert again.status_code == 409, again.text
    message = again.text
    assert action_id in message
    assert "succeeded" in message
    assert "not run again" in message
    assert runs_of(effects) == 1
    with pytest.raises(RPCError):
        await client.get_workflow_handle(action_id).describe()


async def test_a_direct_second_run_after_retention_refuses_to_start(
    client: Client, settings: Settings, own_ledger: Ledger, tmp_path: Path
) -> None:
    # Someone with Temporal access starts the same workflow id again, past the gateway.
    effects = tmp_path / "runs.txt"
    gate = Gate(client, settings)
    async with counting_worker(client, settings, own_ledger, effects):
        handle = await gate.submit("sandbox-rerun")
        assert (await handle.result()).status is Status.SUCCEEDED
        first_run = handle.result_run_id
        await deleted(client, handle.id)
        # The same signed request, started again under the same id.
        request = ActionRequest.model_validate((await own_ledger.events(handle.id))[0].payload)
        second = await client.start_workflow(
            ActionWorkflow.run, request, id=handle.id, task_queue=settings.task_queue
        )
        outcome = await second.result()

    assert runs_of(effects) == 1
    assert outcome.status is Status.REJECTED
    assert outcome.error is not None
    assert f"run {first_run}" in outcome.error
    # The first run is gone from Temporal but not from the ledger: cross-check says so.
    report = await cross_check(own_ledger, client, task_queue=settings.task_queue)
    assert [(m.action_id, m.field, m.ledger) for m in report.mismatches] == [
        (handle.id, "run", f"run {first_run} missing from Temporal")
    ]


async def test_cross_check_reports_a_run_missing_from_the_ledger(
    client: Client, settings: Settings, own_ledger: Ledger, postgres_url: str, tmp_path: Path
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    gate = Gate(client, settings)
    recorded = worker_parts(settings, own_ledger)
    async with build_worker(client, settings, recorded):
        kept = await gate.submit("sandbox-kept")
        assert (await kept.result()).status is Status.SUCCEEDED
    # A worker writing to another database: its run never reaches this ledger.
    elsewhere = await Ledger.connect(await create_database(postgres_url), migrate=True)
    try:
        async with build_worker(client, settings, worker_parts(settings, elsewhere)):
            lost = await gate.submit("sandbox-lost")
            assert (await lost.result()).status is Status.SUCCEEDED
    finally:
        await elsewhere.close()
    report = await cross_check(own_ledger, client, since=since, task_queue=settings.task_queue)
    assert report.checked == 1
    assert [(m.action_id, m.field, m.ledger) for m in report.mismatches] == [(lost.id, "run", None)]
    assert f"run {lost.result_run_id}" in str(report.mismatches[0].temporal)
    assert "missing from ledger" in str(report.mismatches[0].temporal)

    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        [
            "audit",
            "verify",
            "--database-url",
            own_ledger.pool._connect_args[0],  # type: ignore[attr-defined]
            "--cross-check",
            "--address",
            client.service_client.config.target_host,
            "--task-queue",
            settings.task_queue,
            "--since",
            since.isoformat(),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "ledger intact" in result.output
    assert "1 mismatches" in result.output
    assert f"{lost.id}: run {lost.result_run_id}" in result.output
    assert "missing from ledger" in result.output


async def test_execution_claim_is_per_run(own_ledger: Ledger) -> None:
    first = await own_ledger.claim_execution("act-claim", "run-a", "d" * 64)
    assert first.run_id == "run-a"
    # The same run retrying an idempotent executor finds its own claim.
    assert (await own_ledger.claim_execution("act-claim", "run-a", "d" * 64)).run_id == "run-a"
    # Any other run finds the first one's, however many try.
    others = await asyncio.gather(
        *(own_ledger.claim_execution("act-claim", f"run-{i}", "d" * 64) for i in range(8))
    )
    assert {c.run_id for c in others} == {"run-a"}
    assert first.granted
    assert not any(c.granted for c in others)
    async with own_ledger.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM executions") == 1


async def test_runs_racing_for_a_fresh_claim_get_one_holder(own_ledger: Ledger) -> None:
    # The claim is one statement: racers on a fresh action must still see one holder, the
    # one whose insert won, never none (a snapshot from before the winner's commit).
    for round_ in range(5):
        action = f"act-race-{round_}"
        claims = await asyncio.gather(
            *(own_ledger.claim_execution(action, f"run-{i}", "d" * 64) for i in range(8))
        )
        holders = {c.run_id for c in claims}
        assert len(holders) == 1, holders
        granted = [c for c in claims if c.granted]
        assert len(granted) == 1
        assert granted[0].run_id in holders
        assert all(c.claimed_at is not None for c in claims)


async def test_a_run_from_before_claims_holds_the_execution(own_ledger: Ledger) -> None:
    # A run from before claims existed left only its result row (run_id ''): any new run is
    # refused with that row's time, and nothing is claimed for it.
    events = [
        AuditEvent(
            action_id="act-legacy",
            run_id="",
            seq=seq,
            kind=kind,
            digest="d" * 64,
            at=datetime(2026, 1, 1, tzinfo=UTC),
            payload={},
        )
        for seq, kind in enumerate([AuditKind.REQUESTED, AuditKind.EXECUTION_RESULT])
    ]
    await own_ledger.append(events)
    claim = await own_ledger.claim_execution("act-legacy", "run-new", "d" * 64)
    assert not claim.granted
    assert claim.run_id == "(unrecorded)"
    assert claim.claimed_at == datetime(2026, 1, 1, tzinfo=UTC)
    async with own_ledger.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM executions") == 0


async def test_a_ledger_behind_the_code_is_refused_with_the_command_that_fixes_it(
    postgres_url: str,
) -> None:
    url = await create_database(postgres_url)
    behind = await Ledger.connect(url)
    try:
        async with behind.pool.acquire() as conn:
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for migration in MIGRATIONS[:-1]:
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
        with pytest.raises(LedgerSchemaBehind) as refused:
            await behind.require_schema()
        latest = MIGRATIONS[-1].version
        assert str(refused.value) == (
            f"the audit ledger's schema is at version {latest - 1}, this signoff needs "
            f"{latest}: run `signoff db migrate` first"
        )
        assert await behind.migrate() == [latest]
        await behind.require_schema()
    finally:
        await behind.close()


async def test_reset_after_execution_keeps_its_result_and_runs_nothing_again(
    client: Client, settings: Settings, own_ledger: Ledger, tmp_path: Path
) -> None:
    # After the claim: the new run replays the claim and the executor's result from history.
    effects = tmp_path / "runs.txt"
    gate = Gate(client, settings)
    async with counting_worker(client, settings, own_ledger, effects):
        handle, first_run = await approved_and_run(gate, "one-last")
        history = await client.get_workflow_handle(handle.id, run_id=first_run).fetch_history()
        events = list(history.events)
        scheduled = events[execute_scheduled(events)].event_id
        executed = next(
            i
            for i, e in enumerate(events)
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            and e.activity_task_completed_event_attributes.scheduled_event_id == scheduled
        )
        # The task that learnt the result and wrote it to the ledger: redone by the new run.
        point = next(
            e.event_id
            for e in events[executed:]
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        )
        new_run = await reset(client, handle.id, first_run, point)
        second = await asyncio.wait_for(latest(client, handle.id).result(), 60)

    assert runs_of(effects) == 1
    assert second.status is Status.SUCCEEDED
    assert [d.approver for d in second.decisions] == ["alice@example.com"]
    rows = await own_ledger.events(handle.id)
    assert [r.payload["status"] for r in rows if r.kind == AuditKind.OUTCOME] == [
        "succeeded",
        "succeeded",
    ]
    assert {r.run_id for r in rows} == {first_run, new_run}
    checked = await cross_check(own_ledger, client, task_queue=settings.task_queue)
    assert checked.checked == 1
    assert checked.mismatches == []


async def test_reset_of_a_pending_action_keeps_its_refusals_and_executes_once(
    client: Client, settings: Settings, own_ledger: Ledger, tmp_path: Path
) -> None:
    effects = tmp_path / "runs.txt"
    gate = Gate(client, settings)
    async with counting_worker(client, settings, own_ledger, effects):
        handle = await gate.submit("one-pending")
        await gate.wait_for(handle, "pending_approval")
        # The agent's owner tries to approve its own agent's action: refused, recorded.
        with pytest.raises(WorkflowUpdateFailedError):
            await gate.decide(handle, "dave@example.com", reason="mine")
        first_run = handle.result_run_id
        assert first_run is not None
        task_ids = await completed_task_ids(client, handle.id, first_run)
        new_run = await reset(client, handle.id, first_run, task_ids[0])
        new = latest(client, handle.id)
        await gate.wait_for(new, "pending_approval")
        await gate.decide(new, "alice@example.com", reason="go")
        outcome = await new.result()

    assert outcome.status is Status.SUCCEEDED
    assert runs_of(effects) == 1
    rows = await own_ledger.events(handle.id)
    refused = [(r.run_id, r.actor, r.payload["code"]) for r in rows if r.kind == AuditKind.REFUSED]
    assert (first_run, "dave@example.com", "self_approval") in refused
    decisions = [(r.run_id, r.actor) for r in rows if r.kind == AuditKind.DECISION]
    assert decisions == [(new_run, "alice@example.com")]
    assert [r.run_id for r in await own_ledger.runs(handle.id)] == [first_run, new_run]
