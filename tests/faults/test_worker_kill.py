"""A worker SIGKILLed with 100 approvals pending and 20 actions executing.

After a new worker starts: every pending action is still decidable and completes; every
idempotent action took effect exactly once on the target (a Postgres table keyed by the
idempotency key), though some ran twice; every non-idempotent action that was in flight
ends failed with "outcome unknown" and ran exactly once.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest
from temporalio.client import Client, WorkflowHandle

from activities.ledger.store import Ledger
from signoff.models import ActionStatus, Status
from tests.conftest import Gate
from tests.faults.conftest import RECORD_RUN, effect_counts, effects_table
from tests.test_at_most_once import kill_group, wait_for_lines
from tests.test_scale_out import spawn, wait_for_pollers
from workers.settings import Settings
from workflows.action import OUTCOME_UNKNOWN, ActionWorkflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PENDING = 100
IDEMPOTENT = 10
NON_IDEMPOTENT = 10
WORK_SECONDS = 12  # long enough to be mid-run when the worker dies
T = TypeVar("T")
Handle = WorkflowHandle[ActionWorkflow, ActionStatus]


async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """Await with a generous bound, so a hang fails the test instead of stalling the suite."""
    return await asyncio.wait_for(awaitable, seconds)


async def test_worker_killed_with_pending_and_executing_actions(
    client: Client, fault_settings: Settings, ledger: Ledger, postgres_url: str, tmp_path: Path
) -> None:
    # `ledger`: the session's Postgres, migrated, is the workers' SIGNOFF_DATABASE_URL.
    s = fault_settings
    db = await effects_table(postgres_url)
    gate = Gate(client, s)
    limit = asyncio.Semaphore(20)

    async def submit(target: str, params: dict[str, object], action: str) -> Handle:
        async with limit:
            return await gate.submit(target, params, action=action)

    workers: list[subprocess.Popen[bytes]] = [spawn(client, s, postgres_url)]
    try:
        await wait_for_pollers(client, s.task_queue, 1)
        pending = await asyncio.gather(
            *(submit("effects-db-guarded", {"n": i}, "scale.effect") for i in range(PENDING))
        )
        digests = {h.id: (await gate.wait_for(h, "pending_approval")).digest for h in pending}
        idempotent = await asyncio.gather(
            *(
                submit("effects-db", {"sleep_seconds": WORK_SECONDS, "n": i}, "scale.effect")
                for i in range(IDEMPOTENT)
            )
        )
        runs = [tmp_path / f"runs-{i}.txt" for i in range(NON_IDEMPOTENT)]
        once = await asyncio.gather(
            *(
                submit("ops-shell", {"argv": [*RECORD_RUN, str(path), "20"]}, "shell.run")
                for path in runs
            )
        )
        # All 20 are running: each idempotent one has its attempt row, each shell run its line.
        keys = [h.id for h in idempotent]
        for _ in range(600):
            started = await db.fetchval(
                "SELECT count(DISTINCT idempotency_key) FROM scale_attempts "
                "WHERE idempotency_key = ANY($1)",
                keys,
            )
            if started == IDEMPOTENT:
                break
            await asyncio.sleep(0.05)
        assert started == IDEMPOTENT
        for path in runs:
            await wait_for_lines(path, 1)
        assert await effect_counts(db, keys) == {}, "the idempotent work finished too soon"

        kill_group(workers.pop())
        workers.append(spawn(client, s, postgres_url))
        await wait_for_pollers(client, s.task_queue, 1)

        # Every pending action is still decidable after the crash.
        async def approve(handle: Handle) -> None:
            async with limit:
                await gate.decide(handle, "alice@example.com", digest=digests[handle.id])

        await bounded(asyncio.gather(*(approve(h) for h in pending)), 120)
        finals = await bounded(
            asyncio.gather(*(h.result() for h in [*pending, *idempotent, *once])), 150
        )
    finally:
        for worker in workers:
            kill_group(worker)

    by_id = {f.id: f for f in finals}
    succeeded = [h.id for h in [*pending, *idempotent]]
    assert [
        (i, by_id[i].status, by_id[i].error)
        for i in succeeded
        if by_id[i].status is not Status.SUCCEEDED
    ] == []
    # Exactly once on the target, though the interrupted ones ran again on the new worker.
    assert await effect_counts(db, succeeded) == dict.fromkeys(succeeded, 1)
    retried = await db.fetchval(
        "SELECT count(*) FROM (SELECT idempotency_key FROM scale_attempts "
        "WHERE idempotency_key = ANY($1) GROUP BY idempotency_key HAVING count(*) >= 2) t",
        keys,
    )
    assert retried == IDEMPOTENT
    # Never run twice: failed, outcome unknown, one line each.
    for handle, path in zip(once, runs, strict=True):
        assert by_id[handle.id].status is Status.FAILED
        assert by_id[handle.id].error == OUTCOME_UNKNOWN
        assert len(path.read_text().splitlines()) == 1, f"{handle.id} ran twice"
    await db.close()
