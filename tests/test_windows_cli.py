"""`signoff approve --window` and `signoff windows` against a live gateway and worker."""

from __future__ import annotations

import asyncio
import json

from signoff.models import ActionStatus, ApprovalWindow
from tests.gateway_fixtures import LiveGateway
from tests.test_cli_actions import (  # noqa: F401 - `live` is a fixture
    cli,
    failed,
    live,
    ok,
    submit,
    until_pending,
)


async def test_approve_with_a_window_then_list_show_and_revoke_it(
    live: LiveGateway,  # noqa: F811
) -> None:
    action = await submit(live, "deploy-app", env="staging")
    await until_pending(live, action.id)
    shown = ok(await cli(live, "bob", "status", action.id))
    assert "window offer" in shown  # the approver sees scope and maximum before deciding

    error = failed(await cli(live, "bob", "approve", action.id, "--window", "2h", "--yes"))
    assert "window 2h is longer than rule 'windowed-deploys''s window max_duration 1h" in error
    error = failed(await cli(live, "bob", "approve", action.id, "--window", "soon", "--yes"))
    assert "--window 'soon'" in error

    output = ok(await cli(live, "bob", "approve", action.id, "--window", "30m", "--yes", "--json"))
    window_id = ActionStatus.model_validate_json(output).opened_window
    assert window_id is not None

    # The holder lists it (visibility indexes it a moment after it opens).
    for _ in range(50):
        listed = json.loads(ok(await cli(live, "bot", "windows", "--json")))
        if listed:
            break
        await asyncio.sleep(0.1)
    assert [w["id"] for w in listed] == [window_id]
    assert json.loads(ok(await cli(live, "alice", "windows", "--json"))) == []
    window = ApprovalWindow.model_validate_json(
        ok(await cli(live, "bob", "windows", "show", window_id, "--json"))
    )
    assert window.holder == "agent:bot"
    assert window.status == "active"
    assert "deploy-app" in ok(await cli(live, "bob", "windows", "show", window_id))

    refused = failed(await cli(live, "carol", "windows", "revoke", window_id))
    assert "no window" in refused  # carol may not even see it; her attempt is recorded
    assert "revoked" in ok(
        await cli(live, "bob", "windows", "revoke", window_id, "--reason", "done")
    )
    ended = ApprovalWindow.model_validate_json(
        ok(await cli(live, "bob", "windows", "show", window_id, "--json"))
    )
    assert ended.status == "revoked"
    assert [r.approver for r in ended.refused] == ["carol@example.com"]
