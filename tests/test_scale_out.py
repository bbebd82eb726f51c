"""Scale-out: three worker processes, one SIGKILLed mid-flight; every action runs exactly once.

Workers are stateless: Temporal hands each task to one of them, and a dead worker's tasks time
out and go to another. The executor writes its effect keyed by the idempotency key, so a retry
after the crash cannot apply it twice; the attempts table shows the retry did happen.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest
import yaml
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowHandle

from activities.ledger.store import Ledger
from signoff.models import ActionStatus, DecisionRequest, Status
from tests.conftest import Gate, spawn_worker
from tests.executors_for_scale import SCHEMA
from tests.signing import SIGNER
from workers.settings import Settings
from workflows.action import ActionWorkflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

WORKERS = 3
EXECUTING = 6  # allowed at once, each working for a few seconds
PENDING = 4  # wait for a DBA, approved after the kill
WORK_SECONDS = 4.0
BOUND = 90.0


@pytest.fixture
def scale_settings(settings: Settings, tmp_path: Path) -> Settings:
    """A policy and targets for the scale executor: one target runs at once, one needs a DBA."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "default": {"effect": "deny", "reason": "not covered by the scale test"},
                "rules": [
                    {
                        "id": "scale-now",
                        "match": {"action": "scale.effect", "target": "scale-db"},
                        "effect": "allow",
                    },
                    {
                        "id": "scale-approved",
                        "match": {"action": "scale.effect", "target": "scale-db-guarded"},
                        "effect": "require_approval",
                        "approvals": [{"group": "dba", "min": 1}],
                        "expires_after": "1h",
                    },
                ],
            }
        )
    )
    targets = tmp_path / "targets.yaml"
    target = {"kind": "postgres", "dsn_env": "SCALE_TEST_DSN"}
    targets.write_text(
        yaml.safe_dump({"targets": {"scale-db": target, "scale-db-guarded": target}})
    )
    return settings.model_copy(update={"policy": policy, "targets": targets})


def spawn(client: Client, settings: Settings, postgres_url: str) -> subprocess.Popen[bytes]:
    """A worker that runs the scale executor against the test's Postgres."""
    return spawn_worker(
        client,
        settings,
        postgres_url,
        SIGNOFF_EXECUTOR_MODULES='["tests.executors_for_scale"]',
        SIGNOFF_HEARTBEAT_TIMEOUT="2s",
        SIGNOFF_WORKER_SHUTDOWN_TIMEOUT="2s",
        SCALE_TEST_DSN=postgres_url,
    )


async def wait_for_pollers(client: Client, task_queue: str, count: int) -> None:
    """Wait (bounded) until `count` workers poll the task queue for workflow and activity tasks."""
    # Generous: three interpreters start at once on a two-core machine that may be busy.
    for _ in range(450):
        counts = []
        for kind in (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ):
            described = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=kind,
                )
            )
            counts.append(len({p.identity for p in described.pollers}))
        if min(counts) >= count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"never saw {count} pollers on {task_queue}: {counts}")


async def test_three_workers_one_killed_every_action_exactly_once(
    client: Client, scale_settings: Settings, ledger: Ledger, postgres_url: str
) -> None:
    db = await asyncpg.connect(postgres_url)
    await db.execute(SCHEMA)
    gate = Gate(client, scale_settings)
    workers = {(p := spawn(client, scale_settings, postgres_url)).pid: p for _ in range(WORKERS)}
    try:
        await wait_for_pollers(client, scale_settings.task_queue, WORKERS)
        # A safety bound on the action phase, not a speed goal: that is bench/'s job.
        started = time.monotonic()
        running = [
            await gate.submit(
                "scale-db", {"sleep_seconds": WORK_SECONDS, "n": i}, action="scale.effect"
            )
            for i in range(EXECUTING)
        ]
        waiting = [
            await gate.submit(
                "scale-db-guarded", {"sleep_seconds": 1, "n": i}, action="scale.effect"
            )
            for i in range(PENDING)
        ]
        digests = {h.id: (await gate.wait_for(h, "pending_approval")).digest for h in waiting}
        ids = [h.id for h in running]

        # Kill a worker that is in the middle of an action (its attempt started, no effect yet).
        victim, interrupted = None, None
        for _ in range(100):
            rows = await db.fetch(
                "SELECT a.worker_pid, a.idempotency_key FROM scale_attempts a "
                "LEFT JOIN scale_effects e USING (idempotency_key) "
                "WHERE a.idempotency_key = ANY($1) AND e.idempotency_key IS NULL",
                ids,
            )
            if rows:
                victim, interrupted = rows[0]["worker_pid"], rows[0]["idempotency_key"]
                break
            await asyncio.sleep(0.05)
        assert victim in workers, f"no action in flight on our workers: {victim}"
        os.killpg(victim, signal.SIGKILL)
        workers.pop(victim).wait(timeout=10)

        # Approve the pending ones after the kill: the survivors carry their workflows on.
        for handle in waiting:
            await handle.execute_update(
                ActionWorkflow.decide,
                SIGNER.decision(
                    DecisionRequest(
                        approver="alice@example.com", decision="approve", digest=digests[handle.id]
                    ),
                    handle.id,
                ),
            )
        handles: list[WorkflowHandle[ActionWorkflow, ActionStatus]] = [*running, *waiting]
        finals = await asyncio.wait_for(
            asyncio.gather(*(h.result() for h in handles)),
            timeout=BOUND - (time.monotonic() - started),
        )
        assert [f.status for f in finals] == [Status.SUCCEEDED] * len(handles), [
            (f.id, f.status, f.error) for f in finals
        ]

        every = [h.id for h in handles]
        effects = await db.fetch(
            "SELECT idempotency_key, count(*) AS n FROM scale_effects "
            "WHERE idempotency_key = ANY($1) GROUP BY idempotency_key",
            every,
        )
        assert {r["idempotency_key"]: r["n"] for r in effects} == dict.fromkeys(every, 1)
        attempts = await db.fetch(
            "SELECT worker_pid FROM scale_attempts WHERE idempotency_key = $1 ORDER BY id",
            interrupted,
        )
        # The interrupted action ran again, on a survivor, and still applied once.
        assert len(attempts) >= 2
        assert attempts[0]["worker_pid"] == victim
        assert attempts[-1]["worker_pid"] in workers
        # Work spread over the workers, and the whole check stayed bounded.
        pids = {
            r["worker_pid"]
            for r in await db.fetch(
                "SELECT worker_pid FROM scale_attempts WHERE idempotency_key = ANY($1)", every
            )
        }
        assert len(pids) >= 2
    finally:
        for process in workers.values():
            process.send_signal(signal.SIGTERM)
        for process in workers.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        await db.close()
