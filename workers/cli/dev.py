"""`signoff dev` (the whole stack on this machine) and `signoff demo` (a narrated tour of it)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from policies import EXAMPLES_DIR
from policies.directory import DEV_TOKENS
from signoff.cli.common import fail
from signoff.models import ActionRequest
from workers.demo import run_demo
from workers.dev.config import DevConfig, DevStackError
from workers.dev.supervisor import DevStack
from workers.settings import Settings
from workflows.action import workflow_id_for

# soft_wrap: paths and log lines in messages must stay copyable, not wrapped mid-word.
console = Console(highlight=False, soft_wrap=True)

PolicyFile = Annotated[
    Path,
    typer.Option(envvar="SIGNOFF_POLICY", help="Policy file (default: the example policy)."),
]
DirectoryFile = Annotated[
    Path,
    typer.Option(envvar="SIGNOFF_DIRECTORY", help="Directory file (default: the example one)."),
]
TargetsFile = Annotated[
    Path,
    typer.Option(envvar="SIGNOFF_TARGETS", help="Targets file (default: the example one)."),
]


def dev(
    data_dir: Annotated[
        Path,
        typer.Option(
            envvar="SIGNOFF_DATA_DIR",
            help="Where Temporal's sqlite file, the embedded Postgres and the logs live.",
        ),
    ] = Path(".signoff"),
    temporal_port: Annotated[int, typer.Option(help="Temporal gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal Web UI port.")] = 8233,
    gateway_port: Annotated[int, typer.Option(help="signoff gateway port.")] = 8080,
    policy: PolicyFile = EXAMPLES_DIR / "policy.yaml",
    directory: DirectoryFile = EXAMPLES_DIR / "directory.yaml",
    targets: TargetsFile = EXAMPLES_DIR / "targets.yaml",
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for everything to come up.")
    ] = 120.0,
) -> None:
    """Run the whole stack locally: Temporal with its UI, Postgres, a worker and the gateway."""
    settings = Settings()
    configured = settings.database_url
    config = DevConfig(
        data_dir=data_dir,
        temporal_port=temporal_port,
        ui_port=ui_port,
        gateway_port=gateway_port,
        policy=policy,
        directory=directory,
        targets=targets,
        database_url=configured.get_secret_value() if configured else None,
        ready_timeout=ready_timeout,
        # The worker lets running actions finish this long; only then may we SIGKILL it.
        stop_timeout=settings.worker_shutdown_timeout.total_seconds() + 10,
    )
    stack = DevStack(config, echo=_echo, say=lambda text: console.print(Text(f"  {text}")))
    try:
        stack.preflight()
    except DevStackError as err:
        raise fail(str(err), 2) from None
    console.print(f"Starting the signoff stack in [bold]{data_dir}[/bold] ...")
    try:
        asyncio.run(stack.run(lambda: _print_ready(config)))
    except DevStackError as err:  # StartupFailed, ChildExited
        raise fail(str(err)) from None
    console.print("signoff dev stopped; everything it started is down.")


def _echo(name: str, line: str) -> None:
    # The worker's log format is "<date> <time> <logger> <message>": keep the time and message.
    parts = line.split(" ", 3)
    if len(parts) == 4 and parts[2].startswith("signoff."):
        line = f"{parts[1].split(',')[0]} {parts[3]}"
    console.print(Text(f"[{name}] ", style="cyan") + Text(line))


def _cli_path() -> str:
    """How the user can run this installation's `signoff` from their current directory."""
    script = Path(sys.executable).parent / "signoff"
    if not script.exists():
        return "signoff"
    on_path = any(
        (Path(entry) / "signoff").resolve() == script.resolve()
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and (Path(entry) / "signoff").exists()
    )
    if on_path:
        return "signoff"
    try:
        return str(script.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def copy_paste_commands(gateway: str, example_tokens: bool) -> list[tuple[str, str]]:
    """The three commands of the ready banner: submit, look, approve (as (title, command))."""
    cli = shlex.quote(_cli_path())
    agent = "dev-etl-bot" if example_tokens else "$AGENT_TOKEN"
    approver = "dev-dave" if example_tokens else "$APPROVER_TOKEN"
    env = f"SIGNOFF_GATEWAY={gateway}"
    # A fresh idempotency key fixes the action's id in advance (the gateway derives it from
    # requester and key), so the next two commands can name it before it exists.
    key = f"try-{secrets.token_hex(4)}"
    command = (
        f"{env} SIGNOFF_TOKEN={agent} {cli} submit noop --target staging "
        f"--param table=orders --justification 'try the approval flow' --idempotency-key {key}"
    )
    if not example_tokens:
        return [
            ("An agent asks for something that needs approval:", command),
            (
                "Look at it, as someone who may approve it:",
                f"{env} SIGNOFF_TOKEN={approver} {cli} status ID",
            ),
            ("Approve it:", f"{env} SIGNOFF_TOKEN={approver} {cli} approve ID --reason ok"),
        ]
    action_id = workflow_id_for(
        ActionRequest(
            action="noop",
            target="staging",
            justification="-",
            requester="agent:etl-bot",
            idempotency_key=key,
        )
    )
    return [
        ("agent:etl-bot asks for a noop on staging; the policy wants one SRE:", command),
        (
            "Look at it as dave, an SRE (or find it in the Temporal UI):",
            f"{env} SIGNOFF_TOKEN={approver} {cli} status {action_id}",
        ),
        (
            "Approve it as dave (the digest is shown first: that is what you sign):",
            f"{env} SIGNOFF_TOKEN={approver} {cli} approve {action_id} --reason 'looks fine'",
        ),
    ]


def _print_ready(config: DevConfig) -> None:
    # One write: whoever reads the output as it grows sees all of the banner or none of it.
    with console:
        _print_banner(config)


def _print_banner(config: DevConfig) -> None:
    console.print()
    console.print("[bold green]signoff is up.[/bold green]")
    console.print(f"  Temporal UI   {config.ui_url}")
    console.print(f"  Gateway       {config.gateway_url}   (API docs: {config.gateway_url}/docs)")
    console.print(f"  Temporal      {config.temporal_address}   (namespace default)")
    ledger = (
        "SIGNOFF_DATABASE_URL"
        if config.database_url
        else f"embedded Postgres in {config.data_dir / 'pg'}"
    )
    console.print(f"  Audit ledger  {ledger}")
    console.print(f"  Logs          {config.logs_dir}/")
    console.print(
        f"  Signing key   {config.signing_key}   (gateway only; workers get the public key)"
    )
    examples = config.uses_example_directory
    if examples:
        table = Table(
            title="Dev tokens (only valid with the example directory)", title_justify="left"
        )
        table.add_column("principal")
        table.add_column("token")
        for principal, token in DEV_TOKENS.items():
            table.add_row(principal, token)
        console.print(table)
    console.print("[bold]Try it[/bold] (copy and paste):")
    for title, command in copy_paste_commands(config.gateway_url, examples):
        console.print(f"  [dim]# {title}[/dim]")
        console.print(Text(f"  {command}"), soft_wrap=True)
    if examples:
        demo = f"{shlex.quote(_cli_path())} demo --gateway {config.gateway_url}"
        console.print(f"Or watch the narrated tour: [bold]{demo}[/bold]")
    # The dev server has no switch for a read-only Web UI, so say what the UI can do here.
    console.print(
        "[yellow]The local Temporal UI is not read-only[/yellow] (`temporal server start-dev` "
        "has no option to disable its write actions): from it you can start, signal, update, "
        "cancel, terminate and reset workflows, but not approve anything. A start, decision, "
        "cancel or report without the gateway's signature (its key is in "
        f"{config.signing_key.parent}; the worker holds only the public key) is refused and "
        "recorded in the ledger. Cancel and terminate stop an action without running it. The "
        "UIs in deploy/ are read-only."
    )
    console.print("Approval requests show up below. Ctrl-C stops everything.")
    console.print()


def demo(
    gateway: Annotated[
        str,
        typer.Option(envvar="SIGNOFF_GATEWAY", help="The running stack's gateway."),
    ] = "http://127.0.0.1:8080",
) -> None:
    """Play a narrated scenario against a running `signoff dev` (example dev tokens)."""
    if not asyncio.run(run_demo(gateway, console)):
        raise typer.Exit(1)
