"""`signoff mcp`: the MCP server, so MCP agents can request privileged actions."""

from __future__ import annotations

import logging
from enum import StrEnum

import typer

from signoff.settings import ClientSettings


class Transport(StrEnum):
    """How MCP clients reach the server."""

    STDIO = "stdio"
    HTTP = "http"


def mcp(
    transport: Transport = typer.Option(
        Transport.STDIO, help="stdio (the client spawns us) or http (streamable HTTP at /mcp)."
    ),
    host: str = typer.Option("127.0.0.1", help="HTTP transport: interface to listen on."),
    port: int = typer.Option(8765, help="HTTP transport: port to listen on."),
    max_wait: float = typer.Option(
        30.0, help="Seconds a tool call waits for an outcome before answering (at most 60)."
    ),
    log_level: str = typer.Option("WARNING", help="Python log level (logs go to stderr)."),
) -> None:
    """Serve signoff's tools over MCP, as the agent whose token is in SIGNOFF_TOKEN."""
    import anyio

    from signoff.mcp_server import build_server, client_factory

    # stdout carries the protocol under stdio: logs must go to stderr only.
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    settings = ClientSettings.from_env()
    if settings.token is None:
        typer.secho(
            "error: set SIGNOFF_TOKEN to the agent's gateway token (and SIGNOFF_GATEWAY)",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    server = build_server(
        client_factory(settings.gateway, settings.token.get_secret_value()), max_wait=max_wait
    )
    if transport is Transport.STDIO:
        anyio.run(server.run_stdio_async)
    else:
        # Anyone who reaches this port acts as the agent: keep it on loopback or behind auth.
        anyio.run(lambda: server.run_streamable_http_async(host=host, port=port))
