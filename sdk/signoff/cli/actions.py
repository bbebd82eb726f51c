"""`signoff submit|status|approve|deny|cancel|pending`: the gateway's API for people.

A client of the gateway through `signoff.client`, like any agent: it never talks to Temporal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from signoff import neutralise
from signoff.cli.common import fail, parse_param
from signoff.cli.credentials import LoginError, current_token
from signoff.client import SignoffError, SignoffSyncClient
from signoff.models import ActionStatus, Risk
from signoff.settings import DEFAULT_GATEWAY

console = Console()

Gateway = Annotated[
    str | None,
    typer.Option(
        "--gateway",
        envvar="SIGNOFF_GATEWAY",
        show_envvar=True,
        help=f"Gateway URL [default: {DEFAULT_GATEWAY}]",
    ),
]
Token = Annotated[
    str | None,
    typer.Option("--token", envvar="SIGNOFF_TOKEN", show_envvar=True, help="Your bearer token"),
]
Json = Annotated[bool, typer.Option("--json", help="Print the status as JSON")]


@contextmanager
def gateway_client(gateway: str | None, token: str | None) -> Iterator[SignoffSyncClient]:
    """A client for the command, turning every signoff error into a plain message and exit 1.

    Without `--token` or SIGNOFF_TOKEN, the token `signoff login` stored (refreshed if due).
    """
    if not token:
        try:
            token = current_token()
        except LoginError as err:
            raise fail(str(err)) from None
    if not token:
        raise fail("no token: pass --token, set SIGNOFF_TOKEN or run `signoff login`")
    url = gateway or DEFAULT_GATEWAY
    try:
        # The CLI is interactive: one retry is enough before telling the human.
        with SignoffSyncClient(url, token, retries=1) as client:
            yield client
    except SignoffError as err:
        raise fail(f"{err.message} ({err.code})") from None


def _show(status: ActionStatus) -> None:
    """Print an action for a human: what, where, why, who decided, and how it ended."""
    request = status.request
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("id", status.id),
        ("status", status.status.value),
        ("action", request.action),
        ("target", request.target),
        ("params", neutralise.visible_json(request.params, indent=2)),
        ("justification", request.justification),
        ("requester", request.requester),
        ("on behalf of", request.on_behalf_of or "-"),
        ("agent owner", status.owner or "-"),
    ]
    if status.verdict is not None:
        verdict = status.verdict
        rows.append(("policy", f"{verdict.effect} by {verdict.rule_id} (risk {verdict.risk})"))
    for need in status.progress:
        approved = ", ".join(need.approved_by) or "nobody yet"
        rows.append(
            ("approvals", f"{len(need.approved_by)} of {need.min} from {need.group}: {approved}")
        )
    for decision in status.decisions:
        reason = f": {decision.reason}" if decision.reason else ""
        rows.append(("decision", f"{decision.decision} by {decision.approver}{reason}"))
    for attempt in status.refused:
        rows.append(("refused", f"{attempt.approver} ({attempt.code.value}): {attempt.message}"))
    if status.expires_at is not None and not status.terminal:
        rows.append(("expires", f"{status.expires_at:%Y-%m-%d %H:%M:%S %Z}"))
    if status.result is not None:
        rows.append(("result", neutralise.visible_json(status.result, indent=2)))
    if status.error:
        rows.append(("error", status.error))
    rows.extend(_reversible_rows(status))
    rows.append(("digest", status.digest))
    for name, value in rows:
        # Every value may be the agent's: hidden characters shown as escapes, markup inert.
        shown = value if name in ("params", "result") else neutralise.visible(value, multiline=True)
        table.add_row(name, escape(shown))
    console.print(table)


def _reversible_rows(status: ActionStatus) -> list[tuple[str, str]]:
    """A grant's window and who ended it, its revert's trouble, and the undo link."""
    rows: list[tuple[str, str]] = []
    if (window := status.window) is not None:
        until = f" until {window.end:%Y-%m-%d %H:%M:%S %Z}" if window.end else ""
        rows.append(("in force", f"from {window.start:%Y-%m-%d %H:%M:%S %Z}{until}"))
        if window.how is not None:
            rows.append(("ended", f"{window.how} by {window.ended_by}"))
    if (revert := status.revert) is not None and revert.failures:
        state = "done" if revert.done_at else "retrying"
        rows.append(("revert", f"{revert.failures} failed attempts, {state}: {revert.last_error}"))
    if status.undo_until is not None:
        rows.append(("undo until", f"{status.undo_until:%Y-%m-%d %H:%M:%S %Z}"))
    if status.undo_action:
        rows.append(("undo", status.undo_action))
    if status.request.reverts is not None:
        rows.append(("reverts", status.request.reverts.action_id))
    return rows


def _print(status: ActionStatus, as_json: bool) -> None:
    if as_json:
        typer.echo(status.model_dump_json(indent=2))
    else:
        _show(status)


def submit(
    action: Annotated[str, typer.Argument(help="Action type, e.g. sql.execute")],
    target: Annotated[str, typer.Option(help="Target system, e.g. prod-db")],
    justification: Annotated[str, typer.Option(help="Why the action is needed")],
    param: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE (VALUE is JSON when it parses, else a string); repeatable"),
    ] = None,
    risk: Annotated[str | None, typer.Option(help="low, medium, high or critical")] = None,
    on_behalf_of: Annotated[str | None, typer.Option(help="Principal it is done for")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Repeat with the same key to get the same action")
    ] = None,
    wait: Annotated[
        float, typer.Option(min=0, max=60, help="Seconds to wait for the outcome")
    ] = 0.0,
    as_json: Json = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Ask for an action as the token's principal, and show its status."""
    params: dict[str, Any] = dict(parse_param(p) for p in param or [])
    if risk is not None and risk not in ("low", "medium", "high", "critical"):
        raise fail(f"--risk {risk!r}: use low, medium, high or critical")
    claimed: Risk | None = risk  # type: ignore[assignment]
    with gateway_client(gateway, token) as client:
        status = client.request(
            action,
            target,
            params,
            justification,
            risk=claimed,
            on_behalf_of=on_behalf_of,
            idempotency_key=idempotency_key,
            wait=wait,
        )
    _print(status, as_json)


def status(
    action_id: Annotated[str, typer.Argument(metavar="ID", help="The action id")],
    wait: Annotated[
        float, typer.Option(min=0, max=60, help="Seconds to wait for the outcome")
    ] = 0.0,
    as_json: Json = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Show an action: what it is, who decided, and how it ended."""
    with gateway_client(gateway, token) as client:
        found = client.status(action_id, wait=wait)
    _print(found, as_json)


def _decide(
    action_id: str,
    decision: str,
    reason: str,
    yes: bool,
    as_json: bool,
    gateway: str | None,
    token: str | None,
) -> None:
    """Show the action, then send the decision bound to the digest that was shown."""
    with gateway_client(gateway, token) as client:
        shown = client.status(action_id)
        if not as_json:
            console.print(f"[bold]You are about to {decision}:[/bold]")
            _show(shown)
        # Ask only when a human is at the keyboard; scripts pass --yes or pipe stdin.
        if not yes and sys.stdin.isatty() and not typer.confirm(f"{decision.capitalize()}?"):
            raise fail("nothing sent")
        decided = client.decide(
            action_id,
            "approve" if decision == "approve" else "deny",
            reason=reason,
            digest=shown.digest,
        )
    if as_json:
        typer.echo(decided.model_dump_json(indent=2))
    else:
        verb = "approved" if decision == "approve" else "denied"
        console.print(
            f"[green]{verb}[/green] {neutralise.rich(decided.id)}: now {decided.status.value}",
            highlight=False,
        )


def approve(
    action_id: Annotated[str, typer.Argument(metavar="ID", help="The action id")],
    reason: Annotated[str, typer.Option(help="Why (optional for approvals)")] = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to confirm")] = False,
    as_json: Json = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Approve an action after seeing exactly what it is (its digest binds your approval)."""
    _decide(action_id, "approve", reason, yes, as_json, gateway, token)


def deny(
    action_id: Annotated[str, typer.Argument(metavar="ID", help="The action id")],
    reason: Annotated[str, typer.Option(help="Why: the agent is told, so it can adjust")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to confirm")] = False,
    as_json: Json = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Deny an action, with the reason the agent will read."""
    _decide(action_id, "deny", reason, yes, as_json, gateway, token)


def cancel(
    action_id: Annotated[str, typer.Argument(metavar="ID", help="The action id")],
    reason: Annotated[str, typer.Option(help="Why it is no longer needed")] = "",
    as_json: Json = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Cancel your own pending action."""
    with gateway_client(gateway, token) as client:
        cancelled = client.cancel(action_id, reason=reason)
    if as_json:
        typer.echo(cancelled.model_dump_json(indent=2))
    else:
        console.print(f"cancelled {neutralise.rich(cancelled.id)}", highlight=False)


def revoke(
    action_id: Annotated[str, typer.Argument(metavar="ID", help="The active action's id")],
    reason: Annotated[str, typer.Option(help="Why it ends early")] = "",
    as_json: Json = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """End an active grant now: its revert runs at once."""
    with gateway_client(gateway, token) as client:
        revoked = client.revoke(action_id, reason=reason)
    if as_json:
        typer.echo(revoked.model_dump_json(indent=2))
    else:
        console.print(
            f"revoked {neutralise.rich(revoked.id)}: {revoked.status.value}", highlight=False
        )


def undo(
    action_id: Annotated[str, typer.Argument(metavar="ID", help="The action to revert")],
    reason: Annotated[str, typer.Option(help="Why it should be undone")] = "",
    as_json: Json = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Ask for an action's revert within its undo window (the policy may require approval)."""
    with gateway_client(gateway, token) as client:
        undone = client.undo(action_id, reason=reason)
    if as_json:
        typer.echo(undone.model_dump_json(indent=2))
    else:
        revert = neutralise.rich(undone.undo_action or "")
        console.print(f"undo of {neutralise.rich(undone.id)} asked: {revert}", highlight=False)


def pending(
    limit: Annotated[int, typer.Option(min=1, max=200, help="At most this many")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the inbox as JSON")] = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Your inbox: pending actions you may decide now, newest first."""
    with gateway_client(gateway, token) as client:
        inbox = client.pending(limit=limit)
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in inbox], indent=2))
        return
    if not inbox:
        console.print("nothing waits for you")
        return
    table = Table(title="Waiting for your decision")
    table.add_column("id", no_wrap=True)
    for column in ("action", "target", "requester", "owner", "risk", "approvals", "expires"):
        table.add_column(column, overflow="fold")
    for item in inbox:
        approvals = ", ".join(f"{len(p.approved_by)}/{p.min} {p.group}" for p in item.progress)
        requester = item.request.requester
        if item.request.on_behalf_of:
            requester += f" for {item.request.on_behalf_of}"
        table.add_row(
            neutralise.rich(item.id),
            neutralise.rich(item.request.action),
            neutralise.rich(item.request.target),
            neutralise.rich(requester),
            neutralise.rich(item.owner or "-"),
            item.verdict.risk if item.verdict else "-",
            neutralise.rich(approvals),
            f"{item.expires_at:%Y-%m-%d %H:%M}" if item.expires_at else "-",
        )
    # Piped or redirected, there is no screen to fit: never cut an id to fit 80 columns.
    (console if console.is_terminal else Console(width=200)).print(table)
