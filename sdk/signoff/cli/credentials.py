"""The signed-in person's tokens from `signoff login`: the OS keyring or a 0600 file, refreshed.

With the `keyring` package installed (`pip install 'signoff[keyring]'`) and a keyring the OS
offers (macOS Keychain, Windows Credential Locker, the Secret Service on Linux), the tokens go
there, under the service `signoff`. Without one, or when it refuses them, or with
`SIGNOFF_CREDENTIALS_STORE=file`, they go to `$XDG_CONFIG_HOME/signoff/credentials.json`
(`~/.config/signoff/...` by default), readable by the user alone. Either holds the issuer's token
endpoint, the access token, the refresh token and when the access token expires; `forget`
clears both. Nothing here prints a token.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

try:  # optional: the SDK works without it, with the file
    import keyring
    from keyring.errors import KeyringError
except ImportError:  # pragma: no cover - the test environment has keyring
    keyring = None  # type: ignore[assignment]

    class KeyringError(Exception):  # type: ignore[no-redef]
        """Stands in for keyring's error when keyring is not installed."""


REFRESH_MARGIN = 60.0  # refresh this many seconds before the access token expires
TIMEOUT = 15.0
KEYRING_SERVICE = "signoff"
KEYRING_ENTRY = "login"
STORE_ENV = "SIGNOFF_CREDENTIALS_STORE"  # "file" keeps tokens out of the keyring


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


def _keyring_wanted() -> bool:
    return keyring is not None and os.environ.get(STORE_ENV, "").strip().lower() != "file"


def _keyring_name() -> str:
    backend = keyring.get_keyring() if keyring is not None else None
    return getattr(backend, "name", None) or type(backend).__name__


def save(login: StoredLogin) -> str:
    """Keep the tokens: in the OS keyring when there is one, else in the 0600 file; say where."""
    if _keyring_wanted():
        try:
            keyring.set_password(KEYRING_SERVICE, KEYRING_ENTRY, login.model_dump_json())
        except KeyringError:
            pass  # no keyring (or it refused, e.g. too long for it): the file then
        else:
            # One copy only: a stale file must not outlive a newer login or a logout.
            credentials_path().unlink(missing_ok=True)
            return f"the OS keyring ({_keyring_name()})"
    return str(save_file(login))


def save_file(login: StoredLogin) -> Path:
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


def _from_keyring() -> StoredLogin | None:
    if not _keyring_wanted():
        return None
    try:
        text = keyring.get_password(KEYRING_SERVICE, KEYRING_ENTRY)
    except KeyringError:
        return None  # no usable keyring: the file, if any
    if text is None:
        return None
    try:
        return StoredLogin.model_validate_json(text)
    except ValueError:
        raise LoginError(
            "the login in the OS keyring is damaged: run `signoff login` again"
        ) from None


def load() -> StoredLogin | None:
    """The stored login (the keyring's, else the file's), or None when nobody signed in."""
    found = _from_keyring()
    if found is not None:
        return found
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
    """Delete the stored tokens, from the keyring and the file; False when there were none."""
    existed = False
    if keyring is not None:
        # Whatever the store setting says now: a login kept there earlier goes too.
        try:
            existed = keyring.get_password(KEYRING_SERVICE, KEYRING_ENTRY) is not None
            if existed:
                keyring.delete_password(KEYRING_SERVICE, KEYRING_ENTRY)
        except KeyringError:
            pass
    path = credentials_path()
    existed = path.exists() or existed
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
