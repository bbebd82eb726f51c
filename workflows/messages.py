"""Messages between the workflow and its activities: internal, never part of the public API.

The agent-facing contract lives in `signoff.models`; these payloads cross only the Temporal
seam inside the server, through the pydantic data converter.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, JsonValue, SerializerFunctionWrapHandler, model_serializer

from signoff.models import (
    ActionRequest,
    ActionStatus,
    ApprovalWindow,
    Contract,
    Duration,
    ExecutorSpec,
    NotificationRef,
    Principal,
    RefusalCode,
    Signature,
    Verdict,
)


class PrincipalLookup(Contract):
    """Ask the directory who a principal is, at the moment it matters."""

    id: str


class PrincipalLookupResult(Contract):
    """The directory's answer; `principal` is None when nobody has that id."""

    principal: Principal | None = None


class Evaluation(Contract):
    """Everything the workflow learns before it waits: verdict, people, executor, channels."""

    verdict: Verdict
    requester: Principal | None = None
    executor: ExecutorSpec | None = None
    channels: list[str] = Field(default_factory=list)
    ui_base_url: str | None = None
    # The gateway's public URL, for the approval page's link in console lines.
    page_base: str | None = None


class VerifyInput(Contract):
    """Ask a worker to check a signature against the claims its message must carry."""

    signature: Signature
    expected: dict[str, JsonValue]
    now: datetime
    # When the run started: a message signed well before it was meant for an earlier run.
    not_before: datetime | None = None


class VerifyResult(Contract):
    """The check's answer: no code means the signature holds, and `id` is its unique id."""

    code: RefusalCode | None = None
    message: str = ""
    id: str | None = None


class NotifyInput(Contract):
    """Ask one channel to post (or re-post on escalation) an approval request."""

    channel: str
    status: ActionStatus
    groups: list[str]
    stage: int = 0
    ui_url: str | None = None
    # Reminders (issue 17): the how-manyth reminder this is; 0 for the request itself.
    reminder: int = 0


class NotifyResult(Contract):
    """What a channel posted."""

    refs: list[NotificationRef] = Field(default_factory=list)


class NotifyUpdateInput(Contract):
    """Ask one channel to bring its posted messages up to date with the status."""

    channel: str
    status: ActionStatus
    refs: list[NotificationRef]
    ui_url: str | None = None


class ExecuteInput(Contract):
    """Run an approved action; the idempotency key is the workflow id."""

    request: ActionRequest
    idempotency_key: str


class RevertInput(Contract):
    """Undo an action that ran: its request and what its executor returned."""

    request: ActionRequest
    result: JsonValue = None
    idempotency_key: str


class ExecuteResult(Contract):
    """What an executor returned.

    `recorded_for` (shape v10): the run whose outcome rows the activity wrote too. Only that run
    may count them as its own: a reset's new run replays this result, and writes its own.
    """

    result: JsonValue = None
    recorded_for: str | None = None

    @model_serializer(mode="wrap")
    def _as_before_unless_recorded(self, serialize: SerializerFunctionWrapHandler) -> Any:
        """Without `recorded_for` unless set: what a worker of the previous release can read."""
        data = serialize(self)
        if self.recorded_for is None:
            data.pop("recorded_for", None)
        return data


class RecordedOutcome(Contract):
    """An execution's outcome as the ledger already holds it, written before the asker came."""

    status: str
    result: JsonValue = None
    error: str | None = None


class AuditKind(StrEnum):
    """Kinds of ledger events."""

    REQUESTED = "requested"
    VERDICT = "verdict"
    NOTIFIED = "notified"
    DECISION = "decision"
    REFUSED = "refused"
    ESCALATED = "escalated"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    EXECUTION_STARTED = "execution_started"
    EXECUTION_RESULT = "execution_result"
    OUTCOME = "outcome"
    # Approve with changes (issue 17): an approver's params replaced this action by a successor.
    SUPERSEDED = "superseded"
    # Break-glass: forced through, then reviewed after the fact (escalated, overdue, reviewed).
    BREAK_GLASS = "break_glass"
    REVIEW_ESCALATED = "review_escalated"
    REVIEW_OVERDUE = "review_overdue"
    REVIEWED = "reviewed"
    # Approval windows: rows of the window's own stream (action_id is the window's id).
    WINDOW_CREATED = "window_created"
    WINDOW_USED = "window_used"
    WINDOW_EXPIRED = "window_expired"
    WINDOW_REVOKED = "window_revoked"
    # Reversible actions (issue 15): in force, ended early, undo asked, revert tried and done.
    ACTIVE = "active"
    REVOKED = "revoked"
    UNDO_REQUESTED = "undo_requested"
    UNDO_FINISHED = "undo_finished"
    REVERT_FAILED = "revert_failed"
    REVERTED = "reverted"


class AuditEvent(Contract):
    """One ledger row before it is chained; (action_id, run_id, seq) makes writes idempotent.

    `run_id` is the Temporal run that wrote it ('' for runs from before runs were recorded).
    """

    action_id: str
    run_id: str = ""
    seq: int = Field(ge=0)
    kind: AuditKind
    digest: str
    actor: str | None = None
    channel: str | None = None
    at: datetime
    payload: dict[str, JsonValue] = Field(default_factory=dict)


class AuditBatch(Contract):
    """Events written together, in order, by one activity call."""

    events: list[AuditEvent]


class RunCheck(Contract):
    """Ask the ledger whether another run of this action already started executing it."""

    action_id: str
    run_id: str


class ExecutionClaim(Contract):
    """The one execution of an action: asked for with this run's id, answered with the holder's.

    `granted`: the asking run holds it. Decided by the activity, not by comparing run ids in
    the workflow: a reset run replays its base run's answer, which was for the base run.
    """

    action_id: str
    run_id: str
    digest: str
    claimed_at: datetime | None = None
    granted: bool = False


class WriteAhead(Contract):
    """The write-ahead batch and, once it is durable, the claim of the action's one execution."""

    events: list[AuditEvent]
    claim: ExecutionClaim


class DecisionCheck(Contract):
    """A decision's checks in one local activity: its signature, the approver, the requester."""

    verify: VerifyInput
    approver: str
    requester: str


class DecisionCheckResult(Contract):
    """The answers: the signature check, and who the approver and the requester are now."""

    verified: VerifyResult
    approver: PrincipalLookupResult
    requester: PrincipalLookupResult


class RunCheckResult(Contract):
    """The earlier run that started executing the action, if any, and when."""

    executed_by: str | None = None
    at: datetime | None = None


def execution_started_payload(
    executor: ExecutorSpec, runs_in: str, outcome_seq: int | None = None
) -> dict[str, JsonValue]:
    """The write-ahead row's payload: which executor runs the action, and where.

    `outcome_seq` (shape v10): where the run kept the two places for the outcome's rows, which
    the executor's activity writes when the action succeeds.
    """
    payload: dict[str, JsonValue] = {"executor": executor.model_dump(mode="json")}
    payload["runs_in"] = runs_in
    if outcome_seq is not None:
        payload["outcome_seq"] = outcome_seq
    return payload


def executor_records_outcome(executor: ExecutorSpec, runs_in: str, *, reverts: bool) -> bool:
    """Shape v10: whether the executor's activity writes a success's rows.

    Only where the activity runs the action once, to its end: not in the caller, not for a
    reversible action (its run goes on to the grant's end) nor for an undo.
    """
    return runs_in == "worker" and not reverts and not executor.revertible


def kept_outcome_seq(write_ahead: AuditEvent) -> int | None:
    """The first place the write-ahead row says its run kept for the outcome, if it kept any."""
    return kept_place(write_ahead.payload.get("outcome_seq"))


def kept_place(value: JsonValue) -> int | None:
    """A write-ahead row's `outcome_seq`, when it is one: a place number, never anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def outcome_events(
    *,
    action_id: str,
    run_id: str,
    digest: str,
    seq: int,
    at: datetime,
    status: str,
    error: str | None,
    result: JsonValue = None,
    with_result: bool = True,
) -> list[AuditEvent]:
    """An outcome's ledger rows from `seq` on: the execution's result when it ran, the outcome.

    One definition for the run and for the executor's activity, which writes a success's rows
    itself (shape v10): both must write the same rows at the same places.
    """
    rows: list[tuple[AuditKind, dict[str, JsonValue]]] = []
    if with_result:
        rows.append((AuditKind.EXECUTION_RESULT, {"result": result, "error": error}))
    rows.append((AuditKind.OUTCOME, {"status": status, "error": error}))
    return [
        AuditEvent(
            action_id=action_id,
            run_id=run_id,
            seq=seq + offset,
            kind=kind,
            digest=digest,
            at=at,
            payload=payload,
        )
        for offset, (kind, payload) in enumerate(rows)
    ]


class AdmissionRecord(Contract):
    """Shape v9: the request's first ledger rows, written by its admission once it is admitted.

    `requested` is the request's row as the workflow made it (its place, run, time, digest).
    The verdict's row follows it and, when the policy allows the action, the write-ahead row,
    then the claim of the action's one execution: the rows the workflow wrote itself before.
    """

    requested: AuditEvent
    claim: ExecutionClaim
    # Shape v10, for a request that reverts nothing: the run leaves a success's rows to the
    # executor's activity where it can (`executor_records_outcome`).
    outcome_by_executor: bool = False

    def events(self, evaluation: Evaluation, runs_in: str) -> list[AuditEvent]:
        """The rows an admitted request writes, given the policy's evaluation.

        `runs_in`: the request's `execution`, which the write-ahead row names.
        """
        verdict = evaluation.verdict
        rows = [self.requested, self._next(AuditKind.VERDICT, verdict.model_dump(mode="json"))]
        if verdict.effect == "allow":
            executor = evaluation.executor
            if executor is None:
                raise ValueError("an allowed action has an executor (the policy denies others)")
            kept = None
            if self.outcome_by_executor and executor_records_outcome(
                executor, runs_in, reverts=False
            ):
                kept = self.requested.seq + 3
            rows.append(
                self._next(
                    AuditKind.EXECUTION_STARTED,
                    execution_started_payload(executor, runs_in, kept),
                    after=1,
                )
            )
        return rows

    def _next(self, kind: AuditKind, payload: dict[str, JsonValue], after: int = 0) -> AuditEvent:
        return self.requested.model_copy(
            update={
                "seq": self.requested.seq + 1 + after,
                "kind": kind,
                "actor": None,
                "payload": payload,
            }
        )


class AdmissionCheck(Contract):
    """A new request's checks in one local activity: its signature, earlier runs, the policy.

    `record` (shape v9): write the request's first rows once all three let it through.
    """

    verify: VerifyInput
    run: RunCheck
    request: ActionRequest
    record: AdmissionRecord | None = None


class AdmissionResult(Contract):
    """How far the request got, in order; a later answer is there only if the earlier let it by.

    The policy never sees a request whose signature fails or whose action another run of the
    same workflow id already started executing. `claim`: the ledger's answer to the execution
    claim, when the admission wrote the write-ahead row (shape v9, an allowed action).
    """

    verified: VerifyResult
    earlier: RunCheckResult | None = None
    evaluation: Evaluation | None = None
    claim: ExecutionClaim | None = None


# --- approval windows ---------------------------------------------------------------------------

# The window workflow's names, written once: activities address it by name (they sit below it).
WINDOW_WORKFLOW = "SignoffWindow"
WINDOW_USE_UPDATE = "use"
WINDOW_STATUS_QUERY = "status"
WINDOW_ID_PREFIX = "win-"


def window_id_for(action_id: str) -> str:
    """The window a given approved action opens: one per action, found again on a retry."""
    return WINDOW_ID_PREFIX + action_id


class WindowStart(Contract):
    """What an approved action's window holds, fixed when it opens."""

    action_id: str
    digest: str
    rule_id: str
    scope: str
    holder: str
    on_behalf_of: str | None = None
    approvers: list[str]
    revokers: list[str] = Field(default_factory=list)
    created_at: datetime
    expires_at: datetime
    # As granted (the shortest any approver asked for), counted from the approval.
    duration: Duration
    # Where the original approval was posted: each use is told there.
    notifications: list[NotificationRef] = Field(default_factory=list)
    ui_base_url: str | None = None


class WindowUseRequest(Contract):
    """Ask a live window to allow one request; the policy activity sends it, idempotently."""

    action_id: str
    requester: str
    on_behalf_of: str | None = None
    rule_id: str
    action: str
    target: str
    digest: str


class WindowNoteInput(Contract):
    """Tell the channels where a window's approval was posted what happened to the window."""

    channel: str
    window: ApprovalWindow
    refs: list[NotificationRef]
    text: str
