"""The console channel, written by the action workflow itself (shape v5), once per line."""

from __future__ import annotations

import logging

import pytest
from temporalio.client import Client

from activities.ledger.store import Ledger
from channels.console import ConsoleNotifier
from signoff.models import Status
from tests.conftest import Gate, running_worker
from workers.settings import Settings
from workflows.messages import AuditKind


async def test_console_lines_come_once_each_without_an_activity(
    client: Client, settings: Settings, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    # No cache: every task replays the run from its start. A line logged while replaying
    # would show up again here, once per task.
    uncached = settings.model_copy(update={"max_cached_workflows": 0})
    gate = Gate(client, uncached)
    page = "https://signoff.test"
    with caplog.at_level(logging.INFO, logger="signoff.notify"):
        async with running_worker(client, uncached, ledger, [ConsoleNotifier(page_base=page)]):
            handle = await gate.submit("one-console")
            await gate.wait_for(handle, "pending_approval")
            await gate.decide(handle, "alice@example.com", reason="go")
            outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    lines = [r.getMessage() for r in caplog.records if r.name == "signoff.notify"]
    requested = [line for line in lines if "approval requested" in line]
    assert len(requested) == 1, lines
    assert f"page {page}/a/{handle.id}" in requested[0]
    assert f"approve with: signoff approve {handle.id}" in requested[0]
    # The updates: executing once decided, then the outcome; each once.
    updates = [line for line in lines if line.startswith(f"action {handle.id} is ")]
    progress = "1 of 1 from dba (alice@example.com)"
    assert updates == [
        f"action {handle.id} is executing {progress}",
        f"action {handle.id} is succeeded {progress}",
    ]
    # The post is recorded like any channel's, in the status and the ledger ...
    assert [(n.channel, n.destination) for n in outcome.notifications] == [("console", "dba")]
    notified = [e for e in await ledger.events(handle.id) if e.kind == AuditKind.NOTIFIED]
    assert [e.channel for e in notified] == ["console"]
    # ... but no activity was scheduled for it: no task, no round trip through the server.
    history = await handle.fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled == ["execute_action"]
