"""The action workflow: one durable run per privileged action an agent asks for.

Evaluate policy, then deny, run, or wait for enough authorised humans; escalate on durable
timers; expire closed; execute only after approval; record every step for the audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import JsonValue
from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import TimeoutError as ActivityTimeout
from temporalio.workflow import ParentClosePolicy

from signoff.models import (
    ActionRequest,
    ActionStatus,
    AmendRequest,
    BreakGlassStatus,
    CancelRequest,
    Decision,
    DecisionRefused,
    DecisionRequest,
    ExecutionReport,
    GrantWindow,
    MessageKind,
    NotificationRef,
    Principal,
    RefusalCode,
    RefusedAttempt,
    Reminders,
    RevertProgress,
    Review,
    ReviewRequest,
    RevokeRequest,
    Signature,
    Status,
    UndoRequest,
    Verdict,
    format_duration,
)
from workflows import grants, metrics, rules
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
    AdmissionCheck,
    AdmissionRecord,
    AuditBatch,
    AuditEvent,
    AuditKind,
    DecisionCheck,
    Evaluation,
    ExecuteInput,
    ExecutionClaim,
    NotifyInput,
    NotifyUpdateInput,
    PrincipalLookup,
    PrincipalLookupResult,
    RevertInput,
    RunCheck,
    RunCheckResult,
    VerifyInput,
    VerifyResult,
    WindowStart,
    WriteAhead,
    execution_started_payload,
    executor_records_outcome,
    kept_outcome_seq,
    outcome_events,
    window_id_for,
)
from workflows.signing import (
    amend_claims,
    cancel_claims,
    decision_claims,
    report_claims,
    request_claims,
    review_claims,
    revoke_claims,
    undo_claims,
)
from workflows.state import ActionState, EndRequest, Phase
from workflows.window import WindowWorkflow

# Activities are called by reference, so their names are written once, beside each activity.
with workflow.unsafe.imports_passed_through():
    from activities.admission import Admission
    from activities.audit import AuditActivities
    from activities.decision_checks import DecisionChecks
    from activities.execution import ExecutionActivities
    from activities.notify import Notifications
    from activities.policy import PolicyActivities
    from activities.verify import SignatureActivities
    from channels.console import ConsoleNotifier

WORKFLOW_NAME = "SignoffAction"

# Shape v5 writes the console channel's lines from the workflow: Temporal's adapter leaves
# them out while replaying, so each is logged once, and no activity or task is spent on them.
_CONSOLE_LOG = workflow.LoggerAdapter(logging.getLogger("signoff.notify"), None)
_CONSOLE_LOG.workflow_info_on_message = False

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
# Patch: a decision on a rule with `step_up: webauthn` counts only when the gateway signed that
# it verified a security-key assertion for it (the approval page); else refused, recorded.
STEP_UP = "step-up"
# Patch: a rule's `remind` re-notifies the eligible groups on durable timers while the action
# waits, until decided, escalated or expired (issue 17).
REMINDERS = "reminders"
# Patch: an eligible approver may amend (approve with changes): the action ends superseded and
# a successor with the new params starts on the requester's behalf (issue 17).
AMENDMENTS = "amendments"
# Patch: a person in the rule's break-glass groups forces the action through at once (a signed
# claim with a reason); the run then stays open for the mandatory after-the-fact review.
BREAK_GLASS = "break-glass"
# Patch: an approval whose approvers all asked for a window opens an approval window, its own
# workflow (workflows.window), before the action runs.
APPROVAL_WINDOWS = "approval-windows"
# Patch: an action whose executor declares a revert stays open while it is in force (its
# `duration`) and open to an undo (the rule's undo window); then its revert runs, retried until
# it succeeds. An undo's own action runs the revert (issue 15).
REVERTIBLE_ACTIONS = "revertible-actions"
# Patch: a grant ends when its timer fires, not when workflow.now() says the end has passed. A
# worker that picks the run up after another died may see a now() older than the timer's fire
# time on the live task but not on replay; comparing with now() then started a second timer
# live and went straight to the revert on replay: a nondeterminism error (issue 15).
GRANT_ENDS_ON_TIMER = "grant-ends-on-timer"
# One revert attempt: a few quick retries, then the workflow records the failure and waits.
REVERT_ATTEMPT = RetryPolicy(
    maximum_attempts=3, initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=5)
)
REVERT_BACKOFF_MAX = timedelta(minutes=5)
# The status of a pending action goes in its memo (INBOX_MEMO_KEY) whenever its search
# attributes are published, so an inbox renders from one visibility list, not a query per row.
INBOX_MEMO = "inbox-memo"
INBOX_MEMO_KEY = "signoff_inbox"
# Patch: a run that starts with this code has every patch above under this one marker (one
# marker and one TemporalChangeVersion upsert per run, not fifteen of each), and also fewer
# round trips in a row on the way to the executor (issue 16): a message's signature is checked
# while its principals are looked up, and a request's while earlier runs are; the write-ahead
# row and the execution claim go in one local activity; the executor is scheduled before the
# channels' message updates; the console channel is written by the workflow, not an activity.
# Every check still happens, and before anything counts or runs.
# Runs started before keep their own markers and replay as they did. A later patch is asked
# for on its own (`workflow.patched`), never implied by this one.
SHAPE_V5 = "shape-v5"
IN_SHAPE_V5 = frozenset(
    {
        ORDERED_MESSAGE_UPDATES,
        WRITE_AHEAD_WITH_DECISION,
        OWNER_AT_DECISION,
        SIGNED_MESSAGES,
        RUN_LEDGER,
        IDP_APPROVERS,
        STEP_UP,
        REMINDERS,
        AMENDMENTS,
        BREAK_GLASS,
        APPROVAL_WINDOWS,
        REVERTIBLE_ACTIONS,
        GRANT_ENDS_ON_TIMER,
        INBOX_MEMO,
    }
)
# Patch: a run that starts with this code has shape v5 (implied, no marker of its own) and
# admits its request in one local activity: the gateway's signature, then earlier runs, then
# the policy, each only if the one before let it through (issue 16). Runs started before keep
# their markers and replay as they did.
SHAPE_V6 = "shape-v6"
# Patch: a run that starts with this code has shape v6 (implied, no marker of its own) and times
# a decision when it arrives, before the local activity that checks it. Core may resolve a local
# activity in an earlier workflow task on replay than it ran in, so a clock read after one can
# replay earlier than it ran: the approval's time, and the window it opened, would then disagree
# with the same run replayed for a query. Runs started before keep their markers and replay as
# they did.
SHAPE_V7 = "shape-v7"
# Patch: a run that starts with this code has shape v7 (implied, no marker of its own) and
# publishes less (issue 16): a pending action's first task writes the console's lines before it
# publishes, so one upsert of its search attributes and memo carries them (two before), and a
# run clears the inbox memo only if it wrote one or was started with one. Each upsert is a
# history event and a visibility write. Runs started before keep their markers and replay as
# they did.
SHAPE_V8 = "shape-v8"
# Patch: a run that starts with this code has shape v8 (implied, no marker of its own) and
# writes an admitted request's first ledger rows in its admission's local activity (issue 16):
# the request and the verdict and, when the policy allows the action, the write-ahead row and
# the execution claim. One local activity fewer for every action; every check still comes
# first, so a refused request writes nothing there. Runs started before keep their markers and
# replay as they did.
SHAPE_V9 = "shape-v9"
# Patch: a run that starts with this code has shape v9 (implied, no marker of its own) and
# leaves a success's ledger rows to the executor's activity (issue 16). Its write-ahead row
# names the two places after it, kept for the outcome's rows (`outcome_seq`); the activity reads
# them from the ledger, with the row it checks anyway, and writes them once the action has
# succeeded, before it reports back. One local activity fewer for every executed action. Other
# outcomes are the run's, written at those places; when the run cannot tell whether the activity
# wrote its success (its completion was lost), the ledger's rows win. An activity of an older
# release writes nothing, and the run writes them all. Runs started before keep their markers
# and replay as they did.
SHAPE_V10 = "shape-v10"
# Patch: a run that starts with this code has shape v10 (implied, no marker of its own) and
# writes a refusal that arrives while its admission runs only after the admission returns.
# Admission numbers its rows from the first free place and holds that place until it returns; a
# refusal written meanwhile (a decision sent while the action was evaluating, or one a reset
# reapplied) took the same place, the ledger refused one of the two, and the run stayed in
# evaluating. Runs started before keep their markers and replay as they did.
SHAPE_V11 = "shape-v11"
# Patch, asked for only where it changes the answer: a decision, amendment or review that
# arrived while the action awaited it, and found it resolved by another once its decider was
# looked up, is refused for who sent it when that alone refuses it (an agent, a party, someone
# unknown), not as too late: the record says an agent tried, whichever check finished first.
# An amendment or review found late right after its signature check has its sender looked up
# all the same. Runs that refused such a message before replay as they did.
WHO_BEFORE_WHEN = "who-before-when"
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
    reminders: bool = False
    revertible: bool = False
    grant_ends_on_timer: bool = False
    # Decided lazily too: a handler may run before run() in the first activation.
    signed: bool | None = None
    runs: bool | None = None
    amendments: bool | None = None
    break_glass: bool = False
    windows: bool = False
    # Decided first of all, lazily too: whether this run has the one-marker shape (SHAPE_V5),
    # the one-step admission (SHAPE_V6, which implies it) and decisions timed on arrival
    # (SHAPE_V7, which implies both).
    shape_v5: bool | None = None
    shape_v6: bool | None = None
    shape_v7: bool | None = None
    shape_v8: bool | None = None
    shape_v9: bool | None = None
    shape_v10: bool | None = None
    shape_v11: bool | None = None


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
        # Whether the approval's window (if any) is open: a decision asking for one waits.
        self._window_settled = False
        self._undo_task: asyncio.Task[None] | None = None
        # Whether the memo may hold an inbox row (patch inbox-memo). At first it may: whoever
        # started the run could have put one there, so the first publish always writes it.
        self._inbox_memo = True
        # Whether the admission wrote the request's first ledger rows (shape v9).
        self._recorded_on_admission = False
        # Whether an admission that numbers its own rows is running (shape v9): nothing else
        # may take a place in the ledger until it returns (shape v11).
        self._admitting = False

    # --- the process ----------------------------------------------------------------------

    @workflow.run
    async def run(self, request: ActionRequest) -> ActionStatus:
        """Evaluate, wait for approval when required, execute, and return the outcome."""
        # Every patch is decided here, before the first local activity: core may resolve a
        # local activity in an earlier workflow task on replay than it ran in, and a patch
        # asked for after it would then be missed.
        if self._shape_v8():
            # Whoever started the run could have put an inbox row in its memo: cleared then.
            # The key only, undecoded: a planted value that decodes to nothing must not fail us.
            self._inbox_memo = INBOX_MEMO_KEY in workflow.info().raw_memo
        self._shape_v5()
        self._patches.ordered_updates = self._patched(ORDERED_MESSAGE_UPDATES)
        self._patches.write_ahead_with_decision = self._patched(WRITE_AHEAD_WITH_DECISION)
        self._patched(OWNER_AT_DECISION)
        self._patched(IDP_APPROVERS)
        self._patched(STEP_UP)
        self._patches.reminders = self._patched(REMINDERS)
        self._amendments_allowed()
        self._patches.break_glass = self._patched(BREAK_GLASS)
        self._patches.windows = self._patched(APPROVAL_WINDOWS)
        self._patches.revertible = self._patched(REVERTIBLE_ACTIONS)
        self._patches.grant_ends_on_timer = self._patched(GRANT_ENDS_ON_TIMER)
        self._patched(INBOX_MEMO)
        self._signatures_required()
        self._runs_recorded()
        # Only the gateway's key makes a request: a start by anyone else with Temporal access
        # is refused here, before the policy or an executor sees it. Its age counts from the
        # start, not from when a worker first ran it (workers may be down for a deploy).
        admitted = await (self._admit(request) if self._shape_v6() else self._admit_v5(request))
        if isinstance(admitted, DecisionRefused):
            return await self._reject(request, admitted)
        evaluation = admitted
        self.state.evaluation = evaluation
        verdict = evaluation.verdict
        if request.break_glass is not None and self._patches.break_glass:
            return await self._break_glass(evaluation)
        if not self._recorded_on_admission:
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
            if self._patches.windows:
                await self._open_window(verdict)

        return await self._execute(evaluation)

    async def _wait_for_approval(self, verdict: Verdict) -> Status | None:
        """Notify and wait through each escalation stage; None means approved."""
        assert verdict.expires_after is not None, "policy guarantees an expiry for approvals"
        state = self.state
        state.phase = Phase.PENDING
        state.eligible = sorted({r.group for r in verdict.approvals})
        state.expires_at = state.created_at + verdict.expires_after
        await self._publish_and_notify(state.eligible, stage=0)
        if self._patches.reminders and verdict.remind is not None:
            self._background.append(asyncio.create_task(self._remind(verdict.remind)))

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
            await self._publish_and_notify(list(stage.notify), stage=state.level)

        if state.phase is Phase.APPROVED:
            return None  # approved: quorum met
        return state.status  # denied or cancelled by a handler

    async def _remind(self, remind: Reminders) -> None:
        """Re-notify the eligible groups every `remind.every`, at most `remind.max` times.

        Stops for good once the action is decided, cancelled or expired, or escalates (the
        escalation notifies, and a reminder after it would repeat that).
        """
        state = self.state
        level = state.level

        def moved_on() -> bool:
            return self._resolved() or state.level != level

        for count in range(1, remind.max + 1):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    moved_on,
                    timeout=remind.every,
                    timeout_summary=f"reminder {count} ({format_duration(remind.every)})",
                )
            if moved_on():
                return
            self._notify(list(state.eligible), stage=state.level, reminder=count)

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
        # Shape v5 schedules the executor first, so it starts before the messages' updates.
        executor_first = self._shape_v5()
        if not executor_first:
            self._update_notifications()
        # Write-ahead: the action never runs unless its approval is on record first.
        if not state.start_recorded:
            await self._audit(self._start_event())
        # The decision handler may have issued the row and still be writing it.
        await workflow.wait_condition(lambda: state.start_durable)
        refusal = await self._claim_execution()
        if refusal is not None:
            return await self._finish(Status.FAILED, error=refusal)
        if request.execution == "caller" or (
            request.reverts is not None and self._patches.revertible
        ):
            if executor_first:
                self._update_notifications()
            if request.execution == "caller":
                return await self._await_caller(executor.timeout)
            return await self._undo(request)
        try:
            execution = workflow.start_activity_method(
                ExecutionActivities.execute_action,
                ExecuteInput(request=request, idempotency_key=workflow.info().workflow_id),
                start_to_close_timeout=executor.timeout,
                heartbeat_timeout=executor.heartbeat_timeout,
                retry_policy=IDEMPOTENT_RETRY if executor.idempotent else AT_MOST_ONCE,
                summary=f"execute {request.action} on {request.target}",
            )
            if executor_first:
                self._update_notifications()
            result = await execution
        except ActivityError as err:
            return await self._finish(
                Status.FAILED, error=_execution_error(err, idempotent=executor.idempotent)
            )
        state.result = result.result
        if self._patches.revertible and executor.revertible:
            return await self._in_force()
        # Only this run's rows count: a reset's new run replays the result of the run before it.
        recorded = result.recorded_for == workflow.info().run_id
        return await self._finish(Status.SUCCEEDED, result_recorded=True, recorded=recorded)

    async def _record_kept_outcome(
        self, at: int, status: Status, error: str | None, result_recorded: bool
    ) -> tuple[Status, str | None]:
        """Shape v10: write the outcome at the places kept for it; the ledger's, if it has one.

        The executor's activity writes a success there itself. If its completion was lost, the
        run cannot tell whether it did: the success the ledger holds is then the outcome (the
        action ran), and the run's own rows are not written.
        """
        events = self._outcome_events(status, error, result_recorded, False, at=at)
        stored = await workflow.execute_local_activity_method(
            AuditActivities.record_outcome,
            AuditBatch(events=events),
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=FOREVER,
            summary="audit " + ", ".join(e.kind.value for e in events),
        )
        if stored is None:
            return status, error
        self.state.result = stored.result
        return Status(stored.status), stored.error

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
        self,
        status: Status,
        *,
        error: str | None = None,
        result_recorded: bool = False,
        result_logged: bool = False,
        recorded: bool = False,
    ) -> ActionStatus:
        """Record the outcome, bring messages up to date, and return the final status.

        `result_logged`: the execution's result is in the ledger already (a reversible action).
        `recorded`: the executor's activity wrote the outcome's rows (shape v10).
        """
        kept = self.state.outcome_seq
        if kept is not None and not recorded:
            status, error = await self._record_kept_outcome(kept, status, error, result_recorded)
            recorded = True
        self.state.finish(status, error)
        self._publish()
        metrics.action_finished(self.state.request.action, status.value)
        if not recorded:
            await self._audit(*self._outcome_events(status, error, result_recorded, result_logged))
        if self.state.break_glass is not None:
            # The action ran without approval: it is not over until someone else reviews it.
            await self._await_review()
        return await self._settle()

    def _outcome_events(
        self,
        status: Status,
        error: str | None,
        result_recorded: bool,
        result_logged: bool,
        *,
        at: int | None = None,
    ) -> list[AuditEvent]:
        """The ledger rows of an outcome: the execution's result when it ran, then the outcome.

        `at`: the two places kept for them (shape v10): both rows, whatever the status; else
        the next places.
        """
        info = workflow.info()
        events = outcome_events(
            action_id=info.workflow_id,
            run_id=info.run_id if self._runs_recorded() else "",
            digest=self.state.digest,
            seq=self.state.seq if at is None else at,
            at=workflow.now(),
            status=status.value,
            error=error,
            result=self.state.result if result_recorded else None,
            with_result=at is not None
            or (status in (Status.SUCCEEDED, Status.FAILED) and not result_logged),
        )
        if at is None:
            self.state.seq += len(events)
        return events

    async def _settle(self) -> ActionStatus:
        """Bring messages up to date, let handlers finish, and return the final status."""
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

    # --- break-glass ----------------------------------------------------------------------

    async def _break_glass(self, evaluation: Evaluation) -> ActionStatus:
        """A person forces the action through: refused and recorded, or run at once, flagged."""
        state = self.state
        request = state.request
        claim = request.break_glass
        assert claim is not None, "only a break-glass request comes here"
        verdict = evaluation.verdict
        events = [
            self._event(AuditKind.REQUESTED, actor=request.requester, payload=request),
            self._event(AuditKind.VERDICT, payload=verdict),
        ]
        refusal = rules.break_glass_refusal(request, evaluation.requester, verdict)
        if refusal is not None:
            attempt = self._refusal(request.requester, "break_glass", refusal)
            state.refused.append(attempt)
            metrics.refused(attempt.code.value)
            metrics.break_glass(request.action, "refused")
            events.append(self._event(AuditKind.REFUSED, actor=request.requester, payload=attempt))
            await self._audit(*events)
            # Nothing runs: the request asked to skip approval, and it may not.
            return await self._finish(
                Status.REJECTED,
                error=f"break-glass refused ({refusal.code.value}): {refusal.message}",
            )
        spec = verdict.break_glass
        assert spec is not None, "break_glass_refusal refuses rules without break-glass"
        now = workflow.now()
        state.break_glass = BreakGlassStatus(
            by=request.requester,
            reason=claim.reason,
            at=now,
            review_due_at=now + spec.review_within,
        )
        metrics.break_glass(request.action, "granted")
        requester = evaluation.requester
        events.append(
            self._event(
                AuditKind.BREAK_GLASS,
                actor=request.requester,
                payload={
                    "reason": claim.reason,
                    "groups": list(requester.groups) if requester else [],
                    "reviewers": list(spec.reviewers),
                    "review_due_at": state.break_glass.review_due_at.isoformat(),
                },
            )
        )
        # Write-ahead as ever: the break is on record before the executor runs.
        events.append(self._start_event())
        await self._audit(*events)
        return await self._execute(evaluation)

    async def _await_review(self) -> None:
        """Notify the reviewers and escalate on durable timers until someone else reviews it."""
        state = self.state
        glass = state.break_glass
        spec = state.verdict.break_glass if state.verdict else None
        assert glass is not None, "only a break-glass action is reviewed"
        assert spec is not None, "a break-glass action's rule has break_glass"
        glass.reviewer_groups = sorted(set(spec.reviewers))
        self._publish()
        self._notify(list(glass.reviewer_groups), stage=0)
        timeline = sorted(
            [*((glass.at + s.after, s) for s in spec.escalation), (glass.review_due_at, None)],
            key=lambda item: item[0],
        )
        for deadline, stage in timeline:
            offset = format_duration(deadline - glass.at)
            label = (
                f"review stage {glass.review_level + 1} ({offset})"
                if stage is not None
                else f"review due ({offset})"
            )
            if await self._reviewed_by(deadline, label):
                return
            if stage is None:
                glass.review = "overdue"
                metrics.break_glass_overdue(state.request.action)
                await self._audit(
                    self._event(
                        AuditKind.REVIEW_OVERDUE,
                        payload={
                            "due_at": glass.review_due_at.isoformat(),
                            "reviewer_groups": list(glass.reviewer_groups),
                        },
                    )
                )
                self._publish()
                self._update_notifications()
                continue
            glass.review_level += 1
            glass.reviewer_groups = sorted({*glass.reviewer_groups, *stage.add_groups})
            await self._audit(
                self._event(
                    AuditKind.REVIEW_ESCALATED,
                    payload={
                        "level": glass.review_level,
                        "notify": list(stage.notify),
                        "reviewer_groups": list(glass.reviewer_groups),
                    },
                )
            )
            self._publish()
            if stage.notify:
                self._notify(list(stage.notify), stage=glass.review_level)
        # Past every stage: the run stays open, overdue, until somebody reviews it.
        await workflow.wait_condition(lambda: not state.awaits_review)

    async def _reviewed_by(self, deadline: datetime, label: str) -> bool:
        """Wait for the review until `deadline`; False when the time ran out first."""
        remaining = deadline - workflow.now()
        if remaining > timedelta(0):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: not self.state.awaits_review, timeout=remaining, timeout_summary=label
                )
        return not self.state.awaits_review

    @workflow.update
    async def review(self, request: ReviewRequest) -> ActionStatus:
        """Review a break-glass action after the fact; refusals are recorded and fail the update."""
        found = PrincipalLookupResult()
        on_arrival = rules.review_refusal(self.status(), request.reviewer, None, request.digest)
        refusal = await self._verify(
            request.signature,
            review_claims(request, workflow.info().workflow_id),
            not_before=workflow.info().workflow_start_time,
        ) or rules.review_refusal(self.status(), request.reviewer, None, request.digest)
        # Unknown principal is the only refusal a lookup can lift; anything else stands.
        if (
            refusal is None
            or refusal.code is RefusalCode.UNKNOWN_PRINCIPAL
            or self._late_since_arrival(refusal, on_arrival)
        ):
            found = await self._resolve(request.reviewer, "reviewer")
            # Re-check after the lookup: another review may have landed meanwhile.
            status = self.status()
            refusal = self._after_lookup(
                rules.review_refusal(status, request.reviewer, found.principal, request.digest),
                rules.reviewer_identity_refusal(status, request.reviewer, found.principal),
            )
        if refusal is not None:
            attempt = self._refusal(request.reviewer, "review", refusal, channel=request.channel)
            await self._record_refusal(attempt, actor=request.reviewer, channel=request.channel)
            raise ApplicationError(
                attempt.message, attempt, type=DECISION_REFUSED, non_retryable=True
            )
        glass = self.state.break_glass
        assert glass is not None, "review_refusal refuses actions that broke no glass"
        assert found.principal is not None, "review_refusal refuses principals nobody knows"
        overdue = glass.review == "overdue"
        glass.reviewed = Review(**request.model_dump(), at=workflow.now())
        glass.review = "reviewed"
        self._publish()
        await self._audit(
            self._event(
                AuditKind.REVIEWED,
                actor=request.reviewer,
                channel=request.channel,
                payload={
                    **glass.reviewed.model_dump(mode="json", exclude={"signature"}),
                    "groups": list(found.principal.groups),
                    "overdue": overdue,
                },
            )
        )
        return self.status()

    # --- approval windows -----------------------------------------------------------------

    async def _open_window(self, verdict: Verdict) -> None:
        """Open the approval window every approver asked for (the shortest asked for)."""
        state = self.state
        approvals = [d for d in state.decisions if d.decision == "approve"]
        durations = [d.window for d in approvals if d.window is not None]
        offer = verdict.window
        if not approvals or len(durations) != len(approvals) or offer is None:
            self._window_settled = True
            return
        assert state.decided_at is not None, "an approved action has its decision time"
        info = workflow.info()
        window_id = window_id_for(info.workflow_id)
        start = WindowStart(
            action_id=info.workflow_id,
            digest=state.digest,
            rule_id=verdict.rule_id,
            scope=offer.scope,
            holder=state.request.requester,
            on_behalf_of=state.request.on_behalf_of,
            approvers=[d.approver for d in approvals],
            revokers=list(offer.revokers),
            created_at=workflow.now(),
            expires_at=state.decided_at + min(durations),
            duration=min(durations),
            notifications=[n for n in state.notifications if not n.error],
            ui_base_url=state.evaluation.ui_base_url if state.evaluation else None,
        )
        # AlreadyStarted: opened by an earlier run of this action (a reset); that one stands.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await workflow.start_child_workflow(
                WindowWorkflow.run,
                start,
                id=window_id,
                task_queue=info.task_queue,
                # The window outlives the action that opened it, until its own timer ends it.
                parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.WINDOW_STATUS, "active"),
                        SearchAttributePair(sa.WINDOW_HOLDER, start.holder),
                        SearchAttributePair(sa.WINDOW_EXPIRES, start.expires_at),
                    ]
                ),
                static_summary=(
                    f"approval window for {start.holder} until "
                    f"{start.expires_at:%Y-%m-%d %H:%M} UTC: {offer.scope}"
                )[:200],
            )
        state.opened_window = window_id
        self._window_settled = True
        self._publish()

    # --- reversible actions (issue 15) ---------------------------------------------------

    async def _in_force(self) -> ActionStatus:
        """A revertible action ran: keep it in force for its duration and open to an undo."""
        state = self.state
        verdict = state.verdict
        assert verdict is not None
        # Validated by the policy activity before anyone approved it.
        duration = grants.requested_duration(state.request)
        undo_within = verdict.undo_within
        if duration is None and undo_within is None:
            return await self._finish(Status.SUCCEEDED, result_recorded=True)
        now = workflow.now()
        state.window = GrantWindow(start=now, end=now + duration if duration else None)
        state.undo_until = now + undo_within if undo_within else None
        state.phase = Phase.ACTIVE if duration else Phase.UNDOABLE
        self._publish()
        await self._audit(
            self._event(
                AuditKind.EXECUTION_RESULT, payload={"result": state.result, "error": None}
            ),
            self._event(
                AuditKind.ACTIVE,
                payload={
                    "window": state.window.model_dump(mode="json"),
                    "undo_until": state.undo_until.isoformat() if state.undo_until else None,
                },
            ),
        )
        self._update_notifications()
        while True:
            ended = await self._wait_for_end()
            if ended is not None:
                break
            if state.phase is Phase.UNDOABLE:
                # The undo window closed with no undo under way: the action simply succeeded.
                state.undo_until = None
                return await self._finish(Status.SUCCEEDED, result_logged=True)
        window = state.window
        window.ended_at = workflow.now()
        window.ended_by = ended.by
        window.how = "expired" if ended.by == "timer" else ended.how
        window.reason = ended.reason
        if ended.how == "undone":
            # The undo's own action ran the revert (its ledger rows name this action).
            state.undo_until = None
            await self._audit(
                self._event(
                    AuditKind.REVERTED,
                    actor=ended.by,
                    payload={"window": window.model_dump(mode="json"), "by": state.undo_action},
                )
            )
            return await self._finish(Status.REVERTED, result_logged=True)
        state.phase = Phase.REVERTING
        state.undo_until = None
        self._publish()
        self._update_notifications()
        reverted = await self._run_revert(state.request, state.result)
        await self._audit(
            self._event(
                AuditKind.REVERTED,
                actor=None if ended.by == "timer" else ended.by,
                payload={"window": window.model_dump(mode="json"), "result": reverted},
            )
        )
        return await self._finish(Status.REVERTED, result_logged=True)

    async def _wait_for_end(self) -> EndRequest | None:
        """Wait until the window ends, it is revoked or undone; None: the undo window closed."""
        state = self.state
        window = state.window
        assert window is not None
        if state.phase is Phase.ACTIVE:
            assert window.end is not None
            deadline, label = window.end, "grant ends"
        else:
            assert state.undo_until is not None
            deadline, label = state.undo_until, "undo window closes"
        remaining = deadline - workflow.now()

        def ended() -> bool:
            return state.end_requested is not None

        def undo_open() -> bool:
            return state.undo_action is not None

        timer_fired = remaining <= timedelta(0)
        if remaining > timedelta(0):
            try:
                await workflow.wait_condition(ended, timeout=remaining, timeout_summary=label)
            except TimeoutError:
                timer_fired = True
        if ended():
            return state.end_requested
        if state.phase is Phase.ACTIVE and timer_fired and self._patches.grant_ends_on_timer:
            return EndRequest(by="timer", how="revoked")
        if state.phase is Phase.UNDOABLE and undo_open():
            # An undo waits for approval: its outcome decides, not the clock (a grant's end
            # never waits for it).
            await workflow.wait_condition(lambda: ended() or not undo_open())
            if ended():
                return state.end_requested
        if state.phase is Phase.ACTIVE and workflow.now() >= deadline:
            return EndRequest(by="timer", how="revoked")
        return None

    async def _run_revert(self, request: ActionRequest, result: JsonValue) -> JsonValue:
        """Run the executor's revert until it succeeds: never dropped, every failure visible."""
        state = self.state
        executor = state.evaluation.executor if state.evaluation else None
        assert executor is not None
        progress = RevertProgress(started_at=workflow.now())
        state.revert = progress
        backoff = timedelta(seconds=2)
        while True:
            try:
                outcome = await workflow.execute_activity_method(
                    ExecutionActivities.revert_action,
                    RevertInput(
                        request=request,
                        result=result,
                        idempotency_key=f"{workflow.info().workflow_id}:revert",
                    ),
                    start_to_close_timeout=executor.timeout,
                    heartbeat_timeout=executor.heartbeat_timeout,
                    retry_policy=REVERT_ATTEMPT,
                    summary=f"revert {request.action} on {request.target}",
                )
            except ActivityError as err:
                progress.failures += 1
                progress.last_error = _cause_message(err)
                metrics.revert_failed(request.action)
                workflow.logger.error(
                    "revert of %s on %s failed (%d so far), retrying: %s",
                    request.action,
                    request.target,
                    progress.failures,
                    progress.last_error,
                )
                self._publish()
                if progress.failures == 1 or progress.failures % 10 == 0:
                    # The first failure and every tenth, so the ledger shows it without flooding.
                    await self._audit(
                        self._event(
                            AuditKind.REVERT_FAILED,
                            payload={"failures": progress.failures, "error": progress.last_error},
                        )
                    )
                    self._update_notifications()
                await workflow.sleep(backoff, summary="revert retry")
                backoff = min(backoff * 2, REVERT_BACKOFF_MAX)
                continue
            progress.done_at = workflow.now()
            progress.result = outcome.result
            self._publish()
            return outcome.result

    async def _undo(self, request: ActionRequest) -> ActionStatus:
        """An undo's action: approved (or allowed), it runs the revert of the action it names."""
        reverts = request.reverts
        assert reverts is not None
        self.state.result = await self._run_revert(reverts.request, reverts.result)
        return await self._finish(Status.SUCCEEDED, result_recorded=True)

    @workflow.update
    async def revoke(self, request: RevokeRequest) -> ActionStatus:
        """End an active grant now: its requester, approvers or the policy's revoke groups."""
        await self._require_signed(
            request.signature,
            revoke_claims(request, workflow.info().workflow_id),
            request.by,
            "revoke",
        )
        found = await self._resolve(request.by, "revoker")
        refusal = grants.revoke_refusal(self.status(), request.by, found.principal)
        if refusal is None and self.state.end_requested is not None:
            refusal = DecisionRefused(
                code=RefusalCode.NOT_PENDING,
                message=f"already ended by {self.state.end_requested.by}",
            )
        if refusal is not None:
            await self._refuse_message(request.by, "revoke", refusal)
        self.state.end_requested = EndRequest(by=request.by, how="revoked", reason=request.reason)
        await self._audit(
            self._event(AuditKind.REVOKED, actor=request.by, payload={"reason": request.reason})
        )
        await workflow.wait_condition(lambda: self.state.phase is not Phase.ACTIVE)
        return self.status()

    @workflow.update
    async def undo(self, request: UndoRequest) -> ActionStatus:
        """Ask for the revert within the undo window; it runs as its own action, under policy."""
        # Shape v7: the undo window is judged at the time the ask arrived (see SHAPE_V7).
        arrived = workflow.now()
        info = workflow.info()
        await self._require_signed(
            request.signature, undo_claims(request, info.workflow_id), request.by, "undo"
        )
        found = await self._resolve(request.by, "undo asker")
        refusal = grants.undo_refusal(
            self.status(),
            request.by,
            found.principal,
            arrived if self._shape_v7() else workflow.now(),
        )
        reverts = request.revert.reverts
        if refusal is None and (
            reverts is None
            or reverts.action_id != info.workflow_id
            or request.revert.requester != request.by
        ):
            refusal = DecisionRefused(
                code=RefusalCode.SIGNATURE_MISMATCH,
                message="the undo's revert request does not name this action and its asker",
            )
        if refusal is not None:
            await self._refuse_message(request.by, "undo", refusal)
        state = self.state
        state.undo_action = request.revert_id
        self._publish()
        await self._audit(
            self._event(
                AuditKind.UNDO_REQUESTED,
                actor=request.by,
                payload={"reason": request.reason, "undo_action": request.revert_id},
            )
        )
        # Its own action workflow: evaluated by the policy and approved like any action.
        child = await workflow.start_child_workflow(
            ActionWorkflow.run,
            request.revert,
            id=request.revert_id,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            static_summary=f"undo of {info.workflow_id} asked by {request.by}",
        )
        # Not one of the background tasks the end waits for: a grant ends on time regardless.
        self._undo_task = asyncio.create_task(self._follow_undo(request, child))
        return self.status()

    async def _follow_undo(
        self,
        request: UndoRequest,
        child: workflow.ChildWorkflowHandle[ActionWorkflow, ActionStatus],
    ) -> None:
        """Wait for the undo's action; when it succeeded this action counts as reverted."""
        state = self.state
        try:
            outcome = await child
            status, error = outcome.status, outcome.error
        except ChildWorkflowError as err:
            status, error = Status.FAILED, str(err.cause or err)
        await self._audit(
            self._event(
                AuditKind.UNDO_FINISHED,
                actor=request.by,
                payload={"undo_action": request.revert_id, "status": status.value, "error": error},
            )
        )
        if status is Status.SUCCEEDED:
            state.end_requested = EndRequest(by=request.by, how="undone", reason=request.reason)
        else:
            # Denied, expired or failed: the action stays as it was (the ledger keeps the try).
            state.undo_action = None
        self._publish()

    # --- runs -----------------------------------------------------------------------------

    def _runs_recorded(self) -> bool:
        """Whether this run records its run id and checks for earlier runs (patched)."""
        # Decided at the top of run() (handlers of the first activation agree: memoised).
        if self._patches.runs is None:
            self._patches.runs = self._patched(RUN_LEDGER)
        return self._patches.runs

    async def _admit(self, request: ActionRequest) -> Evaluation | DecisionRefused:
        """Shape v6: the request's signature, earlier runs and policy in one local activity."""
        info = workflow.info()
        claims = request_claims(request, info.workflow_id)
        if request.signature is None:
            return self._unsigned(claims)
        # Shape v9: the admission writes the admitted request's rows, except a break-glass
        # request's, whose rows say who broke glass (written by _break_glass).
        record = None
        if self._shape_v9() and not (request.break_glass is not None and self._patches.break_glass):
            record = AdmissionRecord(
                requested=self._event(
                    AuditKind.REQUESTED, actor=request.requester, payload=request, advance=False
                ),
                claim=self._execution_claim(),
                outcome_by_executor=self._shape_v10() and request.reverts is None,
            )
        # Until it returns, the admission holds the places its rows take (shape v11).
        self._admitting = record is not None
        try:
            return await self._admitted(request, claims, record)
        finally:
            self._admitting = False

    async def _admitted(
        self, request: ActionRequest, claims: dict[str, JsonValue], record: AdmissionRecord | None
    ) -> Evaluation | DecisionRefused:
        """The admission's local activity, and the ledger places its rows took."""
        info = workflow.info()
        assert request.signature is not None, "_admit refuses an unsigned request first"
        checked = await workflow.execute_local_activity_method(
            Admission.admit_request,
            AdmissionCheck(
                verify=VerifyInput(
                    signature=request.signature, expected=claims, now=info.workflow_start_time
                ),
                run=RunCheck(action_id=info.workflow_id, run_id=info.run_id),
                request=request,
                record=record,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=FOREVER,
            summary="admit request: signature, earlier runs, policy"
            + (", then its ledger rows" if record is not None else ""),
        )
        refusal = self._verified(checked.verified)
        if refusal is None and checked.earlier is not None:
            refusal = self._already_executed(checked.earlier)
        if refusal is not None:
            return refusal
        assert checked.evaluation is not None, "an admitted request has the policy's evaluation"
        if record is not None:
            rows = record.events(checked.evaluation, request.execution)
            self.state.seq = rows[-1].seq + 1
            if rows[-1].kind is AuditKind.EXECUTION_STARTED:
                self.state.start_recorded = self.state.start_durable = True
                self.state.claim = checked.claim
                self._keep_outcome_places(rows[-1])
            self._recorded_on_admission = True
        return checked.evaluation

    async def _admit_v5(self, request: ActionRequest) -> Evaluation | DecisionRefused:
        """Runs started before shape v6: a local activity for each check, then the policy's."""
        verify = self._verify(
            request.signature,
            request_claims(request, workflow.info().workflow_id),
            now=workflow.info().workflow_start_time,
        )
        if self._shape_v5():
            # The run check only reads the ledger: nothing is decided before both are back.
            signed, earlier = await asyncio.gather(verify, self._earlier_execution())
            refusal = signed or earlier
        else:
            refusal = await verify
            if refusal is None:
                refusal = await self._earlier_execution()
        if refusal is not None:
            return refusal
        return await workflow.execute_local_activity_method(
            PolicyActivities.evaluate_policy,
            request,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=FOREVER,
            summary="evaluate policy",
        )

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
        return self._already_executed(found)

    def _already_executed(self, found: RunCheckResult) -> DecisionRefused | None:
        """The refusal when another run of this workflow id already started executing it."""
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

    def _shape_v5(self) -> bool:
        """Whether this run has the one-marker shape, with its fewer round trips (SHAPE_V5)."""
        # Decided first thing in run(); a handler running in the first activation decides it
        # at the same point, and patched() is memoised, so both always agree. A run with shape
        # v6 has v5 without asking for its marker: one marker per run.
        if self._patches.shape_v5 is None:
            self._patches.shape_v5 = self._shape_v6() or workflow.patched(SHAPE_V5)
        return self._patches.shape_v5

    def _shape_v6(self) -> bool:
        """Whether this run admits its request in one local activity (SHAPE_V6)."""
        if self._patches.shape_v6 is None:
            self._patches.shape_v6 = self._shape_v7() or workflow.patched(SHAPE_V6)
        return self._patches.shape_v6

    def _shape_v7(self) -> bool:
        """Whether this run times a decision when it arrives (SHAPE_V7)."""
        if self._patches.shape_v7 is None:
            self._patches.shape_v7 = self._shape_v8() or workflow.patched(SHAPE_V7)
        return self._patches.shape_v7

    def _shape_v8(self) -> bool:
        """Whether this run publishes once where it can (SHAPE_V8)."""
        if self._patches.shape_v8 is None:
            self._patches.shape_v8 = self._shape_v9() or workflow.patched(SHAPE_V8)
        return self._patches.shape_v8

    def _shape_v9(self) -> bool:
        """Whether this run's admission writes its first ledger rows (SHAPE_V9)."""
        if self._patches.shape_v9 is None:
            self._patches.shape_v9 = self._shape_v10() or workflow.patched(SHAPE_V9)
        return self._patches.shape_v9

    def _shape_v10(self) -> bool:
        """Whether the executor's activity writes a success's ledger rows (SHAPE_V10)."""
        if self._patches.shape_v10 is None:
            self._patches.shape_v10 = self._shape_v11() or workflow.patched(SHAPE_V10)
        return self._patches.shape_v10

    def _shape_v11(self) -> bool:
        """Whether a refusal waits for a running admission's rows (SHAPE_V11)."""
        if self._patches.shape_v11 is None:
            self._patches.shape_v11 = workflow.patched(SHAPE_V11)
        return self._patches.shape_v11

    def _late_since_arrival(
        self, refusal: DecisionRefused, on_arrival: DecisionRefused | None
    ) -> bool:
        """Refused as late after its signature check, though the action awaited it on arrival.

        Its sender is then looked up all the same (WHO_BEFORE_WHEN), so a refusal of who sent
        it can outrank that it came late (`_after_lookup`).
        """
        arrived_in_time = on_arrival is None or on_arrival.code is not RefusalCode.NOT_PENDING
        return (
            arrived_in_time
            and refusal.code is RefusalCode.NOT_PENDING
            and workflow.patched(WHO_BEFORE_WHEN)
        )

    def _after_lookup(
        self, refusal: DecisionRefused | None, identity: DecisionRefused | None
    ) -> DecisionRefused | None:
        """`rules.after_lookup` for runs with WHO_BEFORE_WHEN; the re-check's refusal before it."""
        chosen = rules.after_lookup(refusal, identity)
        # Asked only where it changes the answer, so no other run records its marker.
        if chosen is refusal or not workflow.patched(WHO_BEFORE_WHEN):
            return refusal
        return chosen

    def _decider_refusal(
        self,
        state: DecisionRefused | None,
        status: ActionStatus,
        decider_id: str,
        decider: Principal | None,
        owner_now: str | None,
    ) -> DecisionRefused | None:
        """A decision's or amendment's re-check once its decider is known: the action's state,
        then who decides; who first when the state says it came late (`_after_lookup`)."""
        return self._after_lookup(
            state or rules.approver_refusal(status, decider_id, decider, owner_now=owner_now),
            rules.identity_refusal(status, decider_id, decider, owner_now=owner_now),
        )

    def _patched(self, patch: str) -> bool:
        """Whether this run has `patch`: implied by the one-marker shape, else its own marker."""
        if patch in IN_SHAPE_V5 and self._shape_v5():
            return True
        return workflow.patched(patch)

    def _execution_claim(self) -> ExecutionClaim:
        """This run's ask for the action's one execution."""
        info = workflow.info()
        return ExecutionClaim(
            action_id=info.workflow_id, run_id=info.run_id, digest=self.state.digest
        )

    async def _claim_execution(self) -> str | None:
        """Claim the action's one execution in the ledger; the refusal when another run has."""
        if not self._runs_recorded():
            return None
        claim = self.state.claim
        if claim is None:
            claim = await workflow.execute_local_activity_method(
                AuditActivities.claim_execution_activity,
                self._execution_claim(),
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
            self._patches.signed = self._patched(SIGNED_MESSAGES)
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
            return self._unsigned(expected)
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
        return self._verified(result)

    def _unsigned(self, expected: dict[str, JsonValue]) -> DecisionRefused:
        """The refusal of a message that carries no signature."""
        return DecisionRefused(
            code=RefusalCode.UNSIGNED,
            message=f"the {expected['kind']} carries no gateway signature; only the "
            "signoff gateway can send it",
        )

    def _verified(self, result: VerifyResult) -> DecisionRefused | None:
        """A signature check's answer as a refusal, counting each signed message once."""
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
        await self._record_refusal(attempt, actor=actor)
        raise ApplicationError(attempt.message, attempt, type=MESSAGE_REFUSED, non_retryable=True)

    async def _record_refusal(
        self, attempt: RefusedAttempt, *, actor: str, channel: str | None = None
    ) -> None:
        """Keep a refused attempt in state, search attributes, metrics and the ledger."""
        self.state.refused.append(attempt)
        metrics.refused(attempt.code.value)
        self._publish()
        if self._shape_v11():
            await workflow.wait_condition(lambda: not self._admitting)
        await self._audit(
            self._event(AuditKind.REFUSED, actor=actor, channel=channel, payload=attempt)
        )

    # --- decisions ------------------------------------------------------------------------

    @workflow.update
    async def decide(self, request: DecisionRequest) -> ActionStatus:
        """Approve or deny; refused attempts are recorded and fail the update with the reason."""
        refusal = await self._apply_decision(request)
        if refusal is not None:
            raise ApplicationError(
                refusal.message, refusal, type=DECISION_REFUSED, non_retryable=True
            )
        if request.window is not None and self._patches.windows and self._resolved():
            # The approver asked for a window: answer with it open (its id in the status).
            await workflow.wait_condition(
                lambda: self._window_settled or self.state.phase is Phase.FINISHED
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

    # --- approve with changes (issue 17) ---------------------------------------------------

    def _amendments_allowed(self) -> bool:
        """Whether this run takes amendments (patched); decided at the top of run()."""
        if self._patches.amendments is None:
            self._patches.amendments = self._patched(AMENDMENTS)
        return self._patches.amendments

    @workflow.update
    async def amend(self, request: AmendRequest) -> ActionStatus:
        """Approve with changes: supersede this action by a successor with the amender's params.

        The amender must be someone who could approve it now; the successor is evaluated
        afresh and needs its own approvals, never the amender's (rules.approver_refusal).
        """
        if not self._amendments_allowed():
            raise ApplicationError(
                "this action's run predates amendments: approve or deny it", type=NOT_PENDING
            )
        info = workflow.info()
        on_arrival = rules.not_pending(self.status())
        refusal = await self._verify(
            request.signature,
            amend_claims(request, info.workflow_id),
            not_before=info.workflow_start_time,
        ) or rules.amend_refusal(self.status(), request)
        if refusal is None or self._late_since_arrival(refusal, on_arrival):
            found, requester_now = await asyncio.gather(
                self._resolve(request.by, "amender"),
                self._resolve(self.state.request.requester, "requester"),
            )
            owner_now = requester_now.principal.owner if requester_now.principal else None
            if found.principal is None:
                found = PrincipalLookupResult(principal=self._idp_amender(request))
            # Re-check: a decision may have resolved the action while we looked up.
            status = self.status()
            refusal = self._decider_refusal(
                rules.amend_refusal(status, request), status, request.by, found.principal, owner_now
            )
        if refusal is not None:
            attempt = self._refusal(request.by, "amend", refusal, channel=request.channel)
            attempt = attempt.model_copy(update={"digest": request.digest})
            await self._record_refusal(attempt, actor=request.by, channel=request.channel)
            raise ApplicationError(
                attempt.message, attempt, type=DECISION_REFUSED, non_retryable=True
            )
        state = self.state
        successor = request.successor
        state.superseded_by = request.successor_id
        state.finish(
            Status.SUPERSEDED,
            f"{request.by} changed the params"
            + (f" ({request.reason})" if request.reason else "")
            + f"; replaced by {request.successor_id}",
        )
        state.decided_at = workflow.now()
        self._publish()
        await self._audit(
            self._event(
                AuditKind.SUPERSEDED,
                actor=request.by,
                channel=request.channel,
                payload={
                    "by": request.by,
                    "reason": request.reason,
                    "successor_id": request.successor_id,
                    "successor_digest": successor.digest,
                    "params": successor.params,
                },
            )
        )
        # Abandoned, not a child's lifetime: the successor outlives this (finished) run. Its
        # own run verifies the gateway's signature on the request before anything else.
        await workflow.start_child_workflow(
            ActionWorkflow.run,
            successor,
            id=request.successor_id,
            task_queue=info.task_queue,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            static_summary=(
                f"{successor.action} on {successor.target} by {successor.requester}, "
                f"amended by {request.by} from {info.workflow_id}"
            ),
        )
        return self.status()

    @workflow.query
    def status(self) -> ActionStatus:
        """The action's current status."""
        return self.state.snapshot(workflow.info().workflow_id)

    def _decision_checks(self, request: DecisionRequest) -> DecisionRefused | None:
        """What refuses a decision before anyone is looked up: the action's state, its window."""
        status = self.status()
        return rules.decision_refusal(status, request) or rules.window_refusal(status, request)

    def _changed_meanwhile(
        self,
        request: DecisionRequest,
        approver: PrincipalLookupResult,
        requester: PrincipalLookupResult,
    ) -> DecisionRefused | None:
        """The arrival checks again after a decision's checks ran: another may have landed."""
        refusal = self._decision_checks(request)
        if refusal is None:
            return None
        owner_now = requester.principal.owner if requester.principal else None
        decider = approver.principal or self._idp_approver(request)
        return self._decider_refusal(refusal, self.status(), request.approver, decider, owner_now)

    async def _apply_decision(self, request: DecisionRequest) -> RefusedAttempt | None:
        """Authorise one decision in the workflow; refusal or acceptance lands in history."""
        # Shape v7: read before any await, this is the time of the task the decision arrived
        # in, on replay as when it ran (see SHAPE_V7).
        arrived = workflow.now()
        found = PrincipalLookupResult()
        info = workflow.info()
        # Signed for this action, after this run started: ids are only unique within one run.
        expected = decision_claims(request, info.workflow_id)
        # patched() is memoised: this agrees with run(), even in a handler that runs first.
        owner_at_decision = self._patched(OWNER_AT_DECISION)
        looked_up: tuple[PrincipalLookupResult, PrincipalLookupResult] | None = None
        if (
            self._shape_v5()
            and request.signature is not None
            and self._decision_checks(request) is None
        ):
            # Shape v5: one local activity checks the signature and looks both up; nothing
            # counts unless the signature holds.
            requester = self.state.request.requester
            checked = await workflow.execute_local_activity_method(
                DecisionChecks.check_decision,
                DecisionCheck(
                    verify=VerifyInput(
                        signature=request.signature,
                        expected=expected,
                        now=workflow.now(),
                        not_before=info.workflow_start_time,
                    ),
                    approver=request.approver,
                    requester=requester,
                ),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=FOREVER,
                summary=f"check decision signature, resolve approver {request.approver} "
                f"and requester {requester}",
            )
            looked_up = (checked.approver, checked.requester)
            refusal = self._verified(checked.verified) or self._changed_meanwhile(
                request, *looked_up
            )
        else:
            refusal = await self._verify(
                request.signature, expected, not_before=info.workflow_start_time
            ) or self._decision_checks(request)
        if refusal is None:
            owner_now: str | None = None
            if looked_up is not None:
                found, requester_now = looked_up
                owner_now = requester_now.principal.owner if requester_now.principal else None
            elif owner_at_decision:
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
            refusal = self._decider_refusal(
                rules.decision_refusal(status, request),
                status,
                request.approver,
                found.principal,
                owner_now,
            )
            if refusal is None and self._step_up_enforced():
                refusal = rules.step_up_refusal(status, request)
        if refusal is not None:
            attempt = RefusedAttempt(
                approver=request.approver,
                decision=request.decision,
                channel=request.channel,
                digest=request.digest,
                code=refusal.code,
                message=refusal.message,
                at=arrived if self._shape_v7() else workflow.now(),
            )
            await self._record_refusal(attempt, actor=request.approver, channel=request.channel)
            return attempt

        assert found.principal is not None, "approver_refusal refuses principals nobody knows"
        state = self.state
        accepted = Decision(
            **request.model_dump(), at=arrived if self._shape_v7() else workflow.now()
        )
        state.accept(accepted, found.principal.groups)
        if state.decided_at is not None:
            metrics.decided(state.decided_at - state.created_at)
        # Shape v5: a decision that ends the waiting (and opens no window) leaves publishing
        # to the run, which goes on to execute or to finish and publishes then (in this same
        # activation, unless it was writing an escalation): one upsert instead of two.
        if not (self._shape_v5() and self._resolved() and request.window is None):
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
                        exclude={
                            name
                            for name in ("approver_groups", "step_up")
                            if getattr(accepted, name) is None
                        }
                        or None,
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

    def _step_up_enforced(self) -> bool:
        """Whether step-up rules are enforced: only on signed decisions, in patched runs."""
        # The step-up fact is part of the signed claims; unsigned runs could not trust it.
        # patched() is memoised: this agrees with run(), even in a handler that runs first.
        return self._signatures_required() and self._patched(STEP_UP)

    def _idp_approver(self, request: DecisionRequest) -> Principal | None:
        """A person known only to the identity provider, as the gateway's signature vouches."""
        # Only on a verified signature: the groups are part of the signed claims, so someone
        # with Temporal access but not the gateway's key cannot add or change them.
        if request.approver_groups is None or not self._signatures_required():
            return None
        # patched() is memoised: this agrees with run(), even in a handler that runs first.
        if not self._patched(IDP_APPROVERS):
            return None
        return Principal(id=request.approver, kind="human", groups=list(request.approver_groups))

    def _idp_amender(self, request: AmendRequest) -> Principal | None:
        """An amender known only to the identity provider, as the gateway's signature vouches."""
        # As for decisions (_idp_approver): the groups count only under the gateway's verified
        # signature. No new command: IDP_APPROVERS is memoised from the top of run().
        if request.amender_groups is None or not self._signatures_required():
            return None
        if not self._patched(IDP_APPROVERS):
            return None
        return Principal(id=request.by, kind="human", groups=list(request.amender_groups))

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
                # Core checks an upsert's command type on replay, not its keys: runs recorded
                # without this one replay as they ran.
                *([sa.EXPIRES.value_set(state.expires_at)] if state.expires_at else []),
                # Only runs that broke glass set it, so every other run's upsert is unchanged.
                *(
                    [sa.BREAK_GLASS.value_set(state.break_glass.review)]
                    if state.break_glass
                    else []
                ),
                *self._window_attributes(),
            ]
        )
        workflow.set_current_details(state.details())
        # patched() is memoised: this agrees with run(), even in a handler that runs first.
        if self._patched(INBOX_MEMO):
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

    def _window_attributes(self) -> list[SearchAttributeUpdate[Any]]:
        """SignoffActiveUntil while a grant is in force (only runs with the patch have one)."""
        window = self.state.window
        if window is None or window.end is None:
            return []
        return [sa.ACTIVE_UNTIL.value_set(window.end)]

    async def _publish_and_notify(self, groups: list[str], *, stage: int) -> None:
        """Publish who the action waits on, and post it to every channel.

        Shape v8 writes the console's lines first (the workflow writes them, in this task), so
        that one publish carries their refs; every other channel posts in the background and
        publishes when it has.
        """
        if not self._shape_v8():
            self._publish()
            self._notify(groups, stage=stage)
            return
        assert self.state.evaluation is not None
        posted: list[tuple[str, list[NotificationRef]]] = []
        for channel in self.state.evaluation.channels:
            if self._console(channel) is not None:
                refs = await self._post(channel, groups, stage)
                self.state.notifications.extend(refs)
                posted.append((channel, refs))
            else:
                self._background.append(
                    asyncio.create_task(self._notify_one(channel, groups, stage))
                )
        self._publish()
        for channel, refs in posted:
            self._background.append(asyncio.create_task(self._audit_posted(channel, refs)))

    def _notify(self, groups: list[str], *, stage: int, reminder: int = 0) -> None:
        """Post the request to every configured channel, without holding up the decision."""
        assert self.state.evaluation is not None
        for channel in self.state.evaluation.channels:
            self._background.append(
                asyncio.create_task(self._notify_one(channel, groups, stage, reminder))
            )

    async def _notify_one(
        self, channel: str, groups: list[str], stage: int, reminder: int = 0
    ) -> None:
        refs = await self._post(channel, groups, stage, reminder)
        self.state.notifications.extend(refs)
        self._publish()
        await self._audit_posted(channel, refs)

    async def _post(
        self, channel: str, groups: list[str], stage: int, reminder: int = 0
    ) -> list[NotificationRef]:
        """Post the request to one channel: the refs of what was posted, or of what failed."""
        notify = NotifyInput(
            channel=channel,
            status=self.status(),
            groups=groups,
            stage=stage,
            ui_url=self._ui_url(),
            reminder=reminder,
        )
        console = self._console(channel)
        try:
            if console is not None:
                refs = await console.post(notify)
            else:
                result = await workflow.execute_activity_method(
                    Notifications.notify,
                    notify,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=NOTIFY_RETRY,
                    summary=f"notify {channel} {', '.join(groups)}"
                    + (f" (escalation {stage})" if stage else "")
                    + (f" (reminder {reminder})" if reminder else ""),
                )
                refs = result.refs
            if reminder:
                refs = [r.model_copy(update={"reminder": reminder}) for r in refs]
        except ActivityError as err:
            # A broken channel never blocks the approval: the API still decides, and the
            # status shows what failed.
            refs = [
                NotificationRef(
                    channel=channel,
                    destination=", ".join(groups),
                    error=_cause_message(err),
                    stage=stage,
                    **({"reminder": reminder} if reminder else {}),
                )
            ]
        return refs

    async def _audit_posted(self, channel: str, refs: list[NotificationRef]) -> None:
        """Record in the ledger where the request was delivered."""
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

    def _console(self, channel: str) -> ConsoleNotifier | None:
        """The console channel when this run writes it itself (shape v5); else None."""
        if channel != ConsoleNotifier.channel or not self._shape_v5():
            return None
        evaluation = self.state.evaluation
        page_base = evaluation.page_base if evaluation else None
        return ConsoleNotifier(page_base=page_base, log=_CONSOLE_LOG)

    async def _update_one(self, channel: str, refs: list[NotificationRef]) -> None:
        update = NotifyUpdateInput(
            channel=channel, status=self.status(), refs=refs, ui_url=self._ui_url()
        )
        console = self._console(channel)
        if console is not None:
            await console.update(update)
            return
        try:
            await workflow.execute_activity_method(
                Notifications.notify_update,
                update,
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
        advance: bool = True,
    ) -> AuditEvent:
        """A ledger event with the next per-action sequence number and workflow time.

        `advance=False`: the number stays free until the caller knows the event is written.
        """
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
        if advance:
            self.state.seq += 1
        return event

    def _start_event(self) -> AuditEvent:
        """The write-ahead row: written before the executor runs, never after."""
        evaluation = self.state.evaluation
        executor = evaluation.executor if evaluation else None
        assert executor is not None, "evaluate_policy denies action types without an executor"
        self.state.start_recorded = True
        request = self.state.request
        leaves_outcome = self._shape_v10() and executor_records_outcome(
            executor, request.execution, reverts=request.reverts is not None
        )
        # Shape v10: the two places after this row are kept for the outcome's rows.
        kept = self.state.seq + 1 if leaves_outcome else None
        event = self._event(
            AuditKind.EXECUTION_STARTED,
            payload=execution_started_payload(executor, request.execution, kept),
        )
        self._keep_outcome_places(event)
        return event

    def _keep_outcome_places(self, write_ahead: AuditEvent) -> None:
        """Shape v10: keep the places the write-ahead row names for the outcome's rows."""
        kept = kept_outcome_seq(write_ahead)
        if kept is not None:
            self.state.outcome_seq = kept
            self.state.seq = kept + 2

    async def _audit(self, *events: AuditEvent) -> None:
        """Append events to the ledger; retried until Postgres accepts them, never skipped."""
        summary = "audit " + ", ".join(e.kind.value for e in events)
        starts = any(e.kind is AuditKind.EXECUTION_STARTED for e in events)
        if starts and self._runs_recorded() and self._shape_v5():
            # The write-ahead row, then the claim, in one trip: the claim is asked for only
            # once the row is durable, as before, and _claim_execution reads its answer.
            self.state.claim = await workflow.execute_local_activity_method(
                AuditActivities.record_and_claim,
                WriteAhead(events=list(events), claim=self._execution_claim()),
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=FOREVER,
                summary=summary + ", claim execution",
            )
        else:
            await workflow.execute_local_activity_method(
                AuditActivities.record_audit_events,
                AuditBatch(events=list(events)),
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=FOREVER,
                summary=summary,
            )
        if starts:
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
