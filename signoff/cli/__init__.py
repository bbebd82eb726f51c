"""The `signoff` command line: one typer sub-app per area, assembled here."""

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="signoff: human approval for AI agents' privileged actions.",
    pretty_exceptions_show_locals=False,
)


def main() -> None:
    """Run the signoff CLI."""
    app()
