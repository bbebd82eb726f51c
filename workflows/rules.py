"""Who is party to an action, who may decide it now, who may see it, and why a decision is refused.

The workflow applies these rules to every decision it receives; the gateway applies them to fill
inboxes and guard reads. Both judge the same `ActionStatus`, so they cannot disagree.
"""

from __future__ import annotations

from signoff.models import (
    ActionStatus,
    ApprovalWindow,
    DecisionRefused,
    DecisionRequest,
    Principal,
    RefusalCode,
    Status,
    format_duration,
)

AUDITORS = "auditors"
"""The group whose members may view every action; it gives no say in any."""


def parties(status: ActionStatus, *, owner_now: str | None = None) -> dict[str, str]:
    """Who is party to the action, each with how: requester, whom it is for, the agent's owner.

    `owner_now`: the requesting agent's owner as the directory has it at decision time; a party
    as much as the owner at request time (`status.owner`).
    """
    request = status.request
    found = {request.requester: "the requester"}
    if request.on_behalf_of is not None:
        found[request.on_behalf_of] = "the principal it is on behalf of"
    for owner in (status.owner, owner_now):
        if owner:
            found.setdefault(owner, "the requesting agent's owner")
    return found


def party_to(principal_id: str, status: ActionStatus) -> bool:
    """Whether the principal asked for the action, or it is on their behalf or their agent's."""
    return principal_id in parties(status)


def decider_groups(status: ActionStatus) -> set[str]:
    """Every group that may decide the action at some stage of its policy."""
    verdict = status.verdict
    if verdict is None:
        return set()
    groups = {r.group for r in verdict.approvals}
    for stage in verdict.escalation:
        groups.update(stage.add_groups)
    return groups


def not_pending(status: ActionStatus) -> DecisionRefused | None:
    """Refused: the action no longer waits for decisions."""
    if status.status is Status.PENDING_APPROVAL:
        return None
    return DecisionRefused(
        code=RefusalCode.NOT_PENDING,
        message=f"the action is {status.status.value}, not pending approval",
    )


def already_decided(status: ActionStatus, approver_id: str) -> DecisionRefused | None:
    """Refused: each person decides an action once."""
    if all(d.approver != approver_id for d in status.decisions):
        return None
    return DecisionRefused(
        code=RefusalCode.DUPLICATE,
        message=f"{approver_id} has already decided this action",
    )


def decision_refusal(status: ActionStatus, request: DecisionRequest) -> DecisionRefused | None:
    """Refusals that need no identity: state, digest, repetition and a denial's reason."""
    if refusal := not_pending(status):
        return refusal
    if request.digest != status.digest:
        return DecisionRefused(
            code=RefusalCode.DIGEST_MISMATCH,
            message=(
                f"digest {request.digest[:12]}… does not match the action "
                f"({status.digest[:12]}…); you were shown a different action"
            ),
        )
    if refusal := already_decided(status, request.approver):
        return refusal
    if request.decision == "deny" and not request.reason.strip():
        return DecisionRefused(
            code=RefusalCode.MISSING_REASON,
            message="a denial needs a reason, so the agent learns why",
        )
    return None


def approver_refusal(
    status: ActionStatus,
    approver_id: str,
    approver: Principal | None,
    *,
    owner_now: str | None = None,
) -> DecisionRefused | None:
    """Who may decide: a known human, not party to the action, in a group eligible now.

    `approver`: `approver_id` as the directory has it now (None: the directory has no such id).
    `owner_now`: see `parties`.
    """
    if approver is None:
        return DecisionRefused(
            code=RefusalCode.UNKNOWN_PRINCIPAL,
            message=f"{approver_id} is not in the directory",
        )
    if approver.kind == "agent":
        return DecisionRefused(
            code=RefusalCode.AGENT_APPROVER,
            message=f"{approver.id} is an agent; agents never decide actions",
        )
    found = parties(status, owner_now=owner_now)
    if approver.id in found:
        return DecisionRefused(
            code=RefusalCode.SELF_APPROVAL,
            message=f"{approver.id} is {found[approver.id]}; nobody decides their own action",
        )
    if not set(approver.groups) & set(status.eligible_groups):
        return DecisionRefused(
            code=RefusalCode.NOT_ELIGIBLE,
            message=(
                f"{approver.id} is not in a group that may decide at this stage "
                f"({', '.join(status.eligible_groups)})"
            ),
        )
    return None


def can_decide_now(principal: Principal, status: ActionStatus) -> bool:
    """Whether the principal could approve or deny this action right now."""
    return (
        not_pending(status) is None
        and already_decided(status, principal.id) is None
        and approver_refusal(status, principal.id, principal) is None
    )


def can_view(principal: Principal, status: ActionStatus) -> bool:
    """Parties, auditors, anyone who decided it, and humans who may decide it at any stage."""
    return (
        party_to(principal.id, status)
        or AUDITORS in principal.groups
        or any(d.approver == principal.id for d in status.decisions)
        or (principal.kind == "human" and bool(set(principal.groups) & decider_groups(status)))
    )


# --- approval windows ---------------------------------------------------------------------------


def window_refusal(status: ActionStatus, request: DecisionRequest) -> DecisionRefused | None:
    """Refused: a window the action's rule does not offer, or longer than it allows."""
    if request.window is None:
        return None
    verdict = status.verdict
    offer = verdict.window if verdict is not None else None
    if offer is None:
        rule = verdict.rule_id if verdict is not None else "its rule"
        return DecisionRefused(
            code=RefusalCode.WINDOW_NOT_OFFERED,
            message=f"rule {rule!r} offers no approval window; approve without one",
        )
    if request.window > offer.max_duration:
        return DecisionRefused(
            code=RefusalCode.WINDOW_TOO_LONG,
            message=(
                f"window {format_duration(request.window)} is longer than rule "
                f"{verdict.rule_id if verdict else ''!r}'s window max_duration "
                f"{format_duration(offer.max_duration)}"
            ),
        )
    return None


def revoke_refusal(window: ApprovalWindow, revoker: Principal | None) -> DecisionRefused | None:
    """Who may end a window early: a human who approved it or is in one of its revoking groups."""
    if revoker is None or revoker.kind != "human":
        who = revoker.id if revoker is not None else "an unknown principal"
        return DecisionRefused(
            code=RefusalCode.NOT_REVOKER,
            message=f"{who} may not revoke window {window.id}: only people revoke windows",
        )
    if revoker.id in window.approvers or set(revoker.groups) & set(window.revokers):
        return None
    groups = ", ".join(window.revokers) or "none"
    return DecisionRefused(
        code=RefusalCode.NOT_REVOKER,
        message=(
            f"{revoker.id} may not revoke window {window.id}: only its approvers "
            f"({', '.join(window.approvers)}) or the groups {groups} may"
        ),
    )


def can_view_window(principal: Principal, window: ApprovalWindow) -> bool:
    """Its holder, whom it is for, its approvers, its revokers and auditors."""
    return (
        principal.id in (window.holder, window.on_behalf_of)
        or principal.id in window.approvers
        or AUDITORS in principal.groups
        or (principal.kind == "human" and bool(set(principal.groups) & set(window.revokers)))
    )
