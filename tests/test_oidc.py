"""OIDC tokens against a real OpenID Provider: who they name, and every attack failing closed.

The provider is `oidc-provider` (tests/oidc); tokens come from it through client credentials
and the device authorization grant. Forged tokens are made the way an attacker would: with
their own keys, or with the provider's public key as an HMAC secret.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from policies.directory import StaticDirectory
from policies.loader import PolicyError, load_directory
from policies.oidc import IdentityProviderUnavailable, OidcIssuer, TokenRejected
from tests import oidc_fixtures
from tests.gateway_fixtures import free_port
from tests.oidc_fixtures import AGENTS_AUDIENCE, AUDIENCE, OpenIdProvider, start_provider

idp = oidc_fixtures.idp
other_idp = oidc_fixtures.other_idp

DATA = Path(__file__).parent / "data"


def directory_file(
    idp: OpenIdProvider, path: Path, *, human: dict[str, Any] | None = None, **workload: Any
) -> Path:
    """The test directory plus an agent with a workload identity and an `oidc:` section."""
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
            {"issuer": idp.issuer, "audience": AUDIENCE, "kind": "human", **(human or {})},
            {
                "issuer": idp.issuer,
                "audience": AGENTS_AUDIENCE,
                "kind": "workload",
                "principal_claim": "sub",
                **workload,
            },
        ],
        "groups": {"dba": ["dba-team"], "oncall": ["Platform On-Call"]},
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def directory(idp: OpenIdProvider, tmp_path: Path) -> StaticDirectory:
    """The test directory trusting `idp` for people and workloads."""
    return load_directory(directory_file(idp, tmp_path / "directory.yaml"))


@pytest.fixture
def no_token_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Tokens a test adds here must appear in no log record, at any level."""
    caplog.set_level(logging.DEBUG)
    tokens: list[str] = []
    yield tokens
    for token in tokens:
        for part in token.split("."):
            if len(part) > 16:
                assert part not in caplog.text, "a token (or part of one) was logged"


async def rejected(directory: StaticDirectory, token: str) -> str:
    """The reason the directory refuses a token (it must refuse it)."""
    with pytest.raises(TokenRejected) as refused:
        await directory.authenticate(token)
    message = str(refused.value)
    assert token not in message
    return message


def b64(data: bytes) -> str:
    """base64url without padding, as JWTs write it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(idp: OpenIdProvider, **overrides: Any) -> dict[str, Any]:
    """Claims a valid human token of `idp` would carry."""
    now = int(time.time())
    return {
        "iss": idp.issuer,
        "aud": AUDIENCE,
        "sub": "zoe@example.com",
        "email": "zoe@example.com",
        "groups": ["dba-team"],
        "iat": now,
        "exp": now + 600,
        **overrides,
    }


# --- who tokens name ------------------------------------------------------------------------


async def test_a_listed_person_signs_in_with_the_device_flow(
    idp: OpenIdProvider, directory: StaticDirectory, no_token_in_logs: list[str]
) -> None:
    token = idp.human_token("alice@example.com")
    no_token_in_logs.append(token)
    found = await directory.authenticate(token)
    assert found is not None
    assert (found.method, found.issuer) == ("oidc", idp.issuer)
    # The file is who alice is: her groups there, not the IdP's names for them.
    assert found.principal == await directory.principal("alice@example.com")


async def test_a_person_only_the_idp_knows_gets_mapped_groups(
    idp: OpenIdProvider, directory: StaticDirectory
) -> None:
    found = await directory.authenticate(idp.human_token("zoe@example.com"))
    assert found is not None
    principal = found.principal
    assert (principal.id, principal.kind, principal.email) == (
        "zoe@example.com",
        "human",
        "zoe@example.com",
    )
    # dba and oncall through the mapping, security by its own name; unknown groups ignored.
    assert sorted(principal.groups) == ["dba", "oncall", "security"]
    assert principal.owner is None


async def test_a_workload_token_is_its_mapped_agent(
    idp: OpenIdProvider, directory: StaticDirectory
) -> None:
    found = await directory.authenticate(
        idp.client_credentials("etl-bot", resource=AGENTS_AUDIENCE)
    )
    assert found is not None
    assert found.method == "oidc"
    assert (found.principal.id, found.principal.kind, found.principal.owner) == (
        "agent:etl",
        "agent",
        "dave@example.com",
    )


async def test_static_tokens_keep_working(directory: StaticDirectory) -> None:
    found = await directory.authenticate("t-alice")
    assert found is not None
    assert (found.principal.id, found.method, found.issuer) == ("alice@example.com", "token", None)
    assert await directory.authenticate("t-nobody") is None
    # Without an `oidc:` section a JWT is just an unknown token.
    plain = load_directory(DATA / "directory.yaml")
    assert await plain.authenticate(jwt.encode(claims_for_static(), "x" * 32)) is None


def claims_for_static() -> dict[str, Any]:
    """Any claims: the plain directory never looks at them."""
    return {"sub": "x", "exp": int(time.time()) + 60}


# --- attacks: each one refused, with a clear reason and nothing logged -----------------------


async def test_an_expired_token_is_refused(
    idp: OpenIdProvider, tmp_path: Path, no_token_in_logs: list[str]
) -> None:
    path = directory_file(idp, tmp_path / "d.yaml", leeway="0s")
    # Mapped, so only its age can be the problem.
    document = yaml.safe_load(path.read_text())
    document["principals"][-1]["workload"]["subject"] = "short-lived-bot"
    path.write_text(yaml.safe_dump(document))
    directory = load_directory(path)
    # The issuer's keys first, so the fresh token is checked well within its one second (the
    # first check fetches discovery and JWKS, which a busy machine can stretch past it).
    unmapped = idp.client_credentials("unmapped-bot", resource=AGENTS_AUDIENCE)
    no_token_in_logs.append(unmapped)
    assert "not mapped to an agent" in await rejected(directory, unmapped)
    token = idp.client_credentials("short-lived-bot", resource=AGENTS_AUDIENCE)
    no_token_in_logs.append(token)
    found = await directory.authenticate(token)
    assert found is not None
    assert found.principal.id == "agent:etl"
    await asyncio.sleep(2.2)  # its lifetime is one second
    assert await rejected(directory, token) == "token has expired"


async def test_a_token_from_another_issuer_is_refused(
    other_idp: OpenIdProvider, directory: StaticDirectory, no_token_in_logs: list[str]
) -> None:
    token = other_idp.human_token("alice@example.com")
    no_token_in_logs.append(token)
    assert await rejected(directory, token) == "token from an issuer this gateway does not trust"


async def test_an_impostor_provider_using_our_issuer_name_is_refused(
    idp: OpenIdProvider, directory: StaticDirectory
) -> None:
    # Same `iss` string, its own keys: only the real issuer's JWKS decides.
    impostor = start_provider(issuer=idp.issuer)
    try:
        token = impostor.human_token("alice@example.com")
    finally:
        impostor.stop()
    assert "does not publish" in await rejected(directory, token)


async def test_a_token_for_another_audience_is_refused(
    idp: OpenIdProvider, directory: StaticDirectory, no_token_in_logs: list[str]
) -> None:
    token = idp.client_credentials("etl-bot", resource="https://other.test")
    no_token_in_logs.append(token)
    assert "another audience" in await rejected(directory, token)


async def test_alg_none_is_refused(idp: OpenIdProvider, directory: StaticDirectory) -> None:
    kid = idp.jwks()["keys"][0]["kid"]
    header = b64(json.dumps({"alg": "none", "kid": kid, "typ": "JWT"}).encode())
    token = f"{header}.{b64(json.dumps(claims_for(idp)).encode())}."
    assert "'none'" in await rejected(directory, token)
    assert "RS256" in await rejected(directory, token)


async def test_hs256_signed_with_the_public_key_is_refused(
    idp: OpenIdProvider, directory: StaticDirectory
) -> None:
    jwk = idp.jwks()["keys"][0]
    public = jwt.PyJWK(jwk).key
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "kid": jwk["kid"], "typ": "JWT"}).encode())
    body = b64(json.dumps(claims_for(idp)).encode())
    signature = b64(hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest())
    assert "'HS256'" in await rejected(directory, f"{header}.{body}.{signature}")
    # Nor can a directory be told to trust HS256 (or none) in the first place.
    for algorithm in ("HS256", "none"):
        with pytest.raises(ValidationError, match="asymmetric algorithms only"):
            OidcIssuer(issuer=idp.issuer, audience=AUDIENCE, algorithms=[algorithm])


async def test_an_unknown_kid_flood_refetches_the_keys_at_most_once(
    idp: OpenIdProvider, directory: StaticDirectory
) -> None:
    # Warm: the real key is known.
    assert await directory.authenticate(idp.human_token("zoe@example.com")) is not None
    idp.reset_stats()
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens = [
        jwt.encode(claims_for(idp), attacker, algorithm="RS256", headers={"kid": str(uuid.uuid4())})
        for _ in range(200)
    ]
    reasons = await asyncio.gather(*(rejected(directory, t) for t in tokens))
    assert {r.split(" a key ")[0] for r in reasons} == {"token signed with"}
    # The default jwks_min_refresh is 30s: at most one refetch, however many made-up kids.
    assert idp.stats()["jwks"] <= 1
    assert idp.stats()["discovery"] == 0
    verifier = directory.verifier
    assert verifier is not None
    # Nothing of the made-up kids is remembered: only the keys the JWKS lists.
    assert verifier.keys(idp.issuer).known() == {k["kid"] for k in idp.jwks()["keys"]}


async def test_a_rotated_key_is_accepted_after_a_refetch(tmp_path: Path) -> None:
    provider = start_provider()  # its own: rotation changes its keys for good
    try:
        directory = load_directory(
            directory_file(provider, tmp_path / "d.yaml", human={"jwks_min_refresh": "1s"})
        )
        before = provider.human_token("zoe@example.com")
        assert await directory.authenticate(before) is not None
        await asyncio.sleep(1.1)
        new_kid, old_kid = provider.rotate()
        after = provider.human_token("zoe@example.com")
        assert jwt.get_unverified_header(after)["kid"] == new_kid != old_kid
        provider.reset_stats()
        found = await directory.authenticate(after)
        assert found is not None
        assert found.principal.id == "zoe@example.com"
        assert provider.stats()["jwks"] == 1
        # Keys the JWKS still lists go on verifying.
        assert await directory.authenticate(before) is not None
    finally:
        provider.stop()


async def test_an_unmapped_workload_is_refused(
    idp: OpenIdProvider, directory: StaticDirectory
) -> None:
    token = idp.client_credentials("unmapped-bot", resource=AGENTS_AUDIENCE)
    message = await rejected(directory, token)
    assert "'unmapped-bot'" in message
    assert "not mapped to an agent" in message


async def test_a_persons_token_cannot_be_an_agent(
    idp: OpenIdProvider, directory: StaticDirectory
) -> None:
    # A person whose IdP email is an agent's id.
    assert "cannot name an agent" in await rejected(directory, idp.human_token("mallory"))
    # A person's token for the agents' audience: their subject is no mapped workload.
    token = idp.human_token("zoe@example.com", resource=AGENTS_AUDIENCE)
    assert "not mapped to an agent" in await rejected(directory, token)


async def test_an_unreachable_issuer_is_unavailable_not_a_guess(tmp_path: Path) -> None:
    document = yaml.safe_load((DATA / "directory.yaml").read_text())
    issuer = f"http://127.0.0.1:{free_port()}"
    document["oidc"] = {"issuers": [{"issuer": issuer, "audience": AUDIENCE}]}
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(document))
    directory = load_directory(path)
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"iss": issuer, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, attacker, algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(IdentityProviderUnavailable):
        await directory.authenticate(token)


# --- the directory file ---------------------------------------------------------------------


def test_directory_mistakes_are_precise(idp: OpenIdProvider, tmp_path: Path) -> None:
    path = directory_file(idp, tmp_path / "d.yaml")
    document = yaml.safe_load(path.read_text())

    def problem(change: Any) -> str:
        broken = json.loads(json.dumps(document))
        change(broken)
        path.write_text(yaml.safe_dump(broken))
        with pytest.raises(PolicyError) as failed:
            load_directory(path)
        return str(failed.value)

    def human_workload(d: dict[str, Any]) -> None:
        d["principals"][0]["workload"] = {"issuer": idp.issuer, "subject": "x"}

    def workload_of_human_issuer(d: dict[str, Any]) -> None:
        d["oidc"]["issuers"][1]["kind"] = "human"

    def unknown_group(d: dict[str, Any]) -> None:
        d["oidc"]["groups"]["nope"] = ["x"]

    def plain_http(d: dict[str, Any]) -> None:
        d["oidc"]["issuers"][0]["issuer"] = "http://idp.example.com"

    def twice(d: dict[str, Any]) -> None:
        d["oidc"]["issuers"][1]["audience"] = AUDIENCE
        d["oidc"]["issuers"][1]["kind"] = "human"

    assert "only agents have a workload identity" in problem(human_workload)
    assert "is not an oidc issuer of kind workload" in problem(workload_of_human_issuer)
    assert "unknown group 'nope'" in problem(unknown_group)
    assert "must be an https:// URL" in problem(plain_http)
    assert "listed twice" in problem(twice)
