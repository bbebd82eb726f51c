"""`signoff login` and `signoff logout`: sign in from the terminal with your company's SSO.

The OAuth 2.0 device authorization grant (RFC 8628): the identity provider shows a code to
confirm in a browser, the CLI polls its token endpoint until you have, and keeps the tokens in
the OS keyring or a 0600 file (`signoff.cli.credentials`) that later commands use when no
`--token` is given. With `--pkce` (for an IdP that wants PKCE on the device grant too) the
start carries an S256 `code_challenge` and every poll its `code_verifier` (RFC 7636), once
discovery lists S256 in `code_challenge_methods_supported`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import time
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer
from rich.console import Console

from signoff import neutralise
from signoff.cli.common import fail
from signoff.cli.credentials import (
    TIMEOUT,
    LoginError,
    StoredLogin,
    forget,
    from_token_response,
    load,
    save,
)

console = Console()
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_SCOPE = "openid email groups offline_access"


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE code verifier and its S256 code challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)  # 86 unreserved characters: within 43..128
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _discover(issuer: str) -> dict[str, Any]:
    """The issuer's OpenID configuration, checked to be the issuer's own."""
    parts = urlsplit(issuer)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise fail(f"--issuer {issuer!r}: use an https:// URL")
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = httpx.get(url, timeout=TIMEOUT)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as err:
        raise fail(f"cannot read {url}: {err}") from None
    if data.get("issuer") != issuer:
        raise fail(f"{url} describes another issuer ({str(data.get('issuer'))[:200]!r})")
    if not isinstance(data.get("device_authorization_endpoint"), str):
        raise fail(f"{issuer} does not offer the device authorization grant")
    return data


def _post(url: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
    try:
        response = httpx.post(url, data=data, timeout=TIMEOUT)
        body = response.json()
    except (httpx.HTTPError, ValueError) as err:
        raise fail(f"{url}: {err}") from None
    return response.status_code, body if isinstance(body, dict) else {}


def login(
    issuer: Annotated[
        str, typer.Option(envvar="SIGNOFF_OIDC_ISSUER", show_envvar=True, help="Your IdP's issuer")
    ],
    client_id: Annotated[
        str,
        typer.Option(
            envvar="SIGNOFF_OIDC_CLIENT_ID",
            show_envvar=True,
            help="The public client registered for the signoff CLI",
        ),
    ],
    scope: Annotated[str, typer.Option(help="Scopes to ask for")] = DEFAULT_SCOPE,
    resource: Annotated[
        str | None,
        typer.Option(
            envvar="SIGNOFF_OIDC_RESOURCE",
            show_envvar=True,
            help="Resource indicator (RFC 8707) for the gateway's audience, if your IdP wants one",
        ),
    ] = None,
    pkce: Annotated[
        bool,
        typer.Option(
            "--pkce",
            envvar="SIGNOFF_OIDC_PKCE",
            show_envvar=True,
            help="Send a PKCE code challenge (S256), for an IdP that wants one on the device grant",
        ),
    ] = False,
) -> None:
    """Sign in with your identity provider (device flow); later commands use the token."""
    config = _discover(issuer)
    request = {"client_id": client_id, "scope": scope}
    if resource:
        request["resource"] = resource
    verifier = None
    if pkce:
        methods = config.get("code_challenge_methods_supported")
        if not isinstance(methods, list) or "S256" not in methods:
            raise fail(
                f"--pkce: {issuer} does not list S256 in code_challenge_methods_supported; "
                "sign in without --pkce"
            )
        verifier, challenge = pkce_pair()
        request.update(code_challenge=challenge, code_challenge_method="S256")
    status, started = _post(config["device_authorization_endpoint"], request)
    if status != 200 or "device_code" not in started:
        raise fail(f"the identity provider refused to start: {started.get('error', status)}")
    where = started.get("verification_uri_complete") or started.get("verification_uri")
    console.print(
        f"Open [bold]{neutralise.rich(str(where))}[/bold] and confirm the code "
        f"[bold]{neutralise.rich(str(started.get('user_code')))}[/bold]",
        highlight=False,
        soft_wrap=True,  # a URL cut in two cannot be opened
    )
    interval = float(started.get("interval") or 5)
    deadline = time.monotonic() + float(started.get("expires_in") or 600)
    poll = {"grant_type": DEVICE_GRANT, "device_code": started["device_code"]}
    poll["client_id"] = client_id
    if resource:
        poll["resource"] = resource
    if verifier is not None:
        poll["code_verifier"] = verifier
    while time.monotonic() < deadline:
        time.sleep(interval)
        status, answer = _post(config["token_endpoint"], poll)
        error = answer.get("error")
        if status == 200:
            break
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5  # RFC 8628 section 3.5
            continue
        raise fail(f"sign-in failed: {error or status}")
    else:
        raise fail("sign-in timed out: the code was not confirmed in time")
    try:
        stored = from_token_response(
            answer,
            issuer=issuer,
            client_id=client_id,
            token_endpoint=config["token_endpoint"],
            revocation_endpoint=config.get("revocation_endpoint"),
            resource=resource,
        )
    except LoginError as err:
        raise fail(str(err)) from None
    where = save(stored)
    console.print(
        f"signed in to {neutralise.rich(issuer)} (tokens in {neutralise.rich(where)})",
        highlight=False,
        soft_wrap=True,
    )


def _revoke(stored: StoredLogin) -> None:
    """Best effort: tell the IdP the refresh token is no longer wanted."""
    if not stored.revocation_endpoint or not stored.refresh_token:
        return
    # The local copy goes either way; an IdP that cannot be told is no reason to keep it.
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(
            stored.revocation_endpoint,
            data={
                "token": stored.refresh_token,
                "token_type_hint": "refresh_token",
                "client_id": stored.client_id,
            },
            timeout=TIMEOUT,
        )


def logout() -> None:
    """Forget the tokens `signoff login` stored (and revoke the refresh token)."""
    try:
        stored = load()
    except LoginError:
        stored = None
    if stored is not None:
        _revoke(stored)
    console.print("signed out" if forget() else "nobody was signed in")
