"""The inbox renders rows from the status each pending workflow keeps in its memo."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from fastapi import FastAPI
from temporalio.api.common.v1 import Payload
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


async def test_a_planted_memo_nothing_can_decode_neither_stalls_the_run_nor_stays(
    client: Client, settings: Settings
) -> None:
    # Shape v8 looks at the start memo's keys to know whether there is a row to clear. Reading
    # the values would decode them, and a value no converter knows would fail every workflow
    # task of the run, for good.
    action_id = f"forged-{uuid.uuid4().hex[:8]}"
    junk = Payload(metadata={"encoding": b"binary/forged"}, data=b"\x00\xff")
    request = ActionRequest(
        action="noop", target="one-db", justification="forged", requester="agent:bot"
    )
    handle = await client.start_workflow(
        ActionWorkflow.run,
        request,
        id=action_id,
        task_queue=settings.task_queue,
        memo={INBOX_MEMO_KEY: junk, "other": junk},
    )
    final = await asyncio.wait_for(handle.result(), timeout=30)
    assert final.status.value == "rejected"  # unsigned: refused, recorded, never run
    assert await memo_row(client, action_id) is None


def published(events: Sequence[Any]) -> tuple[list[str], int]:
    """The SignoffStatus of each search-attribute upsert in a history, and its memo writes."""
    statuses = []
    for e in events:
        if e.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = e.upsert_workflow_search_attributes_event_attributes.search_attributes
            if "SignoffStatus" in fields.indexed_fields:
                statuses.append(fields.indexed_fields["SignoffStatus"].data.decode().strip('"'))
    memos = sum(1 for e in events if e.HasField("workflow_properties_modified_event_attributes"))
    return statuses, memos


async def test_one_publish_carries_the_console_post_and_none_clears_a_memo_never_written(
    app: FastAPI, client: Client
) -> None:
    # Shape v8: each upsert is a history event and a visibility write. A pending action used to
    # publish twice in its first task (waiting, then the console's post); an allowed one
    # cleared an inbox memo nobody wrote.
    async with api(app, "bot") as http:
        pending = await http.post(
            "/v1/actions",
            json={"action": "noop", "target": "one-db", "params": {}, "justification": "v8"},
        )
        allowed = await http.post(
            "/v1/actions",
            json={"action": "noop", "target": "sandbox-1", "params": {}, "justification": "v8"},
        )
    assert pending.status_code == allowed.status_code == 202, (pending.text, allowed.text)
    pending_id, allowed_id = pending.json()["id"], allowed.json()["id"]

    async def notified() -> Any:
        row = await memo_row(client, pending_id)
        return row if row and row["notifications"] else None

    row = await eventually(notified)
    assert row is not None
    assert [n["channel"] for n in row["notifications"]] == ["console"]
    events = (await client.get_workflow_handle(pending_id).fetch_history()).events
    assert published(events) == (["pending_approval"], 1)

    done = await client.get_workflow_handle(allowed_id).result()
    assert done["status"] == "succeeded"
    events = (await client.get_workflow_handle(allowed_id).fetch_history()).events
    statuses, memos = published(events)
    assert statuses[-1] == "succeeded"
    assert memos == 0
