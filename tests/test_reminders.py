"""Reminders on durable timers (time-skipping server): threaded in Slack, stopped by a
decision, by `max`, by escalation and by expiry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.ledger.store import Ledger
from channels.console import ConsoleNotifier
from channels.email import EmailNotifier, SmtpConfig
from channels.notifier import Notifier
from channels.slack import SlackNotifier, web_client
from channels.teams.store import ConversationStore
from policies.loader import load_directory, load_policy
from signoff.models import ActionStatus, Reminders, Status
from tests.conftest import DATA, Gate, running_worker
from tests.fake_slack import Call, FakeSlack
from tests.fake_teams import FakeMicrosoft, MsalRoute
from tests.smtp_server import PASSWORD, USER, smtp_server
from tests.test_timers import skipping_env, skipping_settings  # noqa: F401 - fixtures
from workers.settings import Settings
from workers.wiring.teams import teams_notifier
from workflows.action import ActionWorkflow

REMINDER = "⏰ Reminder"
TEAMS_APP = "6c1e3b8e-0000-4000-8000-00000000b075"
TEAMS_TENANT = "11111111-2222-3333-4444-555555555555"
TEAMS_SECRET = "bot-secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    """The Slack fake on a free port."""
    fake = FakeSlack()
    await fake.start()
    yield fake
    await fake.stop()


def reminders(fake: FakeSlack) -> list[Call]:
    """Reminder replies the fake received."""
    return [
        c for c in fake.of("chat.postMessage") if str(c.args.get("text", "")).startswith(REMINDER)
    ]


def requests(fake: FakeSlack) -> list[Call]:
    """Top-level request messages (not replies)."""
    return [c for c in fake.of("chat.postMessage") if "thread_ts" not in c.args]


def notifiers(settings: Settings, fake: FakeSlack) -> list[Notifier]:
    """Console and Slack against the fake."""
    slack = SlackNotifier(web_client(fake.bot_token, fake.url), load_directory(settings.directory))
    return [ConsoleNotifier(), slack]


async def posted_ts(handle: WorkflowHandle[ActionWorkflow, ActionStatus]) -> str:
    """The ts of the Slack request once the workflow has recorded it (bounded poll)."""
    for _ in range(200):
        thread = (await handle.query(ActionWorkflow.status)).notifications
        found = [r.ref["ts"] for r in thread if r.channel == "slack" and r.ref.get("ts")]
        if found:
            return str(found[0])
        await asyncio.sleep(0.05)
    raise AssertionError(f"the Slack request never reached the workflow: {thread}")


async def test_reminders_reply_in_the_thread_until_someone_decides(
    skipping_env: WorkflowEnvironment,  # noqa: F811
    skipping_settings: Settings,  # noqa: F811
    ledger: Ledger,
    fake: FakeSlack,
) -> None:
    gate = Gate(skipping_env.client, skipping_settings, skipping_env.get_current_time)
    async with running_worker(
        skipping_env.client,
        skipping_settings,
        ledger,
        notifiers(skipping_settings, fake),
    ):
        handle = await gate.submit("remind-db")
        with skipping_env.auto_time_skipping_disabled():
            await gate.wait_for(handle, "pending_approval")
        [posted] = await fake.wait_for("chat.postMessage", channel="C0DBA")
        # The post reaches the fake before its activity's result reaches the workflow.
        ts = await posted_ts(handle)

        await skipping_env.sleep(timedelta(minutes=29))
        assert reminders(fake) == []
        await skipping_env.sleep(timedelta(minutes=2))
        await fake.wait_for("chat.postMessage", where=lambda c: c in reminders(fake))
        await skipping_env.sleep(timedelta(minutes=30))
        await fake.wait_for("chat.postMessage", 2, where=lambda c: c in reminders(fake))

        await gate.decide(handle, "alice@example.com")
        outcome = await handle.result()
        # Well past when the third reminder was due: none comes after the decision.
        await skipping_env.sleep(timedelta(hours=1))
    assert outcome.status is Status.SUCCEEDED
    sent = reminders(fake)
    assert len(sent) == 2
    assert all(c.args["thread_ts"] == ts and c.args["channel"] == "C0DBA" for c in sent)
    assert [c.args["text"][: len(REMINDER) + 2] for c in sent] == ["⏰ Reminder 1", "⏰ Reminder 2"]
    assert len(requests(fake)) == 1  # reminders never post a new message in the channel
    assert posted.args.get("thread_ts") is None
    refs = [r for r in outcome.notifications if r.reminder and r.channel == "slack"]
    assert [(r.reminder, r.ref["kind"]) for r in refs] == [(1, "reminder"), (2, "reminder")]


async def test_reminders_stop_after_max_and_the_action_still_expires(
    skipping_env: WorkflowEnvironment,  # noqa: F811
    skipping_settings: Settings,  # noqa: F811
    ledger: Ledger,
    fake: FakeSlack,
) -> None:
    gate = Gate(skipping_env.client, skipping_settings, skipping_env.get_current_time)
    async with running_worker(
        skipping_env.client,
        skipping_settings,
        ledger,
        notifiers(skipping_settings, fake),
    ):
        handle = await gate.submit("remind-db")
        outcome = await handle.result()  # time skips through every timer to the expiry
    assert outcome.status is Status.EXPIRED
    sent = reminders(fake)
    assert len(sent) == 3  # max: 3, although 4h of 30m gaps would allow seven
    assert len(requests(fake)) == 1
    [ts] = [r.ref["ts"] for r in outcome.notifications if r.ref.get("kind") == "request"]
    assert {c.args["thread_ts"] for c in sent} == {ts}
    events = await ledger.events(handle.id)
    notified = [e for e in events if e.kind == "notified" and e.channel == "slack"]
    assert [e.payload["refs"][0]["reminder"] for e in notified] == [0, 1, 2, 3]


async def test_escalation_ends_the_reminders(
    skipping_env: WorkflowEnvironment,  # noqa: F811
    skipping_settings: Settings,  # noqa: F811
    ledger: Ledger,
    fake: FakeSlack,
) -> None:
    gate = Gate(skipping_env.client, skipping_settings, skipping_env.get_current_time)
    async with running_worker(
        skipping_env.client,
        skipping_settings,
        ledger,
        notifiers(skipping_settings, fake),
    ):
        handle = await gate.submit("remindesc-db")
        outcome = await handle.result()
    assert outcome.status is Status.EXPIRED
    assert outcome.escalation_level == 1
    # 20m and 40m; the escalation at 50m notifies, and the 60m-110m reminders never come.
    assert len(reminders(fake)) == 2


def test_remind_is_validated_when_the_policy_loads(tmp_path: Path) -> None:
    base = {
        "id": "r",
        "effect": "require_approval",
        "approvals": [{"group": "dba"}],
        "expires_after": "1h",
    }
    cases = {
        "remind.every": {"remind": {"every": "10s", "max": 2}},
        "remind.max": {"remind": {"every": "10m", "max": 0}},
        "remind.every ": {"remind": {"every": "2h", "max": 2}},
        "remind": {
            "effect": "allow",
            "approvals": [],
            "expires_after": None,
            "remind": {"every": "10m"},
        },
    }
    for expected, change in cases.items():
        rule = {k: v for k, v in {**base, **change}.items() if v is not None}
        path = tmp_path / "policy.yaml"
        path.write_text(json.dumps({"version": 1, "default": {"effect": "deny"}, "rules": [rule]}))
        with pytest.raises(ValueError, match=expected.strip().replace(".", r"\.")):
            load_policy(path)
    loaded = load_policy(DATA / "policy.yaml")
    assert loaded is not None
    assert Reminders(every="30m", max=3).every == timedelta(minutes=30)


async def test_email_reminds_with_a_new_message_in_the_same_thread(
    skipping_env: WorkflowEnvironment,  # noqa: F811
    skipping_settings: Settings,  # noqa: F811
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    with smtp_server(tmp_path) as (controller, mailbox, ca):
        config = SmtpConfig(
            host="localhost",
            port=controller.port,
            sender="signoff@example.com",
            user=USER,
            password=PASSWORD,
            ca_file=ca,
        )
        email = EmailNotifier(
            config, load_directory(skipping_settings.directory), "https://signoff.example.com"
        )
        gate = Gate(skipping_env.client, skipping_settings, skipping_env.get_current_time)
        async with running_worker(
            skipping_env.client, skipping_settings, ledger, [ConsoleNotifier(), email]
        ):
            handle = await gate.submit("remind-mail")
            with skipping_env.auto_time_skipping_disabled():
                await gate.wait_for(handle, "pending_approval")
            await skipping_env.sleep(timedelta(minutes=31))
            for _ in range(200):
                if len(mailbox.messages) >= 2:
                    break
                await asyncio.sleep(0.05)
            await gate.decide(handle, "alice@example.com")
            outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    first, reminder = mailbox.messages
    assert first["Subject"] == "Approval needed: noop on remind-mail"
    assert reminder["Subject"] == "Reminder 1: approval still needed: noop on remind-mail"
    assert reminder["In-Reply-To"] == first["Message-ID"]
    assert reminder["Message-ID"] != first["Message-ID"]
    body = reminder.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"https://signoff.example.com/a/{handle.id}" in body


async def test_teams_reminds_with_a_reply_to_the_card(
    skipping_env: WorkflowEnvironment,  # noqa: F811
    skipping_settings: Settings,  # noqa: F811
    ledger: Ledger,
) -> None:
    fake = await FakeMicrosoft(client_id=TEAMS_APP, client_secret=TEAMS_SECRET).start()
    route = MsalRoute(fake.url)
    try:
        settings = skipping_settings.model_copy(
            update={
                "teams_app_id": TEAMS_APP,
                "teams_app_password": SecretStr(TEAMS_SECRET),
                "teams_tenant_id": TEAMS_TENANT,
                "teams_allowed_service_urls": ["127.0.0.1"],
                "teams_service_url": f"{fake.url}/default/",
            }
        )
        await ledger.pool.execute("DELETE FROM teams_conversations")
        teams = teams_notifier(
            settings,
            load_directory(settings.directory),
            store=ConversationStore(ledger.pool),
            msal_http_client=route,
        )
        gate = Gate(skipping_env.client, settings, skipping_env.get_current_time)
        async with running_worker(skipping_env.client, settings, ledger, [teams]):
            handle = await gate.submit("remind-teams")
            with skipping_env.auto_time_skipping_disabled():
                await gate.wait_for(handle, "pending_approval")
            await skipping_env.sleep(timedelta(minutes=31))
            for _ in range(200):
                if any("replyToId" in (r.body or {}) for r in fake.connector):
                    break
                await asyncio.sleep(0.05)
            await gate.decide(handle, "alice@example.com")
            outcome = await handle.result()
    finally:
        route.close()
        await fake.stop()
    assert outcome.status is Status.SUCCEEDED
    posts = [r for r in fake.connector if r.method == "POST"]
    [card] = [r for r in posts if "replyToId" not in r.body]
    [reply] = [r for r in posts if "replyToId" in r.body]
    [posted] = [n for n in outcome.notifications if not n.reminder]
    assert reply.body["replyToId"] == posted.ref["activity_id"]
    assert reply.path.endswith(f"/activities/{posted.ref['activity_id']}")
    assert reply.body["text"].startswith("⏰ Reminder 1:")
    assert "attachments" in card.body
    # The reminder is never replaced by the card when the action's messages are updated.
    puts = [r for r in fake.connector if r.method == "PUT"]
    assert puts
    assert all(r.path.endswith(f"/activities/{posted.ref['activity_id']}") for r in puts)
