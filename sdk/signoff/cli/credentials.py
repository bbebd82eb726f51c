"""The signed-in person's tokens from `signoff login`: a 0600 file, refreshed when they expire.

The file is `$XDG_CONFIG_HOME/signoff/credentials.json` (`~/.config/signoff/...` by default);
it holds the issuer's token endpoint, the access token, the refresh token and when the access
token expires. Nothing here prints a token.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

REFRESH_MARGIN = 60.0  # refresh this many seconds before the access token expires
TIMEOUT = 15.0


class LoginError(Exception):
    """Signing in, refreshing or reading the stored tokens failed; the message says why."""


class StoredLogin(BaseModel):
    """What `signoff login` keeps between commands."""

    issuer: str
    client_id: str
    token_endpoint: str
    revocation_endpoint: str | None = None
    access_token: str
    refresh_token: str | None = None
    expires_at: float
    resource: str | None = None

    def __repr__(self) -> str:
        return f"StoredLogin(issuer={self.issuer!r}, client_id={self.client_id!r})"  # no tokens


def credentials_path() -> Path:
    """Where the tokens are kept: under the user's config directory."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "signoff" / "credentials.json"


def save(login: StoredLogin) -> Path:
    """Write the tokens to a file only the user can read (0600, in a 0700 directory)."""
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)
    # Created 0600 from the start: never a moment where others could read it.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(login.model_dump_json(indent=2))
    os.replace(temporary, path)
    return path


def load() -> StoredLogin | None:
    """The stored login, or None when nobody signed in."""
    path = credentials_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise LoginError(f"cannot read {path}: {err.strerror or err}") from None
    if path.stat().st_mode & 0o077:
        raise LoginError(f"{path} is readable by others: run `signoff login` again")
    try:
        return StoredLogin.model_validate_json(text)
    except ValueError:
        raise LoginError(f"{path} is damaged: run `signoff login` again") from None


def forget() -> bool:
    """Delete the stored tokens; False when there were none."""
    path = credentials_path()
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def from_token_response(
    data: dict[str, Any], *, previous: StoredLogin | None = None, **fields: Any
) -> StoredLogin:
    """A StoredLogin from a token endpoint's answer (a refresh may omit the refresh token)."""
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise LoginError("the identity provider answered without an access token")
    expires_in = data.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, int | float) else 300.0
    refresh = data.get("refresh_token")
    base = previous.model_dump() if previous is not None else {}
    base.update(fields)
    base.update(
        access_token=access,
        refresh_token=refresh if isinstance(refresh, str) else base.get("refresh_token"),
        expires_at=time.time() + lifetime,
    )
    return StoredLogin.model_validate(base)


def refresh(login: StoredLogin) -> StoredLogin:
    """New tokens from the refresh token, stored; LoginError when the session is over."""
    if not login.refresh_token:
        raise LoginError("your sign-in has expired: run `signoff login` again")
    data = {
        "grant_type": "refresh_token",
        "refresh_token": login.refresh_token,
        "client_id": login.client_id,
    }
    if login.resource:
        data["resource"] = login.resource
    try:
        response = httpx.post(login.token_endpoint, data=data, timeout=TIMEOUT)
    except httpx.HTTPError as err:
        raise LoginError(f"cannot reach {login.token_endpoint}: {type(err).__name__}") from None
    if response.status_code != 200:
        raise LoginError("your sign-in has expired: run `signoff login` again")
    renewed = from_token_response(response.json(), previous=login)
    save(renewed)
    return renewed


def current_token() -> str | None:
    """The signed-in person's access token, refreshed when about to expire; None if none."""
    login = load()
    if login is None:
        return None
    if login.expires_at - REFRESH_MARGIN <= time.time():
        login = refresh(login)
    return login.access_token
