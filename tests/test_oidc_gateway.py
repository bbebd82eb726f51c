"""OIDC at the gateway: a live `signoff gateway` trusting a real OpenID Provider.

`GET /v1/me` and `signoff whoami` say who a token is; people sign in with the device flow and
approve, agents authenticate with workload tokens and never approve; every bad token is a
plain 401 and no token reaches the gateway's log.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import stat
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from click.testing import Result
from cryptography.hazmat.primitives.asymmetric import rsa
from temporalio.client import Client
from typer.testing import CliRunner

from activities.ledger.store import Ledger
from tests import oidc_fixtures
from tests.cli import app as cli_app
from tests.conftest import running_worker
from tests.gateway_fixtures import LiveGateway, free_port, gateway_process, live_settings
from tests.oidc_fixtures import AGENTS_AUDIENCE, AUDIENCE, OpenIdProvider

idp = oidc_fixtures.idp
other_idp = oidc_fixtures.other_idp
runner = CliRunner()
DATA = Path(__file__).parent / "data"
DEAD_ISSUER = f"http://127.0.0.1:{free_port()}"
USED_TOKENS: list[str] = []


def directory_for(idp: OpenIdProvider, path: Path) -> Path:
    """The test directory, trusting `idp` for people and workloads (and an IdP that is down)."""
    document = yaml.safe_load((DATA / "directory.yaml").read_text())
    document["principals"].append(
        {
            "id": "agent:etl",
            "kind": "agent",
            "owner": "dave@example.com",
            "workload": {"issuer": idp.issuer, "subject": "etl-bot"},
        }
    )
    document["oidc"] = {
        "issuers": [
            {"issuer": idp.issuer, "audience": AUDIENCE},
            {"issuer": idp.issuer, "audience": AGENTS_AUDIENCE, "kind": "workload"},
            {"issuer": DEAD_ISSUER, "audience": AUDIENCE},
        ],
        "groups": {"dba": ["dba-team"], "oncall": ["Platform On-Call"]},
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
async def live(
    client: Client,
    ledger: Ledger,
    idp: OpenIdProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[LiveGateway]:
    """`signoff gateway` as a child process trusting `idp`, with a worker in this process."""
    folder = Path(tmp_path_factory.mktemp("oidc-gateway"))
    settings = live_settings(client).model_copy(
        update={"directory": directory_for(idp, folder / "directory.yaml")}
    )
    async with (
        running_worker(client, settings, ledger),
        gateway_process(settings, folder / "gateway.log") as gateway,
    ):
        yield gateway
    log = gateway.output()
    assert "gateway stopped" in log
    for token in USED_TOKENS:
        # Not the token, and no part of it: nothing of it is logged.
        assert max(token.split("."), key=len) not in log


def used(token: str) -> str:
    """Remember a token so the gateway's log can be checked for it at the end."""
    USED_TOKENS.append(token)
    return token


async def call(
    live: LiveGateway, token: str, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    """One API call to the live gateway with this bearer token."""
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        return await http.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs
        )


async def me(live: LiveGateway, token: str) -> httpx.Response:
    """`GET /v1/me` with this token."""
    return await call(live, token, "GET", "/v1/me")


async def test_me_with_a_static_token(live: LiveGateway) -> None:
    response = await me(live, "t-bot")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": "agent:bot",
        "kind": "agent",
        "groups": [],
        "owner": "dave@example.com",
        "email": None,
        "acts_for": ["alice@example.com"],
        "authenticated_by": "token",
        "issuer": None,
    }


async def test_me_with_a_person_signed_in_through_the_idp(
    live: LiveGateway, idp: OpenIdProvider
) -> None:
    token = used(await asyncio.to_thread(idp.human_token, "zoe@example.com"))
    response = await me(live, token)
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["id"], data["kind"], data["authenticated_by"], data["issuer"]) == (
        "zoe@example.com",
        "human",
        "oidc",
        idp.issuer,
    )
    assert sorted(data["groups"]) == ["dba", "oncall", "security"]


async def test_me_with_a_workload_token(live: LiveGateway, idp: OpenIdProvider) -> None:
    token = used(idp.client_credentials("etl-bot", resource=AGENTS_AUDIENCE))
    data = (await me(live, token)).json()
    assert (data["id"], data["kind"], data["owner"], data["authenticated_by"]) == (
        "agent:etl",
        "agent",
        "dave@example.com",
        "oidc",
    )


async def test_whoami(live: LiveGateway, idp: OpenIdProvider) -> None:
    token = used(await asyncio.to_thread(idp.human_token, "zoe@example.com"))
    env = {"SIGNOFF_GATEWAY": live.url, "SIGNOFF_TOKEN": token}
    shown = await asyncio.to_thread(runner.invoke, cli_app, ["whoami"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "zoe@example.com" in shown.output
    assert f"OIDC token from {idp.issuer}" in shown.output
    as_json = await asyncio.to_thread(runner.invoke, cli_app, ["whoami", "--json"], env=env)
    assert json.loads(as_json.output)["authenticated_by"] == "oidc"
    static = {"SIGNOFF_GATEWAY": live.url, "SIGNOFF_TOKEN": "t-alice"}
    shown = await asyncio.to_thread(runner.invoke, cli_app, ["whoami"], env=static)
    assert "alice@example.com" in shown.output
    assert "directory token" in shown.output
    refused = await asyncio.to_thread(
        runner.invoke, cli_app, ["whoami"], env={**static, "SIGNOFF_TOKEN": "t-nobody"}
    )
    assert refused.exit_code == 1
    assert "unknown or revoked token" in refused.stderr


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_bad_tokens_are_plain_401s(
    live: LiveGateway, idp: OpenIdProvider, other_idp: OpenIdProvider
) -> None:
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": AUDIENCE, "sub": "zoe", "email": "zoe@example.com"}
    claims |= {"iat": now, "exp": now + 600}
    kid = idp.jwks()["keys"][0]["kid"]
    alg_none = (
        f"{_b64(json.dumps({'alg': 'none', 'kid': kid}).encode())}."
        f"{_b64(json.dumps(claims).encode())}."
    )
    cases = {
        "another issuer": (
            await asyncio.to_thread(other_idp.human_token, "zoe@example.com"),
            "does not trust",
        ),
        "another audience": (
            idp.client_credentials("etl-bot", resource="https://other.test"),
            "another audience",
        ),
        "alg none": (alg_none, "'none'"),
        "unmapped workload": (
            idp.client_credentials("unmapped-bot", resource=AGENTS_AUDIENCE),
            "not mapped to an agent",
        ),
        "a person as an agent": (
            await asyncio.to_thread(idp.human_token, "mallory"),
            "cannot name an agent",
        ),
    }
    for name, (token, reason) in cases.items():
        response = await me(live, used(token))
        assert response.status_code == 401, (name, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        assert error["code"] == "unauthorized", name
        assert reason in error["message"], (name, error)
        assert token not in response.text


async def test_an_idp_outage_is_a_503_not_a_guess(live: LiveGateway) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"iss": DEAD_ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60}
    token = used(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"}))
    response = await me(live, token)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "identity_provider_unavailable"


async def test_sso_people_approve_and_workload_agents_never_do(
    live: LiveGateway, idp: OpenIdProvider
) -> None:
    agent = used(idp.client_credentials("etl-bot", resource=AGENTS_AUDIENCE))
    body = {"action": "noop", "target": "one-oidc", "params": {}, "justification": "oidc test"}
    submitted = await call(live, agent, "POST", "/v1/actions", json=body)
    assert submitted.status_code == 202, submitted.text
    action = submitted.json()
    assert action["request"]["requester"] == "agent:etl"
    path = f"/v1/actions/{action['id']}"
    for _ in range(100):
        status = (await call(live, agent, "GET", path)).json()
        if status["status"] == "pending_approval":
            break
        await asyncio.sleep(0.1)
    assert status["owner"] == "dave@example.com"  # the workload's agent's owner
    decision = {"decision": "approve", "digest": action["digest"]}
    refused = await call(live, agent, "POST", f"{path}/decisions", json=decision)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "agent_approver"
    alice = used(await asyncio.to_thread(idp.human_token, "alice@example.com"))
    approved = await call(live, alice, "POST", f"{path}/decisions", json=decision)
    assert approved.status_code == 200, approved.text
    assert [d["approver"] for d in approved.json()["decisions"]] == ["alice@example.com"]


async def pending_action(live: LiveGateway, agent: str, target: str) -> dict[str, Any]:
    """Submit a noop as the workload agent and return it once it awaits approval."""
    body = {"action": "noop", "target": target, "params": {}, "justification": "idp approver"}
    submitted = await call(live, agent, "POST", "/v1/actions", json=body)
    assert submitted.status_code == 202, submitted.text
    path = f"/v1/actions/{submitted.json()['id']}"
    for _ in range(100):
        status = (await call(live, agent, "GET", path)).json()
        if status["status"] == "pending_approval":
            return dict(status)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never awaited approval: {status}")


async def test_a_person_only_the_idp_knows_approves_with_their_idp_groups(
    live: LiveGateway, idp: OpenIdProvider, ledger: Ledger
) -> None:
    agent = used(idp.client_credentials("etl-bot", resource=AGENTS_AUDIENCE))
    action = await pending_action(live, agent, "one-idp-approver")
    path = f"/v1/actions/{action['id']}"
    decision = {"decision": "approve", "digest": action["digest"]}
    # zoe is in no directory file; her IdP groups map to dba, oncall and security.
    zoe = used(await asyncio.to_thread(idp.human_token, "zoe@example.com"))
    # A client cannot claim groups for itself: the body model forbids the field outright.
    claimed = await call(
        live, zoe, "POST", f"{path}/decisions", json={**decision, "approver_groups": ["dba"]}
    )
    assert claimed.status_code == 422, claimed.text
    unchanged = (await call(live, agent, "GET", path)).json()
    assert (unchanged["status"], unchanged["decisions"], unchanged["refused"]) == (
        "pending_approval",
        [],
        [],
    )
    approved = await call(live, zoe, "POST", f"{path}/decisions", json=decision)
    assert approved.status_code == 200, approved.text
    assert [d["approver"] for d in approved.json()["decisions"]] == ["zoe@example.com"]
    for _ in range(100):
        final = (await call(live, agent, "GET", path)).json()
        if final["status"] == "succeeded":
            break
        await asyncio.sleep(0.1)
    assert final["status"] == "succeeded", final
    events = await ledger.events(action["id"])
    [recorded] = [e for e in events if e.kind == "decision"]
    assert recorded.actor == "zoe@example.com"
    assert "dba" in recorded.payload["groups"]


async def test_a_person_only_the_idp_knows_without_the_group_is_refused(
    live: LiveGateway, idp: OpenIdProvider
) -> None:
    agent = used(idp.client_credentials("etl-bot", resource=AGENTS_AUDIENCE))
    action = await pending_action(live, agent, "one-idp-outsider")
    path = f"/v1/actions/{action['id']}"
    nobody = used(await asyncio.to_thread(idp.human_token, "nobody@example.com"))
    refused = await call(
        live,
        nobody,
        "POST",
        f"{path}/decisions",
        json={"decision": "approve", "digest": action["digest"]},
    )
    # Not eligible, and (not being able to see the action) told no more than a 404 says.
    assert refused.status_code in (403, 404), refused.text
    status = (await call(live, agent, "GET", path)).json()
    assert status["status"] == "pending_approval"
    assert status["decisions"] == []
    assert [(r["approver"], r["code"]) for r in status["refused"]] == [
        ("nobody@example.com", "not_eligible")
    ]


async def test_a_person_only_the_idp_knows_amends_with_their_idp_groups(
    live: LiveGateway, idp: OpenIdProvider, ledger: Ledger
) -> None:
    agent = used(idp.client_credentials("etl-bot", resource=AGENTS_AUDIENCE))
    action = await pending_action(live, agent, "one-idp-amender")
    path = f"/v1/actions/{action['id']}"
    amendment = {"params": {"rows": 1}, "digest": action["digest"], "reason": "one row"}
    zoe = used(await asyncio.to_thread(idp.human_token, "zoe@example.com"))
    # A client cannot claim groups for itself here either: the body forbids the field.
    claimed = await call(
        live, zoe, "POST", f"{path}/amend", json={**amendment, "amender_groups": ["dba"]}
    )
    assert claimed.status_code == 422, claimed.text
    unchanged = (await call(live, agent, "GET", path)).json()
    assert (unchanged["status"], unchanged["refused"]) == ("pending_approval", [])
    # Someone the IdP knows without the group is refused and recorded, as for decisions.
    nobody = used(await asyncio.to_thread(idp.human_token, "nobody@example.com"))
    refused = await call(live, nobody, "POST", f"{path}/amend", json=amendment)
    assert refused.status_code in (403, 404), refused.text
    amended = await call(live, zoe, "POST", f"{path}/amend", json=amendment)
    assert amended.status_code == 200, amended.text
    original = amended.json()
    assert original["status"] == "superseded"
    assert [(r["approver"], r["code"]) for r in original["refused"]] == [
        ("nobody@example.com", "not_eligible")
    ]
    successor = (await call(live, agent, "GET", f"/v1/actions/{original['superseded_by']}")).json()
    assert successor["request"]["params"] == {"rows": 1}
    assert successor["request"]["amended_by"] == "zoe@example.com"
    assert successor["request"]["requester"] == "agent:etl"
    # zoe proposed it: her approval of the successor does not count.
    for _ in range(100):
        if successor["status"] == "pending_approval":
            break
        await asyncio.sleep(0.1)
        successor = (await call(live, agent, "GET", f"/v1/actions/{successor['id']}")).json()
    own = await call(
        live,
        zoe,
        "POST",
        f"/v1/actions/{successor['id']}/decisions",
        json={"decision": "approve", "digest": successor["digest"]},
    )
    assert own.status_code == 403, own.text
    assert own.json()["error"]["code"] == "amender"
    superseded = [e for e in await ledger.events(action["id"]) if e.kind == "superseded"]
    assert [e.actor for e in superseded] == ["zoe@example.com"]


# --- signoff login / logout -----------------------------------------------------------------


async def test_login_refresh_and_logout(
    live: LiveGateway, idp: OpenIdProvider, tmp_path: Path
) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "SIGNOFF_GATEWAY": live.url}
    env.pop("SIGNOFF_TOKEN", None)
    command = [sys.executable, "-c", "from signoff.cli import main; main()", "login"]
    command += ["--issuer", idp.issuer, "--client-id", "signoff-cli", "--resource", AUDIENCE]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert process.stdout is not None
    prompt = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    user_code = re.search(r"confirm the code (\S+)", prompt)
    assert user_code is not None, prompt
    # The person at the browser, while the CLI polls.
    await asyncio.to_thread(idp.approve_device, user_code.group(1), "zoe@example.com")
    rest = (await asyncio.wait_for(process.stdout.read(), 60)).decode()
    assert await process.wait() == 0, prompt + rest
    assert "signed in to" in rest
    stored = tmp_path / "signoff" / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    saved = json.loads(stored.read_text())
    used(saved["access_token"])
    assert saved["access_token"] not in prompt + rest  # never printed

    def whoami() -> Result:
        return runner.invoke(cli_app, ["whoami", "--json"], env={**env, "SIGNOFF_TOKEN": ""})

    shown = await asyncio.to_thread(whoami)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["id"] == "zoe@example.com"

    # An access token about to expire is refreshed with the refresh token, and stored again.
    saved["expires_at"] = time.time()
    stored.write_text(json.dumps(saved))
    shown = await asyncio.to_thread(whoami)
    assert json.loads(shown.output)["id"] == "zoe@example.com"
    renewed = json.loads(stored.read_text())
    assert renewed["access_token"] != saved["access_token"]
    assert renewed["expires_at"] > time.time() + 60
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    used(renewed["access_token"])

    out = await asyncio.to_thread(runner.invoke, cli_app, ["logout"], env=env)
    assert "signed out" in out.output
    assert not stored.exists()
    gone = await asyncio.to_thread(whoami)
    assert gone.exit_code == 1
    assert "signoff login" in gone.stderr
