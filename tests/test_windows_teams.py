"""Approval windows in Teams: "Approve for 1h" on the card, notes under it, revoke from there.

The real worker and gateway against the fake Bot Framework of tests/test_teams.py.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
from temporalio.client import Client

from activities.ledger.store import Ledger
from channels.teams import TeamsNotifier
from channels.teams.cards import REVOKE_WINDOW_VERB, WINDOW_VERB
from channels.teams.store import ConversationStore
from signoff.models import ApprovalWindow, RefusalCode, Status
from tests.conftest import Gate, running_worker
from tests.fake_teams import FakeMicrosoft
from tests.test_teams import (  # noqa: F401 - fixtures: fake, msal_http, teams_settings, ...
    SEC,
    button,
    card_of,
    card_text,
    directory,
    eventually,
    fake,
    gateway,
    installed,
    invoke,
    msal_http,
    notifier,
    posted_teams,
    send,
    store,
    teams_settings,
    until,
)
from tests.test_windows import listed
from workers.settings import Settings
from workflows.window import WindowWorkflow


async def test_approve_for_an_hour_on_the_card_then_notes_and_revoke(
    client: Client,
    teams_settings: Settings,  # noqa: F811
    ledger: Ledger,
    gate: Gate,
    gateway: httpx.AsyncClient,  # noqa: F811
    fake: FakeMicrosoft,  # noqa: F811
    store: ConversationStore,  # noqa: F811
    notifier: TeamsNotifier,  # noqa: F811
) -> None:
    service_url = f"{fake.url}/emea/"
    assert (await send(gateway, fake, installed(service_url, SEC))).status_code == 200
    async with running_worker(client, teams_settings, ledger, notifiers=[notifier]):
        handle = await gate.submit("deploy-app", {"env": "staging"})
        status = await until(handle, posted_teams)
        [ref] = [n for n in status.notifications if n.channel == "teams"]
        card = card_of(fake.connector[0].body)
        # The approver reads the offer (scope and maximum) on the card before pressing.
        assert "up to 1h for requests matching" in card_text(card)
        offer = button(card, WINDOW_VERB)
        assert offer["title"] == "Approve for 1h"
        answer = await send(
            gateway, fake, invoke(service_url, "aad-bob", WINDOW_VERB, offer["data"])
        )
        assert answer.status_code == 200
        outcome = await handle.result()
        assert outcome.status is Status.SUCCEEDED
        assert [(d.approver, d.channel, d.window) for d in outcome.decisions] == [
            ("bob@example.com", "teams", timedelta(hours=1))
        ]
        window_id = outcome.opened_window
        assert window_id is not None
        reply_path = f"/emea/v3/conversations/{SEC}/activities/{ref.ref['activity_id']}"

        def replies(word: str) -> list[dict[str, object]]:
            return [
                card_of(r.body)
                for r in fake.connector
                if r.method == "POST"
                and r.path == reply_path
                and word in card_text(card_of(r.body))
            ]

        await eventually(lambda: bool(replies("opened")))
        revoke = button(replies("opened")[0], REVOKE_WINDOW_VERB)

        # A use, told under the approval's card.
        await listed(client, window_id)
        use = await gate.submit("deploy-app", {"env": "staging", "n": 2})
        assert (await use.result()).status is Status.SUCCEEDED
        await eventually(lambda: bool(replies(use.id)))

        # Carol neither approved it nor is in a revoking group: refused and recorded.
        answer = await send(
            gateway, fake, invoke(service_url, "aad-carol", REVOKE_WINDOW_VERB, revoke["data"])
        )
        assert "could not revoke" in card_text(answer.json()["value"])
        window_handle = client.get_workflow_handle(window_id, result_type=ApprovalWindow)
        window = await window_handle.query(WindowWorkflow.status)
        assert [(r.approver, r.code, r.channel) for r in window.refused] == [
            ("carol@example.com", RefusalCode.NOT_REVOKER, "teams")
        ]
        answer = await send(
            gateway, fake, invoke(service_url, "aad-bob", REVOKE_WINDOW_VERB, revoke["data"])
        )
        assert "revoked" in card_text(answer.json()["value"])
        window = await window_handle.result()
        assert window.status == "revoked"
        assert window.revoked_by == "bob@example.com"
