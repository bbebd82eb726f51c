"""`signoff mcp`: the MCP server, so MCP agents can request privileged actions."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Annotated

import anyio
import typer

from signoff.cli.common import fail
from signoff.settings import ClientSettings


class Transport(StrEnum):
    """How MCP clients reach the server."""

    STDIO = "stdio"
    HTTP = "http"


def mcp(
    transport: Annotated[
        Transport,
        typer.Option(help="stdio (the client spawns us) or http (streamable HTTP at /mcp)."),
    ] = Transport.STDIO,
    host: Annotated[str, typer.Option(help="HTTP transport: interface to listen on.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="HTTP transport: port to listen on.")] = 8765,
    max_wait: Annotated[
        float,
        typer.Option(help="Seconds a tool call waits for an outcome before answering (max 60)."),
    ] = 30.0,
    log_level: Annotated[str, typer.Option(help="Python log level (logs go to stderr).")] = (
        "WARNING"
    ),
) -> None:
    """Serve signoff's tools over MCP, as the agent whose token is in SIGNOFF_TOKEN."""
    # stdout carries the protocol under stdio: logs must go to stderr only.
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    settings = ClientSettings.from_env()
    if settings.token is None:
        raise fail("set SIGNOFF_TOKEN to the agent's gateway token (and SIGNOFF_GATEWAY)", code=2)
    # Imported here: every `signoff` command loads this module, and only `mcp` needs the MCP server.
    from signoff.mcp_server import build_server, client_factory

    server = build_server(
        client_factory(settings.gateway, settings.token.get_secret_value()), max_wait=max_wait
    )
    if transport is Transport.STDIO:
        anyio.run(server.run_stdio_async)
    else:
        # Anyone who reaches this port acts as the agent: keep it on loopback or behind auth.
        anyio.run(lambda: server.run_streamable_http_async(host=host, port=port))
