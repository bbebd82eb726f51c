"""Helpers for the audit tests: fresh databases, stopping Postgres, tampering, sample events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pgserver import PostgresServer
from pgserver._commands import pg_ctl

from activities.ledger.migrations import WORKER_ROLE
from signoff.models import ActionRequest, Decision, RefusalCode, RefusedAttempt, Verdict
from workflows.messages import AuditBatch, AuditEvent, AuditKind

TRIGGER = "audit_events_no_update_delete"


def with_database(url: str, name: str | None = None, user: str | None = None) -> str:
    """The same server URL with another database and/or user."""
    parts = urlsplit(url)
    name = name or parts.path.lstrip("/")
    netloc = parts.netloc if user is None else f"{user}:@{parts.netloc.split('@', 1)[-1]}"
    return urlunsplit((parts.scheme, netloc, f"/{name}", parts.query, parts.fragment))


async def create_database(admin_url: str) -> str:
    """Create an empty database with a random name; return its URL."""
    name = f"audit_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def worker_login(url: str, role: str) -> str:
    """`url` as `role`, a login in the worker's role (created if it is not there yet)."""
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') "
            f"THEN CREATE ROLE {role} LOGIN IN ROLE {WORKER_ROLE}; END IF; END $$"
        )
    finally:
        await admin.close()
    return with_database(url, user=role)


def stop(server: PostgresServer) -> None:
    """Stop the server the way an outage would: immediately, connections cut."""
    pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)


def start(server: PostgresServer) -> None:
    """Start a stopped server again on the same socket."""
    with server._lock:
        server.ensure_postgres_running()


@asynccontextmanager
async def as_attacker(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection with the append-only trigger disabled, as a DB admin could."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"ALTER TABLE audit_events DISABLE TRIGGER {TRIGGER}")
        yield conn
    finally:
        await conn.execute(f"ALTER TABLE audit_events ENABLE TRIGGER {TRIGGER}")
        await conn.close()


# --- sample actions -------------------------------------------------------------------------

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def verdict(effect: str = "require_approval") -> Verdict:
    """A verdict of the test policy."""
    return Verdict(
        effect=effect,  # type: ignore[arg-type]
        rule_id="prod-writes" if effect == "require_approval" else "reads",
        reason="production write",
        risk="high",
        expires_after=timedelta(hours=4),
        policy_digest="f" * 64,
    )


def action_batches(
    action_id: str,
    *,
    start: datetime = T0,
    requester: str = "agent:bot",
    approver: str | None = "alice",
    deny: bool = False,
    self_attempts: int = 0,
    wait: timedelta = timedelta(minutes=3),
    params: dict[str, Any] | None = None,
) -> list[AuditBatch]:
    """The batches a workflow writes for one action, with the payloads the workflow uses."""
    request = ActionRequest(
        action="sql.execute",
        target="prod-db",
        params=params if params is not None else {"sql": "UPDATE t SET x = 1 WHERE id = 7"},
        justification="fix ticket <OPS-1> & friends",
        requester=requester,
        on_behalf_of="bob@example.com",
    )
    digest = request.digest
    seq = iter(range(100))
    clock = iter(start + timedelta(seconds=i) for i in range(0, 10_000))

    def event(kind: AuditKind, payload: Any, at: datetime | None = None, **kw: Any) -> AuditEvent:
        body = payload.model_dump(mode="json") if hasattr(payload, "model_dump") else payload
        return AuditEvent(
            action_id=action_id,
            seq=next(seq),
            kind=kind,
            digest=digest,
            at=at or next(clock),
            payload=body,
            **kw,
        )

    v = verdict("require_approval" if approver else "allow")
    batches = [
        AuditBatch(
            events=[
                event(AuditKind.REQUESTED, request, at=start, actor=requester),
                event(AuditKind.VERDICT, v, at=start),
            ]
        ),
    ]
    if approver is not None:
        refs = {"refs": [{"channel": "slack", "destination": "#ops", "ref": {"ts": "1.2"}}]}
        batches.append(
            AuditBatch(events=[event(AuditKind.NOTIFIED, refs, at=start, channel="slack")])
        )
        for n in range(self_attempts):
            attempt = RefusedAttempt(
                approver=requester,
                decision="approve",
                channel="api",
                digest=digest,
                code=RefusalCode.SELF_APPROVAL,
                message="requesters may not approve their own actions",
                at=start + timedelta(seconds=n + 1),
            )
            batches.append(
                AuditBatch(
                    events=[event(AuditKind.REFUSED, attempt, at=attempt.at, actor=requester)]
                )
            )
        decision = Decision(
            approver=approver,
            decision="deny" if deny else "approve",
            digest=digest,
            reason="looks <fine>" if not deny else "not now",
            channel="slack",
            at=start + wait,
        )
        batches.append(
            AuditBatch(
                events=[
                    event(
                        AuditKind.DECISION,
                        {**decision.model_dump(mode="json"), "groups": ["dba"]},
                        at=decision.at,
                        actor=approver,
                        channel="slack",
                    )
                ]
            )
        )
    later = start + wait + timedelta(seconds=1)
    if deny:
        batches.append(
            AuditBatch(
                events=[
                    event(
                        AuditKind.OUTCOME,
                        {"status": "denied", "error": f"Denied by {approver}: not now"},
                        at=later,
                    )
                ]
            )
        )
        return batches
    batches.append(
        AuditBatch(events=[event(AuditKind.EXECUTION_STARTED, {"executor": {}}, at=later)])
    )
    batches.append(
        AuditBatch(
            events=[
                event(AuditKind.EXECUTION_RESULT, {"result": {"rows": 1}, "error": None}, at=later),
                event(AuditKind.OUTCOME, {"status": "succeeded", "error": None}, at=later),
            ]
        )
    )
    return batches
