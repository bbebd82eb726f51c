"""OIDC bearer tokens: verify a JWT from a configured issuer and say whose it is.

For each issuer in the directory's `oidc:` section, discovery
(`/.well-known/openid-configuration`, whose `issuer` must be the configured one) gives the
JWKS. Keys are cached; a token signed with an unknown `kid` refetches them, at most once per
`jwks_min_refresh` per issuer, so a flood of made-up key ids neither hammers the IdP nor grows
memory. The signature algorithm must be on the issuer's allow-list (asymmetric only: never
`none`, never HS*), and `iss`, `aud`, `exp` and `nbf` (with `leeway`) are checked by pyjwt.

Every refusal is a `TokenRejected` whose message says why and never contains the token; an
IdP that cannot be reached is `IdentityProviderUnavailable` (try again, nothing is guessed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import jwt
from pydantic import Field, field_validator

from policies.unavailable import IdentityProviderUnavailable
from signoff.models import Contract, Duration

log = logging.getLogger("signoff.oidc")

# Asymmetric algorithms only: with an HS* algorithm the "secret" would be the public key.
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_ALGORITHMS = ("RS256", "ES256", "PS256")
MAX_DOCUMENT_BYTES = 256 * 1024  # discovery and JWKS answers; real ones are a few KB
MAX_KEYS = 50
MAX_TOKEN_CHARS = 16 * 1024
JWKS_MAX_AGE = 3600.0  # refetch the keys at least hourly, so retired keys go away


class TokenRejected(Exception):
    """The token is not acceptable; the message says why (never what the token was)."""


class Workload(Contract):
    """A workload identity that authenticates as an agent: a token's issuer and subject."""

    issuer: str = Field(min_length=1)
    subject: str = Field(min_length=1, description="the token's `sub`, e.g. a client id")


class OidcIssuer(Contract):
    """One trusted token issuer: whose tokens, for which audience, and how to read them."""

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    kind: Literal["human", "workload"] = Field(
        default="human",
        description="human: people, named by principal_claim; workload: agents, by `sub`",
    )
    principal_claim: str = Field(default="email", min_length=1)
    groups_claim: str = Field(default="groups", min_length=1)
    algorithms: list[str] = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS), min_length=1)
    leeway: Duration = Field(default=timedelta(seconds=60))
    jwks_min_refresh: Duration = Field(
        default=timedelta(seconds=30),
        description="at most one key refetch per this long, however many unknown key ids",
    )

    @field_validator("issuer")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.netloc:
            return value
        if parts.scheme == "http" and _loopback(parts.hostname or ""):
            return value  # a provider on this machine (development, tests)
        raise ValueError("must be an https:// URL (http:// only for localhost)")

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in ASYMMETRIC:
                raise ValueError(
                    f"{name!r} is not allowed; use asymmetric algorithms only "
                    f"({', '.join(sorted(ASYMMETRIC))})"
                )
        return value

    @field_validator("leeway")
    @classmethod
    def _small_leeway(cls, value: timedelta) -> timedelta:
        if not timedelta(0) <= value <= timedelta(minutes=5):
            raise ValueError("must be between 0s and 5m")
        return value


class OidcConfig(Contract):
    """The directory's `oidc:` section: trusted issuers and how IdP groups map to ours."""

    issuers: list[OidcIssuer] = Field(min_length=1)
    groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="policy group -> IdP group names; unmapped groups match by their own name",
    )


class VerifiedToken(Contract):
    """A token whose signature and claims checked out, and the issuer entry that vouched."""

    issuer: OidcIssuer
    claims: dict[str, Any]

    @property
    def subject(self) -> str:
        """The token's `sub`."""
        return str(self.claims["sub"])


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def policy_groups(
    token_groups: object, directory_groups: Mapping[str, object], mapping: Mapping[str, list[str]]
) -> list[str]:
    """The policy groups an IdP group list grants; unknown IdP groups are ignored."""
    if not isinstance(token_groups, list):
        return []
    names = {g for g in token_groups if isinstance(g, str)}
    granted = []
    for group in directory_groups:
        if group in mapping:
            if names.intersection(mapping[group]):
                granted.append(group)
        elif group in names:
            granted.append(group)
    return granted


class IssuerKeys:
    """One issuer's discovery document and signing keys, refetched on rotation (rate-limited)."""

    def __init__(
        self,
        config: OidcIssuer,
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._timeout = timeout
        self._transport = transport
        self._jwks_uri: str | None = None
        self._keys: dict[str, tuple[jwt.PyJWK, str | None]] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def _get_json(self, http: httpx.AsyncClient, url: str) -> dict[str, Any]:
        try:
            async with http.stream("GET", url, headers={"Accept": "application/json"}) as answer:
                if answer.status_code != 200:
                    raise IdentityProviderUnavailable(f"{url}: HTTP {answer.status_code}")
                body = bytearray()
                async for chunk in answer.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise IdentityProviderUnavailable(f"{url}: answer too large")
        except httpx.HTTPError as err:
            raise IdentityProviderUnavailable(f"{url}: {type(err).__name__}") from err
        try:
            data = json.loads(bytes(body))
        except ValueError as err:
            raise IdentityProviderUnavailable(f"{url}: not JSON") from err
        if not isinstance(data, dict):
            raise IdentityProviderUnavailable(f"{url}: not a JSON object")
        return data

    async def _fetch(self) -> None:
        """Discovery (once) and the JWKS; replaces the cached keys."""
        self.fetches += 1
        self._fetched_at = self._clock()
        issuer = self.config.issuer
        async with httpx.AsyncClient(
            timeout=self._timeout, follow_redirects=False, transport=self._transport
        ) as http:
            if self._jwks_uri is None:
                discovery = await self._get_json(
                    http, issuer.rstrip("/") + "/.well-known/openid-configuration"
                )
                if discovery.get("issuer") != issuer:
                    # A discovery document for someone else: its keys vouch for nothing here.
                    raise IdentityProviderUnavailable(
                        f"{issuer}: discovery names issuer {str(discovery.get('issuer'))[:200]!r}"
                    )
                uri = discovery.get("jwks_uri")
                if not isinstance(uri, str) or urlsplit(uri).scheme not in ("https", "http"):
                    raise IdentityProviderUnavailable(f"{issuer}: discovery has no jwks_uri")
                if urlsplit(uri).scheme == "http" and not _loopback(urlsplit(uri).hostname or ""):
                    raise IdentityProviderUnavailable(f"{issuer}: jwks_uri is not https")
                self._jwks_uri = uri
            document = await self._get_json(http, self._jwks_uri)
        raw_keys = document.get("keys")
        if not isinstance(raw_keys, list):
            raise IdentityProviderUnavailable(f"{issuer}: the JWKS has no keys")
        keys: dict[str, tuple[jwt.PyJWK, str | None]] = {}
        for raw in raw_keys[:MAX_KEYS]:
            if not isinstance(raw, dict) or not isinstance(raw.get("kid"), str):
                continue
            if raw.get("use", "sig") != "sig":
                continue
            alg = raw.get("alg")
            try:
                keys[raw["kid"]] = (
                    jwt.PyJWK(raw),
                    alg if alg is None or isinstance(alg, str) else "?",
                )
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue  # a key type pyjwt cannot use; another key may still be fine
        self._keys = keys

    def known(self) -> set[str]:
        """The key ids cached now."""
        return set(self._keys)

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= JWKS_MAX_AGE

    def _may_refetch(self) -> bool:
        if self._fetched_at is None:
            return True
        return self._clock() - self._fetched_at >= self.config.jwks_min_refresh.total_seconds()

    async def key(self, kid: str) -> tuple[jwt.PyJWK, str | None]:
        """The issuer's key with this id and the algorithm its JWK names, if any.

        An unknown id refetches the JWKS, at most once per `jwks_min_refresh`.
        """
        if kid in self._keys and not self._stale():
            return self._keys[kid]
        async with self._lock:
            # Another request may have refetched while this one waited.
            if kid in self._keys and not self._stale():
                return self._keys[kid]
            if self._stale() or self._may_refetch():
                try:
                    await self._fetch()
                except IdentityProviderUnavailable as err:
                    if kid not in self._keys:
                        raise
                    # Keys past their age still verify while the IdP is down; rotation waits.
                    log.warning("keeping cached keys of %s: %s", self.config.issuer, err)
        found = self._keys.get(kid)
        if found is None:
            raise TokenRejected(f"token signed with a key {self.config.issuer} does not publish")
        return found


class OidcVerifier:
    """Verifies JWTs against the configured issuers; one key cache per issuer."""

    def __init__(
        self,
        config: OidcConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self._keys: dict[str, IssuerKeys] = {}
        for entry in config.issuers:
            if entry.issuer not in self._keys:
                self._keys[entry.issuer] = IssuerKeys(
                    entry, clock=clock, timeout=timeout, transport=transport
                )

    def keys(self, issuer: str) -> IssuerKeys:
        """The key cache of one configured issuer."""
        return self._keys[issuer]

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        """Three dot-separated parts starting with a JSON header: worth verifying as a JWT."""
        return token.count(".") == 2 and token.startswith("eyJ") and len(token) <= MAX_TOKEN_CHARS

    def _entry(self, claims: Mapping[str, Any]) -> OidcIssuer:
        """The configured issuer entry an (unverified) token claims to come from."""
        issuer = claims.get("iss")
        candidates = [e for e in self.config.issuers if e.issuer == issuer]
        if not candidates:
            raise TokenRejected("token from an issuer this gateway does not trust")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences
        for entry in candidates:
            if isinstance(audiences, list) and entry.audience in audiences:
                return entry
        # Verification then fails on the audience, with that message.
        return candidates[0]

    async def verify(self, token: str) -> VerifiedToken:
        """The verified claims of a JWT from a configured issuer, or TokenRejected saying why."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenRejected("malformed token") from None
        # The unverified claims only choose which issuer's keys to check the signature with.
        entry = self._entry(unverified)
        algorithm = header.get("alg")
        if algorithm not in entry.algorithms:
            raise TokenRejected(
                f"token signed with algorithm {str(algorithm)[:20]!r}; "
                f"{entry.issuer} is trusted for {', '.join(entry.algorithms)} only"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("token has no key id (kid)")
        key, key_algorithm = await self._keys[entry.issuer].key(kid)
        if key_algorithm is not None and key_algorithm != algorithm:
            raise TokenRejected(f"key {kid[:80]!r} is not for {algorithm}")
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=entry.audience,
                issuer=entry.issuer,
                leeway=entry.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected(
                f"token is for another audience (expected {entry.audience})"
            ) from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("token from an issuer this gateway does not trust") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("token signature does not verify") from None
        except jwt.MissingRequiredClaimError as err:
            raise TokenRejected(f"token lacks the {err.claim!r} claim") from None
        except jwt.PyJWTError as err:
            raise TokenRejected(f"token is invalid ({type(err).__name__})") from None
        return VerifiedToken(issuer=entry, claims=claims)
