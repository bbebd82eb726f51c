"""The gateway killed and restarted while agents long-poll it.

Agents use the real SDK: half long-poll their submission (`POST /v1/actions?wait=`), half
long-poll the status (`GET /v1/actions/{id}?wait=`). The gateway process is SIGKILLed under
them and started again on the same port. The SDK retries (a submission carries its
idempotency key, so a retried POST finds the same action); after approvals through the new
gateway every agent gets its result, and each action exists and ran exactly once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.ledger.store import Ledger
from signoff.client import SignoffClient
from signoff.models import ActionRequest, ActionStatus, Status
from tests.conftest import running_worker
from tests.gateway_fixtures import (
    count_workflows,
    free_port,
    gateway_process,
    live_settings,
    token,
)
from workflows.action import workflow_id_for
from workflows.messages import AuditKind

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

AGENTS = 8
REQUESTER = "agent:bot"


def action_id(key: str) -> str:
    """The action id the gateway derives from the requester and the idempotency key."""
    request = ActionRequest(
        action="noop", target="x", justification="x", requester=REQUESTER, idempotency_key=key
    )
    return workflow_id_for(request)


async def test_gateway_restart_during_long_polls(
    client: Client, ledger: Ledger, tmp_path: Path
) -> None:
    settings = live_settings(client)
    port = free_port()
    keys = [f"gateway-restart-{i}" for i in range(AGENTS)]
    ids = [action_id(key) for key in keys]

    async def agent(i: int, url: str) -> ActionStatus:
        # Generous retries: a restart on a busy two-core machine takes seconds.
        async with SignoffClient(url, token("bot"), retries=12, backoff=0.25) as sdk:
            args = ("noop", f"one-gw-{i}", {"i": i}, "restart drill")
            if i % 2 == 0:
                status = await sdk.request(*args, idempotency_key=keys[i], wait=50)
            else:
                status = await sdk.request(*args, idempotency_key=keys[i])
                status = await sdk.wait(status.id, timeout=120)
            return await sdk.wait(status.id, timeout=120) if not status.terminal else status

    async with running_worker(client, settings, ledger):
        async with gateway_process(settings, tmp_path / "gateway-1.log", port=port) as first:
            agents = [asyncio.create_task(agent(i, first.url)) for i in range(AGENTS)]
            assert await count_workflows(client, settings.task_queue, AGENTS) == AGENTS
            await asyncio.sleep(1)  # every agent is inside a long poll now
            assert not any(task.done() for task in agents)
            first.process.kill()
            await first.process.wait()
        async with (
            gateway_process(settings, tmp_path / "gateway-2.log", port=port) as second,
            SignoffClient(second.url, token("alice")) as alice,
        ):
            for action in ids:
                await alice.approve(action)
            finals = await asyncio.wait_for(asyncio.gather(*agents), 150)

    assert [f.id for f in finals] == ids
    assert [f.status for f in finals] == [Status.SUCCEEDED] * AGENTS
    # No duplicate actions: one workflow per key, one decision and one execution each.
    assert await count_workflows(client, settings.task_queue, AGENTS) == AGENTS
    for action in ids:
        kinds = [row.kind for row in await ledger.events(action)]
        assert kinds.count(AuditKind.REQUESTED) == 1
        assert kinds.count(AuditKind.DECISION) == 1
        assert kinds.count(AuditKind.EXECUTION_STARTED) == 1
    # The agents really did come back through the new gateway, both kinds of long poll.
    log = (tmp_path / "gateway-2.log").read_text(errors="replace")
    assert f"{REQUESTER} POST /v1/actions " in log
    assert f"{REQUESTER} GET /v1/actions/" in log
