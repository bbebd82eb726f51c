"""`signoff keys`: the gateway's signing key pair."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from signoff.cli.common import fail
from workflows.signing import generate_key_pair

app = typer.Typer(no_args_is_help=True, help="The gateway's Ed25519 signing keys.")


@app.command()
def generate(
    private_key: Annotated[Path, typer.Argument(help="Where the private key goes (gateway only).")],
    public_key: Annotated[Path, typer.Argument(help="Where the public key goes (for workers).")],
) -> None:
    """Write a new key pair; the private key is readable by its owner only."""
    if private_key.exists():
        raise fail(
            f"{private_key} exists; a new key needs a new file (see key rotation in README.md)",
            2,
        )
    kid = generate_key_pair(private_key, public_key)
    typer.echo(f"key {kid}: private {private_key} (0600), public {public_key}")
