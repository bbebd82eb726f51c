"""Signing people in to the approval page: OIDC authorization code flow with PKCE (S256).

The gateway is a client of the configured identity provider. It sends the browser there with a
random `state`, `nonce` and PKCE challenge, and on the way back exchanges the code (with the
verifier) for tokens at the provider's token endpoint. Who signed in is then decided exactly as
for an API call: the access token goes through the directory's `authenticate`, so the page's
person, groups and refusals are the API's.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from policies.unavailable import IdentityProviderUnavailable
from workers.gateway.web.session import PendingLogin
from workers.settings import Settings

DISCOVERY_TTL = 3600.0
MAX_ANSWER_BYTES = 256 * 1024


class SignInNotConfigured(Exception):
    """The page cannot sign anyone in: the settings name no identity provider or client."""


class SignInFailed(Exception):
    """The identity provider's answer does not complete a sign-in; the message says why."""


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE verifier (RFC 7636)."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


class OidcSignIn:
    """The gateway as an OIDC client of one identity provider."""

    def __init__(self, settings: Settings, *, timeout: float = 10.0) -> None:
        self.issuer = settings.web_oidc_issuer
        self.client_id = settings.web_oidc_client_id
        secret = settings.web_oidc_client_secret
        self.client_secret = secret.get_secret_value() if secret is not None else None
        self.scope = settings.web_oidc_scope
        self.resource = settings.web_oidc_resource
        self.timeout = timeout
        self._discovery: dict[str, Any] | None = None
        self._fetched = 0.0

    @property
    def configured(self) -> bool:
        """Whether an issuer and a client id are set."""
        return bool(self.issuer and self.client_id)

    def _require(self) -> tuple[str, str]:
        if not self.issuer or not self.client_id:
            raise SignInNotConfigured(
                "sign-in to the approval page is not configured: set SIGNOFF_WEB_OIDC_ISSUER and "
                "SIGNOFF_WEB_OIDC_CLIENT_ID (and the client's secret, if it has one)"
            )
        return self.issuer, self.client_id

    async def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if len(response.content) > MAX_ANSWER_BYTES:
            raise IdentityProviderUnavailable(f"{what}: answer too large")
        try:
            data = response.json()
        except ValueError:
            raise IdentityProviderUnavailable(f"{what}: not JSON") from None
        if not isinstance(data, dict):
            raise IdentityProviderUnavailable(f"{what}: not a JSON object")
        return data

    async def discovery(self) -> dict[str, Any]:
        """The provider's discovery document (cached an hour); its issuer must be ours."""
        issuer, _ = self._require()
        if self._discovery is not None and time.monotonic() - self._fetched < DISCOVERY_TTL:
            return self._discovery
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as http:
                response = await http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as err:
            raise IdentityProviderUnavailable(f"{url}: {type(err).__name__}") from err
        if response.status_code != 200:
            raise IdentityProviderUnavailable(f"{url}: HTTP {response.status_code}")
        document = await self._json(response, url)
        if document.get("issuer") != issuer:
            raise IdentityProviderUnavailable(f"{url}: discovery names another issuer")
        for name in ("authorization_endpoint", "token_endpoint"):
            value = document.get(name)
            if not isinstance(value, str) or urlsplit(value).scheme not in ("https", "http"):
                raise IdentityProviderUnavailable(f"{url}: discovery has no {name}")
        self._discovery = document
        self._fetched = time.monotonic()
        return document

    async def start(self, redirect_uri: str, next_path: str) -> tuple[str, PendingLogin]:
        """Where to send the browser, and what its return must match."""
        _, client_id = self._require()
        document = await self.discovery()
        login = PendingLogin(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(64),
            next_path=next_path,
            started=time.monotonic(),
        )
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": self.scope,
            "state": login.state,
            "nonce": login.nonce,
            "code_challenge": pkce_challenge(login.verifier),
            "code_challenge_method": "S256",
        }
        if self.resource:
            params["resource"] = self.resource
        endpoint = str(document["authorization_endpoint"])
        separator = "&" if "?" in endpoint else "?"
        return endpoint + separator + urlencode(params), login

    async def finish(self, code: str, redirect_uri: str, login: PendingLogin) -> str:
        """Exchange the code (with the PKCE verifier) for tokens; returns the access token."""
        _, client_id = self._require()
        document = await self.discovery()
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": login.verifier,
            "client_id": client_id,
        }
        if self.resource:
            data["resource"] = self.resource
        auth: httpx.Auth | None = None
        if self.client_secret:
            auth = httpx.BasicAuth(client_id, self.client_secret)
        endpoint = str(document["token_endpoint"])
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as http:
                response = await http.post(
                    endpoint,
                    data=data,
                    auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                    headers={"Accept": "application/json"},
                )
        except httpx.HTTPError as err:
            raise IdentityProviderUnavailable(f"{endpoint}: {type(err).__name__}") from err
        answer = await self._json(response, endpoint)
        if response.status_code != 200:
            error = str(answer.get("error", f"HTTP {response.status_code}"))[:100]
            raise SignInFailed(f"the identity provider refused the sign-in code ({error})")
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise SignInFailed("the identity provider sent no access token")
        return token
