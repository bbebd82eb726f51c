"""Who is party to an action, who may decide it now, who may see it, and why a decision is refused.

The workflow applies these rules to every decision it receives; the gateway applies them to fill
inboxes and guard reads. Both judge the same `ActionStatus`, so they cannot disagree.
"""

from __future__ import annotations

from signoff.models import (
    ActionRequest,
    ActionStatus,
    AmendRequest,
    ApprovalWindow,
    DecisionRefused,
    DecisionRequest,
    Principal,
    RefusalCode,
    Status,
    Verdict,
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
    return groups | reviewer_groups(status)


def reviewer_groups(status: ActionStatus) -> set[str]:
    """Every group that may review a break-glass action at some stage of its review."""
    spec = status.verdict.break_glass if status.verdict else None
    if status.break_glass is None or spec is None:
        return set()
    groups = set(spec.reviewers)
    for stage in spec.escalation:
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
    if refusal := identity_refusal(status, approver_id, approver, owner_now=owner_now):
        return refusal
    assert approver is not None, "identity_refusal refuses principals nobody knows"
    if not set(approver.groups) & set(status.eligible_groups):
        return DecisionRefused(
            code=RefusalCode.NOT_ELIGIBLE,
            message=(
                f"{approver.id} is not in a group that may decide at this stage "
                f"({', '.join(status.eligible_groups)})"
            ),
        )
    return None


def identity_refusal(
    status: ActionStatus,
    approver_id: str,
    approver: Principal | None,
    *,
    owner_now: str | None = None,
) -> DecisionRefused | None:
    """Who may never decide this action, at any stage: unknown, an agent, a party, its amender."""
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
    if status.request.amended_by is not None and approver.id == status.request.amended_by:
        # Changing the params and approving the change would make one person the whole check.
        return DecisionRefused(
            code=RefusalCode.AMENDER,
            message=(
                f"{approver.id} proposed these params (amending {status.request.amended_from}); "
                "someone else must decide them"
            ),
        )
    return None


def after_lookup(
    refusal: DecisionRefused | None, identity: DecisionRefused | None
) -> DecisionRefused | None:
    """The refusal of a decision re-checked after its decider was looked up.

    The action was pending when the decision arrived; if another decision ended that while
    this one's decider was looked up, who decided still outranks when: an agent's attempt is
    on record as an agent's, not as late.
    """
    if refusal is not None and refusal.code is RefusalCode.NOT_PENDING and identity is not None:
        return identity
    return refusal


def step_up_refusal(status: ActionStatus, request: DecisionRequest) -> DecisionRefused | None:
    """Refused: the rule asks for a security-key step-up and the decision carries none."""
    verdict = status.verdict
    if verdict is None or verdict.step_up is None:
        return None
    if request.step_up is not None and request.step_up.method == verdict.step_up:
        return None
    return DecisionRefused(
        code=RefusalCode.STEP_UP_REQUIRED,
        message=(
            f"policy rule {verdict.rule_id} needs a {verdict.step_up} step-up for every "
            f"decision: decide on the approval page (/a/{status.id}) with your security key"
        ),
    )


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


# What a successor keeps of the action it supersedes: everything but the params.
_KEPT = ("action", "target", "justification", "risk", "on_behalf_of", "execution", "requester")


def amend_refusal(status: ActionStatus, amend: AmendRequest) -> DecisionRefused | None:
    """Refusals of an amendment that need no identity: state, digest, and a faithful successor.

    The successor must be this action with other params, for the same requester, linked back
    to an action and to the amender; anything else is not an amendment.
    """
    if refusal := not_pending(status):
        return refusal
    verdict = status.verdict
    if verdict is not None and verdict.step_up is not None:
        # Amending ends the action like a denial does, and a denial here needs the key too.
        return DecisionRefused(
            code=RefusalCode.STEP_UP_REQUIRED,
            message=(
                f"policy rule {verdict.rule_id} needs a {verdict.step_up} step-up for every "
                f"decision, and amending ends the action: decide on the approval page "
                f"(/a/{status.id}) with your security key, and ask the requester for the change"
            ),
        )
    if amend.digest != status.digest:
        return DecisionRefused(
            code=RefusalCode.DIGEST_MISMATCH,
            message=(
                f"digest {amend.digest[:12]}… does not match the action "
                f"({status.digest[:12]}…); you were shown a different action"
            ),
        )
    successor = amend.successor
    if successor.digest == status.digest:
        return DecisionRefused(
            code=RefusalCode.DIGEST_MISMATCH,
            message="the changed params are the same action: approve it instead",
        )
    changed = [f for f in _KEPT if getattr(successor, f) != getattr(status.request, f)]
    # Which action it amends is bound by the gateway's signatures (the amendment's for this
    # action id, the successor's over `amended_from`), not compared here: a replay may run the
    # history under another workflow id, and the answer must not change.
    if changed or successor.amended_by != amend.by or successor.amended_from is None:
        return DecisionRefused(
            code=RefusalCode.SIGNATURE_MISMATCH,
            message="the successor is not this action with changed params for its requester"
            + (f" ({', '.join(changed)} differ)" if changed else ""),
        )
    return None


# --- break-glass ---------------------------------------------------------------------------------


def break_glass_refusal(
    request: ActionRequest, requester: Principal | None, verdict: Verdict
) -> DecisionRefused | None:
    """Who may force an action through now: a person in the matching rule's groups, with a reason.

    `requester`: the requester as the directory has it when the policy is evaluated.
    """
    claim = request.break_glass
    assert claim is not None, "only a break-glass request is judged for break-glass"
    spec = verdict.break_glass
    if requester is None:
        return DecisionRefused(
            code=RefusalCode.UNKNOWN_PRINCIPAL,
            message=f"{request.requester} is not in the directory; only known people break glass",
        )
    if requester.kind != "human":
        return DecisionRefused(
            code=RefusalCode.AGENT_BREAK_GLASS,
            message=f"{requester.id} is an agent; agents never break glass",
        )
    if spec is None and verdict.effect == "deny":
        return DecisionRefused(
            code=RefusalCode.BREAK_GLASS_NOT_ALLOWED,
            message=f"the policy denies it ({verdict.reason}); break-glass never overrides a deny",
        )
    if spec is None:
        return DecisionRefused(
            code=RefusalCode.BREAK_GLASS_NOT_ALLOWED,
            message=(
                f"rule {verdict.rule_id!r} allows no break-glass for {request.action} on "
                f"{request.target}"
            ),
        )
    if request.on_behalf_of not in (None, requester.id):
        return DecisionRefused(
            code=RefusalCode.BREAK_GLASS_NOT_ALLOWED,
            message="break-glass is in one's own name, never on behalf of someone else",
        )
    if request.execution != "worker":
        return DecisionRefused(
            code=RefusalCode.BREAK_GLASS_NOT_ALLOWED,
            message="a break-glass action runs in the worker; caller mode is not allowed",
        )
    if not set(requester.groups) & set(spec.groups):
        return DecisionRefused(
            code=RefusalCode.BREAK_GLASS_NOT_ALLOWED,
            message=(
                f"{requester.id} is not in a group that may break glass here "
                f"({', '.join(spec.groups)})"
            ),
        )
    if len(claim.reason.strip()) < spec.reason_min_length:
        return DecisionRefused(
            code=RefusalCode.MISSING_REASON,
            message=(
                f"a break-glass reason needs at least {spec.reason_min_length} characters "
                "saying why this cannot wait for approval"
            ),
        )
    return None


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


def review_refusal(
    status: ActionStatus, reviewer_id: str, reviewer: Principal | None, digest: str
) -> DecisionRefused | None:
    """Who may review a break-glass action: a known human, not the breaker, in a group now."""
    glass = status.break_glass
    if glass is None or glass.reviewed is not None or not glass.reviewer_groups:
        if glass is None:
            state = "not a break-glass action; there is nothing to review"
        elif glass.reviewed is not None:
            state = f"already reviewed by {glass.reviewed.reviewer}"
        else:
            state = "still running; its review opens once it has run"
        return DecisionRefused(code=RefusalCode.NOT_PENDING, message=f"the action is {state}")
    if digest != status.digest:
        return DecisionRefused(
            code=RefusalCode.DIGEST_MISMATCH,
            message=(
                f"digest {digest[:12]}… does not match the action ({status.digest[:12]}…); "
                "you were shown a different action"
            ),
        )
    if refusal := reviewer_identity_refusal(status, reviewer_id, reviewer):
        return refusal
    assert reviewer is not None, "reviewer_identity_refusal refuses principals nobody knows"
    if not set(reviewer.groups) & set(glass.reviewer_groups):
        return DecisionRefused(
            code=RefusalCode.NOT_ELIGIBLE,
            message=(
                f"{reviewer.id} is not in a group that may review it now "
                f"({', '.join(glass.reviewer_groups)})"
            ),
        )
    return None


def reviewer_identity_refusal(
    status: ActionStatus, reviewer_id: str, reviewer: Principal | None
) -> DecisionRefused | None:
    """Who may never review this break-glass action: nobody known, an agent, its breaker."""
    if reviewer is None:
        return DecisionRefused(
            code=RefusalCode.UNKNOWN_PRINCIPAL,
            message=f"{reviewer_id} is not in the directory",
        )
    if reviewer.kind != "human":
        return DecisionRefused(
            code=RefusalCode.AGENT_APPROVER,
            message=f"{reviewer.id} is an agent; agents never review actions",
        )
    glass = status.break_glass
    if (glass is not None and reviewer.id == glass.by) or reviewer.id in parties(status):
        return DecisionRefused(
            code=RefusalCode.SELF_REVIEW,
            message=f"{reviewer.id} broke glass on this action; nobody reviews their own",
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
