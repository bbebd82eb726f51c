"""What one action's workflow knows: its phase and every fact its status is made of.

The workflow changes this state; the public `ActionStatus`, the progress toward the quorum and
the Temporal UI's details are read from it here, without Temporal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import JsonValue

from signoff.models import (
    ActionRequest,
    ActionStatus,
    BreakGlassStatus,
    Decision,
    ExecutionReport,
    GrantWindow,
    NotificationRef,
    Principal,
    RefusedAttempt,
    RequirementProgress,
    RevertProgress,
    Status,
    Verdict,
)
from workflows.messages import Evaluation, ExecutionClaim
from workflows.quorum import assign_approvers


class Phase(StrEnum):
    """Where the action is in its lifecycle."""

    EVALUATING = "evaluating"  # verifying the request and evaluating the policy
    PENDING = "pending"  # waiting for decisions
    APPROVED = "approved"  # the quorum is met; the run moves on to execute
    EXECUTING = "executing"  # write-ahead, execution claim, and the worker's executor
    AWAITING_REPORT = "awaiting_report"  # caller mode: the requester runs it and reports
    FINISHED = "finished"  # `outcome` is decided; nothing more can happen
    # Reversible actions (issue 15): in force for its duration, open to an undo, reverting.
    ACTIVE = "active"
    UNDOABLE = "undoable"
    REVERTING = "reverting"


# The public status of each phase before the outcome: approved counts as executing, since
# nothing can stop it any more.
_PUBLIC = {
    Phase.EVALUATING: Status.EVALUATING,
    Phase.PENDING: Status.PENDING_APPROVAL,
    Phase.APPROVED: Status.EXECUTING,
    Phase.EXECUTING: Status.EXECUTING,
    Phase.AWAITING_REPORT: Status.EXECUTING,
    Phase.ACTIVE: Status.ACTIVE,
    # It ran and succeeded; the workflow stays open only for the undo window.
    Phase.UNDOABLE: Status.SUCCEEDED,
    Phase.REVERTING: Status.REVERTING,
}


@dataclass
class EndRequest:
    """Who asked to end a reversible action early, and how (revoked, or undone by an action)."""

    by: str
    how: Literal["revoked", "undone"]
    reason: str = ""


@dataclass
class ActionState:
    """One action's state, from request to outcome."""

    request: ActionRequest
    created_at: datetime
    phase: Phase = Phase.EVALUATING
    outcome: Status | None = None
    evaluation: Evaluation | None = None
    # Groups whose members may decide now; escalation stages widen it.
    eligible: list[str] = field(default_factory=list)
    level: int = 0
    expires_at: datetime | None = None
    decided_at: datetime | None = None
    decisions: list[Decision] = field(default_factory=list)
    # Each approver's groups when they decided: what their approval counts toward.
    approver_groups: dict[str, list[str]] = field(default_factory=dict)
    refused: list[RefusedAttempt] = field(default_factory=list)
    notifications: list[NotificationRef] = field(default_factory=list)
    result: JsonValue = None
    error: str | None = None
    report: ExecutionReport | None = None
    # Ids of the signed messages delivered so far: each counts once.
    seen_ids: set[str] = field(default_factory=set)
    # The ledger: the next event's sequence number, and whether the write-ahead row is issued
    # (`start_recorded`) and written (`start_durable`).
    seq: int = 0
    start_recorded: bool = False
    start_durable: bool = False
    # The ledger's answer to this run's execution claim, when it came with the write-ahead row.
    claim: ExecutionClaim | None = None
    # Shape v10: the first of the two places the write-ahead row kept for the outcome's rows.
    outcome_seq: int | None = None
    # Approve with changes (issue 17): the successor that replaced this action.
    superseded_by: str | None = None
    # Set when a person broke glass: the action ran without approval and awaits its review.
    break_glass: BreakGlassStatus | None = None
    # The approval window this action's approval opened (workflows.window), if any.
    opened_window: str | None = None
    # Reversible actions: the window in force, the revert's progress, the undo window and the
    # undo action it started, and a revoke or undo that asked to end it early.
    window: GrantWindow | None = None
    revert: RevertProgress | None = None
    undo_until: datetime | None = None
    undo_action: str | None = None
    end_requested: EndRequest | None = None
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        self.digest = self.request.digest

    @property
    def status(self) -> Status:
        """The public status of the action."""
        if self.phase is Phase.FINISHED:
            assert self.outcome is not None, "a finished action has its outcome"
            return self.outcome
        return _PUBLIC[self.phase]

    @property
    def verdict(self) -> Verdict | None:
        """The policy's verdict, once evaluated."""
        return self.evaluation.verdict if self.evaluation else None

    @property
    def requester(self) -> Principal | None:
        """The requester as the directory had it when the policy was evaluated."""
        return self.evaluation.requester if self.evaluation else None

    @property
    def awaits_decisions(self) -> bool:
        """Whether a decision or a cancel may still change the action."""
        return self.phase is Phase.PENDING

    def finish(self, outcome: Status, error: str | None) -> None:
        """Decide the action's outcome; `error` says why it did not succeed."""
        assert outcome.terminal, f"{outcome.value} is not an outcome"
        self.phase = Phase.FINISHED
        self.outcome = outcome
        self.error = error

    def accept(self, decision: Decision, groups: list[str]) -> None:
        """Count an authorised decision: a denial ends the wait, as does the quorum's last one."""
        self.decisions.append(decision)
        self.approver_groups[decision.approver] = list(groups)
        if decision.decision == "deny":
            self.finish(Status.DENIED, f"Denied by {decision.approver}: {decision.reason}")
            self.decided_at = decision.at
        elif all(p.met for p in self.progress()):
            self.phase = Phase.APPROVED
            self.decided_at = decision.at

    def progress(self) -> list[RequirementProgress]:
        """Each requirement with the approvers counted toward it (each person counts once)."""
        verdict = self.verdict
        if verdict is None or verdict.effect != "require_approval":
            return []
        widened = set(self.eligible) - {r.group for r in verdict.approvals}
        approvers = {
            d.approver: self.approver_groups.get(d.approver, [])
            for d in self.decisions
            if d.decision == "approve"
        }
        assignment = assign_approvers(verdict.approvals, approvers, widened)
        return [
            RequirementProgress(group=r.group, min=r.min, approved_by=assignment[i])
            for i, r in enumerate(verdict.approvals)
        ]

    def snapshot(self, action_id: str) -> ActionStatus:
        """The action's public status."""
        status = self.status
        requester = self.requester
        return ActionStatus(
            id=action_id,
            digest=self.digest,
            request=self.request,
            status=status,
            verdict=self.verdict,
            decisions=list(self.decisions),
            refused=list(self.refused),
            progress=self.progress(),
            eligible_groups=list(self.eligible) if status is Status.PENDING_APPROVAL else [],
            escalation_level=self.level,
            created_at=self.created_at,
            expires_at=self.expires_at,
            decided_at=self.decided_at,
            notifications=list(self.notifications),
            result=self.result,
            error=self.error,
            owner=requester.owner if requester else None,
            superseded_by=self.superseded_by,
            break_glass=self.break_glass.model_copy(deep=True) if self.break_glass else None,
            opened_window=self.opened_window,
            window=self.window.model_copy() if self.window else None,
            revert=self.revert.model_copy() if self.revert else None,
            undo_until=self.undo_until,
            undo_action=self.undo_action,
        )

    @property
    def awaits_review(self) -> bool:
        """Whether a break-glass action still waits for its after-the-fact review."""
        glass = self.break_glass
        return glass is not None and glass.reviewed is None

    def break_glass_details(self) -> list[str]:
        """The break-glass lines of the Temporal UI's details; none for other actions."""
        glass = self.break_glass
        if glass is None:
            return []
        lines = [f"**BREAK-GLASS** by {glass.by}: {glass.reason}"]
        if glass.reviewed is not None:
            lines.append(
                f"Reviewed by {glass.reviewed.reviewer} ({glass.reviewed.outcome}): "
                f"{glass.reviewed.reason}"
            )
        else:
            overdue = " — **OVERDUE**" if glass.review == "overdue" else ""
            lines.append(
                f"Review due {glass.review_due_at:%Y-%m-%d %H:%M} UTC by "
                f"{', '.join(glass.reviewer_groups) or 'reviewers'}{overdue}"
            )
        return lines

    def details(self) -> str:
        """Markdown for the Temporal UI's workflow page."""
        req = self.request
        status = self.status
        lines = [f"**{req.action}** on **{req.target}** by {req.requester} — **{status.value}**"]
        lines += self.break_glass_details()
        if status is Status.PENDING_APPROVAL:
            waits = ", ".join(
                f"{len(p.approved_by)} of {p.min} from {p.group}" for p in self.progress()
            )
            lines.append(f"Waits for: {waits} (eligible now: {', '.join(self.eligible)})")
            if self.expires_at:
                lines.append(f"Expires: {self.expires_at:%Y-%m-%d %H:%M} UTC")
        if self.decisions:
            lines.append(
                "Decisions: " + "; ".join(f"{d.approver} {d.decision}" for d in self.decisions)
            )
        if self.refused:
            lines.append(
                f"Refused attempts: {len(self.refused)} ("
                + "; ".join(f"{r.approver}: {r.code.value}" for r in self.refused[-5:])
                + ")"
            )
        lines.extend(self._reversible_details())
        if failed := [n for n in self.notifications if n.error]:
            lines.append(f"Notification failures: {len(failed)} ({failed[-1].error})")
        if self.error:
            lines.append(f"Reason: {self.error}")
        lines.append(f"Digest: `{self.digest}`")
        return "\n\n".join(lines)

    def _reversible_details(self) -> list[str]:
        """The grant window, the revert's trouble and the undo link, for the UI's details."""
        lines = []
        if (window := self.window) is not None:
            until = f" until {window.end:%Y-%m-%d %H:%M:%S} UTC" if window.end else ""
            lines.append(f"In force from {window.start:%Y-%m-%d %H:%M:%S} UTC{until}")
            if window.how is not None:
                lines.append(f"Ended: {window.how} by {window.ended_by}")
        if (revert := self.revert) is not None and revert.failures:
            state = "succeeded after" if revert.done_at else "FAILING, retried until it succeeds:"
            lines.append(f"Revert {state} {revert.failures} failed attempts ({revert.last_error})")
        if self.undo_until is not None:
            lines.append(f"Undo possible until {self.undo_until:%Y-%m-%d %H:%M:%S} UTC")
        if self.undo_action is not None:
            lines.append(f"Undo: {self.undo_action}")
        if self.request.reverts is not None:
            lines.append(f"Reverts: {self.request.reverts.action_id}")
        return lines
