"""The server's operator commands, added to the SDK's `signoff` command (entry point)."""

from __future__ import annotations

import typer

from workers.cli import audit, db, dev, gateway, keys, policy, worker


def register(app: typer.Typer) -> None:
    """Add `worker`, `gateway`, `dev`, `demo`, `policy`, `audit`, `db` and `keys` to `app`."""
    app.command()(worker.worker)
    app.command()(gateway.gateway)
    app.command()(dev.dev)
    app.command()(dev.demo)
    app.add_typer(policy.app, name="policy")
    app.add_typer(audit.app, name="audit")
    app.add_typer(db.app, name="db")
    app.add_typer(keys.app, name="keys")
