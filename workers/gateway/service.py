"""The gateway's side of Temporal: submit, read, decide, cancel and list actions.

HTTP routes, Slack and Teams all go through this one service, so a decision means the same
thing whichever door it came through. Errors are typed; each door maps them to its own answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from activities.ledger.store import CONNECTION_ERRORS, Ledger
from policies.directory import Directory, on_behalf_problem
from policies.engine import Policy
from signoff.executor import ExecutorError, ExecutorRegistry
from signoff.models import (
    ActionRequest,
    ActionStatus,
    ActionSubmission,
    AmendBody,
    AmendRequest,
    ApprovalWindow,
    CancelRequest,
    DecisionRequest,
    ExecutionReport,
    Principal,
    RefusalCode,
    RefusedAttempt,
    ReviewRequest,
    RevokeRequest,
    Status,
    UndoRequest,
    Verdict,
    WindowRevokeRequest,
    validation_problems,
)
from workers.converter import UndecodablePayload
from workers.gateway.listing import Listed, list_actions
from workers.settings import Settings
from workflows import search_attributes as sa
from workflows.action import ActionWorkflow, workflow_id_for
from workflows.errors import (
    DECISION_REFUSED,
    MESSAGE_REFUSED,
    NOT_AWAITING_REPORT,
    NOT_PENDING,
    NOT_REQUESTER,
    ActionBroken,
    ActionError,
    ActionNotFound,
    ActionNotPending,
    ActionStalled,
    ActionUnreadable,
    BreakGlassRefused,
    DecisionRefusedError,
    DurationRefused,
    IdempotencyConflict,
    InvalidOnBehalfOf,
    InvalidParams,
    MessageRefusedError,
    NotRequester,
    UnknownAction,
    WindowNotFound,
    WorkerUnavailable,
)
from workflows.grants import direct_revert_problem, duration_problem, revert_request
from workflows.rules import can_decide_now, review_refusal
from workflows.signing import Signer, SigningError
from workflows.window import WindowWorkflow

log = logging.getLogger("signoff.gateway")

MAX_WAIT = 60.0
# How often a long poll on a reversible action reads its status (its workflow stays open).
POLL_SETTLED = 1.0
QUERY_TIMEOUT = timedelta(seconds=10)
# A workflow task on its third attempt has failed at least twice (one timeout is a worker
# restart): its worker cannot process the action, so a query would only time out.
FAILING_TASK_ATTEMPT = 3
MAX_REASON_CHARS = 500
# How long a break-glass submit waits for the workflow to grant or refuse the break.
BREAK_GLASS_VERDICT_WAIT = 10.0
_SAFE_GROUP = re.compile(r"^[A-Za-z0-9_.:@/-]+$")


def load_signer(settings: Settings) -> Signer:
    """The gateway's signing key from SIGNOFF_SIGNING_KEY; a clear error when it is missing."""
    if settings.signing_key is None:
        raise SigningError(
            "SIGNOFF_SIGNING_KEY is not set: the gateway signs every request and decision it "
            "sends to Temporal with its Ed25519 private key (PEM); workers refuse unsigned ones"
        )
    return Signer.load(settings.signing_key)


def summary_text(request: ActionRequest, verdict: Verdict, now: datetime) -> str:
    """The one-line summary an SRE sees in the Temporal UI's workflow list."""
    head = f"{request.action} on {request.target} by {request.requester}"
    if verdict.effect == "allow":
        return f"{head}, allowed by {verdict.rule_id}"
    if verdict.effect == "deny":
        return f"{head}, denied by {verdict.rule_id}"
    needs = ", ".join(f"{r.min} of {r.group}" for r in verdict.approvals)
    expiry = ""
    if verdict.expires_after is not None:
        expiry = f", expires {now + verdict.expires_after:%H:%M} UTC"
    return f"{head}, waits for {needs}{expiry}"


# The workflow's untyped refusals of an update, as the neutral errors every door maps.
_REFUSED_AS: dict[str, type[ActionError]] = {
    NOT_REQUESTER: NotRequester,
    NOT_PENDING: ActionNotPending,
    NOT_AWAITING_REPORT: ActionNotPending,
}


def _refused(err: WorkflowUpdateFailedError, ended: str | None) -> Exception:
    """The typed error for an update the workflow failed.

    `ended`: what to answer when it failed untyped, as when its workflow completed under it
    (Temporal's AcceptedUpdateCompletedWorkflow); None re-raises such a failure.
    """
    cause = err.cause
    if isinstance(cause, ApplicationError):
        if cause.type in (DECISION_REFUSED, MESSAGE_REFUSED):
            attempt = RefusedAttempt.model_validate(cause.details[0])
            if cause.type == MESSAGE_REFUSED:
                if attempt.code is RefusalCode.NOT_PENDING:
                    # A revoke or undo of an action that is not active (or not undoable).
                    return ActionNotPending(attempt.message)
                return MessageRefusedError(attempt)
            if attempt.code is RefusalCode.NOT_PENDING:
                return ActionNotPending(attempt.message)
            return DecisionRefusedError(attempt)
        refused_as = _REFUSED_AS.get(cause.type or "")
        if refused_as is not None:
            return refused_as(cause.message)
    if ended is None:
        return err
    return ActionNotPending(ended)


def closed_under(err: RPCError) -> bool:
    """Whether an update failed because the workflow had closed, or closed while it waited."""
    # Both races end the same way for the caller: the action is no longer pending.
    return "already completed" in err.message or "aborted by closing workflow" in err.message


def _failing_task(description: WorkflowExecutionDescription) -> int:
    """The attempt number of the workflow's pending task (0 when none is pending)."""
    pending = description.raw_description.pending_workflow_task
    return pending.attempt if description.raw_description.HasField("pending_workflow_task") else 0


def _task_failed(err: RPCError) -> bool:
    """Whether the server refused an update because the workflow's task is failing."""
    return err.status is RPCStatusCode.FAILED_PRECONDITION and "Workflow Task in failed" in str(
        err.message
    )


def _requester(description: WorkflowExecutionDescription) -> str | None:
    """Who asked for the action, as the gateway recorded it when it started the workflow."""
    value = description.typed_search_attributes.get(sa.REQUESTER)
    return value if isinstance(value, str) else None


class ActionService:
    """Temporal operations on actions, for authenticated principals."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        policy: Policy,
        directory: Directory,
        executors: ExecutorRegistry,
        signer: Signer | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.policy = policy
        self.directory = directory
        self.executors = executors
        self._signer = signer
        # Where a reused idempotency key is checked once Temporal no longer has its action.
        self.ledger = ledger

    @property
    def signer(self) -> Signer:
        """What the gateway vouches with: every message it sends into Temporal is signed."""
        if self._signer is None:
            self._signer = load_signer(self.settings)
        return self._signer

    def _handle(self, action_id: str) -> WorkflowHandle[ActionWorkflow, ActionStatus]:
        return self.client.get_workflow_handle_for(ActionWorkflow.run, action_id)

    async def submit(
        self, requester: Principal, submission: ActionSubmission, *, wait: float = 0.0
    ) -> ActionStatus:
        """Start the action's workflow, or find the one its idempotency key already started.

        `wait`: then long-poll up to that many seconds for the outcome, as `wait` does.
        """
        if submission.execution == "worker" and self.executors.spec(submission.action) is None:
            known = ", ".join(self.executors.actions())
            raise UnknownAction(f"unknown action type {submission.action!r}; known: {known}")
        problem = on_behalf_problem(requester, submission.on_behalf_of)
        if problem is not None:
            raise InvalidOnBehalfOf(problem)
        request = ActionRequest(**submission.model_dump(), requester=requester.id)
        if (problem := direct_revert_problem(request, self.executors)) is not None:
            raise UnknownAction(problem)
        try:
            # Refused before anyone is asked to approve what the executor would refuse.
            params = self.executors.parsed_params(request.action, request.params)
        except ExecutorError as exc:
            raise InvalidParams(str(exc)) from None
        if request.idempotency_key is not None:
            action_id = workflow_id_for(request)
        else:
            action_id = f"act-{uuid.uuid4().hex}"
        signed = self.signer.request(request, action_id)
        # A preview for the UI's summary only; the workflow's own evaluation decides.
        preview = self.policy.evaluate(request, requester, params)
        problem = duration_problem(request, preview, self.executors.spec(request.action))
        if problem is not None and request.execution == "worker":
            # The worker refuses it too (denied by policy); nobody is asked to approve it.
            raise DurationRefused(problem)
        if request.idempotency_key is not None:
            await self._refuse_reuse_after_retention(request.idempotency_key, action_id)
        # AlreadyStarted: the key's action already finished; hand it back, never start a second.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await self.client.start_workflow(
                ActionWorkflow.run,
                signed,
                id=action_id,
                task_queue=self.settings.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.STATUS, Status.EVALUATING.value),
                        SearchAttributePair(sa.ACTION, request.action),
                        SearchAttributePair(sa.TARGET, request.target),
                        SearchAttributePair(sa.REQUESTER, request.requester),
                        SearchAttributePair(sa.RISK, preview.risk),
                    ]
                ),
                static_summary=(
                    ("BREAK-GLASS: " if request.break_glass is not None else "")
                    + summary_text(request, preview, datetime.now(UTC))
                ),
                static_details=(
                    f"**Justification:** {request.justification}\n\n**Digest:** `{request.digest}`"
                ),
            )
        if request.break_glass is not None:
            return await self._break_glass_verdict(action_id, request, wait)
        if wait > 0 and request.idempotency_key is None:
            # A fresh id has no earlier action to conflict with, and the caller wants the
            # outcome: skip reading the status of the action just started (a describe and a
            # query that waits for its first workflow task).
            return await self._outcome(action_id, wait, self._reversible(request.action))
        status = await self.status(action_id)
        if status.digest != request.digest:
            raise IdempotencyConflict(
                f"idempotency key {request.idempotency_key!r} was already used for a different "
                f"action ({status.id}); use a new key for a new action"
            )
        if status.request.break_glass is not None:
            raise IdempotencyConflict(
                f"idempotency key {request.idempotency_key!r} was already used for action "
                f"{status.id} with break-glass; use a new key for a new action"
            )
        if wait > 0:
            return await self.wait(action_id, wait, current=status)
        return status

    async def _break_glass_verdict(
        self, action_id: str, request: ActionRequest, wait: float
    ) -> ActionStatus:
        """The status once the workflow granted the break; BreakGlassRefused when it refused.

        The workflow decides (and records) who may break glass; the gateway only reports it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BREAK_GLASS_VERDICT_WAIT
        status = await self.status(action_id)
        while status.status is Status.EVALUATING and loop.time() < deadline:
            await asyncio.sleep(0.1)
            status = await self.status(action_id)
        if status.digest != request.digest:
            raise IdempotencyConflict(
                f"idempotency key {request.idempotency_key!r} was already used for a different "
                f"action ({status.id}); use a new key for a new action"
            )
        if status.request.break_glass is None:
            raise IdempotencyConflict(
                f"idempotency key {request.idempotency_key!r} was already used for action "
                f"{status.id} without break-glass; use a new key to break glass"
            )
        refused = [a for a in status.refused if a.kind == "break_glass"]
        if status.status is Status.REJECTED and refused:
            raise BreakGlassRefused(refused[-1])
        if wait > 0:
            return await self.wait(action_id, wait, current=status)
        return status

    async def review(self, action_id: str, review: ReviewRequest) -> ActionStatus:
        """Send a break-glass review through the workflow's `review` update."""
        message = self.signer.review(review, action_id)
        return await self._update(action_id, ActionWorkflow.review, message, ended="review")

    async def _refuse_reuse_after_retention(self, key: str, action_id: str) -> None:
        """A key whose action Temporal no longer has, but the ledger does, is never run again.

        Temporal forgets a closed workflow after its retention; starting the id then would
        run the action a second time. The ledger keeps every run, so it answers instead.
        """
        if self.ledger is None:
            return
        try:
            await self._handle(action_id).describe()
            return  # Temporal still has it: the start below finds it (USE_EXISTING)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        try:
            runs = await self.ledger.runs(action_id)
        except CONNECTION_ERRORS:
            raise WorkerUnavailable(
                f"the audit ledger cannot be reached to check idempotency key {key!r}; "
                "nothing was started, retry shortly"
            ) from None
        if runs:
            recorded = "; ".join(run.describe() for run in runs)
            raise IdempotencyConflict(
                f"idempotency key {key!r} was already used for action {action_id}, which "
                f"Temporal no longer keeps; the audit ledger records {recorded}. It is not "
                "run again: use a new key for a new action"
            )

    async def status(self, action_id: str) -> ActionStatus:
        """The action's status: its result once closed, else the workflow's `status` query."""
        handle = self._handle(action_id)
        description: WorkflowExecutionDescription | None = None
        try:
            description = await handle.describe()
            if description.status == WorkflowExecutionStatus.COMPLETED:
                return await handle.result()
            if _failing_task(description) >= FAILING_TASK_ATTEMPT:
                raise self._stalled(description)
            # Queries are answered by a worker; without one they would hang for the SDK's 30s.
            return await handle.query(ActionWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
        except UndecodablePayload as err:
            # A status this build's contract refuses (recorded by an older, laxer one).
            assert description is not None, "only a result or query answer raises this"
            raise ActionBroken(
                f"action {action_id}'s status does not fit this gateway's contract: {err}",
                action_id=action_id,
                requester=_requester(description),
            ) from None
        except WorkflowQueryFailedError as err:
            # No worker can rebuild the workflow's state (e.g. its input never decoded).
            assert description is not None, "only the query raises this"
            if description.status == WorkflowExecutionStatus.RUNNING:
                raise self._stalled(description) from None
            raise await self._broken(handle, description, err) from None
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise ActionNotFound(f"no action {action_id}") from None
            if err.status in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
                if description is not None and _failing_task(description) > 1:
                    raise self._stalled(description) from None
                raise WorkerUnavailable(
                    f"no worker answered for action {action_id} within "
                    f"{QUERY_TIMEOUT.total_seconds():.0f}s; is a worker running on task queue "
                    f"{self.settings.task_queue!r}?"
                ) from None
            raise

    async def _unanswered(self, action_id: str, *, failing: bool = False) -> ActionError:
        """Why no worker took an update: a stalled workflow, or no worker at all."""
        with contextlib.suppress(RPCError):
            description = await self._handle(action_id).describe()
            if failing or _failing_task(description) > 1:
                return self._stalled(description)
        return WorkerUnavailable(
            f"no worker took the request for action {action_id} in time; is a worker running "
            f"on task queue {self.settings.task_queue!r}?"
        )

    def _stalled(self, description: WorkflowExecutionDescription) -> ActionStalled:
        attempt = _failing_task(description)
        return ActionStalled(
            f"action {description.id} cannot be read: its workflow task keeps failing or "
            f"timing out{f' (attempt {attempt})' if attempt > 1 else ''}, so no worker can "
            "process it; "
            "nothing runs until an operator fixes the worker (alert SignoffWorkflowTaskFailing; "
            "the error is in the workflow's history). Retry later.",
            action_id=description.id,
            requester=_requester(description),
        )

    async def _broken(
        self,
        handle: WorkflowHandle[ActionWorkflow, ActionStatus],
        description: WorkflowExecutionDescription,
        err: Exception,
    ) -> ActionBroken:
        reason = str(err)
        try:
            await handle.result()
        except WorkflowFailureError as failure:
            reason = str(failure.cause or failure)
        except Exception as other:  # any reason beats none
            reason = str(other) or reason
        state = description.status.name.lower().replace("_", " ") if description.status else "?"
        printable = "".join(c if c.isprintable() else "?" for c in reason)[:MAX_REASON_CHARS]
        return ActionBroken(
            f"action {description.id} ended without an outcome ({state}): {printable}",
            action_id=description.id,
            requester=_requester(description),
        )

    async def wait(
        self, action_id: str, seconds: float, *, current: ActionStatus | None = None
    ) -> ActionStatus:
        """Long-poll up to `seconds` (at most a minute) for the action to finish.

        `current`: a status the caller has just read; it saves a describe and a query.
        """
        seconds = max(0.0, min(seconds, MAX_WAIT))
        status = current if current is not None else await self.status(action_id)
        if status.settled or seconds == 0:
            return status
        return await self._outcome(action_id, seconds, self._reversible(status.request.action))

    def _reversible(self, action: str) -> bool:
        """Whether the action's workflow stays open after it ran (a grant, an undo window)."""
        spec = self.executors.spec(action)
        return spec is not None and spec.revertible

    async def _outcome(
        self, action_id: str, seconds: float, reversible: bool = False
    ) -> ActionStatus:
        """The result if the action finishes within `seconds` (at most a minute), else status.

        `reversible`: its workflow stays open once it ran, so its status is polled too (each
        second) and a grant in force (`active`) answers as soon as it is.
        """
        waited = self._handle(action_id).result() if not reversible else self._settled(action_id)
        try:
            return await asyncio.wait_for(waited, timeout=max(0.0, min(seconds, MAX_WAIT)))
        except (TimeoutError, WorkflowFailureError):
            return await self.status(action_id)

    async def _settled(self, action_id: str) -> ActionStatus:
        """Poll until a reversible action ran (or ended): agents wait for that, not its end."""
        while True:
            status = await self.status(action_id)
            if status.settled:
                return status
            await asyncio.sleep(POLL_SETTLED)

    async def decide(self, action_id: str, decision: DecisionRequest) -> ActionStatus:
        """Send one decision through the workflow's `decide` update."""
        # No status read first: it would cost a describe and a query on the approval path.
        message = self.signer.decision(decision, action_id)
        return await self._update(action_id, ActionWorkflow.decide, message, ended="decision")

    async def amend(
        self,
        action_id: str,
        amender: str,
        body: AmendBody,
        *,
        channel: str = "api",
        amender_groups: list[str] | None = None,
    ) -> ActionStatus:
        """Approve with changes: the workflow supersedes the action by a successor with `body`'s
        params, requested on the requester's behalf; answers the superseded original.

        `amender_groups`: the verified IdP groups of an amender the directory does not list,
        signed into the amendment (as for decisions); None for anyone the directory lists.
        """
        original = (await self.status(action_id)).request
        kept = original.model_dump(include=set(ActionSubmission.model_fields))
        try:
            # Validated exactly as a submission is, so nobody approves what could not run.
            submission = ActionSubmission(
                **{**kept, "params": body.params, "idempotency_key": None}
            )
        except ValidationError as exc:
            raise InvalidParams(validation_problems(exc)) from None
        if submission.execution == "worker" and self.executors.spec(submission.action) is None:
            raise UnknownAction(f"unknown action type {submission.action!r}")
        try:
            self.executors.parsed_params(submission.action, submission.params)
        except ExecutorError as exc:
            raise InvalidParams(str(exc)) from None
        successor_id = f"act-{uuid.uuid4().hex}"
        successor = ActionRequest(
            **submission.model_dump(),
            requester=original.requester,
            amended_from=action_id,
            amended_by=amender,
        )
        message = AmendRequest(
            by=amender,
            digest=body.digest,
            reason=body.reason,
            channel=channel,
            successor_id=successor_id,
            successor=self.signer.request(successor, successor_id),
            amender_groups=amender_groups,
        )
        return await self._update(
            action_id,
            ActionWorkflow.amend,
            self.signer.amend(message, action_id),
            ended="amendment",
        )

    async def cancel(self, action_id: str, request: CancelRequest) -> ActionStatus:
        """Cancel a pending action on its requester's behalf."""
        await self.status(action_id)
        message = self.signer.cancel(request, action_id)
        return await self._update(action_id, ActionWorkflow.cancel, message, ended="cancel")

    async def revoke(self, action_id: str, request: RevokeRequest) -> ActionStatus:
        """End an active grant now; the workflow decides who may, and records a refusal."""
        message = self.signer.revoke(request, action_id)
        return await self._update(action_id, ActionWorkflow.revoke, message, ended="revoke")

    async def undo(
        self, action_id: str, by: Principal, reason: str, status: ActionStatus
    ) -> ActionStatus:
        """Ask for an action's revert: a new action (`<type>.revert`) the policy evaluates.

        The revert is requested on behalf of the asker, signed here and started by the
        action's own workflow, which checks the asker and the undo window; the two link both
        ways (`undo_action`, `request.reverts`). Answers the original action's status.
        """
        original = status.request
        if self.executors.revert_spec(original.action) is None:
            raise UnknownAction(f"{original.action} declares no revert; it cannot be undone")
        revert_id = f"{action_id}-undo-{uuid.uuid4().hex[:12]}"
        message = self.signer.undo(
            UndoRequest(
                by=by.id,
                reason=reason,
                revert=revert_request(status, by.id, reason),
                revert_id=revert_id,
            ),
            action_id,
        )
        return await self._update(action_id, ActionWorkflow.undo, message, ended="undo")

    async def report(self, action_id: str, report: ExecutionReport) -> ActionStatus:
        """Caller mode: record what happened when the requester ran the approved action."""
        await self.status(action_id)
        message = self.signer.report(report, action_id)
        return await self._update(action_id, ActionWorkflow.report, message, ended=None)

    async def _update(
        self,
        action_id: str,
        update: UpdateMethodMultiParam[[ActionWorkflow, Any], ActionStatus],
        message: Any,
        *,
        ended: str | None,
    ) -> ActionStatus:
        """Run one update; Temporal's failures become the service's typed errors.

        `ended` names the update in "finished before the ..." when the workflow closed under
        it; None re-raises a failure the workflow did not type.
        """
        try:
            return await self._handle(action_id).execute_update(update, message)
        except WorkflowUpdateFailedError as err:
            finished = f"action {action_id} finished before the {ended}" if ended else None
            raise _refused(err, finished) from None
        except RPCError as err:
            if closed_under(err):
                raise ActionNotPending(f"action {action_id} has already finished") from None
            if err.status is RPCStatusCode.NOT_FOUND:
                raise ActionNotFound(f"no action {action_id}") from None
            if _task_failed(err):
                raise await self._unanswered(action_id, failing=True) from None
            raise
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise await self._unanswered(action_id) from None

    async def revoke_window(self, window_id: str, request: WindowRevokeRequest) -> ApprovalWindow:
        """End an approval window now, signed; the window refuses (and records) anyone else."""
        message = self.signer.window_revoke(request, window_id)
        handle = self.client.get_workflow_handle_for(WindowWorkflow.run, window_id)
        try:
            return await handle.execute_update(WindowWorkflow.revoke, message)
        except WorkflowUpdateFailedError as err:
            # Windows ended by builds before patch `window-late-revokes` can still end under a
            # revoke they accepted: "not pending" then, as for an action's updates.
            ended = f"window {window_id} ended before the revoke was answered"
            raise _refused(err, ended) from None
        except RPCError as err:
            if closed_under(err):
                raise ActionNotPending(f"window {window_id} has already ended") from None
            if err.status is RPCStatusCode.NOT_FOUND:
                raise WindowNotFound(f"no window {window_id}") from None
            raise
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise WorkerUnavailable(
                f"no worker took the revoke of window {window_id} in time"
            ) from None

    async def inbox(
        self, principal: Principal, *, limit: int = 50, older_than: timedelta | None = None
    ) -> list[ActionStatus]:
        """Pending actions the principal may decide now, newest first; only stale ones when
        `older_than` is given (requested at least that long ago)."""
        groups = [g for g in principal.groups if _SAFE_GROUP.match(g)]
        if principal.kind != "human" or not groups:
            return []
        # Scoped to our task queue: another deployment sharing the namespace has its own workers.
        pending = f'TaskQueue = "{self.settings.task_queue}" AND SignoffStatus = "pending_approval"'
        cutoff = None
        if older_than is not None:
            cutoff = datetime.now(UTC) - older_than
            pending += f' AND StartTime < "{cutoff:%Y-%m-%dT%H:%M:%S.%fZ}"'
        window = limit * 2
        # On the dev server's SQLite a group filter is a full-text match that reads every
        # matching row before the first is returned: 100 ms at 100,000 pending here. The
        # newest pending actions, unfiltered, come straight off an index. When all of them
        # are the principal's groups', they are what the filtered list would give; when they
        # hold a page the principal may decide, so is that page, since both lists are newest
        # first. Only otherwise is the filtered list asked.
        listed = await list_actions(self.client, pending, window)
        ours = [w for w in listed if w.groups & set(groups)]
        mine = await self._decidable(principal, ours, cutoff)
        if len(mine) < limit and len(ours) < len(listed) == window:
            quoted = ", ".join(f'"{g}"' for g in groups)
            query = f"{pending} AND SignoffGroups IN ({quoted})"
            ours = await list_actions(self.client, query, window)
            mine = await self._decidable(principal, ours, cutoff)
        return sorted(mine, key=lambda s: s.created_at, reverse=True)[:limit]

    async def _decidable(
        self, principal: Principal, listed: list[Listed], cutoff: datetime | None
    ) -> list[ActionStatus]:
        """The statuses of the listed actions the principal may decide now."""
        # Together: a codec (an encryption service, say) may do I/O for each row.
        statuses = await asyncio.gather(*(self._inbox_row(w) for w in listed))
        return [
            s
            for s in statuses
            if s is not None
            and can_decide_now(principal, s)
            and (cutoff is None or s.created_at <= cutoff)
        ]

    async def _inbox_row(self, listed: Listed) -> ActionStatus | None:
        """A row from the status its workflow keeps in its memo; older runs answer a query."""
        return await self._memo_row(listed) or await self._quiet_status(listed.id)

    async def _memo_row(self, listed: Listed) -> ActionStatus | None:
        """The row from the status the workflow keeps in its memo; None if there is none."""
        if listed.memo is None:
            return None
        try:
            # Validated straight from its JSON: no dict in between.
            [row] = await self.client.data_converter.decode([listed.memo], [ActionStatus])
        except (ValueError, TypeError, RuntimeError):  # unreadable: ask the workflow instead
            return None
        return row if isinstance(row, ActionStatus) else None

    async def reviews(self, principal: Principal, *, limit: int = 50) -> list[ActionStatus]:
        """Break-glass actions the principal may review now: overdue first, then oldest."""
        if principal.kind != "human":
            return []
        # Scoped to our task queue and to running workflows, as the pending-approvals gauge.
        query = (
            f'TaskQueue = "{self.settings.task_queue}" AND ExecutionStatus = "Running" '
            'AND SignoffBreakGlass IN ("pending", "overdue")'
        )
        ids = [w.id async for w in self.client.list_workflows(query, limit=limit * 2)]
        statuses = await asyncio.gather(*(self._quiet_status(i) for i in ids))
        mine = [
            s
            for s in statuses
            if s is not None and review_refusal(s, principal.id, principal, s.digest) is None
        ]
        mine.sort(key=lambda s: s.created_at)
        mine.sort(key=lambda s: s.break_glass is None or s.break_glass.review != "overdue")
        return mine[:limit]

    async def _quiet_status(self, action_id: str) -> ActionStatus | None:
        # One unreadable action must not hide the rest of the inbox.
        try:
            return await self.status(action_id)
        except (ActionNotFound, WorkerUnavailable, ActionUnreadable):
            return None

    async def ready(self, within: timedelta = timedelta(seconds=2)) -> bool:
        """Whether Temporal answers, and answers that its workflow service is serving."""
        try:
            serving = await self.client.service_client.check_health(timeout=within)
        except Exception as err:
            # A probe only sees 503; the operator needs the reason (an RPC error carries no
            # credentials, only its status and message).
            log.warning(
                "not ready: Temporal's health check failed: %s: %s", type(err).__name__, err
            )
            return False
        if not serving:
            log.warning("not ready: Temporal answers but its workflow service is not serving")
        return serving
