"""Reversible actions: how long a grant may last, and who may end it early or undo it.

A revertible action (its executor declares a revert) that asks for a `duration` stays in force
for that long and is then reverted; the policy rule bounds the duration (`max_duration`) and
may open an undo window. The workflow, the policy activity and the gateway all decide with
these functions, so they cannot disagree.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from signoff.executor import ExecutorRegistry, revert_action
from signoff.models import (
    ActionRequest,
    ActionStatus,
    DecisionRefused,
    ExecutorSpec,
    Principal,
    RefusalCode,
    RevertOf,
    Status,
    Verdict,
    format_duration,
    parse_duration,
)
from workflows.rules import party_to

DURATION_PARAM = "duration"
REVERT_SUFFIX = ".revert"
# The policy's verdict rule id when a grant asks for longer than its rule allows.
DURATION_RULE = "duration-over-max"


def requested_duration(request: ActionRequest) -> timedelta | None:
    """The `duration` param as a timedelta (None when absent); ValueError when unreadable."""
    value = request.params.get(DURATION_PARAM)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("params.duration must be a duration such as '30m'")
    duration = parse_duration(value)
    if not isinstance(duration, timedelta) or duration <= timedelta(0):
        raise ValueError(f"params.duration {value!r} is not a positive duration such as '30m'")
    return duration


def duration_problem(
    request: ActionRequest, verdict: Verdict, spec: ExecutorSpec | None
) -> str | None:
    """Why a revertible action's requested duration is refused under its rule; None if fine."""
    if spec is None or not spec.revertible or verdict.effect == "deny":
        return None
    try:
        duration = requested_duration(request)
    except ValueError as exc:
        return str(exc)
    if duration is None:
        return None
    limit = verdict.max_duration
    if limit is None:
        return (
            f"{request.action} asks for a duration of {format_duration(duration)}, but rule "
            f"{verdict.rule_id!r} sets no max_duration, so it grants nothing for a duration"
        )
    if duration > limit:
        return (
            f"{request.action} asks for {format_duration(duration)}, longer than the "
            f"{format_duration(limit)} rule {verdict.rule_id!r} allows (max_duration)"
        )
    return None


def may_end(status: ActionStatus, principal_id: str, principal: Principal | None) -> bool:
    """The requester (or whom it acts for), an approver, or a member of the revoke groups."""
    if party_to(principal_id, status):
        return True
    if any(d.approver == principal_id and d.decision == "approve" for d in status.decisions):
        return True
    groups = set(status.verdict.revoke_groups) if status.verdict else set()
    return (
        principal is not None and principal.kind == "human" and bool(groups & set(principal.groups))
    )


def _not_allowed(status: ActionStatus, principal_id: str, what: str) -> DecisionRefused:
    groups = status.verdict.revoke_groups if status.verdict else []
    admins = f", or a member of {', '.join(groups)}" if groups else ""
    return DecisionRefused(
        code=RefusalCode.NOT_ELIGIBLE,
        message=(
            f"{principal_id} may not {what} this action: only its requester, its "
            f"approvers{admins} may"
        ),
    )


def revoke_refusal(
    status: ActionStatus, principal_id: str, principal: Principal | None
) -> DecisionRefused | None:
    """Why ending an active grant now is refused; None when `principal_id` may."""
    if status.status is not Status.ACTIVE:
        return DecisionRefused(
            code=RefusalCode.NOT_PENDING,
            message=f"the action is {status.status.value}, not active: nothing to revoke",
        )
    if not may_end(status, principal_id, principal):
        return _not_allowed(status, principal_id, "revoke")
    return None


def undo_refusal(
    status: ActionStatus, principal_id: str, principal: Principal | None, now: datetime
) -> DecisionRefused | None:
    """Why asking to undo an action is refused; None when `principal_id` may, now."""
    if status.undo_until is None:
        return DecisionRefused(
            code=RefusalCode.NOT_PENDING,
            message=f"the action is {status.status.value}; its policy allows no undo",
        )
    if status.status not in (Status.ACTIVE, Status.SUCCEEDED) or status.undo_action is not None:
        pending = f" (undo {status.undo_action} asked already)" if status.undo_action else ""
        return DecisionRefused(
            code=RefusalCode.NOT_PENDING,
            message=f"the action is {status.status.value}{pending}: nothing to undo",
        )
    if now > status.undo_until:
        return DecisionRefused(
            code=RefusalCode.NOT_PENDING,
            message=f"the undo window closed at {status.undo_until:%Y-%m-%d %H:%M} UTC",
        )
    if not may_end(status, principal_id, principal):
        return _not_allowed(status, principal_id, "undo")
    return None


def revert_request(status: ActionStatus, asker: str, reason: str) -> ActionRequest:
    """The undo's own request: `<type>.revert` of the action's target and params, by `asker`."""
    original = status.request
    return ActionRequest(
        action=revert_action(original.action),
        target=original.target,
        params=original.params,
        justification=f"undo of {status.id}" + (f": {reason}" if reason else ""),
        requester=asker,
        reverts=RevertOf(action_id=status.id, request=original, result=status.result),
    )


def direct_revert_problem(request: ActionRequest, executors: ExecutorRegistry) -> str | None:
    """A `<type>.revert` asked for directly, not through an undo: refused (it reverts nothing)."""
    base = request.action.removesuffix(REVERT_SUFFIX)
    if request.reverts is not None or base == request.action:
        return None
    if executors.revert_spec(base) is None:
        return None
    return (
        f"{request.action} is the revert of {base}: ask for it with an undo of the action "
        f"(POST /v1/actions/{{id}}/undo, signoff undo ID), which names what it reverts"
    )
