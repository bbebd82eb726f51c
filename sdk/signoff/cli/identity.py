"""`signoff whoami`: who the gateway thinks you are, your groups, and how you signed in."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from signoff import neutralise
from signoff.cli.actions import Gateway, Json, Token, gateway_client

console = Console()


def whoami(as_json: Json = False, gateway: Gateway = None, token: Token = None) -> None:
    """Show who the gateway thinks you are: principal, kind, groups, owner, how signed in."""
    with gateway_client(gateway, token) as client:
        me = client.me()
    if as_json:
        typer.echo(json.dumps(me, indent=2))
        return
    how = me.get("authenticated_by")
    signed_in = f"OIDC token from {me.get('issuer')}" if how == "oidc" else "directory token"
    rows = [
        ("id", str(me.get("id"))),
        ("kind", str(me.get("kind"))),
        ("groups", ", ".join(str(g) for g in me.get("groups") or []) or "-"),
        ("owner", str(me.get("owner") or "-")),
        ("email", str(me.get("email") or "-")),
        ("acts for", ", ".join(str(a) for a in me.get("acts_for") or []) or "-"),
        ("signed in with", signed_in),
    ]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in rows:
        # Ids and group names may come from an IdP: hidden characters shown, markup inert.
        table.add_row(name, escape(neutralise.visible(value)))
    console.print(table)
