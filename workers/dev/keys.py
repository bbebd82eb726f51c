"""The local stack's signing key pair: the gateway signs, the worker verifies."""

from __future__ import annotations

from workers.dev.config import DevConfig
from workflows.signing import Signer, generate_key_pair


def ensure_keys(config: DevConfig) -> str:
    """The data dir's key pair, generated on first start; returns the key id."""
    if not config.signing_key.exists():
        return generate_key_pair(config.signing_key, config.public_keys / "gateway.pem")
    # A private key others can read is no longer the gateway's alone.
    config.signing_key.chmod(0o600)
    return Signer.load(config.signing_key).kid
