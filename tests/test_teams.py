"""Microsoft Teams end to end: real workflows, real msal and PyJWT, a fake Microsoft.

The fake (tests/fake_teams.py) is Microsoft's side only: token endpoint, Bot Framework keys
and connector. Everything of ours runs for real: the notifier inside a real worker, the
`/teams/messages` route inside the gateway app, decisions through `ActionService.decide`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from markdown_it import MarkdownIt
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle

from activities.ledger.store import Ledger
from channels.notifier import NotifierError
from channels.teams import (
    ADAPTIVE_CARD,
    ConversationReference,
    ConversationStore,
    TeamsNotifier,
    approval_card,
    service_url_allowed,
)
from policies.directory import StaticDirectory
from policies.loader import load_directory, load_policy
from signoff.executor import registry
from signoff.models import ActionRequest, ActionStatus, BreakGlassClaim, RefusalCode, Status
from tests.conftest import DATA, Gate, running_worker
from tests.fake_teams import FakeMicrosoft, MsalRoute
from tests.grant_roles import DSN_ENV, GRANTABLE, grant_targets, granter_roles, new_grantee
from tests.page_fixtures import policy_with_step_up
from workers.gateway.app import create_app
from workers.gateway.service import ActionService
from workers.settings import Settings
from workers.wiring.teams import teams_notifier, teams_router
from workflows.action import ActionWorkflow
from workflows.messages import NotifyInput

APP_ID = "6c1e3b8e-0000-4000-8000-00000000b075"
TENANT = "11111111-2222-3333-4444-555555555555"
SECRET = "bot-secret"
SEC = "19:sec@thread.tacv2"
DBA = "19:dba@thread.tacv2"
ONCALL = "19:oncall@thread.tacv2"

Handle = WorkflowHandle[ActionWorkflow, ActionStatus]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeMicrosoft]:
    """Microsoft's services on 127.0.0.1."""
    fake = await FakeMicrosoft(client_id=APP_ID, client_secret=SECRET).start()
    yield fake
    await fake.stop()


@pytest.fixture
def msal_http(fake: FakeMicrosoft) -> Iterator[MsalRoute]:
    """msal's http client, answering the real authority from the fake."""
    route = MsalRoute(fake.url)
    yield route
    route.close()


@pytest.fixture
def teams_settings(settings: Settings, fake: FakeMicrosoft) -> Settings:
    """The test settings with Teams configured against the fake."""
    return settings.model_copy(
        update={
            "teams_app_id": APP_ID,
            "teams_app_password": SecretStr(SECRET),
            "teams_tenant_id": TENANT,
            "teams_openid_metadata_url": fake.metadata_url,
            "teams_allowed_service_urls": ["127.0.0.1"],
            "teams_service_url": f"{fake.url}/default/",
        }
    )


@pytest.fixture
async def store(ledger: Ledger) -> ConversationStore:
    """Conversation references in the session's Postgres, emptied for this test."""
    await ledger.pool.execute("DELETE FROM teams_conversations")
    return ConversationStore(ledger.pool)


@pytest.fixture
def directory(teams_settings: Settings) -> StaticDirectory:
    """The test directory."""
    return load_directory(teams_settings.directory)


def gateway_app(
    client: Client,
    settings: Settings,
    directory: StaticDirectory,
    store: ConversationStore,
    msal_http: MsalRoute,
) -> httpx.AsyncClient:
    """An HTTP client of the real gateway app with the Teams router mounted."""
    service = ActionService(client, settings, load_policy(settings.policy), directory, registry)
    router = teams_router(settings, service, directory, store=store, msal_http_client=msal_http)
    app = create_app(service, directory, settings, routers=[router])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


@pytest.fixture
async def gateway(
    client: Client,
    teams_settings: Settings,
    directory: StaticDirectory,
    store: ConversationStore,
    msal_http: MsalRoute,
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway, as Teams reaches it."""
    async with gateway_app(client, teams_settings, directory, store, msal_http) as http:
        yield http


@pytest.fixture
def notifier(
    teams_settings: Settings,
    directory: StaticDirectory,
    store: ConversationStore,
    msal_http: MsalRoute,
) -> TeamsNotifier:
    """The Teams notifier as the worker builds it, with msal routed to the fake."""
    return teams_notifier(teams_settings, directory, store=store, msal_http_client=msal_http)


# --- helpers --------------------------------------------------------------------------------


def account(oid: str | None) -> dict[str, Any]:
    """A Teams user as activities carry it."""
    user: dict[str, Any] = {"id": f"29:{oid or 'anonymous'}", "name": oid or "anonymous"}
    if oid:
        user["aadObjectId"] = oid
    return user


def base_activity(service_url: str, conversation: str, **fields: Any) -> dict[str, Any]:
    """The fields every activity from Teams has."""
    return {
        "id": "f:1",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "recipient": {"id": f"28:{APP_ID}", "name": "signoff"},
        "conversation": {"id": conversation, "conversationType": "channel", "tenantId": TENANT},
        "channelData": {"tenant": {"id": TENANT}},
        **fields,
    }


def invoke(
    service_url: str,
    oid: str | None,
    verb: str,
    data: dict[str, Any],
    *,
    conversation: str = SEC,
    reason: str | None = None,
) -> dict[str, Any]:
    """An `adaptiveCard/action` invoke, as Teams sends it when a button is pressed."""
    merged = {**data, **({"reason": reason} if reason is not None else {})}
    return base_activity(
        service_url,
        conversation,
        type="invoke",
        name="adaptiveCard/action",
        **{"from": account(oid)},
        value={
            "action": {"type": "Action.Execute", "verb": verb, "data": merged},
            "trigger": "manual",
        },
    )


def installed(service_url: str, conversation: str, *, removed: bool = False) -> dict[str, Any]:
    """A conversationUpdate: our bot was added to (or removed from) a team channel."""
    bot = {"id": f"28:{APP_ID}", "name": "signoff"}
    members = {"membersRemoved" if removed else "membersAdded": [bot]}
    return base_activity(
        service_url,
        conversation,
        type="conversationUpdate",
        **{"from": account("aad-carol")},
        channelData={"tenant": {"id": TENANT}, "team": {"id": "19:team@thread.tacv2"}},
        **members,
    )


async def send(
    gateway: httpx.AsyncClient,
    fake: FakeMicrosoft,
    activity: dict[str, Any],
    *,
    token: str | None = None,
) -> httpx.Response:
    """POST an activity to /teams/messages with a valid Bot Framework token for it."""
    token = token or fake.bot_jwt(service_url=activity["serviceUrl"])
    return await gateway.post(
        "/teams/messages", json=activity, headers={"Authorization": f"Bearer {token}"}
    )


async def until(
    handle: Handle, check: Callable[[ActionStatus], bool], seconds: float = 15
) -> ActionStatus:
    """Poll the workflow's status until `check` holds (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        status = await handle.query(ActionWorkflow.status)
        if check(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"condition never held; last status {status}")
        await asyncio.sleep(0.05)


async def eventually(check: Callable[[], bool], seconds: float = 10) -> None:
    """Wait until `check` holds (bounded)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.05)


def posted_teams(status: ActionStatus) -> bool:
    """Whether the Teams card was posted (or failed to be)."""
    return any(n.channel == "teams" for n in status.notifications)


def button(card: dict[str, Any], verb: str) -> dict[str, Any]:
    """The card's Action.Execute for a verb."""
    return next(a for a in card.get("actions", []) if a.get("verb") == verb)


def card_text(card: dict[str, Any]) -> str:
    """Every text and fact of a card, for assertions on what a person reads."""
    parts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("text", "title", "value"):
                if isinstance(node.get(key), str):
                    parts.append(node[key])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(card.get("body", []))
    # What a reader sees: Markdown's backslash escapes are not shown.
    return re.sub(r"\\(.)", r"\1", "\n".join(parts))


def card_of(activity: Any) -> dict[str, Any]:
    """The Adaptive Card in a posted activity."""
    attachment = activity["attachments"][0]
    assert attachment["contentType"] == ADAPTIVE_CARD
    return dict(attachment["content"])


# --- outbound and inbound together -----------------------------------------------------------


async def test_two_approvals_via_invoke_update_the_card_and_execute(
    client: Client,
    teams_settings: Settings,
    ledger: Ledger,
    gate: Gate,
    gateway: httpx.AsyncClient,
    fake: FakeMicrosoft,
    store: ConversationStore,
    notifier: TeamsNotifier,
) -> None:
    service_url = f"{fake.url}/emea/"
    answer = await send(gateway, fake, installed(service_url, SEC))
    assert answer.status_code == 200
    stored = await store.get(SEC)
    assert stored is not None
    assert (stored.service_url, stored.tenant_id, stored.team_id) == (
        service_url,
        TENANT,
        "19:team@thread.tacv2",
    )

    async with running_worker(client, teams_settings, ledger, notifiers=[notifier]):
        handle = await gate.submit("two-db", {"sql": "DROP TABLE t", "why": "x" * 2000})
        status = await until(handle, posted_teams)
        [ref] = [n for n in status.notifications if n.channel == "teams"]
        assert ref.error is None
        assert ref.destination == "security"
        assert ref.ref["service_url"] == service_url  # the installation's, not the default
        [post] = fake.connector
        assert post.method == "POST"
        assert post.path == f"/emea/v3/conversations/{SEC}/activities"
        assert ref.ref["activity_id"]
        assert ref.ref["conversation_id"] == SEC

        card = card_of(post.body)
        assert card["version"] == "1.5"
        text = card_text(card)
        for fact in ("noop", "two-db", "high", "agent:bot", "dave@example.com", "testing"):
            assert fact in text
        assert "two-security" in text
        assert "2 of security" in text
        assert status.digest[:12] in text
        assert "DROP TABLE" in text
        assert "…" in text
        assert "{{DATE(" in text  # expiry, in each reader's time zone
        approve = button(card, "approve")
        assert approve["type"] == "Action.Execute"
        assert approve["data"] == {
            "action_id": handle.id,
            "digest": status.digest,
            "verb": "approve",
        }
        assert approve["fallback"]["type"] == "Action.Submit"
        assert button(card, "deny")["fallback"]["data"]["verb"] == "deny"
        assert any(i["type"] == "Input.Text" and i["id"] == "reason" for i in card["body"])
        links = [a for a in card["actions"] if a["type"] == "Action.OpenUrl"]
        assert links[0]["url"].endswith(f"/workflows/{handle.id}")

        answer = await send(
            gateway, fake, invoke(service_url, "aad-bob", "approve", approve["data"])
        )
        assert answer.status_code == 200
        body = answer.json()
        assert (body["statusCode"], body["type"]) == (200, ADAPTIVE_CARD)
        assert "1 of 2 from security (bob@example.com)" in card_text(body["value"])
        assert button(body["value"], "approve")  # still open for the second approver

        # dave owns agent:bot: refused, answered with a card saying why, and recorded.
        answer = await send(
            gateway, fake, invoke(service_url, "aad-dave", "approve", approve["data"])
        )
        assert answer.status_code == 200
        refused_card = answer.json()["value"]
        assert "dave@example.com could not approve" in card_text(refused_card)
        assert "nobody decides their own action" in card_text(refused_card)
        status = await handle.query(ActionWorkflow.status)
        assert [(r.approver, r.code, r.channel) for r in status.refused] == [
            ("dave@example.com", RefusalCode.SELF_APPROVAL, "teams")
        ]

        answer = await send(
            gateway, fake, invoke(service_url, "aad-carol", "approve", approve["data"])
        )
        assert answer.status_code == 200
        final = await handle.result()

    assert final.status is Status.SUCCEEDED
    assert [(d.approver, d.channel) for d in final.decisions] == [
        ("bob@example.com", "teams"),
        ("carol@example.com", "teams"),
    ]
    puts = [r for r in fake.connector if r.method == "PUT"]
    assert puts, "the card was never replaced"
    assert {r.path for r in puts} == {
        f"/emea/v3/conversations/{SEC}/activities/{ref.ref['activity_id']}"
    }
    finished = [
        card_of(r.body) for r in puts if "Approved and executed" in card_text(card_of(r.body))
    ]
    assert finished, "no update showed the final status"
    # No decision buttons remain; the full request stays readable.
    assert {a["type"] for a in finished[-1].get("actions", [])} <= {
        "Action.OpenUrl",
        "Action.ShowCard",
    }
    # Every post and update used one msal token: one discovery, one token request.
    assert len(fake.bot_token_requests()) == 1
    assert fake.discovery_requests == 1


async def test_deny_with_reason_and_a_denial_without_one_is_refused(
    client: Client,
    teams_settings: Settings,
    ledger: Ledger,
    gate: Gate,
    gateway: httpx.AsyncClient,
    fake: FakeMicrosoft,
    notifier: TeamsNotifier,
) -> None:
    default = teams_settings.teams_service_url
    async with running_worker(client, teams_settings, ledger, notifiers=[notifier]):
        handle = await gate.submit("one-db")
        await until(handle, posted_teams)
        [post] = fake.connector
        assert post.path == f"/default/v3/conversations/{DBA}/activities"
        deny = button(card_of(post.body), "deny")

        answer = await send(
            gateway, fake, invoke(default, "aad-alice", "deny", deny["data"], conversation=DBA)
        )
        assert answer.status_code == 200
        assert "a denial needs a reason" in card_text(answer.json()["value"])

        answer = await send(
            gateway,
            fake,
            invoke(default, "aad-alice", "deny", deny["data"], conversation=DBA, reason="freeze"),
        )
        assert answer.status_code == 200
        card = answer.json()["value"]
        assert "Denied" in card_text(card)
        assert "freeze" in card_text(card)
        assert not [a for a in card.get("actions", []) if a["type"] == "Action.Execute"]
        final = await handle.result()

    assert final.status is Status.DENIED
    assert [(d.approver, d.decision, d.reason) for d in final.decisions] == [
        ("alice@example.com", "deny", "freeze")
    ]
    assert [r.code for r in final.refused] == [RefusalCode.MISSING_REASON]
    await eventually(
        lambda: any(
            "Denied" in card_text(card_of(r.body)) for r in fake.connector if r.method == "PUT"
        )
    )


async def test_escalation_posts_to_the_next_groups_conversation(
    client: Client,
    teams_settings: Settings,
    ledger: Ledger,
    gate: Gate,
    gateway: httpx.AsyncClient,
    fake: FakeMicrosoft,
    notifier: TeamsNotifier,
) -> None:
    default = teams_settings.teams_service_url
    async with running_worker(client, teams_settings, ledger, notifiers=[notifier]):
        handle = await gate.submit("esc-db")
        status = await until(
            handle, lambda s: any(n.channel == "teams" and n.stage == 1 for n in s.notifications)
        )
        teams = [(n.destination, n.stage) for n in status.notifications if n.channel == "teams"]
        assert teams == [("dba", 0), ("oncall", 1)]
        posts = [r for r in fake.connector if r.method == "POST"]
        assert [p.path for p in posts] == [
            f"/default/v3/conversations/{DBA}/activities",
            f"/default/v3/conversations/{ONCALL}/activities",
        ]
        escalated = card_of(posts[1].body)
        assert "level 1" in card_text(escalated)
        answer = await send(
            gateway,
            fake,
            invoke(
                default,
                "aad-oscar",
                "approve",
                button(escalated, "approve")["data"],
                conversation=ONCALL,
            ),
        )
        assert answer.status_code == 200
        final = await handle.result()
    assert final.status is Status.SUCCEEDED
    assert [d.approver for d in final.decisions] == ["oscar@example.com"]
    # Both cards, in both conversations, end without buttons.
    await eventually(
        lambda: (
            {r.path.rsplit("/activities/", 1)[0] for r in fake.connector if r.method == "PUT"}
            == {f"/default/v3/conversations/{DBA}", f"/default/v3/conversations/{ONCALL}"}
        )
    )


async def test_submit_fallback_decides_and_replies_when_refused(
    client: Client,
    teams_settings: Settings,
    ledger: Ledger,
    gate: Gate,
    gateway: httpx.AsyncClient,
    fake: FakeMicrosoft,
) -> None:
    default = teams_settings.teams_service_url
    async with running_worker(client, teams_settings, ledger):
        handle = await gate.submit("one-db")
        status = await gate.wait_for(handle, "pending_approval")
        data = {"action_id": handle.id, "digest": status.digest, "verb": "approve", "reason": ""}

        def submitted(oid: str) -> dict[str, Any]:
            return base_activity(
                default, DBA, type="message", replyToId="1:77", value=data, **{"from": account(oid)}
            )

        answer = await send(gateway, fake, submitted("aad-erin"))  # an auditor, not a DBA
        assert answer.status_code == 200
        [reply] = fake.connector
        assert (reply.method, reply.path) == (
            "POST",
            f"/default/v3/conversations/{DBA}/activities/1:77",
        )
        assert "not in a group that may decide" in reply.body["text"]
        assert reply.body["replyToId"] == "1:77"

        answer = await send(gateway, fake, submitted("aad-alice"))
        assert answer.status_code == 200
        final = await handle.result()
    assert final.status is Status.SUCCEEDED
    assert [(d.approver, d.channel) for d in final.decisions] == [("alice@example.com", "teams")]
    assert [(r.approver, r.code) for r in final.refused] == [
        ("erin@example.com", RefusalCode.NOT_ELIGIBLE)
    ]
    assert len(fake.connector) == 1  # the successful submit needs no reply


# --- outbound only ---------------------------------------------------------------------------


@pytest.fixture
async def pending(
    client: Client, teams_settings: Settings, ledger: Ledger, gate: Gate
) -> AsyncIterator[tuple[Handle, ActionStatus]]:
    """A real action waiting for one DBA, on a worker without the Teams notifier."""
    async with running_worker(client, teams_settings, ledger):
        handle = await gate.submit("one-db")
        yield handle, await gate.wait_for(handle, "pending_approval")


async def test_many_posts_take_one_token(
    pending: tuple[Handle, ActionStatus], notifier: TeamsNotifier, fake: FakeMicrosoft
) -> None:
    _, status = pending
    for _ in range(5):
        refs = await notifier.post(
            NotifyInput(channel="teams", status=status, groups=["dba", "security", "auditors"])
        )
        assert [r.destination for r in refs] == ["dba", "security"]  # auditors have no channel
        assert all(r.error is None for r in refs)
    assert len([r for r in fake.connector if r.method == "POST"]) == 10
    assert len(fake.bot_token_requests()) == 1
    assert {r.authorization for r in fake.connector} == {f"Bearer {next(iter(fake.issued))}"}


async def test_transient_connector_errors_are_retried(
    pending: tuple[Handle, ActionStatus], notifier: TeamsNotifier, fake: FakeMicrosoft
) -> None:
    _, status = pending
    fake.connector_failures = [503, 429]
    [ref] = await notifier.post(NotifyInput(channel="teams", status=status, groups=["dba"]))
    assert ref.error is None
    assert ref.ref["activity_id"]
    fake.connector_failures = [403]
    [ref] = await notifier.post(NotifyInput(channel="teams", status=status, groups=["dba"]))
    assert ref.error is not None
    assert "403" in ref.error


async def test_token_never_goes_to_a_host_off_the_allow_list(
    pending: tuple[Handle, ActionStatus],
    notifier: TeamsNotifier,
    store: ConversationStore,
    fake: FakeMicrosoft,
) -> None:
    _, status = pending
    await store.save(
        ConversationReference(conversation_id=DBA, service_url="https://evil.example/")
    )
    [ref] = await notifier.post(NotifyInput(channel="teams", status=status, groups=["dba"]))
    assert ref.error is not None
    assert "SIGNOFF_TEAMS_ALLOWED_SERVICE_URLS" in ref.error
    assert fake.connector == []
    assert fake.token_requests == []  # not even fetched


async def test_a_wrong_secret_is_a_permanent_notifier_error(
    pending: tuple[Handle, ActionStatus],
    teams_settings: Settings,
    directory: StaticDirectory,
    store: ConversationStore,
    msal_http: MsalRoute,
    fake: FakeMicrosoft,
) -> None:
    _, status = pending
    wrong = teams_settings.model_copy(update={"teams_app_password": SecretStr("nope")})
    notifier = teams_notifier(wrong, directory, store=store, msal_http_client=msal_http)
    with pytest.raises(NotifierError, match="invalid_client"):
        await notifier.post(NotifyInput(channel="teams", status=status, groups=["dba"]))
    assert fake.connector == []


def test_service_url_allow_list() -> None:
    allowed = [
        "smba.trafficmanager.net",
        "https://smba.infra.gcc.teams.microsoft.com/",
        "127.0.0.1",
    ]
    assert service_url_allowed("https://smba.trafficmanager.net/amer/", allowed)
    assert service_url_allowed("https://SMBA.trafficmanager.net/emea/", allowed)
    assert service_url_allowed("https://smba.infra.gcc.teams.microsoft.com/gcc/", allowed)
    assert service_url_allowed("http://127.0.0.1:9999/x/", allowed)
    assert not service_url_allowed("http://smba.trafficmanager.net/amer/", allowed)  # cleartext
    assert not service_url_allowed("https://smba.trafficmanager.net.evil.com/", allowed)
    assert not service_url_allowed("https://evil.com/smba.trafficmanager.net/", allowed)
    assert not service_url_allowed("https://x@evil.com/", allowed)
    assert not service_url_allowed("https://smba.trafficmanager.net@evil.com/", allowed)
    assert not service_url_allowed("not a url", allowed)
    assert not service_url_allowed("https://smba.trafficmanager.net:99999/", allowed)


async def test_removal_forgets_the_conversation(
    gateway: httpx.AsyncClient, fake: FakeMicrosoft, store: ConversationStore
) -> None:
    service_url = f"{fake.url}/emea/"
    assert (await send(gateway, fake, installed(service_url, SEC))).status_code == 200
    assert [r.conversation_id for r in await store.all()] == [SEC]
    assert (await send(gateway, fake, installed(service_url, SEC, removed=True))).status_code == 200
    assert await store.get(SEC) is None


async def test_without_an_app_id_everything_is_refused(
    client: Client,
    settings: Settings,
    directory: StaticDirectory,
    store: ConversationStore,
    msal_http: MsalRoute,
    fake: FakeMicrosoft,
) -> None:
    async with gateway_app(client, settings, directory, store, msal_http) as gateway:
        service_url = f"{fake.url}/emea/"
        answer = await send(gateway, fake, installed(service_url, SEC))
        assert answer.status_code == 401
        assert (await gateway.post("/teams/messages", content=b"")).status_code == 401
    assert await store.get(SEC) is None


# --- bad input ------------------------------------------------------------------------------

Case = Callable[[FakeMicrosoft, ActionStatus], tuple[dict[str, str], bytes | dict[str, Any]]]


def _valid(fake: FakeMicrosoft, status: ActionStatus, **changes: Any) -> dict[str, Any]:
    url = f"{fake.url}/default/"
    data = {"action_id": status.id, "digest": status.digest, "verb": "approve"}
    activity = invoke(url, "aad-alice", "approve", data, conversation=DBA)
    for key, value in changes.items():
        activity[key] = value
    return activity


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _signed(
    fake: FakeMicrosoft, status: ActionStatus, **options: Any
) -> tuple[dict[str, str], dict[str, Any]]:
    activity = _valid(fake, status)
    return _bearer(fake.bot_jwt(service_url=activity["serviceUrl"], **options)), activity


def _with_action(
    fake: FakeMicrosoft, status: ActionStatus, **action: Any
) -> tuple[dict[str, str], dict[str, Any]]:
    activity = _valid(fake, status)
    activity["value"]["action"].update(action)
    return _bearer(fake.bot_jwt(service_url=activity["serviceUrl"])), activity


def _with_data(
    fake: FakeMicrosoft, status: ActionStatus, **data: Any
) -> tuple[dict[str, str], dict[str, Any]]:
    activity = _valid(fake, status)
    activity["value"]["action"]["data"].update(data)
    return _bearer(fake.bot_jwt(service_url=activity["serviceUrl"])), activity


def _changed(
    fake: FakeMicrosoft, status: ActionStatus, **fields: Any
) -> tuple[dict[str, str], dict[str, Any]]:
    activity = _valid(fake, status, **fields)
    return _bearer(fake.bot_jwt(service_url=activity["serviceUrl"])), activity


def _mismatched_service_url(
    fake: FakeMicrosoft, status: ActionStatus
) -> tuple[dict[str, str], dict[str, Any]]:
    activity = _valid(fake, status)
    return _bearer(fake.bot_jwt(service_url="https://smba.trafficmanager.net/emea/")), activity


def _unlisted_service_url(
    fake: FakeMicrosoft, status: ActionStatus
) -> tuple[dict[str, str], dict[str, Any]]:
    url = fake.url.replace("127.0.0.1", "localhost") + "/default/"
    activity = _valid(fake, status, serviceUrl=url)
    return _bearer(fake.bot_jwt(service_url=url)), activity


def _hs256(fake: FakeMicrosoft, status: ActionStatus) -> tuple[dict[str, str], dict[str, Any]]:
    activity = _valid(fake, status)
    claims = jwt.decode(
        fake.bot_jwt(service_url=activity["serviceUrl"]), options={"verify_signature": False}
    )
    token = jwt.encode(
        claims,
        "a-shared-secret-of-32-bytes-long!",
        algorithm="HS256",
        headers={"kid": fake.teams_key.kid},
    )
    return _bearer(token), activity


def _forged(fake: FakeMicrosoft, status: ActionStatus) -> tuple[dict[str, str], dict[str, Any]]:
    activity = _valid(fake, status)
    token = fake.bot_jwt(service_url=activity["serviceUrl"], key=fake.ghost_key)
    _header, _, rest = token.partition(".")
    good_header = fake.bot_jwt(service_url=activity["serviceUrl"]).split(".")[0]
    return _bearer(f"{good_header}.{rest}"), activity  # teams-key's kid, ghost's signature


def _malformed_json(fake: FakeMicrosoft, status: ActionStatus) -> tuple[dict[str, str], bytes]:
    return _bearer(fake.bot_jwt(service_url=f"{fake.url}/default/")), b'{"type": "invoke", '


def _no_conversation(
    fake: FakeMicrosoft, status: ActionStatus
) -> tuple[dict[str, str], dict[str, Any]]:
    headers, activity = _signed(fake, status)
    del activity["conversation"]
    return headers, activity


BAD_INPUT: dict[str, tuple[Case, int]] = {
    "missing token": (lambda f, s: ({}, _valid(f, s)), 401),
    "not a bearer token": (lambda f, s: ({"Authorization": "Basic YTpi"}, _valid(f, s)), 401),
    "garbage token": (lambda f, s: (_bearer("not.a.jwt"), _valid(f, s)), 401),
    "expired token": (lambda f, s: _signed(f, s, expires_in=-400), 401),
    "wrong audience": (lambda f, s: _signed(f, s, audience="someone-elses-bot"), 401),
    "wrong issuer": (lambda f, s: _signed(f, s, issuer="https://sts.windows.net/evil/"), 401),
    "unknown key id": (lambda f, s: _signed(f, s, key=f.ghost_key), 401),
    "key not endorsed for msteams": (lambda f, s: _signed(f, s, key=f.skype_key), 401),
    "forged signature": (_forged, 401),
    "HS256 with a made-up secret": (_hs256, 401),
    "mismatched serviceUrl": (_mismatched_service_url, 401),
    "serviceUrl not allow-listed": (_unlisted_service_url, 401),
    "not the msteams channel": (lambda f, s: _changed(f, s, channelId="webchat"), 401),
    "another tenant": (lambda f, s: _changed(f, s, channelData={"tenant": {"id": "other"}}), 401),
    "malformed JSON": (_malformed_json, 400),
    "activity without conversation": (_no_conversation, 400),
    "unknown verb": (lambda f, s: _with_action(f, s, verb="approve_all"), 400),
    "not Action.Execute": (lambda f, s: _with_action(f, s, type="Action.Http"), 400),
    "digest mismatch": (lambda f, s: _with_data(f, s, digest="0" * 64), 400),
    "malformed digest": (lambda f, s: _with_data(f, s, digest="abc"), 400),
    "unknown action id": (lambda f, s: _with_data(f, s, action_id="act-nope"), 400),
    "unknown aadObjectId": (lambda f, s: _changed(f, s, **{"from": account("aad-mallory")}), 400),
    "no aadObjectId": (lambda f, s: _changed(f, s, **{"from": account(None)}), 400),
    "unsupported invoke": (lambda f, s: _changed(f, s, name="task/fetch"), 400),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
async def test_bad_input_is_refused_without_a_decision_or_a_token(
    case: str,
    pending: tuple[Handle, ActionStatus],
    gateway: httpx.AsyncClient,
    fake: FakeMicrosoft,
) -> None:
    handle, status = pending
    build, expected = BAD_INPUT[case]
    headers, body = build(fake, status)
    if isinstance(body, bytes):
        answer = await gateway.post(
            "/teams/messages", content=body, headers={**headers, "Content-Type": "application/json"}
        )
    else:
        answer = await gateway.post("/teams/messages", json=body, headers=headers)
    assert answer.status_code == expected, answer.text
    after = await handle.query(ActionWorkflow.status)
    assert after.status is Status.PENDING_APPROVAL
    assert after.decisions == []
    assert after.refused == []
    assert fake.connector == []  # our token went nowhere
    assert fake.token_requests == []


async def test_a_valid_request_after_bad_ones_still_decides(
    pending: tuple[Handle, ActionStatus], gateway: httpx.AsyncClient, fake: FakeMicrosoft
) -> None:
    handle, status = pending
    headers, body = _signed(fake, status)
    answer = await gateway.post("/teams/messages", json=body, headers=headers)
    assert answer.status_code == 200
    final = await handle.result()
    assert final.status is Status.SUCCEEDED
    assert [(d.approver, d.channel) for d in final.decisions] == [("alice@example.com", "teams")]


# --- tenants (issue 12) -------------------------------------------------------------------

ActionPending = tuple[Handle, Any]


def without_tenant(activity: dict[str, Any]) -> dict[str, Any]:
    """The activity with no tenant anywhere."""
    activity["channelData"] = {}
    activity["conversation"].pop("tenantId", None)
    return activity


def conversation_elsewhere(activity: dict[str, Any]) -> dict[str, Any]:
    """channelData says ours, the conversation says another tenant's."""
    activity["conversation"]["tenantId"] = "99999999-0000-0000-0000-000000000000"
    return activity


def channel_data_elsewhere(activity: dict[str, Any]) -> dict[str, Any]:
    """The conversation says ours, channelData says another tenant's."""
    activity["channelData"] = {"tenant": {"id": "99999999-0000-0000-0000-000000000000"}}
    return activity


async def post(gateway: Any, fake: FakeMicrosoft, activity: dict[str, Any]) -> Any:
    """POST an activity with a valid Bot Framework token for its serviceUrl."""
    headers = _bearer(fake.bot_jwt(service_url=activity["serviceUrl"]))
    return await gateway.post("/teams/messages", json=activity, headers=headers)


async def undecided(handle: Handle) -> None:
    """Nothing was decided or even attempted."""
    after = await handle.query(ActionWorkflow.status)
    assert after.status is Status.PENDING_APPROVAL
    assert (after.decisions, after.refused) == ([], [])


@pytest.mark.parametrize("change", [without_tenant, conversation_elsewhere, channel_data_elsewhere])
async def test_an_activity_from_another_or_no_tenant_is_refused(
    pending: ActionPending,
    gateway: Any,
    fake: FakeMicrosoft,
    caplog: pytest.LogCaptureFixture,
    change: Any,
) -> None:
    caplog.set_level(logging.WARNING, logger="signoff.teams")
    handle, status = pending
    answer = await post(gateway, fake, change(_valid(fake, status)))
    assert answer.status_code == 401
    assert "refused /teams/messages" in caplog.text
    assert "tenant" in caplog.text
    await undecided(handle)
    assert fake.connector == []


async def test_without_an_allowed_tenant_everything_is_refused(
    client: Client,
    teams_settings: Settings,
    pending: ActionPending,
    directory: StaticDirectory,
    store: ConversationStore,
    msal_http: MsalRoute,
    fake: FakeMicrosoft,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="signoff.teams")
    handle, status = pending
    unset = teams_settings.model_copy(update={"teams_tenant_id": None})
    async with gateway_app(client, unset, directory, store, msal_http) as gateway:
        assert "Teams refuses every activity: no tenant is allowed" in caplog.text
        answer = await post(gateway, fake, _valid(fake, status))
    assert answer.status_code == 401
    assert "SIGNOFF_TEAMS_ALLOWED_TENANTS" in caplog.text
    await undecided(handle)


async def test_the_allow_list_admits_its_tenants(
    client: Client,
    teams_settings: Settings,
    pending: ActionPending,
    directory: StaticDirectory,
    store: ConversationStore,
    msal_http: MsalRoute,
    fake: FakeMicrosoft,
) -> None:
    handle, status = pending
    listed = teams_settings.model_copy(
        update={"teams_tenant_id": None, "teams_allowed_tenants": ["other", TENANT]}
    )
    async with gateway_app(client, listed, directory, store, msal_http) as gateway:
        assert (await post(gateway, fake, _valid(fake, status))).status_code == 200
    final = await handle.result()
    assert [d.approver for d in final.decisions] == ["alice@example.com"]


async def test_any_tenant_only_when_explicitly_allowed(
    client: Client,
    teams_settings: Settings,
    pending: ActionPending,
    directory: StaticDirectory,
    store: ConversationStore,
    msal_http: MsalRoute,
    fake: FakeMicrosoft,
) -> None:
    handle, status = pending
    anyone = teams_settings.model_copy(
        update={"teams_tenant_id": None, "teams_allow_any_tenant": True}
    )
    async with gateway_app(client, anyone, directory, store, msal_http) as gateway:
        answer = await post(gateway, fake, channel_data_elsewhere(_valid(fake, status)))
        assert answer.status_code == 200
    final = await handle.result()
    assert [d.approver for d in final.decisions] == ["alice@example.com"]


def test_the_settings_read_the_allow_list_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIGNOFF_TEAMS_ALLOWED_TENANTS", '["t-1", "t-2"]')
    monkeypatch.setenv("SIGNOFF_TEAMS_ALLOW_ANY_TENANT", "false")
    settings = Settings()
    assert settings.teams_allowed_tenants == ["t-1", "t-2"]
    assert settings.teams_allow_any_tenant is False


# --- nothing hidden from the approver -------------------------------------------------------

PHISH = (
    "# URGENT: Security notice\n\nApproved by **the CISO**. See the "
    "[runbook portal](https://evil.example/login) \u202eevil\u200b \x1b[2J"
)


def _walk_text(node: Any) -> str:
    if isinstance(node, dict):
        return "\n".join([node["text"]] if isinstance(node.get("text"), str) else []) + "\n".join(
            _walk_text(v) for v in node.values()
        )
    if isinstance(node, list):
        return "\n".join(_walk_text(v) for v in node)
    return ""


def _teams_status(params: dict[str, Any], justification: str = PHISH) -> ActionStatus:
    request = ActionRequest(
        action="noop",
        target="two-db",
        params=params,
        justification=justification,
        requester="agent:bot",
        on_behalf_of="erin@example.com",
    )
    return ActionStatus(
        id="act-teams",
        digest=request.digest,
        request=request,
        status=Status.PENDING_APPROVAL,
        created_at=datetime.now(UTC),
        owner="dave@example.com",
    )


def test_a_markdown_justification_renders_as_literal_text() -> None:
    card = approval_card(_teams_status({"sql": "select 1"}))
    markdown = MarkdownIt("commonmark")
    for block in card["body"]:
        if block.get("type") != "TextBlock" or "runbook" not in block["text"]:
            continue
        html = markdown.render(block["text"])
        assert "<h1>" not in html
        assert "<a " not in html
        assert "<strong>" not in html
        assert "# URGENT: Security notice" in html
        assert "[runbook portal](https://evil.example/login)" in html
        break
    else:
        raise AssertionError("the justification is not on the card")
    raw = json.dumps(card, ensure_ascii=False)
    for hidden in ("\u202e", "\u200b", "\x1b"):
        assert hidden not in raw
    text = card_text(card)
    assert "\\u202eevil\\u200b" in text
    for who in ("agent:bot", "erin@example.com", "dave@example.com"):
        assert who in text  # requester, on behalf of, and the agent's owner


def test_a_cut_card_unfolds_the_whole_request_in_a_show_card() -> None:
    tail = "a" * 10_000 + " DROP TABLE x"
    card = approval_card(_teams_status({"sql": tail}))
    assert "DROP TABLE x" not in card_text(card)  # cut on the card itself…
    assert "characters of params hidden" in card_text(card)  # …saying so
    [show] = [a for a in card["actions"] if a["type"] == "Action.ShowCard"]
    assert show["title"] == "Show full request"
    unfolded = re.sub(r"\\(.)", r"\1", _walk_text(show["card"]))
    assert tail in unfolded
    assert {a.get("verb") for a in card["actions"]} >= {"approve", "deny"}


def test_too_large_for_a_card_offers_no_approve() -> None:
    card = approval_card(_teams_status({f"k{i}": "b" * 9_000 for i in range(4)}))
    verbs = {a.get("verb") for a in card["actions"]}
    assert "approve" not in verbs
    assert "deny" in verbs
    assert not [a for a in card["actions"] if a["type"] == "Action.ShowCard"]
    assert "signoff status act-teams" in card_text(card)


async def test_approving_what_no_card_can_show_is_refused(
    client: Client,
    teams_settings: Settings,
    ledger: Ledger,
    gate: Gate,
    gateway: httpx.AsyncClient,
    fake: FakeMicrosoft,
) -> None:
    async with running_worker(client, teams_settings, ledger):
        handle = await gate.submit("one-db", {f"k{i}": "b" * 9_000 for i in range(4)})
        status = await gate.wait_for(handle, "pending_approval")
        data = {"action_id": handle.id, "digest": status.digest, "verb": "approve"}
        answer = await send(
            gateway, fake, invoke(teams_settings.teams_service_url, "aad-alice", "approve", data)
        )
        assert answer.status_code == 400
        assert f"signoff approve {handle.id}" in answer.json()["value"]["message"]
        after = await handle.query(ActionWorkflow.status)
        assert after.status is Status.PENDING_APPROVAL
        assert after.decisions == []


# --- step-up rules (the approval page) ------------------------------------------------------


async def test_a_click_on_a_step_up_rule_answers_with_the_approval_page(
    client: Client,
    teams_settings: Settings,
    ledger: Ledger,
    gate: Gate,
    directory: StaticDirectory,
    store: ConversationStore,
    msal_http: MsalRoute,
    fake: FakeMicrosoft,
    tmp_path: Path,
) -> None:
    configured = teams_settings.model_copy(
        update={"policy": policy_with_step_up(tmp_path), "public_url": "https://signoff.test"}
    )
    notifier = teams_notifier(configured, directory, store=store, msal_http_client=msal_http)
    default = configured.teams_service_url
    async with (
        gateway_app(client, configured, directory, store, msal_http) as http,
        running_worker(client, configured, ledger, notifiers=[notifier]),
    ):
        handle = await gate.submit("vault-teams")
        await until(handle, posted_teams)
        [post] = fake.connector
        card = card_of(post.body)
        page = f"https://signoff.test/a/{handle.id}"
        assert {
            "type": "Action.OpenUrl",
            "title": "Decide on the approval page (security key required)",
            "url": page,
        } in card["actions"]
        approve = button(card, "approve")
        answer = await send(http, fake, invoke(default, "aad-bob", "approve", approve["data"]))
        assert answer.status_code == 200
        shown = card_text(answer.json()["value"])
        assert "Nothing was decided here" in shown
        assert page in shown
        status = await handle.query(ActionWorkflow.status)
    assert status.decisions == []
    [refused] = status.refused
    assert (refused.approver, refused.code, refused.channel) == (
        "bob@example.com",
        RefusalCode.STEP_UP_REQUIRED,
        "teams",
    )


# --- just-in-time grants: "Revoke now" (issue 15) ---------------------------------------------


async def test_revoke_now_on_an_active_grant_only_for_those_who_may(
    client: Client,
    teams_settings: Settings,
    ledger: Ledger,
    directory: StaticDirectory,
    store: ConversationStore,
    msal_http: MsalRoute,
    fake: FakeMicrosoft,
    notifier: TeamsNotifier,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DSN_ENV, await granter_roles(postgres_url))
    settings = teams_settings.model_copy(
        update={"policy": DATA / "grants-policy.yaml", "targets": grant_targets(tmp_path)}
    )
    gate = Gate(client, settings)
    service_url = f"{fake.url}/emea/"
    user = await new_grantee(postgres_url)
    async with (
        gateway_app(client, settings, directory, store, msal_http) as gateway,
        running_worker(client, settings, ledger, notifiers=[notifier]),
    ):
        assert (await send(gateway, fake, installed(service_url, DBA))).status_code == 200
        handle = await gate.submit(
            "grant-db",
            {"role": GRANTABLE, "user": user, "duration": "30m"},
            action="postgres.grant_role",
        )
        status = await until(handle, posted_teams)
        [post] = [r for r in fake.connector if r.method == "POST"]
        assert not [a for a in card_of(post.body).get("actions", []) if a.get("verb") == "revoke"]
        await gate.decide(handle, "alice@example.com")
        await until(handle, lambda s: s.status is Status.ACTIVE)

        def revocable_cards() -> list[dict[str, Any]]:
            cards = [card_of(r.body) for r in fake.connector if r.method == "PUT"]
            return [c for c in cards if any(a.get("verb") == "revoke" for a in c["actions"])]

        await eventually(lambda: bool(revocable_cards()))
        card = revocable_cards()[-1]
        assert "Approved and active" in card_text(card)
        assert "Active since" in card_text(card)
        revoke = button(card, "revoke")
        assert revoke["title"] == "Revoke now"
        assert revoke["data"] == {"action_id": handle.id, "digest": status.digest, "verb": "revoke"}

        # erin audits: she sees every action but may end none. Refused, shown, recorded.
        answer = await send(
            gateway,
            fake,
            invoke(service_url, "aad-erin", "revoke", revoke["data"], conversation=DBA),
        )
        assert answer.status_code == 200
        assert "may not revoke" in card_text(answer.json()["value"])
        status = await handle.query(ActionWorkflow.status)
        assert status.status is Status.ACTIVE
        assert [(r.approver, r.kind, r.code) for r in status.refused] == [
            ("erin@example.com", "revoke", RefusalCode.NOT_ELIGIBLE)
        ]

        # bob is in security, the rule's revoke group: it ends now.
        answer = await send(
            gateway,
            fake,
            invoke(service_url, "aad-bob", "revoke", revoke["data"], conversation=DBA),
        )
        assert answer.status_code == 200
        final = await handle.result()
    assert final.status is Status.REVERTED
    assert final.window is not None
    assert final.window.ended_by == "bob@example.com"
    last = card_of([r for r in fake.connector if r.method == "PUT"][-1].body)
    assert "Reverted" in card_text(last)
    assert "revoked by bob@example.com" in card_text(last)
    assert not [a for a in last.get("actions", []) if a.get("verb") == "revoke"]


# --- break-glass review from Teams -----------------------------------------------------------


async def test_break_glass_is_reviewed_from_teams_by_another_person_not_the_breaker(
    client: Client,
    teams_settings: Settings,
    ledger: Ledger,
    gate: Gate,
    gateway: httpx.AsyncClient,
    fake: FakeMicrosoft,
    notifier: TeamsNotifier,
) -> None:
    default = teams_settings.teams_service_url
    async with running_worker(client, teams_settings, ledger, notifiers=[notifier]):
        handle = await gate.submit(
            "glass-db",
            {"fix": "restart"},
            requester="oscar@example.com",
            break_glass=BreakGlassClaim(reason="prod-db is down and the fix cannot wait"),
        )
        await until(
            handle,
            lambda s: (
                posted_teams(s)
                and s.break_glass is not None
                and bool(s.break_glass.reviewer_groups)
            ),
        )

        def review_cards() -> list[dict[str, Any]]:
            cards = [card_of(r.body) for r in fake.connector if r.method in ("POST", "PUT")]
            return [
                c for c in cards if any(a.get("verb") == "review" for a in c.get("actions", []))
            ]

        await eventually(lambda: bool(review_cards()))
        card = review_cards()[-1]
        assert not [a for a in card["actions"] if a.get("verb") in ("approve", "deny")]
        inputs = {i["id"]: i for i in card["body"] if i.get("type", "").startswith("Input.")}
        assert inputs["reason"]["isRequired"] is True
        assert [c["value"] for c in inputs["outcome"]["choices"]] == ["accepted", "disputed"]
        data = button(card, "review")["data"]
        conversation = DBA

        async def press(oid: str, reason: str | None, outcome: str = "accepted") -> dict[str, Any]:
            activity = invoke(
                default,
                oid,
                "review",
                {**data, "outcome": outcome},
                conversation=conversation,
                reason=reason,
            )
            answer = await send(gateway, fake, activity)
            assert answer.status_code == 200, answer.text
            shown: dict[str, Any] = answer.json()["value"]
            return shown

        # A card whose digest was altered is refused before anyone is asked anything.
        forged = invoke(
            default,
            "aad-bob",
            "review",
            {**data, "digest": "0" * 64, "outcome": "accepted"},
            conversation=conversation,
            reason="looks fine",
        )
        answer = await send(gateway, fake, forged)
        assert answer.status_code == 400
        assert "digest does not match" in answer.text

        # The breaker: refused, shown on the card, and recorded.
        shown = await press("aad-oscar", "all fine")
        assert "Your review was refused" in card_text(shown)
        assert "nobody reviews their own" in card_text(shown)
        status = await handle.query(ActionWorkflow.status)
        assert status.break_glass is not None
        assert status.break_glass.reviewed is None
        assert [(r.approver, r.kind, r.code, r.channel) for r in status.refused] == [
            ("oscar@example.com", "review", RefusalCode.SELF_REVIEW, "teams")
        ]

        # A blank reason: said on the card, nothing recorded, the Review button still there.
        shown = await press("aad-bob", "   ")
        assert "needs a reason" in card_text(shown)
        assert button(shown, "review")
        status = await handle.query(ActionWorkflow.status)
        assert status.break_glass is not None
        assert status.break_glass.reviewed is None
        assert len(status.refused) == 1

        # bob (security) reviews it.
        shown = await press("aad-bob", "the restart was needed", outcome="disputed")
        assert "Reviewed (disputed) by bob@example.com" in card_text(shown)
        assert not [a for a in shown.get("actions", []) if a.get("verb") == "review"]
        status = await handle.query(ActionWorkflow.status)
        assert status.break_glass is not None
        assert status.break_glass.review == "reviewed"
        done = status.break_glass.reviewed
        assert done is not None
        assert (done.reviewer, done.outcome, done.channel) == (
            "bob@example.com",
            "disputed",
            "teams",
        )
        await handle.result()
    rows = [r for r in await ledger.events(handle.id) if r.kind == "reviewed"]
    assert [(r.actor, r.channel) for r in rows] == [("bob@example.com", "teams")]
