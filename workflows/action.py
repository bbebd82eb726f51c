"""The action workflow: one durable run per privileged action an agent asks for.

Evaluate policy, then deny, run, or wait for enough authorised humans; escalate on durable
timers; expire closed; execute only after approval; record every step for the audit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import JsonValue
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeout

from signoff.models import (
    ActionRequest,
    ActionStatus,
    CancelRequest,
    Decision,
    DecisionRefused,
    DecisionRequest,
    ExecutionReport,
    MessageKind,
    NotificationRef,
    Principal,
    RefusalCode,
    RefusedAttempt,
    Signature,
    Status,
    Verdict,
    format_duration,
)
from workflows import metrics, rules
from workflows import search_attributes as sa
from workflows.errors import (
    DECISION_REFUSED,
    EXECUTOR_ERROR,
    MESSAGE_REFUSED,
    NOT_AWAITING_REPORT,
    NOT_PENDING,
    NOT_REQUESTER,
    NOTIFIER_ERROR,
)
from workflows.messages import (
    AuditBatch,
    AuditEvent,
    AuditKind,
    Evaluation,
    ExecuteInput,
    ExecutionClaim,
    NotifyInput,
    NotifyUpdateInput,
    PrincipalLookup,
    PrincipalLookupResult,
    RunCheck,
    VerifyInput,
)
from workflows.signing import cancel_claims, decision_claims, report_claims, request_claims
from workflows.state import ActionState, Phase

# Activities are called by reference, so their names are written once, beside each activity.
with workflow.unsafe.imports_passed_through():
    from activities.audit import AuditActivities
    from activities.execution import ExecutionActivities
    from activities.notify import Notifications
    from activities.policy import PolicyActivities
    from activities.verify import SignatureActivities

WORKFLOW_NAME = "SignoffAction"

# Audit and identity lookups must never be skipped: retry until Postgres or the directory is back.
FOREVER = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
NOTIFY_RETRY = RetryPolicy(
    maximum_attempts=5,
    initial_interval=timedelta(seconds=1),
    non_retryable_error_types=[NOTIFIER_ERROR],
)
IDEMPOTENT_RETRY = RetryPolicy(
    maximum_attempts=5,
    initial_interval=timedelta(seconds=1),
    non_retryable_error_types=[EXECUTOR_ERROR],
)
AT_MOST_ONCE = RetryPolicy(maximum_attempts=1)
# Patch: message updates go out one at a time per channel, always with the latest state, and a
# decision that ends the waiting leaves the final update to the end of the run.
ORDERED_MESSAGE_UPDATES = "ordered-message-updates"
# Patch: the write-ahead "execution started" row goes in the same ledger write as the verdict
# (allowed actions) or the decision that completes the quorum, saving one write per action.
WRITE_AHEAD_WITH_DECISION = "write-ahead-with-decision"
# Patch: each decision also resolves the requester again, so the self-approval rule refuses the
# agent's owner as the directory says at decision time (as well as the owner at request time).
OWNER_AT_DECISION = "owner-at-decision"
# Patch: the request, every decision, cancel and caller report must carry the gateway's
# signature (signoff.signing), checked by a local activity before it counts.
SIGNED_MESSAGES = "signed-messages"
# Patch: ledger rows carry the run that wrote them; a run refuses to start when another run of
# the same workflow id (a reset, a re-run after retention) already started executing, and
# claims the action's one execution in the ledger before the executor or the caller runs it.
RUN_LEDGER = "run-ledger"
# Patch: an approver the directory does not list but whose signed decision carries the groups
# of a verified identity-provider token counts as a person in those groups (issue 14).
IDP_APPROVERS = "idp-approvers"
# The status of a pending action goes in its memo (INBOX_MEMO_KEY) whenever its search
# attributes are published, so an inbox renders from one visibility list, not a query per row.
INBOX_MEMO = "inbox-memo"
INBOX_MEMO_KEY = "signoff_inbox"
# A status larger than this (huge params) stays out of the memo; the inbox queries that one.
INBOX_MEMO_MAX_CHARS = 16_000
NEVER_TWICE = "a reset or re-run never executes twice"
OUTCOME_UNKNOWN = (
    "outcome unknown, verify manually: the worker stopped responding while running "
    "this non-idempotent action, so it was not retried"
)


def workflow_id_for(request: ActionRequest) -> str:
    """The workflow id: derived from (requester, idempotency key) so retries find one action."""
    if request.idempotency_key is None:
        raise ValueError("only requests with an idempotency key have a derived workflow id")
    material = f"{request.requester}\x00{request.idempotency_key}".encode()
    return "act-" + hashlib.sha256(material).hexdigest()[:32]


@dataclass
class _Patches:
    """Which patched behaviours this run has; decided once, at the start of run()."""

    ordered_updates: bool = False
    write_ahead_with_decision: bool = False
    # Decided lazily too: a handler may run before run() in the first activation.
    signed: bool | None = None
    runs: bool | None = None


@workflow.defn(name=WORKFLOW_NAME)
class ActionWorkflow:
    """One privileged action, from request to outcome."""

    @workflow.init
    def __init__(self, request: ActionRequest) -> None:
        self.state = ActionState(request=request, created_at=workflow.now())
        self._patches = _Patches()
        # Messages and their updates run beside the process; the run waits for them at the end.
        self._background: list[asyncio.Task[None]] = []
        self._stale_channels: set[str] = set()
        self._updating_channels: set[str] = set()
        # Whether the memo may hold an inbox row (patch inbox-memo). At first it may: whoever
        # started the run could have put one there, so the first publish always writes it.
        self._inbox_memo = True

    # --- the process ----------------------------------------------------------------------

    @workflow.run
    async def run(self, request: ActionRequest) -> ActionStatus:
        """Evaluate, wait for approval when required, execute, and return the outcome."""
        # Every patch is decided here, before the first local activity: core may resolve a
        # local activity in an earlier workflow task on replay than it ran in, and a patch
        # asked for after it would then be missed.
        self._patches.ordered_updates = workflow.patched(ORDERED_MESSAGE_UPDATES)
        self._patches.write_ahead_with_decision = workflow.patched(WRITE_AHEAD_WITH_DECISION)
        workflow.patched(OWNER_AT_DECISION)
        workflow.patched(IDP_APPROVERS)
        workflow.patched(INBOX_MEMO)
        self._signatures_required()
        self._runs_recorded()
        # Only the gateway's key makes a request: a start by anyone else with Temporal access
        # is refused here, before the policy or an executor sees it. Its age counts from the
        # start, not from when a worker first ran it (workers may be down for a deploy).
        refusal = await self._verify(
            request.signature,
            request_claims(request, workflow.info().workflow_id),
            now=workflow.info().workflow_start_time,
        )
        if refusal is None:
            refusal = await self._earlier_execution()
        if refusal is not None:
            return await self._reject(request, refusal)
        evaluation = await workflow.execute_local_activity_method(
            PolicyActivities.evaluate_policy,
            request,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=FOREVER,
            summary="evaluate policy",
        )
        self.state.evaluation = evaluation
        verdict = evaluation.verdict
        events = [
            self._event(AuditKind.REQUESTED, actor=request.requester, payload=request),
            self._event(AuditKind.VERDICT, payload=verdict),
        ]
        if verdict.effect == "allow" and self._patches.write_ahead_with_decision:
            events.append(self._start_event())
        await self._audit(*events)

        if verdict.effect == "deny":
            return await self._finish(Status.DENIED_BY_POLICY, error=verdict.reason)

        if verdict.effect == "require_approval":
            outcome = await self._wait_for_approval(verdict)
            if outcome is not None:
                return await self._finish(outcome, error=self.state.error)

        return await self._execute(evaluation)

    async def _wait_for_approval(self, verdict: Verdict) -> Status | None:
        """Notify and wait through each escalation stage; None means approved."""
        assert verdict.expires_after is not None, "policy guarantees an expiry for approvals"
        state = self.state
        state.phase = Phase.PENDING
        state.eligible = sorted({r.group for r in verdict.approvals})
        state.expires_at = state.created_at + verdict.expires_after
        self._publish()
        self._notify(state.eligible, stage=0)

        deadlines = [(state.created_at + s.after, s) for s in verdict.escalation]
        for deadline, stage in [*deadlines, (state.expires_at, None)]:
            label = (
                f"approval stage {state.level + 1} ({format_duration(deadline - state.created_at)})"
                if stage is not None
                else f"expiry ({format_duration(deadline - state.created_at)})"
            )
            if await self._wait_until(deadline, label):
                break
            if stage is None:
                # Close the door before awaiting anything, so no decision lands after expiry.
                state.finish(
                    Status.EXPIRED, f"no decision before {state.expires_at:%Y-%m-%d %H:%M} UTC"
                )
                await self._audit(self._event(AuditKind.EXPIRED, payload={"level": state.level}))
                return Status.EXPIRED
            state.level += 1
            metrics.escalated()
            state.eligible = sorted({*state.eligible, *stage.add_groups})
            await self._audit(
                self._event(
                    AuditKind.ESCALATED,
                    payload={
                        "level": state.level,
                        "notify": list(stage.notify),
                        "eligible_groups": list(state.eligible),
                    },
                )
            )
            self._publish()
            self._notify(list(stage.notify), stage=state.level)

        if state.phase is Phase.APPROVED:
            return None  # approved: quorum met
        return state.status  # denied or cancelled by a handler

    async def _wait_until(self, deadline: datetime, label: str) -> bool:
        """Wait for a resolution until `deadline`; False when the time ran out first."""
        remaining = deadline - workflow.now()
        if remaining <= timedelta(0):
            return self._resolved()
        try:
            await workflow.wait_condition(self._resolved, timeout=remaining, timeout_summary=label)
        except TimeoutError:
            return self._resolved()
        return True

    def _resolved(self) -> bool:
        return not self.state.awaits_decisions

    async def _execute(self, evaluation: Evaluation) -> ActionStatus:
        """Write the start to the ledger, then run the executor once approved or allowed."""
        executor = evaluation.executor
        assert executor is not None, "evaluate_policy denies action types without an executor"
        state = self.state
        request = state.request
        state.phase = Phase.EXECUTING
        self._publish()
        self._update_notifications()
        # Write-ahead: the action never runs unless its approval is on record first.
        if not state.start_recorded:
            await self._audit(self._start_event())
        # The decision handler may have issued the row and still be writing it.
        await workflow.wait_condition(lambda: state.start_durable)
        refusal = await self._claim_execution()
        if refusal is not None:
            return await self._finish(Status.FAILED, error=refusal)
        if request.execution == "caller":
            return await self._await_caller(executor.timeout)
        try:
            result = await workflow.execute_activity_method(
                ExecutionActivities.execute_action,
                ExecuteInput(request=request, idempotency_key=workflow.info().workflow_id),
                start_to_close_timeout=executor.timeout,
                heartbeat_timeout=executor.heartbeat_timeout,
                retry_policy=IDEMPOTENT_RETRY if executor.idempotent else AT_MOST_ONCE,
                summary=f"execute {request.action} on {request.target}",
            )
        except ActivityError as err:
            return await self._finish(
                Status.FAILED, error=_execution_error(err, idempotent=executor.idempotent)
            )
        state.result = result.result
        return await self._finish(Status.SUCCEEDED, result_recorded=True)

    async def _await_caller(self, allowed: timedelta) -> ActionStatus:
        """Caller mode: the requester runs the approved action and reports how it went."""
        state = self.state
        state.phase = Phase.AWAITING_REPORT
        try:
            await workflow.wait_condition(
                lambda: state.report is not None,
                timeout=allowed,
                timeout_summary=f"caller runs {state.request.action}",
            )
        except TimeoutError:
            return await self._finish(
                Status.FAILED,
                error=(
                    f"outcome unknown, verify manually: the caller did not report within "
                    f"{format_duration(allowed)}"
                ),
            )
        assert state.report is not None
        if state.report.error is not None:
            return await self._finish(Status.FAILED, error=state.report.error)
        state.result = state.report.result
        return await self._finish(Status.SUCCEEDED, result_recorded=True)

    async def _finish(
        self, status: Status, *, error: str | None = None, result_recorded: bool = False
    ) -> ActionStatus:
        """Record the outcome, bring messages up to date, and return the final status."""
        self.state.finish(status, error)
        self._publish()
        metrics.action_finished(self.state.request.action, status.value)
        events = []
        if status in (Status.SUCCEEDED, Status.FAILED):
            result = self.state.result if result_recorded else None
            events.append(
                self._event(AuditKind.EXECUTION_RESULT, payload={"result": result, "error": error})
            )
        events.append(
            self._event(AuditKind.OUTCOME, payload={"status": status.value, "error": error})
        )
        await self._audit(*events)
        self._update_notifications()
        # Messages first (their tasks may still be running), then any decision mid-flight.
        while self._background:
            pending, self._background = self._background, []
            await asyncio.gather(*pending)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.status()

    async def _reject(self, request: ActionRequest, refusal: DecisionRefused) -> ActionStatus:
        """End a run whose request is not the gateway's: recorded, never evaluated or run."""
        attempt = self._refusal(request.requester, "request", refusal)
        self.state.refused.append(attempt)
        metrics.refused(attempt.code.value)
        await self._audit(
            self._event(AuditKind.REQUESTED, actor=request.requester, payload=request),
            self._event(AuditKind.REFUSED, actor=request.requester, payload=attempt),
        )
        return await self._finish(
            Status.REJECTED, error=f"request refused ({refusal.code.value}): {refusal.message}"
        )

    # --- runs -----------------------------------------------------------------------------

    def _runs_recorded(self) -> bool:
        """Whether this run records its run id and checks for earlier runs (patched)."""
        # Decided at the top of run() (handlers of the first activation agree: memoised).
        if self._patches.runs is None:
            self._patches.runs = workflow.patched(RUN_LEDGER)
        return self._patches.runs

    async def _earlier_execution(self) -> DecisionRefused | None:
        """Refuse a run of a workflow id another run already started executing."""
        if not self._runs_recorded():
            return None
        found = await workflow.execute_local_activity_method(
            AuditActivities.check_run,
            RunCheck(action_id=workflow.info().workflow_id, run_id=workflow.info().run_id),
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=FOREVER,
            summary="check earlier runs",
        )
        if found.executed_by is None:
            return None
        when = f" at {found.at:%Y-%m-%d %H:%M:%S} UTC" if found.at else ""
        return DecisionRefused(
            code=RefusalCode.ALREADY_EXECUTED,
            message=(
                f"run {found.executed_by} of this action already started executing it{when}; "
                + NEVER_TWICE
            ),
        )

    async def _claim_execution(self) -> str | None:
        """Claim the action's one execution in the ledger; the refusal when another run has."""
        if not self._runs_recorded():
            return None
        info = workflow.info()
        claim = await workflow.execute_local_activity_method(
            AuditActivities.claim_execution_activity,
            ExecutionClaim(
                action_id=info.workflow_id, run_id=info.run_id, digest=self.state.digest
            ),
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=FOREVER,
            summary="claim execution",
        )
        if claim.granted:
            return None
        when = f" at {claim.claimed_at:%Y-%m-%d %H:%M:%S} UTC" if claim.claimed_at else ""
        return f"already executed by run {claim.run_id}{when}; {NEVER_TWICE}"

    # --- signatures -----------------------------------------------------------------------

    def _signatures_required(self) -> bool:
        """Whether this run requires signed messages (runs from before the patch do not)."""
        # Decided at the top of run(); a handler running in the first activation decides it
        # at the same point, and patched() is memoised, so both always agree.
        if self._patches.signed is None:
            self._patches.signed = workflow.patched(SIGNED_MESSAGES)
        return self._patches.signed

    async def _verify(
        self,
        signature: Signature | None,
        expected: dict[str, JsonValue],
        *,
        now: datetime | None = None,
        not_before: datetime | None = None,
    ) -> DecisionRefused | None:
        """The first step for every message: the gateway's, for this action, fresh, and new."""
        if not self._signatures_required():
            return None
        if signature is None:
            return DecisionRefused(
                code=RefusalCode.UNSIGNED,
                message=f"the {expected['kind']} carries no gateway signature; only the "
                "signoff gateway can send it",
            )
        result = await workflow.execute_local_activity_method(
            SignatureActivities.verify_signature,
            VerifyInput(
                signature=signature,
                expected=expected,
                now=now or workflow.now(),
                not_before=not_before,
            ),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=FOREVER,
            summary=f"verify {expected['kind']} signature",
        )
        if result.code is not None:
            return DecisionRefused(code=result.code, message=result.message)
        assert result.id is not None, "a signature that holds has an id"
        if result.id in self.state.seen_ids:
            return DecisionRefused(
                code=RefusalCode.REPLAYED,
                message=f"signed message {result.id} was already delivered to this action",
            )
        self.state.seen_ids.add(result.id)
        return None

    def _refusal(
        self, actor: str, kind: MessageKind, refusal: DecisionRefused, *, channel: str = "api"
    ) -> RefusedAttempt:
        return RefusedAttempt(
            approver=actor,
            kind=kind,
            channel=channel,
            digest=self.state.digest,
            code=refusal.code,
            message=refusal.message,
            at=workflow.now(),
        )

    async def _require_signed(
        self,
        signature: Signature | None,
        claims: dict[str, JsonValue],
        actor: str,
        kind: MessageKind,
    ) -> None:
        """A cancel or report must be signed for this run; otherwise refuse it, recorded."""
        refusal = await self._verify(
            signature, claims, not_before=workflow.info().workflow_start_time
        )
        if refusal is not None:
            await self._refuse_message(actor, kind, refusal)

    async def _refuse_message(
        self, actor: str, kind: MessageKind, refusal: DecisionRefused
    ) -> None:
        """Record a refused cancel or report in state, history and ledger, then fail it."""
        attempt = self._refusal(actor, kind, refusal)
        self.state.refused.append(attempt)
        metrics.refused(attempt.code.value)
        self._publish()
        await self._audit(self._event(AuditKind.REFUSED, actor=actor, payload=attempt))
        raise ApplicationError(attempt.message, attempt, type=MESSAGE_REFUSED, non_retryable=True)

    # --- decisions ------------------------------------------------------------------------

    @workflow.update
    async def decide(self, request: DecisionRequest) -> ActionStatus:
        """Approve or deny; refused attempts are recorded and fail the update with the reason."""
        refusal = await self._apply_decision(request)
        if refusal is not None:
            raise ApplicationError(
                refusal.message, refusal, type=DECISION_REFUSED, non_retryable=True
            )
        return self.status()

    @workflow.signal(name="decision")
    async def decision(self, request: DecisionRequest) -> None:
        """The same decision as a signal; it must be signed like any decision, refusals recorded."""
        await self._apply_decision(request)

    @workflow.update
    async def cancel(self, request: CancelRequest) -> ActionStatus:
        """Cancel a pending action; only its requester may."""
        await self._require_signed(
            request.signature,
            cancel_claims(request, workflow.info().workflow_id),
            request.by,
            "cancel",
        )
        state = self.state
        if request.by != state.request.requester:
            raise ApplicationError(
                "only the requester may cancel this action", type=NOT_REQUESTER, non_retryable=True
            )
        if not state.awaits_decisions:
            raise ApplicationError(
                f"the action is {state.status.value}, not pending", type=NOT_PENDING
            )
        state.finish(
            Status.CANCELLED,
            f"cancelled by {request.by}" + (f": {request.reason}" if request.reason else ""),
        )
        state.decided_at = workflow.now()
        await self._audit(
            self._event(AuditKind.CANCELLED, actor=request.by, payload={"reason": request.reason})
        )
        return self.status()

    @workflow.update
    async def report(self, report: ExecutionReport) -> ActionStatus:
        """Caller mode: the requester reports the result of running the approved action."""
        await self._require_signed(
            report.signature,
            report_claims(report, workflow.info().workflow_id),
            report.by,
            "report",
        )
        if self.state.report is not None:
            # Another report was accepted while this one was being verified.
            raise ApplicationError(
                "the action's result was already reported", type=NOT_AWAITING_REPORT
            )
        self.state.report = report
        await workflow.wait_condition(lambda: self.state.phase is Phase.FINISHED)
        return self.status()

    @report.validator
    def _validate_report(self, report: ExecutionReport) -> None:
        state = self.state
        if report.by != state.request.requester:
            raise ApplicationError(
                "only the requester reports a caller-run action", type=NOT_REQUESTER
            )
        if (
            state.request.execution != "caller"
            or state.phase not in (Phase.EXECUTING, Phase.AWAITING_REPORT)
            or state.report is not None
        ):
            raise ApplicationError(
                f"the action is {state.status.value}; nothing to report",
                type=NOT_AWAITING_REPORT,
            )

    @workflow.query
    def status(self) -> ActionStatus:
        """The action's current status."""
        return self.state.snapshot(workflow.info().workflow_id)

    async def _apply_decision(self, request: DecisionRequest) -> RefusedAttempt | None:
        """Authorise one decision in the workflow; refusal or acceptance lands in history."""
        found = PrincipalLookupResult()
        # Signed for this action, after this run started: ids are only unique within one run.
        refusal = await self._verify(
            request.signature,
            decision_claims(request, workflow.info().workflow_id),
            not_before=workflow.info().workflow_start_time,
        ) or rules.decision_refusal(self.status(), request)
        if refusal is None:
            owner_now: str | None = None
            # patched() is memoised: this agrees with run(), even in a handler that runs first.
            if workflow.patched(OWNER_AT_DECISION):
                found, requester_now = await asyncio.gather(
                    self._resolve(request.approver, "approver"),
                    self._resolve(self.state.request.requester, "requester"),
                )
                owner_now = requester_now.principal.owner if requester_now.principal else None
            else:
                found = await self._resolve(request.approver, "approver")
            if found.principal is None:
                found = PrincipalLookupResult(principal=self._idp_approver(request))
            # Re-check: another decision may have resolved the action while we looked up.
            status = self.status()
            refusal = rules.decision_refusal(status, request) or rules.approver_refusal(
                status, request.approver, found.principal, owner_now=owner_now
            )
        if refusal is not None:
            attempt = RefusedAttempt(
                approver=request.approver,
                decision=request.decision,
                channel=request.channel,
                digest=request.digest,
                code=refusal.code,
                message=refusal.message,
                at=workflow.now(),
            )
            self.state.refused.append(attempt)
            metrics.refused(attempt.code.value)
            self._publish()
            await self._audit(
                self._event(
                    AuditKind.REFUSED,
                    actor=request.approver,
                    channel=request.channel,
                    payload=attempt,
                )
            )
            return attempt

        assert found.principal is not None, "approver_refusal refuses principals nobody knows"
        state = self.state
        accepted = Decision(**request.model_dump(), at=workflow.now())
        state.accept(accepted, found.principal.groups)
        if state.decided_at is not None:
            metrics.decided(state.decided_at - state.created_at)
        self._publish()
        events = [
            self._event(
                AuditKind.DECISION,
                actor=request.approver,
                channel=request.channel,
                payload={
                    # Rows of people the directory lists read as they did before the field.
                    **accepted.model_dump(
                        mode="json",
                        exclude={"approver_groups"} if accepted.approver_groups is None else None,
                    ),
                    "groups": found.principal.groups,
                },
            )
        ]
        if state.phase is Phase.APPROVED and self._patches.write_ahead_with_decision:
            events.append(self._start_event())
        await self._audit(*events)
        if not self._patches.ordered_updates or not self._resolved():
            self._update_notifications()
        return None

    def _idp_approver(self, request: DecisionRequest) -> Principal | None:
        """A person known only to the identity provider, as the gateway's signature vouches."""
        # Only on a verified signature: the groups are part of the signed claims, so someone
        # with Temporal access but not the gateway's key cannot add or change them.
        if request.approver_groups is None or not self._signatures_required():
            return None
        # patched() is memoised: this agrees with run(), even in a handler that runs first.
        if not workflow.patched(IDP_APPROVERS):
            return None
        return Principal(id=request.approver, kind="human", groups=list(request.approver_groups))

    async def _resolve(self, principal_id: str, role: str) -> PrincipalLookupResult:
        """Who a principal is now, as the worker's directory says."""
        return await workflow.execute_local_activity_method(
            PolicyActivities.resolve_principal,
            PrincipalLookup(id=principal_id),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=FOREVER,
            summary=f"resolve {role} {principal_id}",
        )

    # --- visibility, notifications and audit ---------------------------------------------

    def _publish(self) -> None:
        """Upsert search attributes and current details so the UI shows what waits on whom."""
        state = self.state
        verdict = state.verdict
        status = state.status
        eligible = list(state.eligible) if status is Status.PENDING_APPROVAL else []
        workflow.upsert_search_attributes(
            [
                sa.STATUS.value_set(status.value),
                sa.ACTION.value_set(state.request.action),
                sa.TARGET.value_set(state.request.target),
                sa.REQUESTER.value_set(state.request.requester),
                sa.RISK.value_set(verdict.risk if verdict else state.request.risk or "unknown"),
                sa.ESCALATION.value_set(state.level),
                sa.GROUPS.value_set(eligible),
            ]
        )
        workflow.set_current_details(state.details())
        # patched() is memoised: this agrees with run(), even in a handler that runs first.
        if workflow.patched(INBOX_MEMO):
            self._publish_inbox_memo()

    def _publish_inbox_memo(self) -> None:
        """Put the status a pending action's inbox row needs in its memo; clear it after."""
        memo: Any = None
        if self.state.status is Status.PENDING_APPROVAL:
            status = self.status().model_dump(mode="json")
            if len(json.dumps(status)) <= INBOX_MEMO_MAX_CHARS:
                memo = status
        if memo is None and not self._inbox_memo:
            return  # nothing there to clear
        self._inbox_memo = memo is not None
        workflow.upsert_memo({INBOX_MEMO_KEY: memo})

    def _notify(self, groups: list[str], *, stage: int) -> None:
        """Post the request to every configured channel, without holding up the decision."""
        assert self.state.evaluation is not None
        for channel in self.state.evaluation.channels:
            self._background.append(asyncio.create_task(self._notify_one(channel, groups, stage)))

    async def _notify_one(self, channel: str, groups: list[str], stage: int) -> None:
        try:
            result = await workflow.execute_activity_method(
                Notifications.notify,
                NotifyInput(
                    channel=channel,
                    status=self.status(),
                    groups=groups,
                    stage=stage,
                    ui_url=self._ui_url(),
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOTIFY_RETRY,
                summary=f"notify {channel} {', '.join(groups)}"
                + (f" (escalation {stage})" if stage else ""),
            )
            refs = result.refs
        except ActivityError as err:
            # A broken channel never blocks the approval: the API still decides, and the
            # status shows what failed.
            refs = [
                NotificationRef(
                    channel=channel,
                    destination=", ".join(groups),
                    error=_cause_message(err),
                    stage=stage,
                )
            ]
        self.state.notifications.extend(refs)
        self._publish()
        delivered = [r for r in refs if not r.error]
        if delivered:
            await self._audit(
                self._event(
                    AuditKind.NOTIFIED,
                    channel=channel,
                    payload={"refs": [r.model_dump(mode="json") for r in delivered]},
                )
            )

    def _update_notifications(self) -> None:
        """Bring posted messages up to date (progress, final status, buttons removed)."""
        channels = sorted({ref.channel for ref in self.state.notifications if not ref.error})
        if not self._patches.ordered_updates:
            for channel in channels:
                refs = self._delivered(channel)
                self._background.append(asyncio.create_task(self._update_one(channel, refs)))
            return
        for channel in channels:
            self._stale_channels.add(channel)
            if channel not in self._updating_channels:
                self._updating_channels.add(channel)
                self._background.append(asyncio.create_task(self._keep_current(channel)))

    async def _keep_current(self, channel: str) -> None:
        """Send one channel's updates in order; changes made meanwhile fold into the next."""
        try:
            while channel in self._stale_channels:
                self._stale_channels.discard(channel)
                await self._update_one(channel, self._delivered(channel))
        finally:
            self._updating_channels.discard(channel)

    def _delivered(self, channel: str) -> list[NotificationRef]:
        return [r for r in self.state.notifications if r.channel == channel and not r.error]

    async def _update_one(self, channel: str, refs: list[NotificationRef]) -> None:
        try:
            await workflow.execute_activity_method(
                Notifications.notify_update,
                NotifyUpdateInput(
                    channel=channel, status=self.status(), refs=refs, ui_url=self._ui_url()
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOTIFY_RETRY,
                summary=f"update {channel} messages",
            )
        except ActivityError as err:
            workflow.logger.warning("could not update %s messages: %s", channel, err)

    def _ui_url(self) -> str | None:
        evaluation = self.state.evaluation
        base = evaluation.ui_base_url if evaluation else None
        if not base:
            return None
        info = workflow.info()
        return f"{base.rstrip('/')}/namespaces/{info.namespace}/workflows/{info.workflow_id}"

    def _event(
        self,
        kind: AuditKind,
        *,
        actor: str | None = None,
        channel: str | None = None,
        payload: object = None,
    ) -> AuditEvent:
        """A ledger event with the next per-action sequence number and workflow time."""
        if hasattr(payload, "model_dump"):
            payload = payload.model_dump(mode="json")
        event = AuditEvent(
            action_id=workflow.info().workflow_id,
            run_id=workflow.info().run_id if self._runs_recorded() else "",
            seq=self.state.seq,
            kind=kind,
            digest=self.state.digest,
            actor=actor,
            channel=channel,
            at=workflow.now(),
            payload=payload or {},
        )
        self.state.seq += 1
        return event

    def _start_event(self) -> AuditEvent:
        """The write-ahead row: written before the executor runs, never after."""
        evaluation = self.state.evaluation
        executor = evaluation.executor if evaluation else None
        assert executor is not None, "evaluate_policy denies action types without an executor"
        self.state.start_recorded = True
        return self._event(
            AuditKind.EXECUTION_STARTED,
            payload={
                "executor": executor.model_dump(mode="json"),
                "runs_in": self.state.request.execution,
            },
        )

    async def _audit(self, *events: AuditEvent) -> None:
        """Append events to the ledger; retried until Postgres accepts them, never skipped."""
        await workflow.execute_local_activity_method(
            AuditActivities.record_audit_events,
            AuditBatch(events=list(events)),
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=FOREVER,
            summary="audit " + ", ".join(e.kind.value for e in events),
        )
        if any(e.kind is AuditKind.EXECUTION_STARTED for e in events):
            self.state.start_durable = True


def _cause_message(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError | ActivityTimeout):
        return cause.message
    return str(cause or err)


def _execution_error(err: ActivityError, *, idempotent: bool) -> str:
    """Explain an execution failure; a vanished non-idempotent run is never guessed at."""
    if isinstance(err.cause, ActivityTimeout) and not idempotent:
        return OUTCOME_UNKNOWN
    return _cause_message(err)
