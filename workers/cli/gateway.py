"""`signoff gateway`: serve the authenticated HTTP API."""

from __future__ import annotations

from typing import Annotated

import typer

from policies.loader import PolicyError
from signoff.cli.common import fail
from workers import event_loop
from workers.cli import logs
from workers.settings import SettingsError, load_settings
from workflows.signing import SigningError


def gateway(
    host: Annotated[
        str | None, typer.Option(help="Override SIGNOFF_GATEWAY_HOST.", show_default=False)
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Override SIGNOFF_GATEWAY_PORT.", show_default=False)
    ] = None,
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "INFO",
    slack_socket_mode: Annotated[
        bool,
        typer.Option(
            "--slack-socket-mode",
            help="Receive Slack clicks over Socket Mode (no public URL); "
            "needs SIGNOFF_SLACK_APP_TOKEN",
        ),
    ] = False,
) -> None:
    """Run the gateway: the API agents, people and chat channels use; stops on SIGTERM."""
    logs.configure(log_level)
    try:
        settings = load_settings()
    except SettingsError as err:
        raise fail(str(err), 2) from None
    # Socket Mode runs whenever the app token is set; the flag makes a missing one an error.
    if slack_socket_mode and not settings.slack_app_token:
        raise fail(
            "--slack-socket-mode needs SIGNOFF_SLACK_APP_TOKEN (an xapp- app-level token "
            "with connections:write)",
            2,
        )
    # Imported here: every `signoff` command loads this module; only `gateway` needs FastAPI.
    from workers.gateway.server import run_gateway

    try:
        event_loop.run(run_gateway(settings, host=host, port=port), settings.event_loop)
    except (PolicyError, SigningError) as err:
        raise fail(str(err), 2) from None
    except RuntimeError as err:
        # Client.connect's failure: say where we tried, not a traceback.
        raise fail(f"cannot connect to Temporal: {err}") from None
