"""A file-backed keyring for the tests, plugged in where keyring takes backends.

`keyring.set_keyring(FileKeyring(path))` in this process, or
`PYTHON_KEYRING_BACKEND=tests.keyring_backend.FileKeyring` with `SIGNOFF_TEST_KEYRING` naming the
file in a subprocess (keyring's own ways to choose a backend). Like the Windows Credential
Locker, it refuses secrets longer than `SIGNOFF_TEST_KEYRING_MAX` characters when that is set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.compat import properties
from keyring.errors import PasswordDeleteError, PasswordSetError

FILE_ENV = "SIGNOFF_TEST_KEYRING"
MAX_ENV = "SIGNOFF_TEST_KEYRING_MAX"


class FileKeyring(KeyringBackend):
    """Secrets in one JSON file: {service: {username: secret}}."""

    @properties.classproperty
    def priority(cls) -> float:
        """Viable only where a test asked for it: never picked up by keyring's detection."""
        if FILE_ENV not in os.environ:
            raise RuntimeError(f"{FILE_ENV} is not set")
        return 1

    def __init__(self, path: Path | str | None = None) -> None:
        super().__init__()
        # keyring instantiates every backend class while it detects one: no file is no error.
        self.path = Path(path or os.environ.get(FILE_ENV) or os.devnull)

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            data: dict[str, dict[str, str]] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return data

    def get_password(self, service: str, username: str) -> str | None:
        """The stored secret, or None."""
        return self._read().get(service, {}).get(username)

    def set_password(self, service: str, username: str, password: str) -> None:
        """Store a secret (refused when longer than the configured maximum)."""
        limit = os.environ.get(MAX_ENV)
        if limit is not None and len(password) > int(limit):
            raise PasswordSetError(f"the secret is longer than {limit} characters")
        data = self._read()
        data.setdefault(service, {})[username] = password
        self.path.write_text(json.dumps(data))

    def delete_password(self, service: str, username: str) -> None:
        """Forget a secret; PasswordDeleteError when there is none."""
        data = self._read()
        if username not in data.get(service, {}):
            raise PasswordDeleteError("no such secret")
        del data[service][username]
        self.path.write_text(json.dumps(data))
