"""The `signoff` command line: one typer sub-app per area, assembled here."""

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="signoff: human approval for AI agents' privileged actions.",
    pretty_exceptions_show_locals=False,
)

from signoff.cli import worker as _worker  # noqa: E402

app.command()(_worker.worker)

from signoff.cli import actions as _actions  # noqa: E402
from signoff.cli import gateway as _gateway  # noqa: E402

app.command()(_gateway.gateway)
for _command in (
    _actions.submit,
    _actions.status,
    _actions.approve,
    _actions.deny,
    _actions.cancel,
    _actions.pending,
):
    app.command()(_command)

from signoff.cli import policy as _policy  # noqa: E402

app.add_typer(_policy.app, name="policy")

from signoff.cli import audit as _audit  # noqa: E402
from signoff.cli import db as _db  # noqa: E402

app.add_typer(_audit.app, name="audit")
app.add_typer(_db.app, name="db")

from signoff.cli import keys as _keys  # noqa: E402

app.add_typer(_keys.app, name="keys")

from signoff.cli import dev as _dev  # noqa: E402

app.command()(_dev.dev)
app.command()(_dev.demo)

from signoff.cli import mcp as _mcp  # noqa: E402

app.command()(_mcp.mcp)


def main() -> None:
    """Run the signoff CLI."""
    app()
