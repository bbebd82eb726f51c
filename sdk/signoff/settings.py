"""Where the gateway is and who we are: the SDK's and CLI's two settings, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import Field, SecretStr

from signoff.models import Contract

DEFAULT_GATEWAY = "http://127.0.0.1:8080"


class ClientSettings(Contract):
    """`SIGNOFF_GATEWAY` (the gateway's URL) and `SIGNOFF_TOKEN` (this principal's bearer token)."""

    gateway: str = Field(default=DEFAULT_GATEWAY, min_length=1)
    token: SecretStr | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        """Read the settings from `environ` (default: this process's environment)."""
        env = os.environ if environ is None else environ
        token = env.get("SIGNOFF_TOKEN") or None
        return cls(
            gateway=env.get("SIGNOFF_GATEWAY") or DEFAULT_GATEWAY,
            token=SecretStr(token) if token else None,
        )
