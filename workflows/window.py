"""The approval window workflow: a scoped approval (grant) that lives on its own durable timer.

An approver who approves an action may, where its rule offers it, let the requester run
requests in the rule's scope for a while. The action workflow opens this workflow; it holds
the scope, holder, approvers and expiry, records every use (an update that refuses once the
window has ended), tells the original approval's channels about each use, and ends `expired`
on its timer or `revoked` early by an approver or a revoking group, signed like a cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from signoff.models import (
    ApprovalWindow,
    DecisionRefused,
    NotificationRef,
    RefusalCode,
    RefusedAttempt,
    WindowRevokeRequest,
    WindowUse,
    format_duration,
)
from workflows import metrics, rules
from workflows import search_attributes as sa
from workflows.errors import MESSAGE_REFUSED, NOT_PENDING, WINDOW_REFUSED
from workflows.messages import (
    WINDOW_STATUS_QUERY,
    WINDOW_USE_UPDATE,
    WINDOW_WORKFLOW,
    AuditBatch,
    AuditEvent,
    AuditKind,
    PrincipalLookup,
    VerifyInput,
    WindowNoteInput,
    WindowStart,
    WindowUseRequest,
    window_id_for,
)
from workflows.signing import window_revoke_claims

with workflow.unsafe.imports_passed_through():
    from activities.audit import AuditActivities
    from activities.notify import Notifications
    from activities.policy import PolicyActivities
    from activities.verify import SignatureActivities

# The ledger and the directory must answer: retry until they do, never skip a row.
FOREVER = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
NOTE_RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=1))
# A revoke accepted while the window's last notes go out is answered before the window ends.
LATE_REVOKES = "window-late-revokes"


@workflow.defn(name=WINDOW_WORKFLOW)
class WindowWorkflow:
    """One approval window, from the approval that opened it until it expires or is revoked."""

    @workflow.init
    def __init__(self, start: WindowStart) -> None:
        self.start = start
        self.window = ApprovalWindow(
            id=workflow.info().workflow_id,
            status="active",
            action_id=start.action_id,
            rule_id=start.rule_id,
            scope=start.scope,
            holder=start.holder,
            on_behalf_of=start.on_behalf_of,
            approvers=list(start.approvers),
            revokers=list(start.revokers),
            created_at=start.created_at,
            expires_at=start.expires_at,
            duration=start.duration,
        )
        self._seq = 0
        self._seen_ids: set[str] = set()
        self._background: list[asyncio.Task[None]] = []

    @workflow.run
    async def run(self, start: WindowStart) -> ApprovalWindow:
        """Open, wait on the durable timer (or a revoke), then end and record why."""
        window = self.window
        info = workflow.info()
        parent = info.parent.workflow_id if info.parent else None
        if parent != start.action_id or info.workflow_id != window_id_for(start.action_id):
            # Started by hand, not by the approval it names: never live, and on the record.
            window.status = "revoked"
            window.ended_at = workflow.now()
            window.reason = f"not opened by the approval of {start.action_id}"
            self._publish()
            await self._audit(
                self._event(AuditKind.WINDOW_REVOKED, payload={"reason": window.reason})
            )
            return window
        self._publish()
        await self._audit(
            self._event(
                AuditKind.WINDOW_CREATED,
                actor=", ".join(window.approvers),
                payload={
                    "action_id": window.action_id,
                    "rule_id": window.rule_id,
                    "scope": window.scope,
                    "holder": window.holder,
                    "on_behalf_of": window.on_behalf_of,
                    "approvers": window.approvers,
                    "expires_at": window.expires_at.isoformat(),
                },
            )
        )
        metrics.window_event("opened")
        self._note(
            f"Approval window {window.id} opened for {window.holder} until "
            f"{window.expires_at:%Y-%m-%d %H:%M} UTC ({format_duration(window.duration)}), "
            f"scope: {window.scope}"
        )
        remaining = window.expires_at - workflow.now()
        if remaining > timedelta(0):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: window.status != "active",
                    timeout=remaining,
                    timeout_summary=f"window expiry ({format_duration(window.duration)})",
                )
        if window.status == "active":
            window.status = "expired"
            window.ended_at = workflow.now()
            self._publish()
            await self._audit(
                self._event(AuditKind.WINDOW_EXPIRED, payload={"uses": len(window.uses)})
            )
            metrics.window_event("expired")
            self._note(f"Approval window {window.id} expired after {len(window.uses)} use(s)")
        await workflow.wait_condition(workflow.all_handlers_finished)
        while self._background:
            pending, self._background = self._background, []
            await asyncio.gather(*pending)
            if workflow.patched(LATE_REVOKES):
                # Waiting on the notes let another revoke in; ending under it would answer its
                # caller with Temporal's "workflow completed before the update" (a 500 then).
                await workflow.wait_condition(workflow.all_handlers_finished)
        return self.window

    # --- uses -----------------------------------------------------------------------------

    @workflow.update(name=WINDOW_USE_UPDATE)
    async def use(self, request: WindowUseRequest) -> ApprovalWindow:
        """Allow one request in scope: recorded before it answers; refused once ended."""
        window = self.window
        if any(u.action_id == request.action_id for u in window.uses):
            return window  # the policy activity's retry: the same use, counted once
        refusal = self._use_refusal(request)
        if refusal is not None:
            # Decided in this activation, before any await: nothing can end it in between.
            raise ApplicationError(refusal, type=WINDOW_REFUSED, non_retryable=True)
        use = WindowUse(
            action_id=request.action_id,
            action=request.action,
            target=request.target,
            digest=request.digest,
            at=workflow.now(),
        )
        window.uses.append(use)
        metrics.window_event("used")
        self._publish()
        await self._audit(
            self._event(
                AuditKind.WINDOW_USED,
                actor=request.requester,
                payload=use.model_dump(mode="json"),
            )
        )
        self._note(
            f"Approval window {window.id} allowed {request.action} on {request.target} for "
            f"{request.requester} (action {request.action_id}, use {len(window.uses)})"
        )
        return window

    @use.validator
    def _validate_use(self, request: WindowUseRequest) -> None:
        # Rejected before history: a late or foreign use leaves no trace in the window.
        if any(u.action_id == request.action_id for u in self.window.uses):
            return
        refusal = self._use_refusal(request)
        if refusal is not None:
            raise ApplicationError(refusal, type=WINDOW_REFUSED, non_retryable=True)

    def _use_refusal(self, request: WindowUseRequest) -> str | None:
        """Why this window cannot allow the request (the policy activity checked scope)."""
        window = self.window
        if window.status != "active":
            return f"window {window.id} is {window.status}"
        if workflow.now() >= window.expires_at:
            return f"window {window.id} expired at {window.expires_at:%Y-%m-%d %H:%M:%S} UTC"
        if request.requester != window.holder or request.on_behalf_of != window.on_behalf_of:
            return f"window {window.id} is {window.holder}'s, not {request.requester}'s"
        if request.rule_id != window.rule_id:
            return f"window {window.id} is for rule {window.rule_id!r}, not {request.rule_id!r}"
        return None

    # --- revoke ---------------------------------------------------------------------------

    @workflow.update
    async def revoke(self, request: WindowRevokeRequest) -> ApprovalWindow:
        """End the window now: its approvers or a revoking group; refusals are recorded."""
        window = self.window
        refusal = await self._verify(request)
        if refusal is None:
            found = await workflow.execute_local_activity_method(
                PolicyActivities.resolve_principal,
                PrincipalLookup(id=request.by),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=FOREVER,
                summary=f"resolve revoker {request.by}",
            )
            refusal = rules.revoke_refusal(window, found.principal)
        if refusal is not None:
            attempt = RefusedAttempt(
                approver=request.by,
                kind="window_revoke",
                channel=request.channel,
                digest=self.start.digest,
                code=refusal.code,
                message=refusal.message,
                at=workflow.now(),
            )
            window.refused.append(attempt)
            metrics.refused(attempt.code.value)
            await self._audit(self._event(AuditKind.REFUSED, actor=request.by, payload=attempt))
            raise ApplicationError(
                attempt.message, attempt, type=MESSAGE_REFUSED, non_retryable=True
            )
        if window.status != "active":
            raise ApplicationError(
                f"window {window.id} is already {window.status}", type=NOT_PENDING
            )
        window.status = "revoked"
        window.ended_at = workflow.now()
        window.revoked_by = request.by
        window.reason = request.reason or None
        metrics.window_event("revoked")
        self._publish()
        await self._audit(
            self._event(
                AuditKind.WINDOW_REVOKED,
                actor=request.by,
                channel=request.channel,
                payload={"reason": request.reason, "uses": len(window.uses)},
            )
        )
        self._note(
            f"Approval window {window.id} revoked by {request.by}"
            + (f": {request.reason}" if request.reason else "")
        )
        return window

    async def _verify(self, request: WindowRevokeRequest) -> DecisionRefused | None:
        """The revoke must be the gateway's, for this window, signed after it opened, once."""
        if request.signature is None:
            return DecisionRefused(
                code=RefusalCode.UNSIGNED,
                message="the window revoke carries no gateway signature; only the signoff "
                "gateway can send it",
            )
        info = workflow.info()
        result = await workflow.execute_local_activity_method(
            SignatureActivities.verify_signature,
            VerifyInput(
                signature=request.signature,
                expected=window_revoke_claims(request, info.workflow_id),
                now=workflow.now(),
                not_before=info.workflow_start_time,
            ),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=FOREVER,
            summary="verify window_revoke signature",
        )
        if result.code is not None:
            return DecisionRefused(code=result.code, message=result.message)
        assert result.id is not None, "a signature that holds has an id"
        if result.id in self._seen_ids:
            return DecisionRefused(
                code=RefusalCode.REPLAYED,
                message=f"signed message {result.id} was already delivered to this window",
            )
        self._seen_ids.add(result.id)
        return None

    @workflow.query(name=WINDOW_STATUS_QUERY)
    def status(self) -> ApprovalWindow:
        """The window now: scope, holder, approvers, expiry, uses."""
        return self.window

    # --- visibility, notes and audit ------------------------------------------------------

    def _publish(self) -> None:
        """Search attributes and details, so the Temporal UI lists live windows by holder."""
        window = self.window
        workflow.upsert_search_attributes(
            [
                sa.WINDOW_STATUS.value_set(window.status),
                sa.WINDOW_HOLDER.value_set(window.holder),
                sa.WINDOW_EXPIRES.value_set(window.expires_at),
            ]
        )
        lines = [
            f"**Approval window** for {window.holder} — **{window.status}**",
            f"Scope (rule `{window.rule_id}`): `{window.scope}`",
            f"Approved by: {', '.join(window.approvers)} (action {window.action_id})",
            f"Expires: {window.expires_at:%Y-%m-%d %H:%M:%S} UTC",
            f"Uses: {len(window.uses)}",
        ]
        if window.revoked_by:
            lines.append(
                f"Revoked by {window.revoked_by}" + (f": {window.reason}" if window.reason else "")
            )
        workflow.set_current_details("\n\n".join(lines))

    def _note(self, text: str) -> None:
        """Tell each channel where the approval was posted, beside the run."""
        channels = sorted({r.channel for r in self.start.notifications if not r.error})
        for channel in channels:
            refs = [r for r in self.start.notifications if r.channel == channel and not r.error]
            self._background.append(asyncio.create_task(self._note_one(channel, refs, text)))

    async def _note_one(self, channel: str, refs: list[NotificationRef], text: str) -> None:
        try:
            await workflow.execute_activity_method(
                Notifications.notify_window,
                WindowNoteInput(channel=channel, window=self.window, refs=refs, text=text),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOTE_RETRY,
                summary=f"tell {channel} about the window",
            )
        except ActivityError as err:
            # A broken channel never changes the window; the ledger has every use.
            workflow.logger.warning("could not tell %s about window: %s", channel, err)

    def _event(
        self,
        kind: AuditKind,
        *,
        actor: str | None = None,
        channel: str | None = None,
        payload: object = None,
    ) -> AuditEvent:
        """A row of the window's own ledger stream (its id in place of an action id)."""
        if hasattr(payload, "model_dump"):
            payload = payload.model_dump(mode="json")
        info = workflow.info()
        event = AuditEvent(
            action_id=info.workflow_id,
            run_id=info.run_id,
            seq=self._seq,
            kind=kind,
            digest=self.start.digest,
            actor=actor,
            channel=channel,
            at=workflow.now(),
            payload=payload or {},
        )
        self._seq += 1
        return event

    async def _audit(self, *events: AuditEvent) -> None:
        """Append to the ledger; retried until Postgres accepts, never skipped."""
        await workflow.execute_local_activity_method(
            AuditActivities.record_audit_events,
            AuditBatch(events=list(events)),
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=FOREVER,
            summary="audit " + ", ".join(e.kind.value for e in events),
        )
