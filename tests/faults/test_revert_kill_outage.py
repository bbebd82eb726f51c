"""A grant's revoke survives a worker SIGKILL and a Postgres outage (issue 15).

One real Postgres holds both the ledger and the role being granted, so the outage takes both
away at once. The worker is a real `signoff worker` process: SIGKILLed while the grant is in
force, and again while the revert is failing against the stopped database. When Postgres is
back and a worker runs again, the revert is retried until done: the role is really revoked,
the action ends `reverted`, and the ledger holds each row once.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pgserver
import pytest
from temporalio.client import Client, WorkflowHandle

from activities.ledger.store import Ledger
from signoff.models import ActionStatus, Status
from tests.conftest import DATA, Gate, spawn_worker
from tests.grant_roles import DSN_ENV, GRANTABLE, grant_targets, granter_roles, new_grantee
from tests.pg import start, stop
from tests.test_at_most_once import kill_group
from tests.test_grants import is_member, poll
from tests.test_scale_out import wait_for_pollers
from workers.audit.verify import verify_chain
from workers.settings import Settings
from workflows.action import ActionWorkflow
from workflows.messages import AuditKind

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DURATION_SECONDS = 4  # short on the dev server: it ends while no worker is alive
Handle = WorkflowHandle[ActionWorkflow, ActionStatus]


async def ledger_kinds(ledger: Ledger, action_id: str) -> list[str]:
    """The ledger's row kinds for the action, in order."""
    return [e.kind for e in await ledger.events(action_id)]


async def test_a_revoke_survives_worker_sigkills_and_a_postgres_outage(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    server = pgserver.get_server(tmp_path / "grant-pg", cleanup_mode="stop")
    url = server.get_uri()
    ledger = await Ledger.connect(url, migrate=True)
    granter = await granter_roles(url)
    grantee = await new_grantee(url)
    s = settings.model_copy(
        update={
            "task_queue": f"revert-outage-{uuid.uuid4()}",
            "policy": DATA / "grants-policy.yaml",
            "targets": grant_targets(tmp_path),
        }
    )
    gate = Gate(client, s)

    def spawn() -> subprocess.Popen[bytes]:
        return spawn_worker(
            client, s, url, SIGNOFF_WORKER_SHUTDOWN_TIMEOUT="1s", **{DSN_ENV: granter}
        )

    workers = [spawn()]
    try:
        await wait_for_pollers(client, s.task_queue, 1)
        handle: Handle = await gate.submit(
            "grant-db",
            {"role": GRANTABLE, "user": grantee, "duration": f"{DURATION_SECONDS}s"},
            action="postgres.grant_role",
        )
        await gate.wait_for(handle, "pending_approval")
        await gate.decide(handle, "alice@example.com")
        await poll(handle, lambda st: st.status is Status.ACTIVE)
        for _ in range(100):
            if AuditKind.ACTIVE in await ledger_kinds(ledger, handle.id):
                break
            await asyncio.sleep(0.1)
        assert await is_member(url, grantee)

        # The grant is in force: its worker dies with it, the timer ends with nobody running.
        kill_group(workers.pop())
        workers.append(spawn())
        stop(server)  # the ledger and the granted role's database both go away
        failing = await poll(handle, lambda st: st.revert is not None and st.revert.failures >= 1)
        assert failing.status is Status.REVERTING
        assert failing.revert is not None
        assert failing.revert.done_at is None
        assert failing.window is not None
        assert failing.window.how == "expired"
        # Mid-revert, failing against the stopped database: that worker dies too.
        kill_group(workers.pop())
        described = await handle.describe()
        assert described.status is not None
        assert described.status.name == "RUNNING"  # not revoked, and not forgotten

        start(server)
        assert await is_member(url, grantee)  # nothing revoked it meanwhile
        workers.append(spawn())
        outcome = await asyncio.wait_for(handle.result(), 120)
    finally:
        for worker in workers:
            kill_group(worker)

    try:
        assert outcome.status is Status.REVERTED
        assert outcome.revert is not None
        assert outcome.revert.failures >= 1
        assert outcome.revert.done_at is not None
        assert outcome.revert.result == {"role": GRANTABLE, "user": grantee, "revoked": True}
        assert not await is_member(url, grantee)  # Postgres itself says the role is gone
        kinds = Counter(await ledger_kinds(ledger, handle.id))
        for kind in (AuditKind.ACTIVE, AuditKind.REVERTED, AuditKind.OUTCOME):
            assert kinds[kind] == 1, (kind, kinds)
        assert kinds[AuditKind.REVERT_FAILED] >= 1
        report = await verify_chain(ledger)
        assert report.ok, report.broken
    finally:
        await ledger.close()
        server.cleanup()
