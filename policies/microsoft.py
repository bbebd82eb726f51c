"""App-only tokens from the Microsoft identity platform (msal's confidential client).

Shared by whatever calls a Microsoft API as our app registration: Graph for the Entra
directory, the Bot Framework connector for the Teams channel.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from urllib.parse import urlsplit

import msal
from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS

LOGIN_AUTHORITY = "https://login.microsoftonline.com"
# msal error codes that mean the app registration or its secret is wrong: retrying won't help.
PERMANENT_TOKEN_ERRORS = frozenset(
    {"invalid_client", "unauthorized_client", "invalid_scope", "invalid_request"}
)


def known_to_msal(authority: str) -> bool:
    """Whether msal knows the authority's host as a Microsoft cloud (public or sovereign)."""
    return (urlsplit(authority).hostname or "").lower() in WELL_KNOWN_AUTHORITY_HOSTS


class TokenError(Exception):
    """msal could not get a token; `permanent` when the credentials themselves are wrong."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class AppTokens:
    """App-only tokens from msal's confidential client, cached and refreshed by msal itself."""

    def __init__(
        self,
        client_id: str,
        client_credential: str | dict[str, Any],
        *,
        authority: str,
        scopes: list[str],
        http_client: Any = None,
    ) -> None:
        self.client_id = client_id
        self.authority = authority
        self.scopes = list(scopes)
        self._credential = client_credential
        self._http_client = http_client
        self._app: msal.ConfidentialClientApplication | None = None
        # One token request at a time: concurrent posts on a cold cache would each ask for one.
        self._lock = threading.Lock()

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            extra: dict[str, Any] = {}
            if self._http_client is not None:
                extra["http_client"] = self._http_client
            if not known_to_msal(self.authority):
                # msal would ask the public cloud's login.microsoftonline.com whether it knows
                # this host, which a private or air-gapped cloud's is not; the operator named
                # it, so it is trusted as configured (msal's "known authorities" pattern).
                extra["instance_discovery"] = False
            # Created lazily: construction already fetches the authority's OpenID configuration.
            self._app = msal.ConfidentialClientApplication(
                self.client_id,
                client_credential=self._credential,
                authority=self.authority,
                **extra,
            )
        return self._app

    def acquire(self) -> str:
        """A valid access token, from msal's cache while it lasts (blocking)."""
        with self._lock:
            try:
                result = self._application().acquire_token_for_client(scopes=self.scopes)
            except ValueError as err:
                # msal's ValueError: the authority answered that the tenant does not exist.
                raise TokenError(f"{self.authority}: {err}", permanent=True) from err
            except Exception as err:
                # Whatever the HTTP client raised (DNS, TLS, timeout): worth trying again.
                raise TokenError(f"{self.authority}: {err!r}", permanent=False) from err
        if "access_token" in result:
            return str(result["access_token"])
        error = str(result.get("error", "unknown_error"))
        description = str(result.get("error_description", "")).splitlines()[0:1]
        raise TokenError(
            f"token request to {self.authority} failed: {error} {''.join(description)}".strip(),
            permanent=error in PERMANENT_TOKEN_ERRORS,
        )

    async def token(self) -> str:
        """A valid access token; msal is synchronous, so it runs in a thread."""
        return await asyncio.to_thread(self.acquire)
