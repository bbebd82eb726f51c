"""Okta as a group source: the Groups API of a fake Okta org, on its real wire format, over TLS."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from temporalio.client import Client, WorkflowUpdateFailedError

from activities.ledger.store import Ledger
from policies.directory import DirectoryFile, EntraConfig, OktaConfig
from policies.entra import EntraGroups
from policies.groups import GroupSourceError, MembershipCache, SourcedDirectory, owners
from policies.loader import PolicyError, load_directory, load_policy_and_directory
from policies.okta import OktaError, OktaGroups, OktaRateLimited
from signoff.executor import registry
from signoff.models import RefusalCode, Status
from tests.conftest import DATA, Gate, worker_parts
from tests.fake_okta import FakeOkta
from tests.fake_teams import FakeMicrosoft, MsalRoute
from tests.gateway_fixtures import api
from workers.gateway.app import create_app
from workers.gateway.service import ActionService
from workers.settings import Settings
from workers.worker import build_worker

API_TOKEN = "00aBcD-okta-api-token-do-not-log"
APP_ID = "0oa1serviceapp000001"
ENTRA_CLIENT = "a1b2c3d4-0000-4000-8000-00000000e17a"
ENTRA_SECRET = "graph-secret"
G_SECURITY = "00gSECURITY000000001"
G_ONCALL = "00gONCALL00000000001"
G_PUSHED = "00gPUSHED00000000001"
G_ONCALL_ENTRA = "0d5e0000-0000-4000-8000-0000000000ca"


class Clock:
    """A clock the test moves, so the membership TTL passes without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def okta() -> AsyncIterator[FakeOkta]:
    """A fake Okta org: security and an app-pushed namesake, carol, dave and oscar in it."""
    fake = await FakeOkta().start()
    fake.api_tokens.add(API_TOKEN)
    fake.group("security-approvers", gid=G_SECURITY)
    fake.group("oncall", gid=G_ONCALL)
    fake.group("security-approvers", type="APP_GROUP", gid=G_PUSHED)
    extra = [fake.group(f"team-{i}") for i in range(3)]
    fake.memberships = {
        "carol@example.com": [*extra, G_SECURITY, G_ONCALL],
        "dave@example.com": [G_SECURITY],
        "oscar@example.com": [G_ONCALL, G_SECURITY],
        "bob@example.com": [G_PUSHED],
        "alice@example.com": [],
    }
    yield fake
    await fake.stop()


@pytest.fixture
def clock() -> Clock:
    """The directory's clock."""
    return Clock()


def okta_section(fake: FakeOkta, **extra: Any) -> dict[str, Any]:
    """An `okta:` section mapping security (by id) and oncall (by name), API token auth."""
    section: dict[str, Any] = {
        "org_url": fake.url,
        "api_token_env": "TEST_OKTA_TOKEN",
        "membership_ttl": "60s",
        "groups": {"security": G_SECURITY, "oncall": "oncall"},
    }
    section.update(extra)
    return section


def document(**sections: Any) -> DirectoryFile:
    """The test directory with extra top-level sections (okta, entra)."""
    data = yaml.safe_load((DATA / "directory.yaml").read_text())
    data.update(sections)
    return DirectoryFile.model_validate(data)


def okta_directory(fake: FakeOkta, clock: Clock, **extra: Any) -> SourcedDirectory:
    """A directory whose security and oncall come from the fake Okta."""
    doc = document(okta=okta_section(fake, **extra))
    assert doc.okta is not None
    source = OktaGroups(doc.okta, "test", clock=clock, verify=fake.client_tls())
    return SourcedDirectory(doc, "test", sources=[source])


@pytest.fixture
def directory(okta: FakeOkta, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> SourcedDirectory:
    """The test directory on the fake Okta, with an API token."""
    monkeypatch.setenv("TEST_OKTA_TOKEN", API_TOKEN)
    return okta_directory(okta, clock)


# --- membership -----------------------------------------------------------------------------


async def test_groups_come_from_okta_across_pages(
    directory: SourcedDirectory, okta: FakeOkta
) -> None:
    carol = await directory.principal("carol@example.com")
    assert carol is not None
    assert carol.groups == ["security", "oncall"]
    # Five groups, two a page: three requests, following Link rel="next", all with SSWS.
    calls = okta.api_requests()
    assert [c.path for c in calls] == [
        "/api/v1/users/carol%40example.com/groups",
        "/api/v1/users/carol%40example.com/groups?after=2&limit=2",
        "/api/v1/users/carol%40example.com/groups?after=4&limit=2",
    ]
    assert {c.authorization for c in calls} == {f"SSWS {API_TOKEN}"}
    # bob's file says security; Okta puts him only in an app-pushed group of the same name,
    # which a name never matches (and security is mapped by id anyway).
    bob = await directory.by_token("t-bob")
    assert bob is not None
    assert bob.groups == []
    alice = await directory.by_email("ALICE@example.com")
    assert alice is not None
    assert alice.groups == ["dba"]  # unmapped groups keep the file's membership
    erin = await directory.principal("erin@example.com")  # not in Okta at all: 404
    assert erin is not None
    assert erin.groups == ["auditors"]
    agent = await directory.principal("agent:bot")
    assert agent is not None
    assert agent.groups == []
    assert not any("agent" in c.path for c in okta.api_requests())  # agents are never asked


async def test_members_of_a_mapped_group(directory: SourcedDirectory) -> None:
    members = await directory.members("security")
    assert sorted(p.id for p in members) == [
        "carol@example.com",
        "dave@example.com",
        "oscar@example.com",
    ]
    assert [p.id for p in await directory.members("dba")] == [
        "alice@example.com",
        "dave@example.com",
    ]


async def test_a_name_matches_only_an_okta_group(
    okta: FakeOkta, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OKTA_TOKEN", API_TOKEN)
    by_name = okta_directory(okta, clock, groups={"security": "security-approvers"})
    bob = await by_name.principal("bob@example.com")  # in the APP_GROUP namesake only
    assert bob is not None
    assert bob.groups == []
    dave = await by_name.principal("dave@example.com")
    assert dave is not None
    assert dave.groups == ["dba", "security"]


async def test_removed_member_loses_the_group_after_the_ttl(
    directory: SourcedDirectory, okta: FakeOkta, clock: Clock
) -> None:
    assert "security" in (await directory.principal("oscar@example.com")).groups  # type: ignore[union-attr]
    okta.memberships["oscar@example.com"] = [G_ONCALL]
    clock.now += 59
    assert "security" in (await directory.principal("oscar@example.com")).groups  # type: ignore[union-attr]
    clock.now += 2  # past the 60 seconds
    assert (await directory.principal("oscar@example.com")).groups == ["oncall"]  # type: ignore[union-attr]


async def test_the_cache_is_bounded() -> None:
    cache = MembershipCache(60, maxsize=3)
    for i in range(10):
        await cache.get(f"user{i}", lambda: asyncio.sleep(0, frozenset({"g"})))
    assert len(cache) == 3


# --- rate limits, failures and secrets ------------------------------------------------------


async def test_a_rate_limit_is_waited_out(directory: SourcedDirectory, okta: FakeOkta) -> None:
    okta.throttled = [1.0]  # the next answer: 429, resetting within a second
    started = time.monotonic()
    dave = await directory.principal("dave@example.com")
    assert dave is not None
    assert dave.groups == ["dba", "security"]
    assert [c.status for c in okta.api_requests()] == [429, 200]
    assert time.monotonic() - started < 3


async def test_a_long_rate_limit_is_a_retryable_error(
    directory: SourcedDirectory, okta: FakeOkta
) -> None:
    okta.throttled = [30.0]
    with pytest.raises(OktaRateLimited, match="rate limit") as caught:
        await directory.principal("dave@example.com")
    assert 25 < caught.value.retry_after <= 30
    assert isinstance(caught.value, GroupSourceError)
    assert len(okta.api_requests()) == 1  # no hammering: it said when to come back
    dave = await directory.principal("dave@example.com")  # the failure was not cached
    assert dave is not None
    assert dave.groups == ["dba", "security"]


async def test_rate_limit_retries_are_bounded(directory: SourcedDirectory, okta: FakeOkta) -> None:
    okta.throttled = [0.0] * 10  # resets "now", again and again
    with pytest.raises(OktaRateLimited, match="rate limit"):
        await directory.principal("dave@example.com")
    assert [c.status for c in okta.api_requests()] == [429, 429, 429]


async def test_a_bad_token_is_a_clear_error_without_the_token(
    okta: FakeOkta, clock: Clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "00wrong-token-that-must-not-leak"
    monkeypatch.setenv("TEST_OKTA_TOKEN", wrong)
    directory = okta_directory(okta, clock)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(OktaError) as caught:
        await directory.principal("carol@example.com")
    message = str(caught.value)
    assert "HTTP 401 E0000011: Invalid token provided" in message
    assert "TEST_OKTA_TOKEN" in message
    assert wrong not in message
    assert wrong not in caplog.text
    assert okta.api_requests()[0].authorization == f"SSWS {wrong}"  # it was sent, as SSWS


async def test_a_missing_token_is_a_clear_error(
    okta: FakeOkta, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_OKTA_TOKEN", raising=False)
    directory = okta_directory(okta, clock)
    with pytest.raises(OktaError, match="TEST_OKTA_TOKEN"):
        await directory.principal("carol@example.com")
    assert okta.requests == []


async def test_an_outage_is_an_error_not_an_empty_answer(
    directory: SourcedDirectory, okta: FakeOkta
) -> None:
    okta.failures = [503]
    with pytest.raises(OktaError, match="503"):
        await directory.principal("carol@example.com")
    await okta.pause()
    with pytest.raises(OktaError, match="unreachable"):
        await directory.principal("carol@example.com")
    await okta.resume()
    carol = await directory.principal("carol@example.com")
    assert carol is not None
    assert "security" in carol.groups


async def test_pages_never_lead_to_another_host(
    directory: SourcedDirectory, okta: FakeOkta
) -> None:
    okta.next_host = "https://attacker.example"
    with pytest.raises(OktaError, match="another host"):
        await directory.principal("carol@example.com")
    assert len(okta.api_requests()) == 1


# --- the service app: private-key JWT -------------------------------------------------------


def rsa_key() -> rsa.RSAPrivateKey:
    """A fresh service-app key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    """The key as PKCS#8 PEM, as Okta's console offers it."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def app_section(fake: FakeOkta, **auth: Any) -> dict[str, Any]:
    """An `okta:` section for the service app."""
    section = okta_section(fake)
    del section["api_token_env"]
    return {**section, "client_id": APP_ID, **auth}


async def test_service_app_with_private_key_jwt(
    okta: FakeOkta, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa_key()
    okta.apps[APP_ID] = key.public_key()
    monkeypatch.setenv("TEST_OKTA_KEY", pem(key))
    doc = document(okta=app_section(okta, private_key_env="TEST_OKTA_KEY", key_id="kid-1"))
    assert doc.okta is not None
    source = OktaGroups(doc.okta, "test", clock=clock, verify=okta.client_tls())
    directory = SourcedDirectory(doc, "test", sources=[source])
    carol = await directory.principal("carol@example.com")
    assert carol is not None
    assert carol.groups == ["security", "oncall"]
    (form,) = okta.token_requests
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "okta.groups.read okta.users.read"
    assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "kid-1"
    bearer = {c.authorization for c in okta.api_requests()}
    assert len(bearer) == 1
    assert bearer.pop().startswith("Bearer eyJ.fake-okta-access.")  # type: ignore[union-attr]
    await directory.principal("dave@example.com")
    assert len(okta.token_requests) == 1  # the access token is reused while it lasts


async def test_service_app_key_as_a_jwk_file(okta: FakeOkta, clock: Clock, tmp_path: Path) -> None:
    key = rsa_key()
    okta.apps[APP_ID] = key.public_key()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk["kid"] = "console-kid"
    path = tmp_path / "okta-key.json"
    path.write_text(json.dumps(jwk))
    doc = document(okta=app_section(okta, private_key_file=str(path)))
    assert doc.okta is not None
    source = OktaGroups(doc.okta, "test", clock=clock, verify=okta.client_tls())
    dave = await SourcedDirectory(doc, "test", sources=[source]).principal("dave@example.com")
    assert dave is not None
    assert dave.groups == ["dba", "security"]
    (form,) = okta.token_requests
    assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "console-kid"


async def test_an_unregistered_key_is_refused_clearly(
    okta: FakeOkta, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    okta.apps[APP_ID] = rsa_key().public_key()
    impostor = pem(rsa_key())
    monkeypatch.setenv("TEST_OKTA_KEY", impostor)
    doc = document(okta=app_section(okta, private_key_env="TEST_OKTA_KEY"))
    assert doc.okta is not None
    source = OktaGroups(doc.okta, "test", clock=clock, verify=okta.client_tls())
    with pytest.raises(OktaError) as caught:
        await SourcedDirectory(doc, "test", sources=[source]).principal("carol@example.com")
    message = str(caught.value)
    assert "invalid_client" in message
    assert "signature is invalid" in message
    assert "PRIVATE KEY" not in message
    assert okta.api_requests() == []  # no access token, no API call


async def test_a_malformed_key_is_refused_without_quoting_it(
    okta: FakeOkta, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----"
    monkeypatch.setenv("TEST_OKTA_KEY", broken)
    doc = document(okta=app_section(okta, private_key_env="TEST_OKTA_KEY"))
    assert doc.okta is not None
    source = OktaGroups(doc.okta, "test", clock=clock, verify=okta.client_tls())
    directory = SourcedDirectory(doc, "test", sources=[source])
    with pytest.raises(OktaError, match=r"TEST_OKTA_KEY.*not an unencrypted RSA") as caught:
        await directory.principal("carol@example.com")
    assert "c2VjcmV0" not in str(caught.value)
    assert okta.requests == []


# --- configuration --------------------------------------------------------------------------


def write(tmp_path: Path, **sections: Any) -> Path:
    """A directory file with these extra sections."""
    data = yaml.safe_load((DATA / "directory.yaml").read_text())
    data.update(sections)
    path = tmp_path / "directory.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_loader_builds_an_okta_directory(tmp_path: Path) -> None:
    org = {"org_url": "https://example.okta.com/", "api_token_env": "OKTA_API_TOKEN"}
    directory = load_directory(write(tmp_path, okta={**org, "groups": {"security": "sec"}}))
    assert isinstance(directory, SourcedDirectory)
    (source,) = directory.sources
    assert isinstance(source, OktaGroups)
    assert source.config.org_url == "https://example.okta.com"
    assert source.config.membership_ttl.total_seconds() == 60
    assert source.config.scopes == ["okta.groups.read", "okta.users.read"]


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (
            {"org_url": "http://example.okta.com", "api_token_env": "T"},
            "field 'okta.org_url': must be an https URL",
        ),
        (
            {"org_url": "https://example.okta.com/oauth2/default", "api_token_env": "T"},
            "must be the org's origin only",
        ),
        ({"org_url": "https://example.okta.com"}, "field 'okta.api_token_env': required"),
        (
            {"org_url": "https://example.okta.com", "api_token_env": "T", "client_id": "c"},
            "either an API token or a service app",
        ),
        (
            {"org_url": "https://example.okta.com", "client_id": "c"},
            "exactly one of private_key_env or private_key_file",
        ),
        (
            {"org_url": "https://example.okta.com", "api_token": "00secret"},
            "unknown key 'api_token'; did you mean 'api_token_env'?",
        ),
        (
            {"org_url": "https://example.okta.com", "api_token_env": "T", "groups": {"sec": "x"}},
            "field 'okta.groups.sec': unknown group 'sec'",
        ),
        (
            {"org_url": "https://example.okta.com", "api_token_env": "T", "membership_ttl": "7d"},
            "at most 1d",
        ),
    ],
)
def test_bad_okta_sections_are_load_errors(
    tmp_path: Path, section: dict[str, Any], problem: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        load_directory(write(tmp_path, okta=section))
    assert problem in str(caught.value)
    assert "00secret" not in str(caught.value)


def test_a_group_mapped_by_entra_and_okta_is_a_load_error(tmp_path: Path) -> None:
    entra = {"tenant_id": "t", "client_id": "c", "groups": {"security": "e-sec"}}
    okta = {
        "org_url": "https://example.okta.com",
        "api_token_env": "T",
        "groups": {"oncall": "oncall", "security": "00g00000000000000001"},
    }
    with pytest.raises(PolicyError) as caught:
        load_directory(write(tmp_path, entra=entra, okta=okta))
    assert "field 'okta.groups.security'" in str(caught.value)
    assert "'security' is mapped under entra.groups too" in str(caught.value)
    # Built by hand, the directory refuses it too.
    both = [
        EntraGroups(EntraConfig.model_validate(entra), "d"),
        OktaGroups(OktaConfig.model_validate(okta), "d"),
    ]
    with pytest.raises(ValueError, match=r"'security' is mapped under both entra\.groups"):
        owners(both, "d")
    with pytest.raises(ValueError, match="'security' is mapped under both"):
        SourcedDirectory(document(), "d", sources=both)


# --- Entra and Okta at once -----------------------------------------------------------------


@pytest.fixture
async def microsoft() -> AsyncIterator[FakeMicrosoft]:
    """Microsoft's token endpoint and Graph: oncall is an Entra group."""
    fake = await FakeMicrosoft(
        client_id=ENTRA_CLIENT, client_secret="", graph_client_secret=ENTRA_SECRET
    ).start()
    fake.memberships = {"aad-carol": [], "aad-oscar": [G_ONCALL_ENTRA], "aad-dave": []}
    fake.group_members = {G_ONCALL_ENTRA: ["aad-oscar"]}
    yield fake
    await fake.stop()


@pytest.fixture
def msal_http(microsoft: FakeMicrosoft) -> Iterator[MsalRoute]:
    """msal's http client, answering the real authority from the fake."""
    route = MsalRoute(microsoft.url)
    yield route
    route.close()


async def test_entra_and_okta_for_different_groups(
    okta: FakeOkta,
    microsoft: FakeMicrosoft,
    msal_http: MsalRoute,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_OKTA_TOKEN", API_TOKEN)
    monkeypatch.setenv("TEST_ENTRA_SECRET", ENTRA_SECRET)
    doc = document(
        okta=okta_section(okta, groups={"security": G_SECURITY}),
        entra={
            "tenant_id": "11111111-2222-3333-4444-555555555555",
            "client_id": ENTRA_CLIENT,
            "client_secret_env": "TEST_ENTRA_SECRET",
            "graph_url": microsoft.url,
            "groups": {"oncall": G_ONCALL_ENTRA},
        },
    )
    assert doc.okta is not None
    assert doc.entra is not None
    directory = SourcedDirectory(
        doc,
        "test",
        sources=[
            EntraGroups(doc.entra, "test", msal_http_client=msal_http, clock=clock),
            OktaGroups(doc.okta, "test", clock=clock, verify=okta.client_tls()),
        ],
    )
    # Okta has carol in oncall too, but oncall is Entra's: only Entra's answer counts.
    carol = await directory.principal("carol@example.com")
    assert carol is not None
    assert carol.groups == ["security"]
    oscar = await directory.principal("oscar@example.com")
    assert oscar is not None
    assert sorted(oscar.groups) == ["oncall", "security"]
    assert [p.id for p in await directory.members("oncall")] == ["oscar@example.com"]
    assert sorted(p.id for p in await directory.members("security")) == [
        "carol@example.com",
        "dave@example.com",
        "oscar@example.com",
    ]


# --- decisions, end to end with a worker ----------------------------------------------------


async def test_a_member_removed_in_okta_cannot_approve_after_the_ttl(
    client: Client,
    settings: Settings,
    ledger: Ledger,
    gate: Gate,
    directory: SourcedDirectory,
    okta: FakeOkta,
    clock: Clock,
) -> None:
    parts = worker_parts(settings, ledger)
    parts.directory = directory
    async with build_worker(client, settings, parts):
        handle = await gate.submit("two-db")
        await gate.wait_for(handle, "pending_approval")
        assert "security" in (await directory.principal("oscar@example.com")).groups  # type: ignore[union-attr]
        # An access review takes oscar out of security in Okta; a minute later he is refused.
        okta.memberships["oscar@example.com"] = [G_ONCALL]
        okta.memberships["alice@example.com"] = [G_SECURITY]
        clock.now += 61
        with pytest.raises(WorkflowUpdateFailedError):
            await gate.decide(handle, "oscar@example.com")
        await gate.decide(handle, "carol@example.com")
        await gate.decide(handle, "alice@example.com")  # added in Okta: counts at once
        final = await handle.result()
    assert final.status is Status.SUCCEEDED
    assert [d.approver for d in final.decisions] == ["carol@example.com", "alice@example.com"]
    assert [(r.approver, r.code) for r in final.refused] == [
        ("oscar@example.com", RefusalCode.NOT_ELIGIBLE)
    ]


async def test_an_okta_outage_makes_the_decision_wait(
    client: Client,
    settings: Settings,
    ledger: Ledger,
    gate: Gate,
    directory: SourcedDirectory,
    okta: FakeOkta,
) -> None:
    parts = worker_parts(settings, ledger)
    parts.directory = directory
    async with build_worker(client, settings, parts):
        handle = await gate.submit("two-db")
        await gate.wait_for(handle, "pending_approval")
        await okta.pause()
        decision = asyncio.create_task(gate.decide(handle, "carol@example.com"))
        await asyncio.sleep(3)
        # Okta cannot say whether carol is in security: nothing is decided, nothing refused.
        assert not decision.done()
        status = await gate.wait_for(handle, "pending_approval")
        assert status.decisions == []
        assert status.refused == []
        await okta.resume()
        accepted = await asyncio.wait_for(decision, timeout=60)
        assert [d.approver for d in accepted.decisions] == ["carol@example.com"]
        assert accepted.refused == []


async def test_the_gateway_says_retry_when_okta_is_down(
    directory: SourcedDirectory,
    okta: FakeOkta,
    client: Client,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An IdP outage at sign-in is a 503 with Retry-After, not a 500; no secret is logged."""
    policy, _ = load_policy_and_directory(settings.policy, settings.directory)
    service = ActionService(client, settings, policy, directory, registry)
    app = create_app(service, directory, settings)
    await okta.pause()
    try:
        async with api(app, "carol") as carol:
            response = await carol.get("/v1/approvals")
    finally:
        await okta.resume()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "identity_provider_unavailable"
    assert int(response.headers["Retry-After"]) >= 5
    assert API_TOKEN not in caplog.text
    async with api(app, "carol") as carol:
        assert (await carol.get("/v1/approvals")).status_code == 200
