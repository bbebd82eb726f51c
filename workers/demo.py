"""`signoff demo`: a narrated scenario against a running stack, with the example dev tokens.

Every step says what it does, what happened and why, and checks that the outcome is the one
the example policy promises; the demo passes only if every step did.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.text import Text

from policies.directory import DEV_TOKENS
from signoff.client import (
    AuthenticationError,
    GatewayUnavailable,
    PermissionDenied,
    SignoffClient,
    SignoffError,
)
from signoff.models import ActionStatus, Status

AGENT = "agent:etl-bot"
OWNER = "bob@example.com"  # the agent's owner in the example directory, and an SRE
APPROVER = "dave@example.com"  # a data owner with no stake in the agent
EXPORT_QUERY = "SELECT region, count(*) AS customers FROM customers GROUP BY region ORDER BY region"
WAIT = 30.0  # seconds to wait for an outcome that needs nothing but the worker
DBA = "alice@example.com"  # a DBA: approves the just-in-time grant


class StepFailed(Exception):
    """A step did not behave as the example policy says it should."""


@dataclass
class Demo:
    """The scenario's state: clients per principal, and the action that waits for approval."""

    gateway: str
    console: Console
    clients: dict[str, SignoffClient] = field(default_factory=dict)
    waiting: ActionStatus | None = None

    def client(self, principal: str) -> SignoffClient:
        """A client authenticated with the principal's example dev token."""
        if principal not in self.clients:
            self.clients[principal] = SignoffClient(self.gateway, DEV_TOKENS[principal])
        return self.clients[principal]

    async def close(self) -> None:
        """Close every client."""
        for client in self.clients.values():
            await client.aclose()

    def say(self, text: str, style: str = "") -> None:
        """Narrate one line."""
        self.console.print(Text(text, style=style))

    def show(self, label: str, value: object) -> None:
        """Print one fact about the outcome, indented."""
        self.console.print(Text(f"    {label}: ", style="dim") + Text(str(value)))

    def show_status(self, status: ActionStatus) -> None:
        """The facts of an action status that the narration refers to."""
        self.show("action", f"{status.request.action} on {status.request.target}")
        self.show("id", status.id)
        self.show("status", status.status.value)
        if status.verdict is not None:
            self.show("policy rule", f"{status.verdict.rule_id} ({status.verdict.risk} risk)")
            self.show("reason", status.verdict.reason)

    # --- the steps ------------------------------------------------------------------------

    async def auto_allowed(self) -> None:
        """The agent runs a read on a sandbox: allowed by policy, executed at once."""
        self.say(f"{AGENT} asks to run a read-only check on the sandbox (noop on sandbox-1).")
        status = await self.client(AGENT).request(
            "noop",
            "sandbox-1",
            {"query": "SELECT count(*) FROM orders"},
            "count today's orders before the nightly load",
            wait=WAIT,
        )
        self.show_status(status)
        expect(status, Status.SUCCEEDED, "noop-sandbox")
        self.show("result", json.dumps(status.result))
        self.say(
            "→ succeeded without asking anyone: rule noop-sandbox allows it, and the worker "
            "ran it straight away.",
            "green",
        )

    async def needs_approval(self) -> None:
        """A data export: the policy holds it until a data owner approves."""
        self.say(
            f"{AGENT} asks to export customers per region from the analytics database "
            "(data.export on analytics: a read-only query, delivered as CSV)."
        )
        status = await self.client(AGENT).request(
            "data.export",
            "analytics",
            {"query": EXPORT_QUERY},
            "weekly customer counts for the partner portal",
        )
        status = await self.until_not_evaluating(status)
        self.show_status(status)
        expect(status, Status.PENDING_APPROVAL, "data-export")
        self.show("who may decide", ", ".join(status.eligible_groups))
        self.show("digest", status.digest)
        if status.expires_at is not None:
            self.show("expires at", f"{status.expires_at:%Y-%m-%d %H:%M} UTC")
        self.say(
            "→ pending_approval: rule data-export needs one approval from data-owners, so the "
            "workflow waits (durably: a restart loses nothing) and the console channel "
            "posted the request to data-owners.",
            "green",
        )
        self.waiting = status

    async def self_approval(self) -> None:
        """The agent's owner tries to approve it: refused, and the attempt is recorded."""
        waiting = self.require_waiting()
        self.say(f"{OWNER}, who owns {AGENT}, tries to approve its export.")
        try:
            await self.client(OWNER).approve(
                waiting.id, reason="my bot, I vouch for it", digest=waiting.digest
            )
        except PermissionDenied as err:
            self.show("answer", f"HTTP {err.status_code} {err.code}: {err.message}")
            if err.status_code != 403:
                raise StepFailed(f"expected HTTP 403, got {err.status_code}") from None
        else:
            raise StepFailed(f"{OWNER} was allowed to approve their own agent's action")
        status = await self.client(APPROVER).status(waiting.id)
        refused = [r for r in status.refused if r.approver == OWNER]
        if not refused:
            raise StepFailed("the refused attempt is not in the action's record")
        self.show("recorded", f"{refused[-1].code.value} by {refused[-1].approver}")
        self.show("status", status.status.value)
        if status.status is not Status.PENDING_APPROVAL:
            raise StepFailed(f"expected still pending_approval, got {status.status.value}")
        self.say(
            "→ refused with 403: nobody decides their own action, and an agent's owner counts "
            "as a party to it. The attempt is kept in the history and the audit ledger.",
            "green",
        )

    async def real_approval(self) -> None:
        """An SRE with no stake approves; the worker runs the action."""
        waiting = self.require_waiting()
        self.say(f"{APPROVER}, a data owner with no stake in it, approves the digest they saw.")
        await self.client(APPROVER).approve(
            waiting.id, reason="partner export is scheduled", digest=waiting.digest
        )
        status = await self.client(APPROVER).wait(waiting.id, timeout=WAIT)
        self.show_status(status)
        expect(status, Status.SUCCEEDED, "data-export")
        self.show("approved by", ", ".join(d.approver for d in status.decisions))
        result = status.result if isinstance(status.result, dict) else {}
        self.show("exported", str(result.get("csv", json.dumps(status.result))).strip())
        self.say(
            "→ succeeded: one approval from data-owners met the requirement, so the worker, which "
            "holds the credentials, ran exactly what the digest describes.",
            "green",
        )

    async def destructive(self) -> None:
        """A destructive statement: denied by policy before anyone is asked."""
        self.say(f"{AGENT} asks to run DROP TABLE customers on prod-db.")
        status = await self.client(AGENT).request(
            "sql.execute",
            "prod-db",
            {"statement": "DROP TABLE customers"},
            "clean up after the migration",
            wait=WAIT,
        )
        self.show_status(status)
        expect(status, Status.DENIED_BY_POLICY, "destructive-sql")
        self.say(
            "→ denied_by_policy: rule destructive-sql comes first and denies DROP and "
            "TRUNCATE outright. Nobody was asked, nothing ran, and the agent gets the reason "
            "so it can change its plan.",
            "green",
        )

    async def jit_grant(self) -> None:
        """A role for 30 minutes: approved, active, then revoked early by the agent."""
        self.say(
            f"{AGENT} asks for the analytics_writers role for the analyst user, for 30 minutes "
            "(postgres.grant_role on analytics-access)."
        )
        agent = self.client(AGENT)
        status = await agent.request(
            "postgres.grant_role",
            "analytics-access",
            {"role": "analytics_writers", "user": "analyst", "duration": "30m"},
            "backfill the regions table, then hand the access back",
        )
        status = await self.until_not_evaluating(status)
        expect(status, Status.PENDING_APPROVAL, "jit-database-access")
        await self.client(DBA).approve(status.id, reason="backfill ok", digest=status.digest)
        status = await self.until_settled(status, Status.ACTIVE)
        self.show_status(status)
        expect(status, Status.ACTIVE, "jit-database-access")
        if status.window is not None and status.window.end is not None:
            self.show("in force until", f"{status.window.end:%Y-%m-%d %H:%M} UTC")
        self.say(
            "→ active: the worker granted the role, and the workflow stays open on a durable "
            "30-minute timer that will revoke it.",
            "green",
        )
        self.say(f"{AGENT} is done early and gives the access back (signoff revoke).")
        await agent.revoke(status.id, reason="backfill finished")
        status = await self.until_settled(status, Status.REVERTED)
        self.show("status", status.status.value)
        if status.window is not None:
            self.show("ended", f"{status.window.how} by {status.window.ended_by}")
        expect(status, Status.REVERTED, "jit-database-access")
        self.say(
            "→ reverted: the role was revoked at once; the ledger records who granted, who "
            "approved, and who ended it.",
            "green",
        )

    async def until_settled(self, status: ActionStatus, wanted: Status) -> ActionStatus:
        """Poll until the action reaches `wanted` or ends (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while status.status is not wanted and loop.time() < deadline:
            if status.terminal:
                break
            await asyncio.sleep(0.2)
            status = await self.client(AGENT).status(status.id)
        return status

    # --- helpers --------------------------------------------------------------------------

    def require_waiting(self) -> ActionStatus:
        """The action of step 2; later steps depend on it."""
        if self.waiting is None:
            raise StepFailed("skipped: there is no action waiting for approval")
        return self.waiting

    async def until_not_evaluating(self, status: ActionStatus) -> ActionStatus:
        """Poll briefly until the policy has been evaluated."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while status.status is Status.EVALUATING and loop.time() < deadline:
            await asyncio.sleep(0.2)
            status = await self.client(AGENT).status(status.id)
        return status


def expect(status: ActionStatus, wanted: Status, rule: str) -> None:
    """Raise StepFailed unless the action has the wanted status under the wanted rule."""
    if status.status is not wanted:
        detail = f" ({status.error})" if status.error else ""
        raise StepFailed(f"expected {wanted.value}, got {status.status.value}{detail}")
    got = status.verdict.rule_id if status.verdict else None
    if got != rule:
        raise StepFailed(f"expected policy rule {rule}, got {got}")


async def run_demo(gateway: str, console: Console) -> bool:
    """Play the scenario against the gateway; True if every step behaved as expected."""
    demo = Demo(gateway, console)
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("An auto-allowed read", demo.auto_allowed),
        ("An export that waits for approval", demo.needs_approval),
        ("An attempted self-approval", demo.self_approval),
        ("A real approval", demo.real_approval),
        ("A destructive statement", demo.destructive),
        ("A just-in-time grant, revoked early", demo.jit_grant),
    ]
    passed = 0
    console.print(Text(f"signoff demo against {gateway}", style="bold"))
    try:
        for number, (title, step) in enumerate(steps, 1):
            console.print()
            console.print(Text(f"{number}. {title}", style="bold cyan"))
            try:
                await step()
            except GatewayUnavailable as err:
                console.print(Text(f"✗ {err.message}", style="red"))
                console.print("Is the stack running? Start it with `signoff dev`.")
                return False
            except AuthenticationError as err:
                console.print(Text(f"✗ {err.message}", style="red"))
                console.print(
                    "The demo uses the example directory's dev tokens: run the stack with "
                    "policies/examples/directory.yaml (the default of `signoff dev`)."
                )
                return False
            except (StepFailed, SignoffError) as err:
                console.print(Text(f"✗ {err}", style="red"))
                continue
            passed += 1
    finally:
        await demo.close()
    console.print()
    if passed == len(steps):
        console.print(Text(f"All {passed} steps behaved as the policy says.", style="bold green"))
        return True
    console.print(Text(f"{len(steps) - passed} of {len(steps)} steps failed.", style="bold red"))
    return False
