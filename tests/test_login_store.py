"""Where `signoff login` keeps tokens (the OS keyring, else a 0600 file), and PKCE on the device
grant, against the real OpenID Provider (tests/oidc) and a real file-backed keyring backend
plugged in through keyring's own hooks (`keyring.set_keyring`, `PYTHON_KEYRING_BACKEND`)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from typer.testing import CliRunner

from signoff.cli import credentials
from signoff.cli.credentials import KEYRING_ENTRY, KEYRING_SERVICE, LoginError, StoredLogin
from signoff.cli.login import pkce_pair
from tests import oidc_fixtures
from tests.cli import app as cli_app
from tests.keyring_backend import FILE_ENV, MAX_ENV, FileKeyring
from tests.oidc_fixtures import AUDIENCE, OpenIdProvider

idp = oidc_fixtures.idp
ROOT = Path(__file__).parent.parent
runner = CliRunner()


def a_login(access: str = "access-token-value", expires_in: float = 600) -> StoredLogin:
    """What a sign-in stores."""
    return StoredLogin(
        issuer="https://idp.test",
        client_id="signoff-cli",
        token_endpoint="https://idp.test/token",
        access_token=access,
        refresh_token="refresh-token-value",
        expires_at=time.time() + expires_in,
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config directory of our own, and the store left to choose."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(credentials.STORE_ENV, raising=False)
    monkeypatch.delenv(MAX_ENV, raising=False)
    return tmp_path


@pytest.fixture
def ring(home: Path) -> Iterator[FileKeyring]:
    """An OS keyring (file-backed) for this test; the previous backend afterwards."""
    before = keyring.get_keyring()
    backend = FileKeyring(home / "keyring.json")
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(before)


@pytest.fixture
def no_ring(home: Path) -> Iterator[KeyringBackend]:
    """No keyring at all: keyring's own fail backend, as on a headless server."""
    before = keyring.get_keyring()
    backend = fail.Keyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(before)


def test_tokens_go_to_the_keyring_when_there_is_one(ring: FileKeyring) -> None:
    where = credentials.save(a_login())
    assert where == f"the OS keyring ({ring.name})"
    assert not credentials.credentials_path().exists()
    stored = ring.get_password(KEYRING_SERVICE, KEYRING_ENTRY)
    assert stored is not None
    assert json.loads(stored)["access_token"] == "access-token-value"
    assert credentials.load() == StoredLogin.model_validate_json(stored)
    assert credentials.current_token() == "access-token-value"
    assert credentials.forget() is True
    assert ring.get_password(KEYRING_SERVICE, KEYRING_ENTRY) is None
    assert credentials.load() is None
    assert credentials.forget() is False


def test_without_a_keyring_the_0600_file(no_ring: KeyringBackend) -> None:
    where = credentials.save(a_login())
    path = credentials.credentials_path()
    assert where == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert credentials.current_token() == "access-token-value"
    assert credentials.forget() is True
    assert not path.exists()


def test_a_keyring_that_refuses_the_tokens_falls_back_to_the_file(
    ring: FileKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_ENV, "512")  # Windows' Credential Locker stops at 2560 bytes
    where = credentials.save(a_login("x" * 600))
    assert where == str(credentials.credentials_path())
    assert ring.get_password(KEYRING_SERVICE, KEYRING_ENTRY) is None
    assert credentials.current_token() == "x" * 600


def test_the_file_store_setting_keeps_tokens_out_of_the_keyring(
    ring: FileKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(credentials.STORE_ENV, "file")
    credentials.save(a_login())
    assert ring.get_password(KEYRING_SERVICE, KEYRING_ENTRY) is None
    assert credentials.credentials_path().exists()


def test_one_copy_only_and_logout_forgets_both(
    ring: FileKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An older login in the file, then a new one in the keyring: the file copy goes.
    monkeypatch.setenv(credentials.STORE_ENV, "file")
    credentials.save(a_login("old"))
    monkeypatch.delenv(credentials.STORE_ENV)
    credentials.save(a_login("new"))
    assert not credentials.credentials_path().exists()
    assert credentials.current_token() == "new"
    # Both at once (a file written with the keyring switched off): logout clears both.
    monkeypatch.setenv(credentials.STORE_ENV, "file")
    credentials.save(a_login("file"))
    monkeypatch.delenv(credentials.STORE_ENV)
    out = runner.invoke(cli_app, ["logout"])
    assert out.exit_code == 0, out.output
    assert "signed out" in out.output
    assert ring.get_password(KEYRING_SERVICE, KEYRING_ENTRY) is None
    assert not credentials.credentials_path().exists()


def test_a_damaged_keyring_entry_says_sign_in_again(ring: FileKeyring) -> None:
    ring.set_password(KEYRING_SERVICE, KEYRING_ENTRY, "{not json")
    with pytest.raises(LoginError, match="signoff login"):
        credentials.load()


def test_pkce_pair_is_rfc_7636() -> None:
    verifier, challenge = pkce_pair()
    assert re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", verifier)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge)  # 32 bytes, base64url, no padding
    assert pkce_pair()[0] != verifier


# --- against the real provider ----------------------------------------------------------------


async def sign_in(
    idp: OpenIdProvider, env: dict[str, str], *extra: str, account: str = "zoe@example.com"
) -> tuple[int, str]:
    """Run `signoff login` as a separate process; confirm the code as `account` would."""
    command = [sys.executable, "-c", "from signoff.cli import main; main()", "login"]
    command += ["--issuer", idp.issuer, "--resource", AUDIENCE, *extra]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert process.stdout is not None
    prompt = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    code = re.search(r"confirm the code (\S+)", prompt)
    if code is not None:
        await asyncio.to_thread(idp.approve_device, code.group(1), account)
    rest = (await asyncio.wait_for(process.stdout.read(), 60)).decode()
    return await process.wait(), prompt + rest


def cli_env(home: Path) -> dict[str, str]:
    """The environment of a `signoff` process using the test keyring file."""
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(home / "config"),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'sdk'}",
        "PYTHON_KEYRING_BACKEND": "tests.keyring_backend.FileKeyring",
        FILE_ENV: str(home / "keyring.json"),
    }
    env.pop("SIGNOFF_TOKEN", None)
    return env


async def test_login_with_pkce_keeps_tokens_in_the_keyring_and_refreshes_them(
    idp: OpenIdProvider, ring: FileKeyring, home: Path
) -> None:
    env = cli_env(home)
    status, output = await sign_in(idp, env, "--client-id", "signoff-cli-pkce", "--pkce")
    assert status == 0, output
    assert "tokens in the OS keyring (" in output
    assert not credentials.credentials_path().exists()
    saved = credentials.load()  # this process reads the same keyring file
    assert saved is not None
    assert saved.client_id == "signoff-cli-pkce"
    assert saved.access_token not in output
    assert str(saved.refresh_token) not in output
    # Expiring: refreshed with the refresh token, and the keyring holds the new tokens.
    credentials.save(saved.model_copy(update={"expires_at": time.time()}))
    fresh = await asyncio.to_thread(credentials.current_token)
    assert fresh is not None
    assert fresh != saved.access_token
    renewed = credentials.load()
    assert renewed is not None
    assert renewed.access_token == fresh
    assert renewed.expires_at > time.time() + 60
    assert not credentials.credentials_path().exists()
    out = await asyncio.to_thread(runner.invoke, cli_app, ["logout"])
    assert "signed out" in out.output
    assert ring.get_password(KEYRING_SERVICE, KEYRING_ENTRY) is None


async def test_an_idp_that_wants_pkce_refuses_a_device_grant_without_it(
    idp: OpenIdProvider, ring: FileKeyring, home: Path
) -> None:
    status, output = await sign_in(idp, cli_env(home), "--client-id", "signoff-cli-pkce")
    assert status == 1
    assert "refused to start: invalid_request" in output
    assert credentials.load() is None


def test_the_wrong_code_verifier_gets_no_tokens(idp: OpenIdProvider) -> None:
    """Someone who saw the device code but not the verifier polls in vain."""
    _, challenge = pkce_pair()
    started = httpx.post(
        f"{idp.url}/device/auth",
        data={
            "client_id": "signoff-cli",
            "scope": oidc_fixtures.HUMAN_SCOPE,
            "resource": AUDIENCE,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        timeout=10,
    ).json()
    idp.approve_device(started["user_code"], "zoe@example.com")
    poll = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": started["device_code"],
        "client_id": "signoff-cli",
        "code_verifier": pkce_pair()[0],
    }
    answer = httpx.post(f"{idp.url}/token", data=poll, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    assert "access_token" not in answer.json()
