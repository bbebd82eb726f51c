"""The inbox renders rows from the status each pending workflow keeps in its memo."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from signoff.models import ActionRequest
from tests.gateway_fixtures import api, build_app
from workers.settings import Settings
from workflows import search_attributes as sa
from workflows.action import INBOX_MEMO_KEY, ActionWorkflow

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def app(client: Client, settings: Settings) -> FastAPI:
    """The gateway app on the test's task queue."""
    return build_app(client, settings)


async def memo_row(client: Client, action_id: str) -> Any:
    """The inbox row the workflow keeps in its memo (None when there is none)."""
    description = await client.get_workflow_handle(action_id).describe()
    return await description.memo_value(INBOX_MEMO_KEY, None)


async def eventually(check: Any, within: float = 10.0) -> Any:
    """Poll an async check until it returns something truthy (visibility is eventual)."""
    value = None
    for _ in range(int(within / 0.1)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    return value


async def test_inbox_row_is_the_status_the_workflow_published(app: FastAPI, client: Client) -> None:
    async with api(app, "bot") as http:
        submitted = await http.post(
            "/v1/actions",
            json={
                "action": "noop",
                "target": "one-db",
                "params": {"rows": 1, "note": "caf\u00e9"},
                "justification": "inbox from memo",
            },
        )
    assert submitted.status_code == 202, submitted.text
    action_id = submitted.json()["id"]

    async def notified() -> Any:
        row = await memo_row(client, action_id)
        return row if row and row["notifications"] else None

    # Once notified, nothing changes until someone decides.
    row = await eventually(notified)
    assert row is not None
    assert row["id"] == action_id
    assert row["status"] == "pending_approval"

    async def alices() -> list[dict[str, Any]]:
        async with api(app, "alice") as http:
            return [r for r in (await http.get("/v1/approvals")).json() if r["id"] == action_id]

    listed = await eventually(alices)
    async with api(app, "alice") as http:
        status = (await http.get(f"/v1/actions/{action_id}")).json()
    diff = {k: (listed[0][k], status.get(k)) for k in listed[0] if listed[0][k] != status.get(k)}
    assert listed == [status], diff  # the same row the workflow's own status query gives
    assert listed[0]["digest"] == submitted.json()["digest"]
    # Decided, the row leaves the memo as it leaves the inbox.
    async with api(app, "alice") as http:
        decided = await http.post(
            f"/v1/actions/{action_id}/decisions",
            json={"decision": "approve", "digest": status["digest"], "reason": "ok"},
        )
    assert decided.status_code == 200, decided.text

    async def cleared() -> bool:
        return await memo_row(client, action_id) is None

    assert await eventually(cleared)


async def test_a_memo_planted_at_start_is_cleared_by_the_workflow(
    client: Client, settings: Settings
) -> None:
    # Someone with Temporal access but not the gateway's key starts an action with a forged
    # inbox row and search attributes: the run refuses the unsigned request, and its first
    # publish replaces the planted row, so no inbox shows it.
    action_id = f"forged-{uuid.uuid4().hex[:8]}"
    forged = {"id": action_id, "status": "pending_approval", "summary": "harmless"}
    request = ActionRequest(
        action="noop",
        target="one-db",
        params={"rows": 1},
        justification="forged",
        requester="agent:bot",
    )
    handle = await client.start_workflow(
        ActionWorkflow.run,
        request,
        id=action_id,
        task_queue=settings.task_queue,
        memo={INBOX_MEMO_KEY: forged},
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa.STATUS, "pending_approval"),
                SearchAttributePair(sa.GROUPS, ["dba"]),
            ]
        ),
    )
    final = await handle.result()
    assert final.status.value != "pending_approval"
    assert await memo_row(client, action_id) is None
