"""EntraDirectory: group membership from a (fake) Microsoft Graph, with real msal, cached."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client, WorkflowUpdateFailedError

from activities.ledger.store import Ledger
from policies.directory import DirectoryFile
from policies.entra import EntraDirectory, EntraError
from policies.loader import PolicyError, load_directory
from signoff.models import RefusalCode, Status
from tests.conftest import DATA, Gate, worker_parts
from tests.fake_teams import FakeMicrosoft, MsalRoute
from workers.settings import Settings
from workers.worker import build_worker

CLIENT_ID = "a1b2c3d4-0000-4000-8000-00000000e17a"
SECRET = "graph-secret"
TENANT = "11111111-2222-3333-4444-555555555555"
G_SECURITY = "0d5e0000-0000-4000-8000-000000005ec0"
G_ONCALL = "0d5e0000-0000-4000-8000-0000000000ca"


class Clock:
    """A clock the test moves, so cache expiry takes no waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[FakeMicrosoft]:
    """Microsoft's token endpoint and Graph on 127.0.0.1."""
    fake = await FakeMicrosoft(
        client_id=CLIENT_ID, client_secret="", graph_client_secret=SECRET
    ).start()
    # carol is in security through a nested group; the oncall group lists oscar and carol.
    fake.memberships = {
        "aad-carol": ["nested-1", G_SECURITY, "unrelated"],
        "aad-bob": [],
        "aad-oscar": [G_ONCALL],
        "aad-dave": [G_SECURITY],
    }
    fake.group_members = {G_ONCALL: ["aad-oscar", "aad-carol", "aad-nobody"]}
    yield fake
    await fake.stop()


@pytest.fixture
def msal_http(fake: FakeMicrosoft) -> Iterator[MsalRoute]:
    """msal's http client, answering the real authority from the fake."""
    route = MsalRoute(fake.url)
    yield route
    route.close()


def document(fake_url: str, ttl: str = "5m") -> DirectoryFile:
    """The test directory with security and oncall mapped to Entra groups."""
    data = yaml.safe_load((DATA / "directory.yaml").read_text())
    data["entra"] = {
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "client_secret_env": "TEST_ENTRA_SECRET",
        "graph_url": fake_url,
        "cache_ttl": ttl,
        "groups": {"security": G_SECURITY, "oncall": G_ONCALL},
    }
    return DirectoryFile.model_validate(data)


@pytest.fixture
def clock() -> Clock:
    """The directory's clock."""
    return Clock()


@pytest.fixture
def entra(
    fake: FakeMicrosoft, msal_http: MsalRoute, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> EntraDirectory:
    """An EntraDirectory on the fake Graph."""
    monkeypatch.setenv("TEST_ENTRA_SECRET", SECRET)
    return EntraDirectory(document(fake.url), "test", msal_http_client=msal_http, clock=clock)


async def test_mapped_groups_come_from_graph(entra: EntraDirectory, fake: FakeMicrosoft) -> None:
    carol = await entra.principal("carol@example.com")
    assert carol is not None
    # The file says security and oncall; Entra says security only (nested memberships count).
    assert carol.groups == ["security"]
    bob = await entra.by_token("t-bob")
    assert bob is not None
    assert bob.groups == []  # the file's "security" is ignored: Entra is the source
    alice = await entra.by_aad_object_id("aad-alice")
    assert alice is not None
    assert alice.groups == ["dba"]  # unmapped groups keep the file's membership (404 in Graph)
    agent = await entra.principal("agent:bot")
    assert agent is not None
    assert agent.groups == []
    # Paged (2 per page): carol's three groups took two requests, all with a Graph token.
    assert [r.path.split("?")[0] for r in fake.graph].count(
        "/v1.0/users/aad-carol/transitiveMemberOf/microsoft.graph.group"
    ) == 2
    assert len(fake.graph_token_requests()) == 1
    assert fake.graph_token_requests()[0]["scope"] == f"{fake.url}/.default"
    assert all(r.authorization and r.authorization.startswith("Bearer ") for r in fake.graph)


async def test_answers_are_cached_until_the_ttl(
    entra: EntraDirectory, fake: FakeMicrosoft, clock: Clock
) -> None:
    assert (await entra.by_email("CAROL@example.com")).groups == ["security"]  # type: ignore[union-attr]
    calls = len(fake.graph)
    fake.memberships["aad-carol"] = [G_ONCALL]  # an access review moves carol
    assert (await entra.principal("carol@example.com")).groups == ["security"]  # type: ignore[union-attr]
    assert len(fake.graph) == calls  # served from the cache
    clock.now += 299
    assert (await entra.principal("carol@example.com")).groups == ["security"]  # type: ignore[union-attr]
    clock.now += 2  # past the 5 minutes
    assert (await entra.principal("carol@example.com")).groups == ["oncall"]  # type: ignore[union-attr]
    assert len(fake.graph) == calls + 1
    assert len(fake.graph_token_requests()) == 1  # msal's token is still good


async def test_members_of_a_mapped_group(entra: EntraDirectory) -> None:
    members = await entra.members("oncall")
    assert sorted(p.id for p in members) == ["carol@example.com", "oscar@example.com"]
    dba = [p.id for p in await entra.members("dba")]
    assert dba == ["alice@example.com", "dave@example.com"]  # unmapped: from the file


async def test_graph_failure_is_an_error_not_an_empty_answer(
    entra: EntraDirectory, fake: FakeMicrosoft
) -> None:
    fake.graph_failures = [503]
    with pytest.raises(EntraError, match="503"):
        await entra.principal("carol@example.com")
    carol = await entra.principal("carol@example.com")  # the failure was not cached
    assert carol is not None
    assert carol.groups == ["security"]


async def test_missing_secret_is_a_clear_error(
    fake: FakeMicrosoft, msal_http: MsalRoute, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_ENTRA_SECRET", raising=False)
    entra = EntraDirectory(document(fake.url), "dir.yaml", msal_http_client=msal_http)
    with pytest.raises(EntraError, match="TEST_ENTRA_SECRET"):
        await entra.principal("carol@example.com")
    assert fake.token_requests == []


def test_loader_builds_an_entra_directory(tmp_path: Path) -> None:
    data = yaml.safe_load((DATA / "directory.yaml").read_text())
    data["entra"] = {
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "groups": {"security": G_SECURITY},
    }
    path = tmp_path / "directory.yaml"
    path.write_text(yaml.safe_dump(data))
    directory = load_directory(path)
    assert isinstance(directory, EntraDirectory)
    assert directory.config.cache_ttl.total_seconds() == 300
    assert directory.config.client_secret_env == "SIGNOFF_ENTRA_CLIENT_SECRET"

    data["entra"]["groups"] = {"secruity": G_SECURITY}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError, match="unknown group 'secruity'"):
        load_directory(path)

    data["entra"] = {"tenant_id": TENANT, "client_id": CLIENT_ID, "client_secret": "inline"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError, match="unknown key 'client_secret'"):
        load_directory(path)


def test_without_entra_the_static_directory_is_unchanged() -> None:
    directory = load_directory(DATA / "directory.yaml")
    assert not isinstance(directory, EntraDirectory)
    assert directory.entra is None


async def test_decisions_are_authorised_with_entra_groups_at_decision_time(
    client: Client,
    settings: Settings,
    ledger: Ledger,
    gate: Gate,
    entra: EntraDirectory,
    fake: FakeMicrosoft,
) -> None:
    parts = worker_parts(settings, ledger)
    parts.directory = entra
    async with build_worker(client, settings, parts):
        handle = await gate.submit("two-db")
        await gate.wait_for(handle, "pending_approval")
        # bob is in security per the file, but not per Entra: refused.
        with pytest.raises(WorkflowUpdateFailedError):
            await gate.decide(handle, "bob@example.com")
        await gate.decide(handle, "carol@example.com")
        # Entra adds oscar to security now; the cache is cold for him, so it counts at once.
        fake.memberships["aad-oscar"] = [G_ONCALL, G_SECURITY]
        await gate.decide(handle, "oscar@example.com")
        final = await handle.result()
    assert final.status is Status.SUCCEEDED
    assert [d.approver for d in final.decisions] == ["carol@example.com", "oscar@example.com"]
    assert [(r.approver, r.code) for r in final.refused] == [
        ("bob@example.com", RefusalCode.NOT_ELIGIBLE)
    ]
