"""The `signoff` command: the agent's and approver's commands, plus any installed plugins.

The SDK ships `submit`, `status`, `pending`, `approve`, `deny`, `amend`, `cancel`, `revoke`,
`undo`, `review`, `windows`, `whoami`, `login`, `logout` and `mcp`.
The server distribution adds its operator commands (`dev`, `worker`, `gateway`, `db`, `audit`,
`policy`, `keys`, `demo`) through the `signoff.commands` entry point group: each entry is a
function that takes this typer app and adds its commands.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

import typer

from signoff.cli import actions, identity, login, mcp
from signoff.cli.common import fail

PLUGIN_GROUP = "signoff.commands"


def build_app() -> typer.Typer:
    """The whole command: SDK commands first, then every installed plugin's."""
    app = typer.Typer(
        no_args_is_help=True,
        help="signoff: human approval for AI agents' privileged actions.",
        pretty_exceptions_show_locals=False,
    )
    for command in (
        actions.submit,
        actions.status,
        actions.approve,
        actions.deny,
        actions.amend,
        actions.cancel,
        actions.revoke,
        actions.undo,
        actions.pending,
        actions.review,
        identity.whoami,
        login.login,
        login.logout,
        mcp.mcp,
    ):
        app.command()(command)
    app.add_typer(actions.windows_app, name="windows")
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            register: Callable[[typer.Typer], None] = entry.load()
        except Exception as exc:
            # A broken server install must say so, not silently lose its commands.
            raise fail(f"the {entry.name!r} commands cannot load ({entry.value}): {exc}") from exc
        register(app)
    return app


def main() -> None:
    """Run the signoff CLI."""
    build_app()()
