"""Slack end to end: the real slack-sdk clients against a local fake Slack, a real worker on the
real Temporal dev server, and the gateway's Slack route (signed requests and Socket Mode)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import pytest
import yaml
from pydantic import SecretStr
from slack_sdk.signature import SignatureVerifier
from temporalio.client import Client
from typer.testing import CliRunner

from activities.ledger.store import Ledger
from channels.notifier import NotifierError
from channels.slack import SlackInteractions, SlackUnavailable, interactions_router
from channels.slack.blocks import (
    APPROVE_ACTION,
    DENY_ACTION,
    DENY_CALLBACK,
    FULL_CALLBACK,
    REVIEW_ACTION,
    REVIEW_CALLBACK,
    REVOKE_ACTION,
    SHOW_FULL_ACTION,
    escape,
    full_request_modal,
    request_attachments,
)
from policies.directory import Directory
from policies.loader import load_directory, load_policy
from signoff.executor import registry
from signoff.models import (
    ActionRequest,
    ActionStatus,
    ActionSubmission,
    ApprovalRequirement,
    BreakGlassClaim,
    DecisionRequest,
    NotificationRef,
    RefusalCode,
    RequirementProgress,
    Status,
    Verdict,
)
from tests.cli import app as cli_app
from tests.conftest import DATA, running_worker
from tests.fake_slack import Call, FakeSlack
from tests.grant_roles import DSN_ENV, GRANTABLE, grant_targets, granter_roles, new_grantee
from workers.gateway.app import create_app
from workers.gateway.service import ActionService
from workers.settings import Settings
from workers.wiring.channels import channel_routers, notifiers_for
from workers.wiring.slack import slack_notifier, slack_router
from workflows.messages import NotifyInput

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
T = TypeVar("T")

# Slack users: three linked by slack_user_id in the directory, two only by their Slack email
# (members of our workspace, emails confirmed), one whose email nobody in the directory has, and
# one Slack does not know.
MEMBER = {"team_id": "T0FAKE", "is_email_confirmed": True}
USERS = {
    "U0BOB": {"profile": {"email": "Bob@Example.com"}, **MEMBER},
    "U0OSCAR": {"profile": {"email": "oscar@example.com"}, **MEMBER},
    "U0STRANGER": {"profile": {"email": "stranger@elsewhere.test"}, **MEMBER},
    "U0ALICE": {"profile": {"email": "alice@example.com"}},
    "U0CAROL": {"profile": {}},
    "U0DAVE": {"profile": {}},
}
SLACK_IDS = {
    "alice@example.com": "U0ALICE",
    "carol@example.com": "U0CAROL",
    "dave@example.com": "U0DAVE",
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    """A fake Slack on a local port."""
    fake = FakeSlack(users=json.loads(json.dumps(USERS)))
    await fake.start()
    yield fake
    await fake.stop()


def slack_directory(tmp_path: Path) -> Path:
    """The test directory with Slack ids for some people and a user-group mention for oncall."""
    document = yaml.safe_load((DATA / "directory.yaml").read_text())
    for principal in document["principals"]:
        if principal["id"] in SLACK_IDS:
            principal["slack_user_id"] = SLACK_IDS[principal["id"]]
    document["groups"]["oncall"]["slack_mention"] = "<!subteam^S0ONCALL>"
    path = tmp_path / "directory.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def slack_settings(settings: Settings, fake: FakeSlack, tmp_path: Path) -> Settings:
    """The test settings pointed at the fake Slack, with a signing secret and a bot token."""
    return settings.model_copy(
        update={
            "directory": slack_directory(tmp_path),
            "slack_bot_token": SecretStr(fake.bot_token),
            "slack_signing_secret": SecretStr(SECRET),
            "slack_api_url": fake.url,
        }
    )


def signed(body: bytes, *, timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """Headers Slack would send with `body`, signed with the real SignatureVerifier."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def form(payload: dict[str, Any]) -> bytes:
    """An interaction body: the payload JSON in the `payload` form field."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def click(user: str, action_id: str, value: str, channel: str = "C0SEC") -> dict[str, Any]:
    """A `block_actions` payload for a button click."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0FAKE"},
        "team": {"id": "T0FAKE", "domain": "fake"},
        "api_app_id": "A0FAKE",
        "trigger_id": f"trig-{uuid.uuid4().hex}",
        "channel": {"id": channel, "name": "approvals"},
        "container": {"type": "message", "channel_id": channel, "message_ts": "1.0"},
        "response_url": "https://hooks.slack.test/actions/x",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "signoff_decide",
                "value": value,
                "action_ts": str(time.time()),
            }
        ],
    }


def submission(user: str, metadata: str, reason: str | None) -> dict[str, Any]:
    """A `view_submission` payload for the deny modal."""
    return {
        "type": "view_submission",
        "user": {"id": user, "team_id": "T0FAKE"},
        "team": {"id": "T0FAKE"},
        "view": {
            "id": "V0FAKE",
            "type": "modal",
            "callback_id": DENY_CALLBACK,
            "private_metadata": metadata,
            "state": {
                "values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}
            },
        },
    }


def blocks_of(call: Call) -> list[dict[str, Any]]:
    """The blocks of a posted or updated request message."""
    attachments = call.args["attachments"]
    assert len(attachments) == 1
    blocks: list[dict[str, Any]] = attachments[0]["blocks"]
    return blocks


def buttons_of(call: Call) -> dict[str, dict[str, Any]]:
    """The message's buttons by action_id (empty once it is decided)."""
    return {
        e["action_id"]: e for b in blocks_of(call) if b["type"] == "actions" for e in b["elements"]
    }


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 15) -> T:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last {result!r}")
        await asyncio.sleep(0.1)


@dataclass
class Stack:
    """Fake Slack, a worker with the Slack notifier, the service and the gateway's Slack route."""

    fake: FakeSlack
    service: ActionService
    directory: Directory
    http: httpx.AsyncClient

    async def submit(self, target: str, **params: Any) -> ActionStatus:
        """Submit as agent:bot through the service, as the API does."""
        bot = await self.directory.principal("agent:bot")
        assert bot is not None
        return await self.service.submit(
            bot,
            ActionSubmission(
                action="noop",
                target=target,
                params=params,
                justification="nightly cleanup of <!channel> stale rows & more",
            ),
        )

    async def posted(self, action_id: str, channel: str) -> Call:
        """The request message posted for the action to the channel."""
        calls = await self.fake.wait_for(
            "chat.postMessage",
            channel=channel,
            where=lambda call: "attachments" in call.args and action_id in json.dumps(call.args),
        )
        return calls[0]

    async def post(self, payload: dict[str, Any], **kwargs: Any) -> httpx.Response:
        """POST a signed interaction to the gateway."""
        body = form(payload)
        return await self.http.post(
            "/slack/interactions", content=body, headers=signed(body, **kwargs)
        )

    async def status(self, action_id: str) -> ActionStatus:
        """The action's status through the service."""
        return await self.service.status(action_id)

    async def refs(self, action_id: str) -> list[NotificationRef]:
        """Where the workflow keeps the posted messages, once the notify activity returned."""

        async def stored() -> list[NotificationRef]:
            return (await self.status(action_id)).notifications

        return await eventually(stored)


@asynccontextmanager
async def open_stack(
    client: Client, settings: Settings, ledger: Ledger, fake: FakeSlack
) -> AsyncIterator[Stack]:
    """Run the worker and the gateway app (with its lifespan, so Socket Mode too)."""
    directory = load_directory(settings.directory)
    service = ActionService(client, settings, load_policy(settings.policy), directory, registry)
    app = create_app(
        service, directory, settings, routers=[slack_router(settings, service, directory)]
    )
    notifier = slack_notifier(settings, directory)
    async with (
        running_worker(client, settings, ledger, notifiers=[notifier]),
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as http,
    ):
        yield Stack(fake, service, directory, http)


@pytest.fixture
async def stack(
    client: Client, slack_settings: Settings, ledger: Ledger, fake: FakeSlack
) -> AsyncIterator[Stack]:
    """The stack over HTTP interactions."""
    async with open_stack(client, slack_settings, ledger, fake) as stack:
        yield stack


# --- end to end -----------------------------------------------------------------------------


async def test_two_approvals_by_signed_clicks(stack: Stack) -> None:
    fake = stack.fake
    action = await stack.submit("two-db", rows=5, query="DELETE FROM t WHERE x < 3")
    call = await stack.posted(action.id, "C0SEC")
    assert call.token == fake.bot_token
    assert not fake.of("chat.postMessage", channel="C0DBA")  # only the required group
    text = json.dumps(blocks_of(call), ensure_ascii=False)
    assert "Approval needed: noop on two-db" in text
    for shown in (
        "🟠 high",
        "agent:bot",
        "<@U0DAVE>",  # the agent's owner
        "nightly cleanup of &lt;!channel&gt; stale rows &amp; more",  # escaped, cannot mention
        '\\"rows\\":5',
        action.digest[:12],
        "two-security",
        "2 of security",
        "<!date^",
        f"http://ui.test/namespaces/default/workflows/{action.id}|Open in Temporal UI",
    ):
        assert shown in text, shown
    assert call.args["attachments"][0]["color"] == "#e8912d"
    buttons = buttons_of(call)
    assert buttons[APPROVE_ACTION]["style"] == "primary"
    assert "confirm" in buttons[APPROVE_ACTION]
    assert buttons[DENY_ACTION]["style"] == "danger"

    # Where it landed is in workflow state, for updates.
    [ref] = await stack.refs(action.id)
    assert (ref.channel, ref.destination, ref.ref["channel"]) == ("slack", "C0SEC", "C0SEC")
    assert ref.ref["ts"].startswith("1700000000.")

    value = buttons[APPROVE_ACTION]["value"]
    # bob is found through users.info -> email (different case) -> directory.
    response = await stack.post(click("U0BOB", APPROVE_ACTION, value))
    assert response.status_code == 200
    update = await fake.wait_for("chat.update", ts=ref.ref["ts"])
    assert "1 of 2 from security (bob@example.com)" in json.dumps(blocks_of(update[-1]))
    assert APPROVE_ACTION in buttons_of(update[-1])

    # carol is found by her slack_user_id.
    response = await stack.post(click("U0CAROL", APPROVE_ACTION, value))
    assert response.status_code == 200
    outcome = await stack.service.wait(action.id, 20)
    assert outcome.status is Status.SUCCEEDED
    assert [(d.approver, d.channel) for d in outcome.decisions] == [
        ("bob@example.com", "slack"),
        ("carol@example.com", "slack"),
    ]

    async def final() -> Call | None:
        updates = fake.of("chat.update", ts=ref.ref["ts"])
        done = [u for u in updates if "Succeeded" in json.dumps(blocks_of(u))]
        return done[-1] if done else None

    last = await eventually(final)
    assert buttons_of(last) == {}
    assert "<@U0CAROL>" in json.dumps(blocks_of(last))
    # The owner hears the outcome in the thread.
    [told] = await fake.wait_for("chat.postMessage", thread_ts=ref.ref["ts"])
    assert told.args["text"].startswith("<@U0DAVE>")
    assert "succeeded" in told.args["text"]
    assert len(fake.of("users.info", user="U0BOB")) == 1  # cached after the first lookup


async def test_deny_through_the_modal(stack: Stack) -> None:
    fake = stack.fake
    action = await stack.submit("one-db")
    call = await stack.posted(action.id, "C0DBA")
    value = buttons_of(call)[DENY_ACTION]["value"]
    payload = click("U0ALICE", DENY_ACTION, value, channel="C0DBA")
    response = await stack.post(payload)
    assert response.status_code == 200
    [opened] = await fake.wait_for("views.open", trigger_id=payload["trigger_id"])
    view = opened.args["view"]
    assert view["callback_id"] == DENY_CALLBACK
    assert (await stack.status(action.id)).decisions == []  # the click alone decides nothing

    blank = await stack.post(submission("U0ALICE", view["private_metadata"], "   "))
    assert blank.status_code == 200
    assert blank.json()["response_action"] == "errors"

    response = await stack.post(
        submission("U0ALICE", view["private_metadata"], "not during the freeze")
    )
    assert response.status_code == 200
    assert response.content == b""  # closes the modal
    outcome = await stack.service.wait(action.id, 20)
    assert outcome.status is Status.DENIED
    assert outcome.error == "Denied by alice@example.com: not during the freeze"
    [decision] = outcome.decisions
    assert (decision.decision, decision.channel) == ("deny", "slack")
    ts = (await stack.refs(action.id))[0].ref["ts"]
    replies = await fake.wait_for("chat.postMessage", thread_ts=ts)
    await asyncio.sleep(1)  # the workflow sends a second terminal update; it must not repeat
    assert len(fake.of("chat.postMessage", thread_ts=ts)) == len(replies) == 1
    assert "not during the freeze" in replies[0].args["text"]


async def test_self_approval_click_is_refused_ephemerally_and_recorded(stack: Stack) -> None:
    fake = stack.fake
    action = await stack.submit("two-db")
    call = await stack.posted(action.id, "C0SEC")
    # dave is in security, but owns agent:bot.
    response = await stack.post(
        click("U0DAVE", APPROVE_ACTION, buttons_of(call)[APPROVE_ACTION]["value"])
    )
    assert response.status_code == 200
    [ephemeral] = await fake.wait_for("chat.postEphemeral", user="U0DAVE")
    assert ephemeral.args["channel"] == "C0SEC"
    assert "refused" in ephemeral.args["text"]
    assert "nobody decides their own action" in ephemeral.args["text"]
    status = await stack.status(action.id)
    assert status.decisions == []
    [attempt] = status.refused
    assert (attempt.approver, attempt.code, attempt.channel) == (
        "dave@example.com",
        RefusalCode.SELF_APPROVAL,
        "slack",
    )


async def test_escalation_replies_in_thread_with_a_mention(stack: Stack) -> None:
    fake = stack.fake
    action = await stack.submit("esc-db")
    call = await stack.posted(action.id, "C0DBA")
    ts = (await stack.refs(action.id))[0].ref["ts"]
    reply = (await fake.wait_for("chat.postMessage", thread_ts=ts, timeout=15))[0]
    assert "<!subteam^S0ONCALL>" in reply.args["text"]
    assert "Escalated (stage 1)" in reply.args["text"]
    assert reply.args["reply_broadcast"] is True  # the last stage
    # The newly eligible group gets the request with buttons in its own channel, too.
    oncall = await stack.posted(action.id, "C0ONCALL")
    assert APPROVE_ACTION in buttons_of(oncall)
    assert call.args["channel"] == "C0DBA"
    outcome = await stack.service.wait(action.id, 20)
    assert outcome.status is Status.EXPIRED
    updated = await fake.wait_for("chat.update", ts=ts)
    assert any("Expired" in json.dumps(blocks_of(u)) for u in updated)


async def test_rate_limited_post_waits_for_retry_after(stack: Stack) -> None:
    fake = stack.fake
    fake.rate_limit("chat.postMessage", 1)
    action = await stack.submit("one-db")
    first, second = await fake.wait_for("chat.postMessage", 2, channel="C0DBA")
    assert second.at - first.at >= 1.0  # Retry-After honoured by slack-sdk's handler
    [ref] = await stack.refs(action.id)
    assert ref.error is None
    assert ref.ref["channel"] == "C0DBA"


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        ("channel_not_found", "check the group's slack_channel"),
        ("not_in_channel", "/invite the app"),
        ("invalid_auth", "check SIGNOFF_SLACK_BOT_TOKEN"),
    ],
)
async def test_slack_down_still_approvable_through_the_api(
    stack: Stack, code: str, hint: str
) -> None:
    fake = stack.fake
    if code == "invalid_auth":
        fake.bot_token = "xoxb-the-token-slack-knows"
    else:
        fake.channel_errors["C0SEC"] = code
    action = await stack.submit("two-db")

    async def failed() -> ActionStatus | None:
        status = await stack.status(action.id)
        return status if status.notification_failures else None

    status = await eventually(failed)
    [failure] = status.notification_failures
    assert failure.error is not None
    for shown in (code, hint, "C0SEC"):
        assert shown in failure.error
    assert "xoxb" not in failure.error
    # Permanent: tried once, not five times.
    assert len(fake.of("chat.postMessage", channel="C0SEC")) == 1

    for approver in ("bob@example.com", "carol@example.com"):
        await stack.service.decide(
            action.id,
            DecisionRequest(approver=approver, decision="approve", digest=action.digest),
        )
    outcome = await stack.service.wait(action.id, 20)
    assert outcome.status is Status.SUCCEEDED


# --- bad input ------------------------------------------------------------------------------


async def test_every_bad_input_is_rejected_logged_and_decides_nothing(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="signoff.slack")
    action = await stack.submit("two-db")
    call = await stack.posted(action.id, "C0SEC")
    value = buttons_of(call)[APPROVE_ACTION]["value"]
    approve = click("U0BOB", APPROVE_ACTION, value)
    good = form(approve)
    headers = signed(good)
    forged_digest = json.dumps({"a": action.id, "d": "0" * 64})
    unknown_action = json.dumps({"a": "act-nope", "d": action.digest})

    # A valid Deny click only opens a modal, so it can be sent once, then replayed.
    deny = form(click("U0BOB", DENY_ACTION, value))
    deny_headers = signed(deny)
    first = await stack.http.post("/slack/interactions", content=deny, headers=deny_headers)
    assert first.status_code == 200

    cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
        (
            "missing signature",
            good,
            {"Content-Type": "application/x-www-form-urlencoded"},
            401,
            "missing X-Slack-Signature",
        ),
        (
            "bad signature",
            good,
            {**headers, "X-Slack-Signature": "v0=" + "a" * 64},
            401,
            "bad signature",
        ),
        ("wrong secret", good, signed(good, secret="not-the-secret"), 401, "bad signature"),
        ("body changed after signing", good + b"&x=1", headers, 401, "bad signature"),
        (
            "stale timestamp",
            good,
            signed(good, timestamp=int(time.time()) - 301),
            401,
            "stale timestamp",
        ),
        (
            "future timestamp",
            good,
            signed(good, timestamp=int(time.time()) + 400),
            401,
            "stale timestamp",
        ),
        ("replayed request", deny, deny_headers, 401, "replayed request"),
        (
            "payload not JSON",
            b"payload=%7Bnot-json",
            signed(b"payload=%7Bnot-json"),
            400,
            "payload is not JSON",
        ),
        ("no payload field", b"other=1", signed(b"other=1"), 400, "no payload field"),
        (
            "unknown action_id",
            form(click("U0BOB", "launch_missiles", value)),
            {},
            400,
            "unknown action_id 'launch_missiles'",
        ),
        (
            "unknown action",
            form(click("U0BOB", APPROVE_ACTION, unknown_action)),
            {},
            400,
            "unknown action 'act-nope'",
        ),
        (
            "digest mismatch",
            form(click("U0BOB", APPROVE_ACTION, forged_digest)),
            {},
            400,
            "does not match action",
        ),
        (
            "malformed button value",
            form(click("U0BOB", APPROVE_ACTION, "nope")),
            {},
            400,
            "malformed button value",
        ),
        (
            "user not in directory",
            form(click("U0STRANGER", APPROVE_ACTION, value)),
            {},
            401,
            "Slack user U0STRANGER is not in the directory",
        ),
        (
            "user unknown to Slack",
            form(click("U0GHOST", APPROVE_ACTION, value)),
            {},
            401,
            "Slack user U0GHOST is not in the directory",
        ),
        (
            "malformed payload",
            form({"type": "block_actions", "user": {}}),
            {},
            400,
            "malformed block_actions payload",
        ),
    ]
    for name, body, case_headers, expected, logged in cases:
        caplog.clear()
        response = await stack.http.post(
            "/slack/interactions", content=body, headers=case_headers or signed(body)
        )
        assert response.status_code == expected, name
        assert logged in caplog.text, (name, caplog.text)
        for secret in (SECRET, stack.fake.bot_token, headers["X-Slack-Signature"]):
            assert secret not in caplog.text, name

    await asyncio.sleep(1)  # anything spawned in the background would have landed by now
    status = await stack.status(action.id)
    assert status.decisions == []
    assert status.refused == []
    assert status.status is Status.PENDING_APPROVAL
    # Unlinked users are told why nothing happened; nobody else got a message.
    told = {c.args["user"] for c in stack.fake.of("chat.postEphemeral")}
    assert told == {"U0STRANGER", "U0GHOST"}


async def test_without_signing_secret_everything_is_401(
    stack: Stack, slack_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = slack_settings.model_copy(update={"slack_signing_secret": None})
    app = create_app(
        stack.service,
        stack.directory,
        settings,
        routers=[slack_router(settings, stack.service, stack.directory)],
    )
    action = await stack.submit("two-db")
    call = await stack.posted(action.id, "C0SEC")
    body = form(click("U0BOB", APPROVE_ACTION, buttons_of(call)[APPROVE_ACTION]["value"]))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as http:
        for headers in (signed(body), {}):
            response = await http.post("/slack/interactions", content=body, headers=headers)
            assert response.status_code == 401
    assert "no signing secret is configured" in caplog.text
    status = await stack.status(action.id)
    assert (status.decisions, status.refused) == ([], [])


# --- Socket Mode ----------------------------------------------------------------------------


async def test_socket_mode_same_flow(
    client: Client, slack_settings: Settings, ledger: Ledger, fake: FakeSlack
) -> None:
    settings = slack_settings.model_copy(
        update={"slack_app_token": SecretStr(fake.app_token), "slack_signing_secret": None}
    )
    async with open_stack(client, settings, ledger, fake) as stack:
        [opened] = await fake.wait_for("apps.connections.open")
        assert opened.token == fake.app_token

        approved = await stack.submit("one-db")
        call = await stack.posted(approved.id, "C0DBA")
        ack = await fake.send_envelope(
            click("U0ALICE", APPROVE_ACTION, buttons_of(call)[APPROVE_ACTION]["value"], "C0DBA")
        )
        assert "payload" not in ack
        assert (await stack.service.wait(approved.id, 20)).status is Status.SUCCEEDED

        denied = await stack.submit("one-db", n=2)
        call = await stack.posted(denied.id, "C0DBA")
        payload = click("U0ALICE", DENY_ACTION, buttons_of(call)[DENY_ACTION]["value"], "C0DBA")
        await fake.send_envelope(payload)
        [modal] = await fake.wait_for("views.open", trigger_id=payload["trigger_id"])
        metadata = modal.args["view"]["private_metadata"]
        ack = await fake.send_envelope(submission("U0ALICE", metadata, ""))
        assert ack["payload"]["response_action"] == "errors"
        ack = await fake.send_envelope(submission("U0ALICE", metadata, "wrong table"))
        assert "payload" not in ack
        outcome = await stack.service.wait(denied.id, 20)
        assert outcome.status is Status.DENIED
        assert outcome.error == "Denied by alice@example.com: wrong table"

        # A user outside the directory is acknowledged (Slack needs it) but decides nothing.
        third = await stack.submit("one-db", n=3)
        call = await stack.posted(third.id, "C0DBA")
        await fake.send_envelope(
            click("U0STRANGER", APPROVE_ACTION, buttons_of(call)[APPROVE_ACTION]["value"])
        )
        status = await stack.status(third.id)
        assert (status.decisions, status.refused) == ([], [])


# --- pieces ---------------------------------------------------------------------------------


def pending_status(**params: Any) -> ActionStatus:
    """A pending two-of-security status, as the workflow's query returns it."""
    request = ActionRequest(
        action="noop",
        target="two-db",
        params=params,
        justification="<@U0EVIL> look at `this` & <https://evil.test|that>",
        requester="agent:bot",
    )
    now = datetime.now(UTC)
    return ActionStatus(
        id="act-test",
        digest=request.digest,
        request=request,
        status=Status.PENDING_APPROVAL,
        verdict=Verdict(
            effect="require_approval",
            rule_id="two-security",
            reason="two people",
            risk="critical",
            approvals=[ApprovalRequirement(group="security", min=2)],
            expires_after=timedelta(hours=1),
            policy_digest="0" * 64,
        ),
        progress=[RequirementProgress(group="security", min=2)],
        eligible_groups=["security"],
        created_at=now,
        expires_at=now + timedelta(hours=1),
        owner="dave@example.com",
    )


def test_message_escapes_agent_text_and_fits_slack_limits() -> None:
    status = pending_status(sql="x" * 5000 + "```<!here>", target="`injected`")
    [attachment] = [a.to_dict() for a in request_attachments(status, None, {})]
    text = json.dumps(attachment)
    for injected in ("<@U0EVIL>", "<!here>", "<https://evil"):
        assert injected not in text
    assert escape("<@U0EVIL>") in text
    assert attachment["color"] == "#e01e5a"
    params = next(
        b for b in attachment["blocks"] if "*Params*" in b.get("text", {}).get("text", "")
    )
    assert len(params["text"]["text"]) < 3000
    assert params["text"]["text"].count("```") == 2  # nothing closes the code block early


async def test_unreachable_slack_is_retryable_not_permanent(slack_settings: Settings) -> None:
    settings = slack_settings.model_copy(update={"slack_api_url": "http://127.0.0.1:9/api/"})
    notifier = slack_notifier(settings, load_directory(settings.directory))
    request = NotifyInput(channel="slack", status=pending_status(), groups=["security"])
    with pytest.raises(SlackUnavailable) as info:
        await notifier.post(request)
    assert not isinstance(info.value, NotifierError)
    assert "C0SEC" in str(info.value)


def test_hooks_into_worker_gateway_and_cli(slack_settings: Settings) -> None:
    directory = load_directory(slack_settings.directory)
    assert "slack" in [n.channel for n in notifiers_for(slack_settings, directory)]
    without = slack_settings.model_copy(update={"slack_bot_token": None})
    assert "slack" not in [n.channel for n in notifiers_for(without, directory)]

    service = ActionService(None, slack_settings, None, directory, registry)  # type: ignore[arg-type]
    paths = [
        getattr(r, "path", "")
        for router in channel_routers(without, service, directory)
        for r in router.routes
    ]
    assert "/slack/interactions" in paths

    result = CliRunner().invoke(
        cli_app, ["gateway", "--slack-socket-mode"], env={"SIGNOFF_SLACK_APP_TOKEN": ""}
    )
    assert result.exit_code == 2
    assert "SIGNOFF_SLACK_APP_TOKEN" in result.output


def test_interactions_router_builds_without_any_slack_settings(slack_settings: Settings) -> None:
    directory = load_directory(slack_settings.directory)
    service = ActionService(None, slack_settings, None, directory, registry)  # type: ignore[arg-type]
    interactions = SlackInteractions(service, directory, client=None, signing_secret=None)  # type: ignore[arg-type]
    router = interactions_router(interactions)
    assert [getattr(r, "path", "") for r in router.routes] == ["/slack/interactions"]


def test_manifest_asks_for_what_the_code_uses() -> None:
    manifest = yaml.safe_load(
        (DATA.parent.parent / "deploy" / "slack" / "manifest.yaml").read_text()
    )
    assert manifest["oauth_config"]["scopes"]["bot"] == [
        "chat:write",
        "users:read",
        "users:read.email",
    ]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is True


# --- who may click: our workspace only (issue 12) --------------------------------------------

# bob is in the directory by email only: whoever Slack says has bob's email would be bob.
BOB_EMAIL = {"profile": {"email": "bob@example.com"}}
FOREIGN: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    # name: (users.info fields, payload user fields, what the clicker is told)
    "Slack Connect stranger": (
        {**BOB_EMAIL, "team_id": "T0OTHER", "is_stranger": True, "is_email_confirmed": True},
        {"team_id": "T0OTHER"},
        "another organisation (Slack Connect)",
    ),
    "member of another workspace": (
        {**BOB_EMAIL, "team_id": "T0OTHER", "is_email_confirmed": True},
        {"team_id": "T0OTHER"},
        "not a member of this Slack workspace",
    ),
    "another organisation's enterprise user": (
        {
            **BOB_EMAIL,
            "team_id": "T0OTHER",
            "enterprise_user": {"enterprise_id": "E0OTHER", "teams": ["T0OTHER"]},
            "is_email_confirmed": True,
        },
        {"team_id": "T0OTHER"},
        "not a member of this Slack workspace",
    ),
    "clicked from another workspace": (
        {**BOB_EMAIL, "team_id": "T0FAKE", "is_email_confirmed": True},
        {"team_id": "T0OTHER"},
        "clicked from another Slack workspace",
    ),
    "unconfirmed email": (
        {**BOB_EMAIL, "team_id": "T0FAKE", "is_email_confirmed": False},
        {"team_id": "T0FAKE"},
        "has not confirmed your email",
    ),
    "email confirmation unknown": (
        {**BOB_EMAIL, "team_id": "T0FAKE"},
        {"team_id": "T0FAKE"},
        "has not confirmed your email",
    ),
    "no workspace at all": (
        {**BOB_EMAIL, "is_email_confirmed": True},
        {},
        "not a member of this Slack workspace",
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN), ids=list(FOREIGN))
async def test_a_clicker_from_outside_our_workspace_never_counts_by_email(
    stack: Stack, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.INFO, logger="signoff.slack")
    info, payload_user, told = FOREIGN[case]
    stack.fake.users["U0MALLORY"] = info
    action = await stack.submit("two-db")
    call = await stack.posted(action.id, "C0SEC")
    payload = click("U0MALLORY", APPROVE_ACTION, buttons_of(call)[APPROVE_ACTION]["value"])
    payload["user"] = {"id": "U0MALLORY", "username": "mallory", **payload_user}
    response = await stack.post(payload)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "Slack user U0MALLORY refused" in caplog.text
    [ephemeral] = await stack.fake.wait_for("chat.postEphemeral", user="U0MALLORY")
    assert told in ephemeral.args["text"]
    assert "not counted" in ephemeral.args["text"]
    # A second click is refused the same way (from the cache), and nothing was decided.
    again = await stack.post(
        click("U0MALLORY", APPROVE_ACTION, buttons_of(call)[APPROVE_ACTION]["value"])
    )
    assert again.status_code == 403
    await asyncio.sleep(0.5)
    status = await stack.status(action.id)
    assert status.status is Status.PENDING_APPROVAL
    assert (status.decisions, status.refused) == ([], [])


async def test_a_confirmed_member_of_our_workspace_counts_by_email(stack: Stack) -> None:
    stack.fake.users["U0BOB2"] = {**BOB_EMAIL, "team_id": "T0FAKE", "is_email_confirmed": True}
    action = await stack.submit("two-db")
    call = await stack.posted(action.id, "C0SEC")
    value = buttons_of(call)[APPROVE_ACTION]["value"]
    assert (await stack.post(click("U0BOB2", APPROVE_ACTION, value))).status_code == 200

    async def decided() -> list[str]:
        return [d.approver for d in (await stack.status(action.id)).decisions]

    for _ in range(100):
        if await decided():
            break
        await asyncio.sleep(0.1)
    assert await decided() == ["bob@example.com"]
    # Our workspace came from the bot token's own (auth.test), asked once.
    assert len(stack.fake.of("auth.test")) == 1


@pytest.fixture
async def grid_stack(
    client: Client, slack_settings: Settings, ledger: Ledger, fake: FakeSlack
) -> AsyncIterator[Stack]:
    """The stack for an Enterprise Grid organisation, configured in the settings."""
    settings = slack_settings.model_copy(
        update={"slack_team_id": "T0HOME", "slack_enterprise_id": "E0ORG"}
    )
    async with open_stack(client, settings, ledger, fake) as grid:
        yield grid


async def test_any_workspace_of_our_organisation_counts_and_others_do_not(
    grid_stack: Stack,
) -> None:
    stack = grid_stack
    ours = {"enterprise_user": {"enterprise_id": "E0ORG"}, "is_email_confirmed": True}
    stack.fake.users["U0BOB3"] = {**BOB_EMAIL, "team_id": "T0SISTER", **ours}
    stack.fake.users["U0FAKE"] = {**BOB_EMAIL, "team_id": "T0FAKE", "is_email_confirmed": True}
    action = await stack.submit("two-db")
    call = await stack.posted(action.id, "C0SEC")
    value = buttons_of(call)[APPROVE_ACTION]["value"]
    # T0FAKE is the bot's workspace per auth.test, but the settings say who is ours.
    outsider = click("U0FAKE", APPROVE_ACTION, value)
    assert (await stack.post(outsider)).status_code == 403
    sister = click("U0BOB3", APPROVE_ACTION, value)
    sister["user"]["team_id"] = "T0SISTER"
    sister["enterprise"] = {"id": "E0ORG", "name": "Org"}
    assert (await stack.post(sister)).status_code == 200
    for _ in range(100):
        status = await stack.status(action.id)
        if status.decisions:
            break
        await asyncio.sleep(0.1)
    assert [d.approver for d in status.decisions] == ["bob@example.com"]
    assert stack.fake.of("auth.test") == []


@pytest.mark.parametrize(
    "timestamp",
    [
        "\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660".encode(),  # Arabic-Indic
        "\u00b9\u2077\u2070\u2070".encode(),  # superscripts
        "\u00b9\u00b2\u00b3".encode("latin-1"),  # isdigit() says yes, int() says no
        "\uff11\uff17\uff10\uff10\uff10\uff10\uff10\uff10\uff10\uff10".encode(),  # fullwidth
        b"17000000\xff0",
    ],
)
async def test_a_timestamp_of_non_ascii_digits_is_401_not_500(
    stack: Stack, caplog: pytest.LogCaptureFixture, timestamp: bytes
) -> None:
    caplog.set_level(logging.INFO, logger="signoff.slack")
    body = form(click("U0BOB", APPROVE_ACTION, '{"a": "act-x", "d": "' + "0" * 64 + '"}'))
    headers = signed(body)
    headers["X-Slack-Request-Timestamp"] = timestamp  # type: ignore[assignment]
    response = await stack.http.post("/slack/interactions", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert "malformed X-Slack-Request-Timestamp" in caplog.text
    assert SECRET not in caplog.text


async def test_a_current_timestamp_still_verifies(stack: Stack) -> None:
    # The check above must not turn away Slack's own (ASCII) timestamps.
    action = await stack.submit("two-db")
    call = await stack.posted(action.id, "C0SEC")
    value = buttons_of(call)[APPROVE_ACTION]["value"]
    response = await stack.post(click("U0CAROL", APPROVE_ACTION, value), timestamp=int(time.time()))
    assert response.status_code == 200


# --- nothing hidden from the approver -------------------------------------------------------

HOSTILE = "Run \x1b[2J\u202eevil\u200b now <!channel> <https://evil.test|runbook> *bold*"


async def submit_hostile(stack: Stack, target: str, params: dict[str, Any]) -> ActionStatus:
    """Submit as agent:bot with a hostile justification."""
    bot = await stack.directory.principal("agent:bot")
    assert bot is not None
    return await stack.service.submit(
        bot,
        ActionSubmission(action="noop", target=target, params=params, justification=HOSTILE),
    )


async def test_a_cut_message_offers_the_full_request_in_a_modal(stack: Stack) -> None:
    fake = stack.fake
    tail = "a" * 10_000 + " DROP TABLE x"
    action = await submit_hostile(stack, "one-db", {"sql": tail})
    call = await stack.posted(action.id, "C0DBA")
    text = json.dumps(blocks_of(call), ensure_ascii=False)
    for live in ("<!channel>", "<https://evil.test|runbook>", "\x1b", "\u202e", "\u200b"):
        assert live not in json.dumps(call.args, ensure_ascii=False)
    assert "DROP TABLE x" not in text  # the message itself is cut…
    assert "characters of params hidden" in text  # …and says so, with how much
    hidden = json.dumps(action.request.params, separators=(",", ":"))
    assert f"{len(hidden) - 1499:,} characters of params" in text
    buttons = buttons_of(call)
    assert set(buttons) == {SHOW_FULL_ACTION, APPROVE_ACTION, DENY_ACTION}

    payload = click("U0ALICE", SHOW_FULL_ACTION, buttons[SHOW_FULL_ACTION]["value"], "C0DBA")
    assert (await stack.post(payload)).status_code == 200
    [opened] = await fake.wait_for("views.open", trigger_id=payload["trigger_id"])
    view = opened.args["view"]
    assert view["callback_id"] == FULL_CALLBACK
    assert "submit" not in view  # it shows; it cannot decide
    modal = "".join(b["text"]["text"].replace("```", "") for b in view["blocks"])
    assert tail in modal  # every character, the DROP at the very end included
    assert action.digest in modal
    assert "dave@example.com" in modal  # the agent's owner
    assert "\\u202eevil\\u200b" in modal
    assert "\\u001b[2J" in modal
    assert (await stack.status(action.id)).decisions == []  # showing decided nothing


async def test_too_large_for_slack_has_no_approve_button(stack: Stack) -> None:
    huge = {f"k{i}": "b" * 90_000 for i in range(4)}
    action = await submit_hostile(stack, "one-db", huge)
    call = await stack.posted(action.id, "C0DBA")
    text = json.dumps(blocks_of(call), ensure_ascii=False)
    assert "too large for Slack" in text
    assert f"signoff status {action.id}" in text
    assert set(buttons_of(call)) == {DENY_ACTION}  # no Approve on what cannot be read here


def test_agent_text_is_inert_and_visible_in_every_block() -> None:
    status = pending_status(note=HOSTILE)
    status = status.model_copy(
        update={
            "request": status.request.model_copy(update={"justification": HOSTILE}),
            "error": HOSTILE,
        }
    )
    for blocks in (
        [a.to_dict() for a in request_attachments(status, None, {})],
        [full_request_modal(status).to_dict()],
    ):
        text = json.dumps(blocks, ensure_ascii=False)
        for raw in ("\x1b", "\u202e", "\u200b", "<!channel>", "<https://evil"):
            assert raw not in text, raw
        assert "\\\\u202eevil\\\\u200b" in text  # visible as escapes (JSON-quoted here)
    # Outside code blocks, Slack's formatting characters are inert look-alikes.
    assert "Justification*\\nRun \\\\u001b[2J" in json.dumps(
        [a.to_dict() for a in request_attachments(status, None, {})]
    )
    assert "\u2217bold\u2217" in json.dumps(
        [a.to_dict() for a in request_attachments(status, None, {})], ensure_ascii=False
    )


# --- just-in-time grants: "Revoke now" (issue 15) ---------------------------------------------


async def test_revoke_now_on_an_active_grant_only_for_those_who_may(
    client: Client,
    slack_settings: Settings,
    ledger: Ledger,
    fake: FakeSlack,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DSN_ENV, await granter_roles(postgres_url))
    settings = slack_settings.model_copy(
        update={"policy": DATA / "grants-policy.yaml", "targets": grant_targets(tmp_path)}
    )
    user = await new_grantee(postgres_url)
    async with open_stack(client, settings, ledger, fake) as stack:
        bot = await stack.directory.principal("agent:bot")
        assert bot is not None
        action = await stack.service.submit(
            bot,
            ActionSubmission(
                action="postgres.grant_role",
                target="grant-db",
                params={"role": GRANTABLE, "user": user, "duration": "30m"},
                justification="backfill",
            ),
        )
        call = await stack.posted(action.id, "C0DBA")
        assert REVOKE_ACTION not in buttons_of(call)  # nothing to revoke before it runs
        [ref] = await stack.refs(action.id)
        await stack.service.decide(
            action.id,
            DecisionRequest(approver="alice@example.com", decision="approve", digest=action.digest),
        )

        async def active_message() -> Call | None:
            updates = fake.of("chat.update", ts=ref.ref["ts"])
            shown = [u for u in updates if REVOKE_ACTION in buttons_of(u)]
            return shown[-1] if shown else None

        message = await eventually(active_message)
        text = json.dumps(blocks_of(message), ensure_ascii=False)
        assert "Active" in text
        assert "Active since" in text
        button = buttons_of(message)[REVOKE_ACTION]
        assert button["text"]["text"] == "Revoke now"
        assert "confirm" in button

        # oscar is on call: neither party, approver nor in the revoke groups. Refused, recorded.
        response = await stack.post(click("U0OSCAR", REVOKE_ACTION, button["value"], "C0DBA"))
        assert response.status_code == 200
        [ephemeral] = await fake.wait_for("chat.postEphemeral", user="U0OSCAR")
        assert "refused" in ephemeral.args["text"]
        assert "may not revoke" in ephemeral.args["text"]
        status = await stack.status(action.id)
        assert status.status is Status.ACTIVE
        assert [(r.approver, r.kind, r.code) for r in status.refused] == [
            ("oscar@example.com", "revoke", RefusalCode.NOT_ELIGIBLE)
        ]

        # bob is in security, the rule's revoke group: it ends now.
        response = await stack.post(click("U0BOB", REVOKE_ACTION, button["value"], "C0DBA"))
        assert response.status_code == 200

        # The click answers at once; the revoke is recorded and the revert runs after it.
        async def reverted() -> ActionStatus | None:
            status = await stack.status(action.id)
            return status if status.status is Status.REVERTED else None

        outcome = await eventually(reverted)

        async def final() -> Call | None:
            updates = fake.of("chat.update", ts=ref.ref["ts"])
            done = [u for u in updates if "Reverted" in json.dumps(blocks_of(u))]
            return done[-1] if done else None

        last = await eventually(final)
    assert outcome.status is Status.REVERTED
    assert outcome.window is not None
    assert outcome.window.ended_by == "bob@example.com"
    assert buttons_of(last) == {}
    assert "revoked by bob@example.com" in json.dumps(blocks_of(last))


# --- break-glass review from Slack -----------------------------------------------------------

GLASS_REASON = "prod-db is down and the fix cannot wait for a DBA"


def review_submission(
    user: str, metadata: str, reason: str | None, outcome: str = "accepted"
) -> dict[str, Any]:
    """A `view_submission` payload for the break-glass review modal."""
    payload = submission(user, metadata, reason)
    payload["view"]["callback_id"] = REVIEW_CALLBACK
    payload["view"]["state"]["values"]["outcome"] = {
        "outcome": {"type": "radio_buttons", "selected_option": {"value": outcome}}
    }
    return payload


async def test_break_glass_is_reviewed_from_slack_by_another_person_not_the_breaker(
    stack: Stack, ledger: Ledger
) -> None:
    fake = stack.fake
    oscar = await stack.directory.principal("oscar@example.com")
    assert oscar is not None
    action = await stack.service.submit(
        oscar,
        ActionSubmission(
            action="noop",
            target="glass-db",
            params={"fix": "restart"},
            justification="prod-db is down",
            break_glass=BreakGlassClaim(reason=GLASS_REASON),
        ),
    )
    [ref] = await stack.refs(action.id)
    ts = ref.ref["ts"]

    def messages() -> list[Call]:
        # The message as posted (it may be posted after the run) and as updated since.
        posted = [
            c
            for c in fake.of("chat.postMessage", channel=ref.ref["channel"])
            if "attachments" in c.args and action.id in json.dumps(c.args)
        ]
        return posted + fake.of("chat.update", ts=ts)

    async def open_review() -> Call | None:
        # The message carries its Review button once the action has run and its review opened.
        shown = [u for u in messages() if REVIEW_ACTION in buttons_of(u)]
        return shown[-1] if shown else None

    message = await eventually(open_review)
    button = buttons_of(message)[REVIEW_ACTION]
    assert button["text"]["text"] == "Review"
    assert APPROVE_ACTION not in buttons_of(message)  # a break is reviewed, never approved

    async def modal_for(user: str) -> dict[str, Any]:
        payload = click(user, REVIEW_ACTION, button["value"], channel=ref.ref["channel"])
        assert (await stack.post(payload)).status_code == 200
        [opened] = await fake.wait_for("views.open", trigger_id=payload["trigger_id"])
        view: dict[str, Any] = opened.args["view"]
        assert view["callback_id"] == REVIEW_CALLBACK
        return view

    # The breaker: refused, told only them, and the refusal is recorded.
    view = await modal_for("U0OSCAR")
    response = await stack.post(review_submission("U0OSCAR", view["private_metadata"], "fine"))
    assert response.status_code == 200
    [ephemeral] = await fake.wait_for("chat.postEphemeral", user="U0OSCAR")
    assert "Your review was refused" in ephemeral.args["text"]
    assert "nobody reviews their own" in ephemeral.args["text"]
    status = await stack.status(action.id)
    assert status.break_glass is not None
    assert status.break_glass.reviewed is None
    assert [(r.approver, r.kind, r.code, r.channel) for r in status.refused] == [
        ("oscar@example.com", "review", RefusalCode.SELF_REVIEW, "slack")
    ]

    # A blank reason is an error under the input; nothing is recorded.
    view = await modal_for("U0BOB")
    blank = await stack.post(review_submission("U0BOB", view["private_metadata"], "   "))
    assert blank.status_code == 200
    assert blank.json()["response_action"] == "errors"
    assert "needs a reason" in blank.json()["errors"]["reason"]
    forged = await stack.post(
        review_submission("U0BOB", view["private_metadata"], "ok", outcome="whatever")
    )
    assert forged.json()["response_action"] == "errors"
    status = await stack.status(action.id)
    assert status.break_glass is not None
    assert status.break_glass.reviewed is None
    assert len(status.refused) == 1

    # bob (security) reviews it: recorded with the Slack channel, and the message says so.
    response = await stack.post(
        review_submission(
            "U0BOB", view["private_metadata"], "the restart was needed", outcome="disputed"
        )
    )
    assert response.status_code == 200
    assert response.content == b""  # closes the modal

    async def reviewed() -> ActionStatus | None:
        status = await stack.status(action.id)
        return status if status.break_glass and status.break_glass.reviewed else None

    status = await eventually(reviewed)
    assert status.break_glass is not None
    assert status.break_glass.review == "reviewed"
    done = status.break_glass.reviewed
    assert done is not None
    assert (done.reviewer, done.outcome, done.channel, done.reason) == (
        "bob@example.com",
        "disputed",
        "slack",
        "the restart was needed",
    )

    async def ledger_row() -> Any:
        rows = [r for r in await ledger.events(action.id) if r.kind == "reviewed"]
        return rows[-1] if rows else None

    row = await eventually(ledger_row)
    assert (row.actor, row.channel) == ("bob@example.com", "slack")

    async def updated() -> Call | None:
        final = [u for u in fake.of("chat.update", ts=ts) if "Reviewed (disputed)" in str(u.args)]
        return final[-1] if final else None

    final = await eventually(updated)
    assert REVIEW_ACTION not in buttons_of(final)  # the review is closed: no button any more
    # The old button, clicked again by someone else in security: no modal, no second review.
    late = click("U0CAROL", REVIEW_ACTION, button["value"], channel=ref.ref["channel"])
    assert (await stack.post(late)).status_code == 200
    [told] = await fake.wait_for("chat.postEphemeral", user="U0CAROL")
    assert "no open review" in told.args["text"]
    assert not fake.of("views.open", trigger_id=late["trigger_id"])
