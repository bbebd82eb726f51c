"""Approval windows in Slack: "Approve for 1h", every use in the thread, revoke from the thread.

The real worker and gateway against the fake Slack of tests/test_slack.py, clicks signed with
Slack's real signature scheme.
"""

from __future__ import annotations

import json
from datetime import timedelta

from channels.slack.blocks import APPROVE_WINDOW_ACTION, REVOKE_WINDOW_ACTION
from signoff.models import ApprovalWindow, Status
from tests.fake_slack import Call
from tests.test_slack import (  # noqa: F401 - fixtures: fake, slack_settings, stack
    Stack,
    buttons_of,
    click,
    eventually,
    fake,
    slack_settings,
    stack,
)
from tests.test_windows import listed
from workflows.window import WindowWorkflow


def _note_buttons(call: Call) -> dict[str, dict[str, object]]:
    raw = call.args["blocks"]
    blocks = json.loads(raw) if isinstance(raw, str) else raw
    return {e["action_id"]: e for b in blocks if b["type"] == "actions" for e in b["elements"]}


async def test_approve_for_an_hour_then_uses_in_the_thread_and_revoke_there(
    stack: Stack,  # noqa: F811 - the fixture imported above
) -> None:
    slack = stack.fake
    first = await stack.submit("deploy-app", env="staging")
    call = await stack.posted(first.id, "C0SEC")
    buttons = buttons_of(call)
    window_button = buttons[APPROVE_WINDOW_ACTION]
    assert window_button["text"]["text"] == "Approve for 1h"
    # The approver sees the scope and the holder before confirming.
    message = json.dumps(call.args["attachments"])
    assert "*Window offer*" in message
    assert "for up to 1h" in message
    confirm = json.dumps(window_button["confirm"])
    assert "staging" in confirm
    assert "agent:bot" in confirm
    [ref] = await stack.refs(first.id)
    ts = ref.ref["ts"]

    response = await stack.post(click("U0BOB", APPROVE_WINDOW_ACTION, window_button["value"]))
    assert response.status_code == 200
    outcome = await stack.service.wait(first.id, 20)
    assert outcome.status is Status.SUCCEEDED
    assert [(d.approver, d.channel, d.window) for d in outcome.decisions] == [
        ("bob@example.com", "slack", timedelta(hours=1))
    ]
    window_id = outcome.opened_window
    assert window_id is not None
    opened = await slack.wait_for(
        "chat.postMessage", thread_ts=ts, where=lambda c: "opened" in c.args.get("text", "")
    )
    revoke_value = _note_buttons(opened[0])[REVOKE_WINDOW_ACTION]["value"]

    # A use: its own action, allowed by the window, and told in the approval's thread.
    await listed(stack.service.client, window_id)
    use = await stack.submit("deploy-app", env="staging", n=2)
    assert (await stack.service.wait(use.id, 20)).status is Status.SUCCEEDED
    told = await slack.wait_for(
        "chat.postMessage", thread_ts=ts, where=lambda c: use.id in c.args.get("text", "")
    )
    assert "allowed noop on deploy-app for agent:bot" in told[0].args["text"]

    handle = stack.service.client.get_workflow_handle(window_id, result_type=ApprovalWindow)
    # Carol did not approve it and is in no revoking group: refused, recorded, still live.
    assert (
        await stack.post(click("U0CAROL", REVOKE_WINDOW_ACTION, revoke_value))
    ).status_code == 200

    async def refused() -> list[str]:
        window = await handle.query(WindowWorkflow.status)
        return [r.approver for r in window.refused]

    assert await eventually(refused) == ["carol@example.com"]
    assert (await handle.query(WindowWorkflow.status)).status == "active"
    await slack.wait_for("chat.postEphemeral", user="U0CAROL")

    revoked = await stack.post(click("U0BOB", REVOKE_WINDOW_ACTION, revoke_value))
    assert revoked.status_code == 200
    window = await handle.result()
    assert window.status == "revoked"
    assert window.revoked_by == "bob@example.com"
    await slack.wait_for(
        "chat.postMessage", thread_ts=ts, where=lambda c: "revoked by" in c.args.get("text", "")
    )
