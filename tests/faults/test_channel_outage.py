"""Slack timing out and Teams answering 5xx: actions stay approvable through the API, and the
status shows which notification failed.

Slack's Web API is a local socket that accepts connections and never answers (the real
slack-sdk client times out, given a short timeout); Teams is the fake Microsoft
(tests/fake_teams.py) whose connector answers every post with 503. Both notifiers run inside
a real worker; decisions go through the real gateway app with real tokens.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from temporalio.client import Client

from activities.ledger.store import Ledger
from channels.teams import ConversationStore
from policies.loader import load_directory
from signoff.models import ActionStatus, Status
from tests.conftest import running_worker
from tests.fake_teams import FakeMicrosoft, MsalRoute
from tests.gateway_fixtures import api, build_app
from workers.settings import Settings
from workers.wiring.slack import slack_notifier
from workers.wiring.teams import teams_notifier

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

APP_ID = "6c1e3b8e-0000-4000-8000-00000000fa11"
TENANT = "11111111-2222-3333-4444-555555555555"
SECRET = "bot-secret"
APPROVERS = ("bob", "carol")  # two from security, as rule two-* wants


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A local port that accepts TCP connections and never answers a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield sock.getsockname()[1]


async def test_slack_timing_out_and_teams_failing_leave_actions_approvable(
    client: Client, settings: Settings, ledger: Ledger, black_hole: int
) -> None:
    fake = await FakeMicrosoft(client_id=APP_ID, client_secret=SECRET).start()
    fake.connector_failures = [503] * 500
    route = MsalRoute(fake.url)
    s = settings.model_copy(
        update={
            "slack_bot_token": SecretStr("xoxb-fault-test"),
            "slack_api_url": f"http://127.0.0.1:{black_hole}/api/",
            "teams_app_id": APP_ID,
            "teams_app_password": SecretStr(SECRET),
            "teams_tenant_id": TENANT,
            "teams_allowed_service_urls": ["127.0.0.1"],
            "teams_service_url": f"{fake.url}/default/",
        }
    )
    directory = load_directory(s.directory)
    slack = slack_notifier(s, directory)
    slack.client.timeout = 1  # seconds per call; the default 10 s only makes the test slower
    teams = teams_notifier(
        s, directory, store=ConversationStore(ledger.pool), msal_http_client=route
    )
    app = build_app(client, s)
    try:
        async with (
            running_worker(client, s, ledger, notifiers=[slack, teams]),
            api(app, "bot") as agent,
            api(app, "bob") as bob,
            api(app, "carol") as carol,
        ):

            async def submit(target: str) -> ActionStatus:
                body = {"action": "noop", "target": target, "justification": "channel drill"}
                response = await agent.post("/v1/actions", json=body)
                assert response.status_code == 202, response.text
                return ActionStatus.model_validate(response.json())

            async def approve_all(action: ActionStatus) -> None:
                for person in (bob, carol):
                    body = {"decision": "approve", "digest": action.digest}
                    response = await person.post(f"/v1/actions/{action.id}/decisions", json=body)
                    assert response.status_code == 200, response.text

            async def status(action_id: str, wait: float = 0) -> ActionStatus:
                params = {"wait": wait} if wait else None
                response = await agent.get(f"/v1/actions/{action_id}", params=params)
                assert response.status_code == 200, response.text
                return ActionStatus.model_validate(response.json())

            # Approved at once, while both channels are still failing: nothing waits on them.
            early = await submit("two-chan-early")
            await approve_all(early)
            # Left pending until the status shows both failures, then approved.
            late = await submit("two-chan-late")
            for _ in range(240):
                shown = await status(late.id)
                if {n.channel for n in shown.notification_failures} >= {"slack", "teams"}:
                    break
                await asyncio.sleep(0.5)
            assert shown.status is Status.PENDING_APPROVAL
            failures = {n.channel: n.error or "" for n in shown.notification_failures}
            assert set(failures) == {"slack", "teams"}, shown.notifications
            assert "C0SEC" in failures["slack"]
            assert "503" in failures["teams"]
            await approve_all(late)

            finals = [await status(a.id, wait=60) for a in (early, late)]
            for final in finals:
                if not final.terminal:
                    final = await status(final.id, wait=60)
                assert final.status is Status.SUCCEEDED, final
                assert {n.channel for n in final.notification_failures} == {"slack", "teams"}
                assert not [n for n in final.notifications if not n.error]  # none delivered
            # Teams was really tried (and retried), never reached.
            assert len([r for r in fake.connector if r.method == "POST"]) >= 2
    finally:
        route.close()
        await fake.stop()
