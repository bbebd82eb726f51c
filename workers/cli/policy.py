"""`signoff policy`: check a policy and directory, and explain which rule a request hits."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from activities.executors import register_builtins
from policies.directory import StaticDirectory
from policies.engine import Explanation, Policy
from policies.lint import condition_warnings
from policies.loader import PolicyError, check_groups, load_directory, load_policy
from signoff.cli.common import errors, fail, parse_param
from signoff.executor import ExecutorError, registry
from signoff.models import ActionRequest, Verdict, format_duration, validation_problems
from workers.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Check policies and explain their verdicts.")

console = Console()


def _load(policy: Path, directory: Path | None) -> tuple[Policy, StaticDirectory | None]:
    try:
        loaded = load_policy(policy)
        if directory is None:
            return loaded, None
        people = load_directory(directory)
        check_groups(loaded, people.groups(), people.source)
    except PolicyError as exc:
        raise fail(str(exc)) from None
    return loaded, people


@app.command()
def check(
    policy: Annotated[
        Path | None,
        typer.Argument(help="Policy file or directory [default: SIGNOFF_POLICY]"),
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option(help="Directory file to check groups against [default: SIGNOFF_DIRECTORY]"),
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Exit 1 on warnings too (conditions that error on valid params)")
    ] = False,
) -> None:
    """Validate a policy (and its groups against a directory); exit 1 on the first problem.

    Also warns about `when` conditions that error on params the action's executor accepts
    (a missing optional key, a null, a wrong type): such a rule fails closed at run time.
    """
    settings = Settings()
    policy = policy or settings.policy
    directory = directory or settings.directory
    loaded, people = _load(policy, directory)
    register_builtins(registry)
    try:
        registry.load_modules(settings.executor_modules)
    except (ImportError, ValueError) as exc:
        raise fail(f"cannot load SIGNOFF_EXECUTOR_MODULES: {exc}") from None
    warnings = condition_warnings(loaded, registry)
    for warning in warnings:
        source = loaded.sources.get(warning.rule_id, str(policy))
        errors.print(
            f"[yellow]warning:[/yellow] {escape(warning.message(source))}",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"[green]ok[/green] {escape(str(policy))}: {len(loaded.rules)} rules + default, "
        f"groups checked against {escape(str(directory))}",
        highlight=False,
    )
    console.print(f"policy digest {loaded.digest}", highlight=False)
    if people is not None:
        count = len(people.principals())
        console.print(f"directory: {count} principals, {len(people.groups())} groups")
    if warnings and strict:
        raise typer.Exit(1)


@app.command()
def explain(
    action: Annotated[str, typer.Argument(help="Action type, e.g. sql.execute")],
    target: Annotated[str, typer.Option(help="Target system, e.g. prod-db")],
    param: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE (VALUE is JSON when it parses, else a string); repeatable"),
    ] = None,
    requester: Annotated[str, typer.Option(help="Principal id of the requester")] = "unknown",
    risk: Annotated[str | None, typer.Option(help="Risk the agent claims")] = None,
    justification: Annotated[str, typer.Option()] = "policy explain",
    policy: Annotated[Path | None, typer.Option(help="[default: SIGNOFF_POLICY]")] = None,
    directory: Annotated[Path | None, typer.Option(help="[default: SIGNOFF_DIRECTORY]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trace as JSON")] = False,
) -> None:
    """Show which rule a request matches, and why each rule did or did not."""
    settings = Settings()
    loaded, people = _load(policy or settings.policy, directory or settings.directory)
    params = dict(parse_param(p) for p in param or [])
    try:
        request = ActionRequest.model_validate(
            {
                "action": action,
                "target": target,
                "params": params,
                "justification": justification,
                "risk": risk,
                "requester": requester,
            }
        )
    except ValidationError as exc:
        raise fail(f"invalid request: {validation_problems(exc)}") from None
    register_builtins(registry)
    try:
        registry.load_modules(settings.executor_modules)
        # The rules see what the worker's policy evaluation sees: the executor's parsed params.
        parsed = registry.parsed_params(request.action, request.params)
    except (ImportError, ValueError) as exc:
        raise fail(f"cannot load SIGNOFF_EXECUTOR_MODULES: {exc}") from None
    except ExecutorError as exc:
        # Still explain the rules (on the raw params); the request itself never gets that far.
        parsed = None
        errors.print(
            f"[yellow]warning:[/yellow] {escape(str(exc))}: the gateway refuses this request "
            "(422) and the worker denies it (rule invalid-params)",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
    principal = asyncio.run(people.principal(requester)) if people is not None else None
    result = loaded.explain(request, principal, parsed)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    _print(result, principal is not None, requester)


def _print(result: Explanation, known: bool, requester: str) -> None:
    table = Table(title="Rules, in order (first match wins)")
    for column in ("rule", "action", "target", "when", "result"):
        table.add_column(column)
    for trace in result.rules:
        if trace.when is None:
            when = "-"
        elif trace.when_error is not None:
            when = f"[yellow]error[/yellow]: {escape(trace.when_error)}"
        elif not (trace.action_matched and trace.target_matched):
            when = "[dim]not evaluated[/dim]"
        else:
            when = escape(json.dumps(trace.when_result))
        won = trace.rule_id == result.winner
        if won:
            outcome = "[bold green]WINS[/bold green]"
        elif trace.matched:
            outcome = "[dim]matches (not chosen)[/dim]"
        else:
            outcome = "no match"
        if trace.when_error is not None:
            outcome += " [yellow](condition error: " + (
                "counts as a match, fails closed)[/yellow]"
                if trace.matched
                else "an allow rule does not match)[/yellow]"
            )
        table.add_row(
            f"[bold]{trace.rule_id}[/bold]" if won else trace.rule_id,
            _yes(trace.action_matched),
            _yes(trace.target_matched),
            when,
            outcome,
        )
    console.print(table)
    if not known:
        console.print(
            f"[yellow]note[/yellow]: {escape(repr(requester))} is not in the directory, "
            "so principal is null"
        )
    console.print(f"winner: [bold]{result.winner}[/bold]")
    _print_verdict(result.verdict)


def _yes(matched: bool) -> str:
    return "[green]yes[/green]" if matched else "[red]no[/red]"


def _print_verdict(verdict: Verdict) -> None:
    console.print(f"effect: [bold]{verdict.effect}[/bold]  risk: {verdict.risk}")
    console.print(f"reason: {escape(verdict.reason)}", highlight=False)
    for need in verdict.approvals:
        console.print(f"needs: {need.min} from {need.group}")
    for index, stage in enumerate(verdict.escalation):
        console.print(
            f"escalation {index + 1}: after {format_duration(stage.after)} notify "
            f"{', '.join(stage.notify) or '-'}, add {', '.join(stage.add_groups) or '-'}"
        )
    if verdict.expires_after is not None:
        console.print(f"expires after {format_duration(verdict.expires_after)}")
    if (glass := verdict.break_glass) is not None:
        console.print(
            f"break-glass: {', '.join(glass.groups)} may force it (reason of "
            f"{glass.reason_min_length}+ characters); reviewed by {', '.join(glass.reviewers)} "
            f"within {format_duration(glass.review_within)}",
            highlight=False,
        )
    for error in verdict.condition_errors:
        console.print(
            f"[yellow]condition error[/yellow] in rule {escape(error.rule_id)} "
            f"(treated as {error.treated_as.replace('_', ' ')}): {escape(error.error)}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"policy digest {verdict.policy_digest}", highlight=False)
