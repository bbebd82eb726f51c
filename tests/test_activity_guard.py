"""Attacks with namespace write access: run signoff's activities without signoff's workflows.

Anyone who may write to the namespace can start an activity on its own (a standalone
activity) or run a worker of their own whose workflow schedules signoff's activities on
signoff's task queue. The worker here is the real one (`build_worker`), on the real dev
server, with the real ledger; every attempt must be refused before anything runs or is
written.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio import workflow
from temporalio.client import ActivityFailureError, Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from activities.execution import NO_WRITE_AHEAD
from activities.ledger.store import Ledger
from signoff.models import ActionRequest
from tests.test_slack import pending_status
from workers.activity_guard import ACTIVITY_REFUSED
from workers.settings import Settings
from workflows.action import WORKFLOW_NAME
from workflows.messages import (
    AuditBatch,
    AuditEvent,
    AuditKind,
    ExecuteInput,
    NotifyInput,
    RevertInput,
)

NO_RETRY = RetryPolicy(maximum_attempts=1)


def request() -> ActionRequest:
    """An action the test policy would ask a human to approve first."""
    return ActionRequest(
        action="noop",
        target="cel-db",
        params={"rows": 10_000_000},
        justification="nobody approved this",
        requester="agent:mallory",
    )


def forged_row(action_id: str, at: datetime) -> AuditEvent:
    """A write-ahead row nobody approved, as an attacker would like it in the ledger."""
    return AuditEvent(
        action_id=action_id,
        seq=0,
        kind=AuditKind.EXECUTION_STARTED,
        digest=request().digest,
        actor="alice",
        at=at,
        payload={"approved_by": "alice"},
    )


async def refused_standalone(client: Client, queue: str, name: str, arg: object) -> str:
    """Start activity `name` on its own on `queue`; the ApplicationError's type and message."""
    handle = await client.start_activity(
        name,
        arg,
        id=f"standalone-{uuid.uuid4().hex}",
        task_queue=queue,
        start_to_close_timeout=timedelta(seconds=10),
        retry_policy=NO_RETRY,
    )
    with pytest.raises(ActivityFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    return f"{cause.type}: {cause.message}"


async def ledger_rows(ledger: Ledger, action_id: str) -> int:
    """Rows and execution claims the ledger holds for an action id."""
    async with ledger.pool.acquire() as conn:
        rows = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE action_id = $1", action_id
        )
        claims = await conn.fetchval(
            "SELECT count(*) FROM executions WHERE action_id = $1", action_id
        )
    return int(rows) + int(claims)


async def test_a_standalone_execute_action_is_refused_and_runs_nothing(
    client: Client, settings: Settings, ledger: Ledger, worker: None
) -> None:
    action_id = f"act-{uuid.uuid4().hex}"
    answer = await refused_standalone(
        client,
        settings.task_queue,
        "execute_action",
        ExecuteInput(request=request(), idempotency_key=action_id),
    )
    assert answer.startswith(f"{ACTIVITY_REFUSED}: refused: execute_action was started on its own")
    assert await ledger_rows(ledger, action_id) == 0


async def test_standalone_ledger_writes_and_reverts_are_refused(
    client: Client, settings: Settings, ledger: Ledger, worker: None
) -> None:
    action_id = f"act-{uuid.uuid4().hex}"
    forged = AuditBatch(events=[forged_row(action_id, datetime.now(UTC))])
    answer = await refused_standalone(client, settings.task_queue, "record_audit_events", forged)
    assert answer.startswith(f"{ACTIVITY_REFUSED}: refused: record_audit_events was started")
    revert = RevertInput(request=request(), idempotency_key=action_id)
    answer = await refused_standalone(client, settings.task_queue, "revert_action", revert)
    assert answer.startswith(f"{ACTIVITY_REFUSED}: refused: revert_action was started")
    assert await ledger_rows(ledger, action_id) == 0


async def attack(queue: str) -> list[str]:
    """Execute unapproved, forge the write-ahead row, execute again; how each attempt ended."""
    action_id = workflow.info().workflow_id
    attempts: list[tuple[str, object]] = [
        ("execute_action", ExecuteInput(request=request(), idempotency_key=action_id)),
        ("record_audit_events", AuditBatch(events=[forged_row(action_id, workflow.now())])),
        ("execute_action", ExecuteInput(request=request(), idempotency_key=action_id)),
        # Signoff's bot posting a request that shows one action and approves another.
        ("notify", NotifyInput(channel="slack", status=pending_status(), groups=["security"])),
    ]
    answers = []
    for name, arg in attempts:
        try:
            await workflow.execute_activity(
                name,
                arg,
                task_queue=queue,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=NO_RETRY,
            )
            answers.append(f"{name}: ran")
        except ActivityError as err:
            cause = err.cause
            assert isinstance(cause, ApplicationError)
            answers.append(f"{name}: {cause.type}: {cause.message}")
    return answers


@workflow.defn(name="Impostor", sandboxed=False)
class Impostor:
    """An attacker's workflow on their own worker, aiming at signoff's task queue."""

    @workflow.run
    async def run(self, queue: str) -> list[str]:
        """Attack signoff's queue."""
        return await attack(queue)


@workflow.defn(name=WORKFLOW_NAME, sandboxed=False)
class Impersonator:
    """The same attacker's code under signoff's own workflow type name."""

    @workflow.run
    async def run(self, queue: str) -> list[str]:
        """Attack signoff's queue."""
        return await attack(queue)


@pytest.mark.parametrize("kind", ["Impostor", "Impersonator"])
async def test_a_stranger_workflow_cannot_run_or_record_an_action(
    client: Client, settings: Settings, ledger: Ledger, worker: None, kind: str
) -> None:
    theirs = f"mallory-{uuid.uuid4()}"
    shape: type = Impostor if kind == "Impostor" else Impersonator
    action_id = f"act-{uuid.uuid4().hex}"
    async with Worker(client, task_queue=theirs, workflows=[shape]):
        handle = await client.start_workflow(
            WORKFLOW_NAME if kind == "Impersonator" else "Impostor",
            settings.task_queue,
            id=action_id,
            task_queue=theirs,
            result_type=list[str],
        )
        answers = await handle.result()
    run_id = handle.first_execution_run_id
    assert not any(a.endswith(": ran") for a in answers), answers
    if kind == "Impostor":
        assert all(f"{ACTIVITY_REFUSED}: refused:" in a for a in answers), answers
        assert "scheduled by a workflow of type 'Impostor'" in answers[0]
    else:
        # Signoff's type name gets past the type check; the ledger still knows no approval,
        # and nobody but signoff's workflow on this worker can write one.
        assert answers[0].startswith(f"execute_action: {NO_WRITE_AHEAD}: refused: the ledger")
        assert answers[1] == (
            f"record_audit_events: {ACTIVITY_REFUSED}: refused: record_audit_events runs only "
            "as a local activity of a signoff workflow, never scheduled"
        )
        assert answers[2].startswith(f"execute_action: {NO_WRITE_AHEAD}:")
        assert answers[3] == (
            f"notify: {ACTIVITY_REFUSED}: refused: notify is for run "
            f"{run_id} of {action_id}, which wrote nothing to the ledger"
        )
    assert await ledger_rows(ledger, action_id) == 0
