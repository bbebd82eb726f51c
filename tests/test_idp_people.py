"""People only the identity provider knows, approving from Slack and Teams.

A Slack user is named by the email Slack confirmed, a Teams user by their Entra object id; the
IdP (a fake Okta over TLS and a fake Graph, on their real wire formats) says who that is and
which groups they are in now, the gateway signs those groups into the decision, and the real
workflow applies the same rules as for anyone else. Each attack is a test: no email from Slack,
an email nobody has, an object id Graph does not know, removal from the group after the TTL,
an IdP outage during a click.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from slack_sdk.signature import SignatureVerifier
from temporalio.client import Client

from activities.ledger.store import Ledger
from channels.slack.blocks import APPROVE_ACTION, button_value
from channels.teams import ConversationStore
from policies.directory import DirectoryFile
from policies.entra import EntraGroups
from policies.groups import SourcedDirectory
from policies.loader import load_policy
from policies.okta import OktaGroups
from policies.unavailable import IdentityProviderUnavailable
from signoff.executor import registry
from signoff.models import ActionStatus, ActionSubmission, RefusalCode, Status
from tests import oidc_fixtures
from tests.conftest import DATA, worker_parts
from tests.fake_okta import FakeOkta
from tests.fake_slack import FakeSlack
from tests.fake_teams import FakeMicrosoft, MsalRoute
from tests.oidc_fixtures import AUDIENCE, OpenIdProvider
from workers.gateway.app import create_app
from workers.gateway.service import ActionService
from workers.settings import Settings
from workers.wiring.slack import slack_router
from workers.wiring.teams import teams_router
from workers.worker import build_worker

OKTA_TOKEN = "00aBcD-okta-api-token-do-not-log"
APP_ID = "6c1e3b8e-0000-4000-8000-00000000b075"
SECRET = "bot-and-graph-secret"
TENANT = "11111111-2222-3333-4444-555555555555"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
G_SECURITY = "00gSECURITY000000001"
G_ONCALL = "00gONCALL00000000001"
G_DBA = "0d5e0000-0000-4000-8000-000000000dba"
MEMBER = {"team_id": "T0FAKE", "is_email_confirmed": True}


class Clock:
    """A clock the test moves, so the membership TTL passes without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def okta() -> AsyncIterator[FakeOkta]:
    """Okta: zoe and yan (in security), sam (suspended), carol (security); nobody else."""
    fake = await FakeOkta().start()
    fake.api_tokens.add(OKTA_TOKEN)
    fake.group("security-approvers", gid=G_SECURITY)
    fake.group("oncall", gid=G_ONCALL)
    fake.memberships = {
        "zoe@example.com": [G_SECURITY],
        "yan@example.com": [G_SECURITY, G_ONCALL],
        "sam@example.com": [G_SECURITY],
        "carol@example.com": [G_SECURITY],
    }
    fake.statuses = {"sam@example.com": "SUSPENDED"}
    yield fake
    await fake.stop()


@pytest.fixture
async def graph() -> AsyncIterator[FakeMicrosoft]:
    """Graph and the Bot Framework: yan and uma in dba, vic disabled, mal with carol's mail."""
    fake = await FakeMicrosoft(client_id=APP_ID, client_secret=SECRET).start()
    fake.users = {
        "aad-yan": {"mail": "Yan@Example.com", "userPrincipalName": "yan@corp.test"},
        "aad-uma": {"mail": None, "userPrincipalName": "uma@example.com"},
        "aad-vic": {"mail": "vic@example.com", "userPrincipalName": "vic@example.com"},
        "aad-mal": {"mail": "carol@example.com", "userPrincipalName": "mal@example.com"},
        "aad-alice": {"mail": "alice@example.com", "userPrincipalName": "alice@example.com"},
        # pat is in the file without an object id: Entra's accounts with pat's mail.
        "aad-pat": {"mail": "pat@example.com", "userPrincipalName": "pat@example.com"},
        "aad-pat-old": {"mail": "pat@example.com", "userPrincipalName": "pat.old@example.com"},
    }
    for user in fake.users.values():
        user["accountEnabled"] = True
    fake.users["aad-vic"]["accountEnabled"] = False
    fake.users["aad-pat-old"]["accountEnabled"] = False
    fake.memberships = {
        "aad-yan": [G_DBA],
        "aad-uma": [G_DBA],
        "aad-vic": [G_DBA],
        "aad-mal": [G_DBA],
        "aad-alice": [G_DBA],
    }
    yield fake
    await fake.stop()


@pytest.fixture
def msal_http(graph: FakeMicrosoft) -> Iterator[MsalRoute]:
    """msal's http client, answering the real authority from the fake."""
    route = MsalRoute(graph.url)
    yield route
    route.close()


@pytest.fixture
def clock() -> Clock:
    """The sources' clock."""
    return Clock()


def document(okta: FakeOkta, graph: FakeMicrosoft, **extra: Any) -> DirectoryFile:
    """The test directory: security and oncall from Okta, dba from Entra."""
    data = yaml.safe_load((DATA / "directory.yaml").read_text())
    data["principals"].append(
        {"id": "pat@example.com", "kind": "human", "email": "pat@example.com"}
    )
    data["okta"] = {
        "org_url": okta.url,
        "api_token_env": "TEST_OKTA_TOKEN",
        "membership_ttl": "60s",
        "groups": {"security": G_SECURITY, "oncall": "oncall"},
    }
    data["entra"] = {
        "tenant_id": TENANT,
        "client_id": APP_ID,
        "client_secret_env": "TEST_ENTRA_SECRET",
        "graph_url": graph.url,
        "cache_ttl": "60s",
        "groups": {"dba": G_DBA},
    }
    data.update(extra)
    return DirectoryFile.model_validate(data)


def sourced(
    doc: DirectoryFile, okta: FakeOkta, msal_http: MsalRoute, clock: Clock
) -> SourcedDirectory:
    """The directory with both sources, on the fakes."""
    assert doc.okta is not None
    assert doc.entra is not None
    return SourcedDirectory(
        doc,
        "test",
        sources=[
            EntraGroups(doc.entra, "test", msal_http_client=msal_http, clock=clock),
            OktaGroups(doc.okta, "test", clock=clock, verify=okta.client_tls()),
        ],
    )


@pytest.fixture
def directory(
    okta: FakeOkta,
    graph: FakeMicrosoft,
    msal_http: MsalRoute,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> SourcedDirectory:
    """The test directory on the fake Okta and Graph."""
    monkeypatch.setenv("TEST_OKTA_TOKEN", OKTA_TOKEN)
    monkeypatch.setenv("TEST_ENTRA_SECRET", SECRET)
    return sourced(document(okta, graph), okta, msal_http, clock)


# --- the directory: who a chat user is ------------------------------------------------------


async def test_a_verified_email_names_the_idp_person_with_their_groups_now(
    directory: SourcedDirectory, okta: FakeOkta, graph: FakeMicrosoft
) -> None:
    zoe = await directory.person_by_email("Zoe@Example.com")
    assert zoe is not None
    assert (zoe.id, zoe.kind, zoe.email, zoe.groups) == (
        "zoe@example.com",
        "human",
        "zoe@example.com",
        ["security"],
    )
    assert zoe.teams_aad_object_id is None  # Graph has no zoe
    # Okta's Users API by login, then her groups; Graph asked by mail or UPN, quoted.
    assert [r.path for r in okta.api_requests()][:2] == [
        "/api/v1/users/zoe%40example.com",
        "/api/v1/users/zoe%40example.com/groups",
    ]
    assert any("mail+eq+%27zoe%40example.com%27" in r.path for r in graph.graph)
    # yan is in both: Okta's security and oncall, Entra's dba (found by mail in Graph).
    yan = await directory.person_by_email("yan@example.com")
    assert yan is not None
    assert (yan.teams_aad_object_id, sorted(yan.groups)) == (
        "aad-yan",
        ["dba", "oncall", "security"],
    )
    # Someone the file lists is the file's person, whatever an IdP would say.
    alice = await directory.person_by_email("ALICE@example.com")
    assert alice is not None
    assert alice.id == "alice@example.com"
    # Nobody is a workload: an IdP person is never an agent.
    assert await directory.principal("zoe@example.com") is None


async def test_an_email_nobody_has_or_a_disabled_person_is_nobody(
    directory: SourcedDirectory, okta: FakeOkta
) -> None:
    assert await directory.person_by_email("stranger@elsewhere.test") is None
    # Suspended in Okta: still in security there, but not a person who may act.
    assert await directory.person_by_email("sam@example.com") is None
    # Disabled in Entra, though Okta has never heard of vic either way.
    okta.memberships["vic@example.com"] = [G_SECURITY]
    assert await directory.person_by_email("vic@example.com") is None
    # Not an email address at all: never sent to an IdP.
    before = len(okta.api_requests())
    assert await directory.person_by_email("zoe@example.com/groups?x=") is None
    assert await directory.person_by_email("' or 1 eq 1 or mail eq '") is None
    assert len(okta.api_requests()) == before


async def test_a_teams_object_id_names_the_entra_person_by_their_mail(
    directory: SourcedDirectory, graph: FakeMicrosoft
) -> None:
    yan = await directory.person_by_aad_object_id("aad-yan")
    assert yan is not None
    assert (yan.id, yan.teams_aad_object_id, sorted(yan.groups)) == (
        "yan@example.com",
        "aad-yan",
        ["dba", "oncall", "security"],  # Entra's dba, and Okta's groups by the same email
    )
    uma = await directory.person_by_aad_object_id("aad-uma")  # no mail: named by UPN
    assert uma is not None
    assert (uma.id, uma.groups) == ("uma@example.com", ["dba"])
    assert await directory.person_by_aad_object_id("aad-nobody") is None  # 404 in Graph
    assert await directory.person_by_aad_object_id("aad-vic") is None  # accountEnabled: false
    # pat's account is pat (the file's); a disabled one with pat's mail is nobody, not pat.
    pat = await directory.person_by_aad_object_id("aad-pat")
    assert pat is not None
    assert (pat.id, pat.teams_aad_object_id) == ("pat@example.com", None)
    assert await directory.person_by_aad_object_id("aad-pat-old") is None
    # mal's mail is carol's, but the file links carol to another Teams account: not carol.
    assert await directory.person_by_aad_object_id("aad-mal") is None
    # The file's people are the file's (and Graph is not asked who they are).
    asked = len(graph.graph)
    carol = await directory.person_by_aad_object_id("aad-carol")
    assert carol is not None
    assert carol.id == "carol@example.com"
    assert not any(r.path.startswith("/v1.0/users/aad-carol?") for r in graph.graph[asked:])


async def test_removal_from_the_group_counts_after_the_ttl(
    directory: SourcedDirectory, okta: FakeOkta, clock: Clock
) -> None:
    assert (await directory.person_by_email("zoe@example.com")).groups == ["security"]  # type: ignore[union-attr]
    okta.memberships["zoe@example.com"] = []
    clock.now += 30
    assert (await directory.person_by_email("zoe@example.com")).groups == ["security"]  # type: ignore[union-attr]
    clock.now += 31
    assert (await directory.person_by_email("zoe@example.com")).groups == []  # type: ignore[union-attr]
    okta.statuses["zoe@example.com"] = "DEPROVISIONED"
    clock.now += 61
    assert await directory.person_by_email("zoe@example.com") is None


async def test_an_idp_outage_is_an_error_never_nobody(
    directory: SourcedDirectory, okta: FakeOkta, graph: FakeMicrosoft
) -> None:
    await okta.pause()
    try:
        with pytest.raises(IdentityProviderUnavailable):
            await directory.person_by_email("zoe@example.com")
    finally:
        await okta.resume()
    graph.graph_failures = [503]
    with pytest.raises(IdentityProviderUnavailable):
        await directory.person_by_aad_object_id("aad-yan")
    assert (await directory.person_by_aad_object_id("aad-yan")) is not None  # failures not cached


async def test_people_named_by_another_claim_are_not_resolved_from_chat(
    okta: FakeOkta,
    graph: FakeMicrosoft,
    msal_http: MsalRoute,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token naming zoe by `sub` and a click naming her by email would make her two people."""
    monkeypatch.setenv("TEST_OKTA_TOKEN", OKTA_TOKEN)
    monkeypatch.setenv("TEST_ENTRA_SECRET", SECRET)
    oidc = {"issuers": [{"issuer": "https://idp.test", "audience": "x", "principal_claim": "sub"}]}
    directory = sourced(document(okta, graph, oidc=oidc), okta, msal_http, clock)
    assert await directory.person_by_email("zoe@example.com") is None
    assert await directory.person_by_aad_object_id("aad-yan") is None
    assert okta.api_requests() == []
    # The file's people still resolve as always.
    assert (await directory.person_by_email("bob@example.com")) is not None


# --- Slack, end to end ----------------------------------------------------------------------


SLACK_USERS: dict[str, dict[str, Any]] = {
    "U0ZOE": {"profile": {"email": "Zoe@Example.com"}, **MEMBER},
    "U0YAN": {"profile": {"email": "yan@example.com"}, **MEMBER},
    "U0CAROL": {"profile": {"email": "carol@example.com"}, **MEMBER},
    "U0NOMAIL": {"profile": {}, **MEMBER},  # the bot lacks users:read.email, or Slack hides it
    "U0STRANGER": {"profile": {"email": "stranger@elsewhere.test"}, **MEMBER},
    "U0SAM": {"profile": {"email": "sam@example.com"}, **MEMBER},
    "U0DAVE": {"profile": {"email": "Dave@example.com"}, **MEMBER},  # agent:bot's owner
}


@dataclass
class Chat:
    """The gateway (Slack and Teams routes) and a worker, all on one SourcedDirectory."""

    slack: FakeSlack
    graph: FakeMicrosoft
    service: ActionService
    http: httpx.AsyncClient

    async def submit(self, target: str) -> ActionStatus:
        """Submit a noop as agent:bot (owned by dave) through the service."""
        bot = await self.service.directory.principal("agent:bot")
        assert bot is not None
        submitted = await self.service.submit(
            bot, ActionSubmission(action="noop", target=target, params={}, justification="idp")
        )
        for _ in range(200):
            status = await self.service.status(submitted.id)
            if status.status is Status.PENDING_APPROVAL:
                return status
            await asyncio.sleep(0.05)
        raise AssertionError(f"{submitted.id} never awaited approval")

    async def click(self, user: str, action: ActionStatus) -> httpx.Response:
        """A signed Approve click in Slack by `user`, on the digest the action has."""
        payload = {
            "type": "block_actions",
            "user": {"id": user, "team_id": "T0FAKE"},
            "team": {"id": "T0FAKE"},
            "trigger_id": f"trig-{uuid.uuid4().hex}",
            "channel": {"id": "C0SEC"},
            "actions": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION,
                    "block_id": "signoff_decide",
                    "value": button_value(action.id, action.digest),
                    "action_ts": str(time.time()),
                }
            ],
        }
        body = urlencode({"payload": json.dumps(payload)}).encode()
        ts = str(int(time.time()))
        signature = SignatureVerifier(SLACK_SECRET).generate_signature(timestamp=ts, body=body)
        assert signature is not None
        headers = {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        }
        return await self.http.post("/slack/interactions", content=body, headers=headers)

    async def told(self, user: str, count: int = 1) -> str:
        """The last of the first `count` ephemeral messages to `user`."""
        calls = await self.slack.wait_for("chat.postEphemeral", count, user=user)
        return str(calls[count - 1].args["text"])

    async def until(self, action_id: str, check: Callable[[ActionStatus], bool]) -> ActionStatus:
        """The action's status once `check` holds (bounded)."""
        for _ in range(300):
            status = await self.service.status(action_id)
            if check(status):
                return status
            await asyncio.sleep(0.05)
        raise AssertionError(f"never held: {status}")

    async def teams(self, oid: str, action: ActionStatus) -> httpx.Response:
        """An Approve press on a Teams card by the user with this object id."""
        service_url = f"{self.graph.url}/emea/"
        activity = {
            "id": "f:1",
            "channelId": "msteams",
            "serviceUrl": service_url,
            "recipient": {"id": f"28:{APP_ID}", "name": "signoff"},
            "conversation": {
                "id": "19:dba@thread.tacv2",
                "conversationType": "channel",
                "tenantId": TENANT,
            },
            "channelData": {"tenant": {"id": TENANT}},
            "type": "invoke",
            "name": "adaptiveCard/action",
            "from": {"id": f"29:{oid}", "name": oid, "aadObjectId": oid},
            "value": {
                "action": {
                    "type": "Action.Execute",
                    "verb": "approve",
                    "data": {"action_id": action.id, "digest": action.digest},
                },
                "trigger": "manual",
            },
        }
        token = self.graph.bot_jwt(service_url=service_url)
        return await self.http.post(
            "/teams/messages", json=activity, headers={"Authorization": f"Bearer {token}"}
        )


@pytest.fixture
async def chat(
    client: Client,
    settings: Settings,
    ledger: Ledger,
    directory: SourcedDirectory,
    graph: FakeMicrosoft,
    msal_http: MsalRoute,
) -> AsyncIterator[Chat]:
    """A worker and the gateway's Slack and Teams routes, on the IdP-backed directory."""
    slack = FakeSlack(users=json.loads(json.dumps(SLACK_USERS)))
    await slack.start()
    chat_settings = settings.model_copy(
        update={
            "slack_bot_token": SecretStr(slack.bot_token),
            "slack_signing_secret": SecretStr(SLACK_SECRET),
            "slack_api_url": slack.url,
            "teams_app_id": APP_ID,
            "teams_app_password": SecretStr(SECRET),
            "teams_tenant_id": TENANT,
            "teams_openid_metadata_url": graph.metadata_url,
            "teams_allowed_service_urls": ["127.0.0.1"],
        }
    )
    service = ActionService(
        client, chat_settings, load_policy(chat_settings.policy), directory, registry
    )
    await ledger.pool.execute("DELETE FROM teams_conversations")
    routers = [
        slack_router(chat_settings, service, directory),
        teams_router(
            chat_settings,
            service,
            directory,
            store=ConversationStore(ledger.pool),
            msal_http_client=msal_http,
        ),
    ]
    app = create_app(service, directory, chat_settings, routers=routers)
    parts = worker_parts(chat_settings, ledger, notifiers=[])
    parts.directory = directory  # the worker's directory knows nobody the IdP alone knows
    try:
        async with (
            build_worker(client, chat_settings, parts),
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway"
            ) as http,
        ):
            yield Chat(slack, graph, service, http)
    finally:
        await slack.stop()


async def test_slack_users_only_okta_knows_approve_with_their_okta_groups(
    chat: Chat, ledger: Ledger
) -> None:
    action = await chat.submit("two-db")  # two of security
    assert (await chat.click("U0ZOE", action)).status_code == 200
    assert (await chat.click("U0YAN", action)).status_code == 200
    final = await chat.until(action.id, lambda s: s.status is Status.SUCCEEDED)
    assert sorted((d.approver, d.channel) for d in final.decisions) == [
        ("yan@example.com", "slack"),
        ("zoe@example.com", "slack"),
    ]
    assert final.refused == []
    events = [e for e in await ledger.events(action.id) if e.kind == "decision"]
    # The gateway vouched for the groups Okta gave them, and the ledger keeps that.
    assert {e.actor: e.payload["approver_groups"] for e in events} == {
        "zoe@example.com": ["security"],
        "yan@example.com": ["dba", "security", "oncall"],
    }


@pytest.mark.parametrize(
    ("user", "told"),
    [
        ("U0NOMAIL", "not linked to anyone"),  # Slack returned no email: nothing to go by
        ("U0STRANGER", "not linked to anyone"),  # an email nobody has, in the file or the IdP
        ("U0SAM", "not linked to anyone"),  # suspended in Okta
    ],
)
async def test_a_slack_user_the_idp_does_not_vouch_for_decides_nothing(
    chat: Chat, user: str, told: str
) -> None:
    action = await chat.submit("two-db")
    response = await chat.click(user, action)
    assert response.status_code == 401
    assert told in await chat.told(user)
    await asyncio.sleep(0.3)
    status = await chat.service.status(action.id)
    assert (status.status, status.decisions, status.refused) == (Status.PENDING_APPROVAL, [], [])


async def test_the_owner_found_by_email_is_the_files_person_and_cannot_self_approve(
    chat: Chat, okta: FakeOkta
) -> None:
    """Okta knows dave too, but the file lists him: he is the agent's owner, not a stranger."""
    okta.memberships["dave@example.com"] = [G_SECURITY]
    action = await chat.submit("two-db")
    assert (await chat.click("U0DAVE", action)).status_code == 200
    status = await chat.until(action.id, lambda s: bool(s.refused))
    assert [(r.approver, r.code) for r in status.refused] == [
        ("dave@example.com", RefusalCode.SELF_APPROVAL)
    ]
    assert status.decisions == []


async def test_a_slack_user_removed_from_the_okta_group_is_refused_after_the_ttl(
    chat: Chat, okta: FakeOkta, clock: Clock
) -> None:
    first = await chat.submit("two-db")
    assert (await chat.click("U0ZOE", first)).status_code == 200
    await chat.until(first.id, lambda s: len(s.decisions) == 1)
    # An access review takes zoe out of security; the Slack link stays cached, her groups do not.
    okta.memberships["zoe@example.com"] = []
    clock.now += 61
    second = await chat.submit("two-db")
    assert (await chat.click("U0ZOE", second)).status_code == 200
    status = await chat.until(second.id, lambda s: bool(s.refused))
    assert status.decisions == []
    assert [(r.approver, r.code, r.channel) for r in status.refused] == [
        ("zoe@example.com", RefusalCode.NOT_ELIGIBLE, "slack")
    ]
    assert "refused" in await chat.told("U0ZOE")
    # Deprovisioned: the IdP no longer knows her as a person, so nothing is even attempted.
    okta.statuses["zoe@example.com"] = "DEPROVISIONED"
    clock.now += 61
    assert (await chat.click("U0ZOE", second)).status_code == 200
    assert "no longer knows you" in await chat.told("U0ZOE", 2)
    after = await chat.service.status(second.id)
    assert (after.decisions, len(after.refused)) == ([], 1)


async def test_an_okta_outage_during_a_slack_click_decides_nothing(
    chat: Chat, okta: FakeOkta, clock: Clock
) -> None:
    action = await chat.submit("two-db")
    await okta.pause()
    try:
        response = await chat.click("U0YAN", action)
        assert response.status_code == 503
        assert "identity provider is unavailable" in await chat.told("U0YAN")
    finally:
        await okta.resume()
    status = await chat.service.status(action.id)
    assert (status.decisions, status.refused) == ([], [])
    # Linked (and cached) while Okta was up, then Okta goes down before the decision.
    assert (await chat.click("U0ZOE", action)).status_code == 200
    await chat.until(action.id, lambda s: len(s.decisions) == 1)
    clock.now += 61
    second = await chat.submit("two-db")
    await okta.pause()
    try:
        assert (await chat.click("U0ZOE", second)).status_code == 200
        assert "identity provider is unavailable" in await chat.told("U0ZOE")
    finally:
        await okta.resume()
    await asyncio.sleep(0.3)
    status = await chat.service.status(second.id)
    assert (status.decisions, status.refused) == ([], [])
    # Back up: the same click counts.
    assert (await chat.click("U0YAN", action)).status_code == 200
    await chat.until(action.id, lambda s: s.status is Status.SUCCEEDED)


# --- Teams, end to end ----------------------------------------------------------------------


async def test_a_teams_user_only_entra_knows_approves_with_their_entra_groups(
    chat: Chat, ledger: Ledger
) -> None:
    action = await chat.submit("one-db")  # one of dba
    response = await chat.teams("aad-uma", action)
    assert response.status_code == 200, response.text
    final = await chat.until(action.id, lambda s: s.status is Status.SUCCEEDED)
    assert [(d.approver, d.channel) for d in final.decisions] == [("uma@example.com", "teams")]
    [event] = [e for e in await ledger.events(action.id) if e.kind == "decision"]
    assert event.payload["approver_groups"] == ["dba"]


@pytest.mark.parametrize("oid", ["aad-nobody", "aad-vic", "aad-mal"])
async def test_a_teams_user_entra_does_not_vouch_for_decides_nothing(chat: Chat, oid: str) -> None:
    action = await chat.submit("one-db")
    response = await chat.teams(oid, action)
    assert response.status_code == 400
    assert "not in the signoff directory or the identity provider" in response.text
    status = await chat.service.status(action.id)
    assert (status.status, status.decisions, status.refused) == (Status.PENDING_APPROVAL, [], [])


async def test_a_graph_outage_during_a_teams_click_decides_nothing(chat: Chat) -> None:
    action = await chat.submit("one-db")
    chat.graph.graph_failures = [503, 503, 503]
    response = await chat.teams("aad-uma", action)
    assert response.status_code == 200
    assert "identity provider is unavailable" in response.text
    status = await chat.service.status(action.id)
    assert (status.status, status.decisions, status.refused) == (Status.PENDING_APPROVAL, [], [])
    chat.graph.graph_failures = []
    assert (await chat.teams("aad-uma", action)).status_code == 200
    await chat.until(action.id, lambda s: s.status is Status.SUCCEEDED)


# --- API tokens of people the file does not list ---------------------------------------------

idp = oidc_fixtures.idp


async def test_a_token_persons_source_owned_groups_come_from_the_source_now(
    idp: OpenIdProvider,
    okta: FakeOkta,
    graph: FakeMicrosoft,
    msal_http: MsalRoute,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """zoe's token says dba and security; Okta owns security, Entra dba: they decide, now."""
    monkeypatch.setenv("TEST_OKTA_TOKEN", OKTA_TOKEN)
    monkeypatch.setenv("TEST_ENTRA_SECRET", SECRET)
    oidc = {
        "issuers": [{"issuer": idp.issuer, "audience": AUDIENCE}],
        "groups": {"dba": ["dba-team"]},
    }
    directory = sourced(document(okta, graph, oidc=oidc), okta, msal_http, clock)
    token = await asyncio.to_thread(idp.human_token, "zoe@example.com")
    zoe = await directory.authenticate(token)
    assert zoe is not None
    assert (zoe.method, zoe.principal.id) == ("oidc", "zoe@example.com")
    # Okta lists her in security; Graph has no zoe, so no dba, whatever the token claims.
    assert zoe.principal.groups == ["security"]
    # Out of security in Okta: after the TTL she is in nothing, with the same (valid) token.
    okta.memberships["zoe@example.com"] = []
    clock.now += 61
    again = await directory.authenticate(token)
    assert again is not None
    assert again.principal.groups == []
    # A listed person's token is the file's person, as before.
    alice = await directory.authenticate(
        await asyncio.to_thread(idp.human_token, "alice@example.com")
    )
    assert alice is not None
    assert alice.principal.id == "alice@example.com"


async def test_a_token_persons_groups_wait_for_an_idp_that_is_down(
    idp: OpenIdProvider,
    okta: FakeOkta,
    graph: FakeMicrosoft,
    msal_http: MsalRoute,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Okta down: the gateway cannot say which groups zoe is in, so it says so (a 503)."""
    monkeypatch.setenv("TEST_OKTA_TOKEN", OKTA_TOKEN)
    monkeypatch.setenv("TEST_ENTRA_SECRET", SECRET)
    oidc = {"issuers": [{"issuer": idp.issuer, "audience": AUDIENCE}]}
    directory = sourced(document(okta, graph, oidc=oidc), okta, msal_http, clock)
    token = await asyncio.to_thread(idp.human_token, "zoe@example.com")
    await okta.pause()
    try:
        with pytest.raises(IdentityProviderUnavailable):
            await directory.authenticate(token)
    finally:
        await okta.resume()
    zoe = await directory.authenticate(token)
    assert zoe is not None
    assert zoe.principal.groups == ["security"]


async def test_people_are_looked_up_with_the_service_apps_users_scope(
    okta: FakeOkta,
    graph: FakeMicrosoft,
    msal_http: MsalRoute,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Users API needs okta.users.read; without it Okta says 403 and nobody is guessed."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    okta.apps["0oa1serviceapp000001"] = key.public_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    monkeypatch.setenv("TEST_OKTA_KEY", pem)
    monkeypatch.setenv("TEST_ENTRA_SECRET", SECRET)
    doc = document(okta, graph)
    assert doc.okta is not None
    app = doc.okta.model_copy(
        update={
            "api_token_env": None,
            "client_id": "0oa1serviceapp000001",
            "private_key_env": "TEST_OKTA_KEY",
        }
    )
    directory = sourced(doc.model_copy(update={"okta": app}), okta, msal_http, clock)
    zoe = await directory.person_by_email("zoe@example.com")
    assert zoe is not None
    assert zoe.groups == ["security"]
    assert all(r.authorization.startswith("Bearer ") for r in okta.api_requests())  # type: ignore[union-attr]
    # A service app granted only okta.groups.read: the Users API refuses it, and says why.
    okta.app_scopes = {"okta.groups.read"}
    limited = app.model_copy(update={"scopes": ["okta.groups.read"]})
    directory = sourced(doc.model_copy(update={"okta": limited}), okta, msal_http, clock)
    with pytest.raises(IdentityProviderUnavailable, match=r"not allowed .*okta\.users\.read"):
        await directory.person_by_email("yan@example.com")
