"""Microsoft identity for the Teams channel: our bot's tokens and inbound Bot Framework JWTs.

Outbound, the bot's app-only tokens come from msal (`policies.microsoft.AppTokens`). Inbound,
every request to `/teams/messages` carries a JWT the Bot Framework signed; it is checked with
PyJWT against the keys its OpenID metadata publishes, including the per-key channel
endorsements.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from policies.microsoft import LOGIN_AUTHORITY, AppTokens

BOT_FRAMEWORK_SCOPE = "https://api.botframework.com/.default"
BOT_FRAMEWORK_ISSUER = "https://api.botframework.com"
# Multi-tenant bots get their token from the botframework.com tenant; single-tenant from theirs.
BOT_FRAMEWORK_TENANT = "botframework.com"
LEEWAY = timedelta(minutes=5)
TEAMS_CHANNEL = "msteams"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class TeamsAuthError(Exception):
    """An inbound request is not authentically from the Bot Framework for our app."""


def allowed_hosts(entries: Iterable[str]) -> frozenset[str]:
    """Normalise allow-list entries, written as bare hosts or as URLs, to lower-case hosts."""
    hosts = set()
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        host = urlsplit(entry).hostname if "://" in entry else entry.split("/")[0]
        if host:
            hosts.add(host.lower())
    return frozenset(hosts)


def service_url_allowed(url: str, allowed: Iterable[str]) -> bool:
    """Whether our bot token may be sent to this serviceUrl: an allow-listed host over TLS."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return False
    if not host or parts.username is not None or parts.password is not None or not port_ok:
        return False
    if host not in allowed_hosts(allowed):
        return False
    # Cleartext only to this machine (local development and tests): a token on the wire is
    # as good as the app secret for its lifetime.
    return parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK)


def bot_framework_tokens(
    app_id: str,
    credential: str | dict[str, Any],
    *,
    tenant_id: str | None = None,
    authority_host: str = LOGIN_AUTHORITY,
    scope: str = BOT_FRAMEWORK_SCOPE,
    http_client: Any = None,
) -> AppTokens:
    """Tokens for calling the Bot Framework connector as our bot, from its cloud's authority."""
    return AppTokens(
        app_id,
        credential,
        authority=f"{authority_host.rstrip('/')}/{tenant_id or BOT_FRAMEWORK_TENANT}",
        scopes=[scope],
        http_client=http_client,
    )


class EndorsedJWKClient(jwt.PyJWKClient):
    """A PyJWKClient that also remembers each key's `endorsements` (the channels it signs for)."""

    def __init__(self, uri: str, **kwargs: Any) -> None:
        super().__init__(uri, **kwargs)
        self.endorsements: dict[str, frozenset[str]] = {}

    def fetch_data(self) -> Any:
        """Fetch the JWKS and record every key's endorsements by key id."""
        data = super().fetch_data()
        endorsements = {}
        for key in data.get("keys", []) if isinstance(data, dict) else []:
            if isinstance(key, dict) and isinstance(key.get("kid"), str):
                listed = key.get("endorsements")
                names = listed if isinstance(listed, list) else []
                endorsements[key["kid"]] = frozenset(str(n) for n in names)
        self.endorsements = endorsements
        return data


class BotFrameworkValidator:
    """Checks the Bot Framework's JWT on an inbound request, as its SDKs do."""

    def __init__(
        self,
        app_id: str,
        metadata_url: str,
        *,
        metadata_ttl: timedelta = timedelta(hours=24),
        timeout: float = 10.0,
    ) -> None:
        self.app_id = app_id
        self.metadata_url = metadata_url
        self.metadata_ttl = metadata_ttl
        self.timeout = timeout
        self._jwks: EndorsedJWKClient | None = None
        self._jwks_uri: str | None = None
        # The issuer the metadata names: a sovereign cloud's Bot Framework signs as its own.
        self._issuer = BOT_FRAMEWORK_ISSUER
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _client(self) -> EndorsedJWKClient:
        async with self._lock:
            stale = time.monotonic() - self._fetched_at > self.metadata_ttl.total_seconds()
            if self._jwks is None or stale:
                async with httpx.AsyncClient(timeout=self.timeout) as http:
                    response = await http.get(self.metadata_url)
                    response.raise_for_status()
                    metadata = response.json()
                jwks_uri = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
                if not isinstance(jwks_uri, str):
                    raise TeamsAuthError("the OpenID metadata names no jwks_uri")
                issuer = metadata.get("issuer", BOT_FRAMEWORK_ISSUER)
                if not isinstance(issuer, str) or not issuer.startswith("https://"):
                    raise TeamsAuthError("the OpenID metadata names no https issuer")
                self._issuer = issuer
                if self._jwks is None or jwks_uri != self._jwks_uri:
                    # Refetch on unknown kid only once a minute, so junk tokens cannot make us
                    # hammer the key endpoint.
                    self._jwks = EndorsedJWKClient(
                        jwks_uri, lifespan=3600, cooldown_duration=60, timeout=self.timeout
                    )
                    self._jwks_uri = jwks_uri
                self._fetched_at = time.monotonic()
            return self._jwks

    async def validate(
        self, authorization: str | None, channel_id: str = TEAMS_CHANNEL
    ) -> dict[str, Any]:
        """The verified claims of the request's bearer token; TeamsAuthError when not valid."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TeamsAuthError("missing bearer token")
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as err:
            raise TeamsAuthError(f"malformed token: {err}") from None
        if header.get("alg") != "RS256":
            raise TeamsAuthError(f"algorithm {header.get('alg')!r} is not RS256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TeamsAuthError("token has no key id")
        try:
            client = await self._client()
        except (httpx.HTTPError, ValueError) as err:
            raise TeamsAuthError(f"cannot read the OpenID metadata: {err}") from None
        try:
            key = await asyncio.to_thread(client.get_signing_key, kid)
        except jwt.PyJWKClientError as err:
            raise TeamsAuthError(f"unknown signing key: {err}") from None
        if channel_id not in client.endorsements.get(kid, frozenset()):
            raise TeamsAuthError(f"signing key {kid} is not endorsed for channel {channel_id!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self.app_id,
                issuer=self._issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as err:
            raise TeamsAuthError(f"invalid token: {err}") from None
        return claims
