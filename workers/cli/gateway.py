"""`signoff gateway`: serve the authenticated HTTP API."""

from __future__ import annotations

import asyncio
import logging

import typer

from workers.settings import Settings


def gateway(
    host: str = typer.Option(None, help="Override SIGNOFF_GATEWAY_HOST."),
    port: int = typer.Option(None, help="Override SIGNOFF_GATEWAY_PORT."),
    log_level: str = typer.Option("INFO", help="Python log level."),
    slack_socket_mode: bool = typer.Option(
        False,
        "--slack-socket-mode",
        help="Receive Slack clicks over Socket Mode (no public URL); needs SIGNOFF_SLACK_APP_TOKEN",
    ),
) -> None:
    """Run the gateway: the API agents, people and chat channels use; stops on SIGTERM."""
    from policies.loader import PolicyError
    from workers.gateway.app import run_gateway
    from workflows.signing import SigningError

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    # Socket Mode runs whenever the app token is set; the flag makes a missing one an error.
    if slack_socket_mode and not settings.slack_app_token:
        typer.secho(
            "error: --slack-socket-mode needs SIGNOFF_SLACK_APP_TOKEN (an xapp- app-level token "
            "with connections:write)",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    try:
        asyncio.run(run_gateway(settings, host=host, port=port))
    except (PolicyError, SigningError) as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(2) from None
    except RuntimeError as err:
        # Client.connect's failure: say where we tried, not a traceback.
        typer.secho(f"error: cannot connect to Temporal: {err}", fg="red", err=True)
        raise typer.Exit(1) from None
