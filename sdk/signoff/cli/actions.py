"""`signoff submit|status|approve|deny|amend|cancel|pending|review`: the gateway's API for people.

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
from signoff.links import approval_page_url
from signoff.models import ActionStatus, ApprovalWindow, Risk, format_duration
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


def _show(status: ActionStatus, *, page_url: str | None = None) -> None:
    """Print an action for a human: what, where, why, who decided, and how it ended.

    `page_url`: the action's approval page, shown as its own row when given.
    """
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
        if verdict.window_id:
            rows.append(("allowed by", f"approval window {verdict.window_id}"))
        elif verdict.window is not None and not status.terminal:
            rows.append(
                (
                    "window offer",
                    f"approve --window up to {format_duration(verdict.window.max_duration)} "
                    f"for requests matching: {verdict.window.scope}",
                )
            )
    if status.opened_window:
        rows.append(("opened window", status.opened_window))
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
    rows += _break_glass_rows(status)
    rows.extend(_reversible_rows(status))
    rows.append(("digest", status.digest))
    if page_url is not None:
        rows.append(("page", page_url))
    # Approve with changes: which action this replaced, or which replaced it.
    if request.amended_from:
        rows.append(("amended from", f"{request.amended_from} by {request.amended_by}"))
    if status.superseded_by:
        rows.append(("superseded by", status.superseded_by))
    for name, value in rows:
        # Every value may be the agent's: hidden characters shown as escapes, markup inert.
        shown = value if name in ("params", "result") else neutralise.visible(value, multiline=True)
        table.add_row(name, escape(shown))
    console.print(table)


def _break_glass_rows(status: ActionStatus) -> list[tuple[str, str]]:
    """The break-glass lines of an action: who forced it, why, and its review."""
    glass = status.break_glass
    if glass is None:
        return []
    rows = [("BREAK-GLASS", f"by {glass.by}: {glass.reason}")]
    if glass.reviewed is not None:
        done = glass.reviewed
        rows.append(("review", f"{done.outcome} by {done.reviewer}: {done.reason}"))
    else:
        groups = ", ".join(glass.reviewer_groups) or "reviewers"
        late = " (OVERDUE)" if glass.review == "overdue" else ""
        rows.append(("review", f"due {glass.review_due_at:%Y-%m-%d %H:%M:%S %Z} by {groups}{late}"))
    return rows


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


def _print(status: ActionStatus, as_json: bool, *, page_url: str | None = None) -> None:
    if as_json:
        typer.echo(status.model_dump_json(indent=2))
    else:
        _show(status, page_url=page_url)


def _report(done: ActionStatus | ApprovalWindow, verb: str, as_json: bool) -> None:
    """What a command did: the model as JSON, or one line naming what it did to which id."""
    if as_json:
        typer.echo(done.model_dump_json(indent=2))
    else:
        console.print(f"{verb} {neutralise.rich(done.id)}", highlight=False)


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
    break_glass: Annotated[
        str | None,
        typer.Option(
            "--break-glass",
            metavar="REASON",
            help=(
                "Force it through now, without waiting for approval, if the policy lets your "
                "group; flagged everywhere and reviewed afterwards. Why it cannot wait"
            ),
        ),
    ] = None,
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
            break_glass=break_glass,
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
    # Where a person can read it in full and decide it, signed in (the gateway's /a/{id}).
    _print(found, as_json, page_url=approval_page_url(gateway or DEFAULT_GATEWAY, found.id))


def _decide(
    action_id: str,
    decision: str,
    reason: str,
    yes: bool,
    as_json: bool,
    gateway: str | None,
    token: str | None,
    window: str | None = None,
) -> None:
    """Show the action, then send the decision bound to the digest that was shown."""
    with gateway_client(gateway, token) as client:
        shown = client.status(action_id)
        if not as_json:
            console.print(f"[bold]You are about to {decision}:[/bold]")
            _show(shown)
        # Ask only when a human is at the keyboard; scripts pass --yes or pipe stdin.
        offer = shown.verdict.window if shown.verdict else None
        if window is not None and not as_json and offer is not None:
            console.print(
                f"[bold]and let {neutralise.rich(shown.request.requester)} run, for {window}, "
                f"anything matching:[/bold] {escape(neutralise.visible(offer.scope))}",
                highlight=False,
            )
        if not yes and sys.stdin.isatty() and not typer.confirm(f"{decision.capitalize()}?"):
            raise fail("nothing sent")
        try:
            decided = client.decide(
                action_id,
                "approve" if decision == "approve" else "deny",
                reason=reason,
                digest=shown.digest,
                window=window,
            )
        except ValueError as err:  # a malformed --window, refused before anything is sent
            raise fail(f"--window {window!r}: {err}") from None
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
    window: Annotated[
        str | None,
        typer.Option(
            help="Also let the requester run requests in the rule's window scope for this "
            "long (e.g. 1h; at most the rule's max_duration)"
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to confirm")] = False,
    as_json: Json = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Approve an action after seeing exactly what it is (its digest binds your approval)."""
    _decide(action_id, "approve", reason, yes, as_json, gateway, token, window)


def deny(
    reason: Annotated[str, typer.Option(help="Why: the agent is told, so it can adjust")],
    action_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="The action id (or --older-than)")
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Instead of one ID: deny every action in your inbox requested at least this "
            "long ago (e.g. 7d); each is decided, and checked, on its own",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to confirm")] = False,
    as_json: Json = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Deny an action, with the reason the agent will read; or every stale one (--older-than)."""
    if (action_id is None) == (older_than is None):
        raise fail("give either an action ID or --older-than, not both")
    if not reason.strip():
        raise fail("--reason is required to deny: the agent is told why")
    if older_than is not None:
        _deny_stale(older_than, reason, yes, as_json, gateway, token)
        return
    assert action_id is not None
    _decide(action_id, "deny", reason, yes, as_json, gateway, token)


def _deny_stale(
    older_than: str, reason: str, yes: bool, as_json: bool, gateway: str | None, token: str | None
) -> None:
    """Deny each stale action through the normal API, one decision each; report every outcome."""
    outcomes: list[dict[str, str]] = []
    with gateway_client(gateway, token) as client:
        stale = client.pending(limit=200, older_than=older_than)
        if not stale:
            if as_json:
                typer.echo("[]")
            else:
                console.print(f"nothing older than {escape(older_than)} waits for you")
            return
        if not as_json:
            console.print(f"[bold]You are about to deny {len(stale)} action(s):[/bold]")
            _table(stale, f"Older than {escape(older_than)}")
        if not yes and sys.stdin.isatty() and not typer.confirm(f"Deny all {len(stale)}?"):
            raise fail("nothing sent")
        for item in stale:
            # Bound to the digest listed: an action changed since is refused, not denied.
            try:
                decided = client.deny(item.id, reason, digest=item.digest)
            except SignoffError as err:
                outcomes.append(
                    {"id": item.id, "outcome": "refused", "code": err.code, "message": err.message}
                )
                continue
            outcomes.append(
                {"id": item.id, "outcome": decided.status.value, "code": "", "message": ""}
            )
    refused = [o for o in outcomes if o["outcome"] == "refused"]
    if as_json:
        typer.echo(json.dumps(outcomes, indent=2))
    else:
        for o in outcomes:
            if o["outcome"] == "refused":
                console.print(
                    f"[red]refused[/red] {neutralise.rich(o['id'])}: "
                    f"{neutralise.rich(o['code'])}: {neutralise.rich(o['message'])}",
                    highlight=False,
                )
            else:
                console.print(
                    f"[green]denied[/green] {neutralise.rich(o['id'])}: now {o['outcome']}",
                    highlight=False,
                )
        console.print(f"{len(outcomes) - len(refused)} denied, {len(refused)} refused")
    if refused:
        raise typer.Exit(1)


def amend(
    action_id: Annotated[str, typer.Argument(metavar="ID", help="The pending action's id")],
    reason: Annotated[str, typer.Option(help="What you changed and why: the agent reads it")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE for the changed params (VALUE is JSON when it parses, else a "
            "string); repeatable; params not named keep their current value"
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to confirm")] = False,
    as_json: Json = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Approve with changes: a successor with your params replaces the action; others approve."""
    if not param:
        raise fail("give at least one --param KEY=VALUE to change")
    if not reason.strip():
        raise fail("--reason is required to amend: the agent is told what changed")
    changes: dict[str, Any] = dict(parse_param(p) for p in param)
    with gateway_client(gateway, token) as client:
        shown = client.status(action_id)
        params = {**shown.request.params, **changes}
        if not as_json:
            console.print("[bold]You are about to replace:[/bold]")
            _show(shown)
            console.print(
                "[bold]by a successor with params:[/bold] "
                + escape(neutralise.visible_json(params, sort_keys=True)),
                highlight=False,
            )
        if not yes and sys.stdin.isatty() and not typer.confirm("Amend?"):
            raise fail("nothing sent")
        # Bound to the digest shown: an action that changed since is refused, not amended.
        amended = client.amend(action_id, params, reason=reason, digest=shown.digest)
    if as_json:
        typer.echo(amended.model_dump_json(indent=2))
    else:
        successor = neutralise.rich(amended.superseded_by or "")
        console.print(
            f"[green]amended[/green] {neutralise.rich(amended.id)}: now {amended.status.value}; "
            f"successor {successor} needs its own approval (not yours)",
            highlight=False,
        )


def review(
    action_id: Annotated[str, typer.Argument(metavar="ID", help="The action id")],
    reason: Annotated[str, typer.Option(help="What you found: recorded with your review")],
    dispute: Annotated[
        bool, typer.Option("--dispute", help="The break was not justified (an audit finding)")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to confirm")] = False,
    as_json: Json = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Review a break-glass action after the fact (nobody reviews their own)."""
    with gateway_client(gateway, token) as client:
        shown = client.status(action_id)
        if not as_json:
            console.print("[bold]You are about to review:[/bold]")
            _show(shown)
        if not yes and sys.stdin.isatty() and not typer.confirm("Review?"):
            raise fail("nothing sent")
        reviewed = client.review(
            action_id, reason, outcome="disputed" if dispute else "accepted", digest=shown.digest
        )
    _report(reviewed, "[green]reviewed[/green]", as_json)


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
    _report(cancelled, "cancelled", as_json)


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
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Only actions requested at least this long ago (7d)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the inbox as JSON")] = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Your inbox: pending actions you may decide now, newest first (stale ones: --older-than)."""
    with gateway_client(gateway, token) as client:
        inbox = client.pending(limit=limit, older_than=older_than)
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in inbox], indent=2))
        return
    if not inbox:
        console.print("nothing waits for you")
        return
    _table(inbox, "Waiting for your decision")


def _table(inbox: list[ActionStatus], title: str) -> None:
    """The inbox as a table, every cell neutralised."""
    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    for column in (
        "action",
        "target",
        "requester",
        "owner",
        "risk",
        "approvals",
        "requested",
        "expires",
    ):
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
            f"{item.created_at:%Y-%m-%d %H:%M}",
            f"{item.expires_at:%Y-%m-%d %H:%M}" if item.expires_at else "-",
        )
    # Piped or redirected, there is no screen to fit: never cut an id to fit 80 columns.
    (console if console.is_terminal else Console(width=200)).print(table)


# --- approval windows ---------------------------------------------------------------------------

windows_app = typer.Typer(
    help="Approval windows (scoped approvals): list, show, revoke early.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _show_window(window: ApprovalWindow) -> None:
    """Print one window for a human."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows = [
        ("id", window.id),
        ("status", window.status),
        ("holder", window.holder + (f" for {window.on_behalf_of}" if window.on_behalf_of else "")),
        ("scope", f"{window.scope} (rule {window.rule_id})"),
        ("approved by", ", ".join(window.approvers)),
        ("opened by", window.action_id),
        ("expires", f"{window.expires_at:%Y-%m-%d %H:%M:%S %Z}"),
        ("uses", str(len(window.uses))),
    ]
    for use in window.uses:
        rows.append(("use", f"{use.action} on {use.target} ({use.action_id}) at {use.at:%H:%M:%S}"))
    if window.revoked_by:
        rows.append(
            ("revoked by", window.revoked_by + (f": {window.reason}" if window.reason else ""))
        )
    for attempt in window.refused:
        rows.append(("refused", f"{attempt.approver} ({attempt.code.value}): {attempt.message}"))
    for name, value in rows:
        table.add_row(name, escape(neutralise.visible(value, multiline=True)))
    console.print(table)


@windows_app.callback()
def windows(
    ctx: typer.Context,
    all: Annotated[bool, typer.Option("--all", help="Also windows that ended")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the windows as JSON")] = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Approval windows you hold, approved, may revoke or audit (live ones unless --all)."""
    if ctx.invoked_subcommand is not None:
        return
    with gateway_client(gateway, token) as client:
        found = client.windows(all=all)
    if as_json:
        typer.echo(json.dumps([w.model_dump(mode="json") for w in found], indent=2))
        return
    if not found:
        console.print("no approval windows")
        return
    table = Table(title="Approval windows")
    table.add_column("id", no_wrap=True)
    for column in ("status", "holder", "scope", "approved by", "expires", "uses"):
        table.add_column(column, overflow="fold")
    for window in found:
        table.add_row(
            neutralise.rich(window.id),
            window.status,
            neutralise.rich(window.holder),
            neutralise.rich(window.scope),
            neutralise.rich(", ".join(window.approvers)),
            f"{window.expires_at:%Y-%m-%d %H:%M:%S %Z}",
            str(len(window.uses)),
        )
    console.print(table)


@windows_app.command("show")
def show_window(
    window_id: Annotated[str, typer.Argument(metavar="ID", help="The window id (win-...)")],
    as_json: Json = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """Show one approval window: scope, holder, approvers, expiry and every use."""
    with gateway_client(gateway, token) as client:
        window = client.window(window_id)
    if as_json:
        typer.echo(window.model_dump_json(indent=2))
    else:
        _show_window(window)


@windows_app.command("revoke")
def revoke_window(
    window_id: Annotated[str, typer.Argument(metavar="ID", help="The window id (win-...)")],
    reason: Annotated[str, typer.Option(help="Why it ends early")] = "",
    as_json: Json = False,
    gateway: Gateway = None,
    token: Token = None,
) -> None:
    """End an approval window now (its approvers, or its rule's revoking groups)."""
    with gateway_client(gateway, token) as client:
        window = client.revoke_window(window_id, reason=reason)
    _report(window, "[green]revoked[/green]", as_json)
