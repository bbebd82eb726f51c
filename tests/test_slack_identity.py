"""Slack: only members of our workspace (or organisation) count when matched by email, and a
malformed timestamp is a 401, never a 500. Same stack as tests/test_slack.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.client import Client

from activities.audit import Ledger
from channels.slack_blocks import APPROVE_ACTION
from signoff.models import Status
from signoff.settings import Settings
from tests.fake_slack import FakeSlack
from tests.test_slack import (  # noqa: F401 - fixtures
    SECRET,
    Stack,
    buttons_of,
    click,
    fake,
    form,
    open_stack,
    signed,
    slack_settings,
    stack,
)

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
        "١٧٠٠٠٠٠٠٠٠".encode(),  # Arabic-Indic digits
        "¹⁷⁰⁰".encode(),
        "¹²³".encode("latin-1"),  # superscripts: str.isdigit() says yes, int() says no
        "１７００００００００".encode(),  # fullwidth
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
