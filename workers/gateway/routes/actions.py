"""`/v1/actions`: submit an action, read it, decide, cancel, and report its result."""

from __future__ import annotations

from collections.abc import Awaitable

import fastapi
from fastapi import APIRouter, Depends

from policies.directory import Authenticated, Directory, vouched_groups
from signoff.models import (
    ActionStatus,
    ActionSubmission,
    AmendBody,
    CancelBody,
    CancelRequest,
    DecisionBody,
    DecisionRequest,
    ExecutionReport,
    Principal,
    ReportBody,
    ReviewBody,
    ReviewRequest,
    RevokeBody,
    RevokeRequest,
    UndoBody,
)
from workers.gateway.auth import current_identity, current_principal
from workers.gateway.dependencies import Wait, action_id, get_service, refusal_budget
from workers.gateway.errors import documented
from workers.gateway.ratelimit import RefusalBudget
from workers.gateway.service import ActionService
from workflows.errors import ActionError, ActionNotFound, WorkerUnavailable
from workflows.rules import can_view

router = APIRouter(prefix="/v1", tags=["actions"])


@router.post(
    "/actions",
    status_code=202,
    response_model=ActionStatus,
    responses=documented(400, 401, 403, 409, 413, 422, 503),
)
async def submit(
    submission: ActionSubmission,
    wait: float | None = Wait,
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> ActionStatus:
    """Ask for an action; the requester is the authenticated principal.

    With `break_glass: {reason}`, a person in the matching rule's break-glass groups forces
    it through at once; it is flagged and must be reviewed afterwards. 403 (422 for a short
    reason) when the break is refused: an agent, someone outside the groups, or a rule without
    break-glass; the refusal is recorded and nothing runs.

    Answers 202 with the status. Repeating a request with the same `idempotency_key` answers
    202 with the same action, never a second one; the same key with a different action,
    target or params is a 409.
    """
    return await service.submit(principal, submission, wait=wait or 0.0)


@router.get(
    "/actions/{id}",
    response_model=ActionStatus,
    # 409: the workflow ended without an outcome; 503: its task keeps failing (or no worker).
    responses=documented(401, 404, 409, 422, 503),
)
async def get_action(
    id: str = Depends(action_id),
    wait: float | None = Wait,
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> ActionStatus:
    """The action's status, for its requester, its possible deciders and auditors; else 404."""
    status = await service.status(id)
    if not can_view(principal, status):
        # The same answer as for an id that does not exist: outsiders learn nothing.
        raise ActionNotFound(f"no action {id}")
    if wait and not status.settled:
        status = await service.wait(id, wait, current=status)
    return status


@router.post(
    "/actions/{id}/decisions",
    response_model=ActionStatus,
    responses=documented(400, 401, 403, 404, 409, 422, 429, 503),
)
async def decide(
    body: DecisionBody,
    request: fastapi.Request,
    id: str = Depends(action_id),
    identity: Authenticated = Depends(current_identity),
    service: ActionService = Depends(get_service),
    budget: RefusalBudget = Depends(refusal_budget),
) -> ActionStatus:
    """Approve or deny with the digest you were shown; every refused attempt is recorded.

    403: you may not decide it; 404: no such action, or you may not see it (as for GET);
    409: it is not pending (or you already decided); 422: the digest does not match the
    action, or a denial has no reason; 429: too many refused attempts, see Retry-After.
    """
    principal = identity.principal
    _within_budget(budget, principal)
    decision = DecisionRequest(
        **body.model_dump(),
        approver=principal.id,
        channel="api",
        approver_groups=await idp_groups(identity, request.app.state.directory),
    )
    return await _counted(service.decide(id, decision), budget, principal, service, id)


@router.post(
    "/actions/{id}/amend",
    response_model=ActionStatus,
    responses=documented(400, 401, 403, 404, 409, 413, 422, 429, 503),
)
async def amend(
    body: AmendBody,
    request: fastapi.Request,
    id: str = Depends(action_id),
    identity: Authenticated = Depends(current_identity),
    service: ActionService = Depends(get_service),
    budget: RefusalBudget = Depends(refusal_budget),
) -> ActionStatus:
    """Approve with changes: propose other params instead of approving.

    The action ends `superseded`; a successor with the new params (validated as for a
    submission) is requested on the requester's behalf, evaluated afresh, and needs its own
    approvals, never yours. Answers the superseded action; `superseded_by` is the successor.
    403: you may not decide it (refused and recorded); 409: it is not pending; 422: invalid
    params, unchanged params, or a digest you were not shown.
    """
    principal = identity.principal
    _within_budget(budget, principal)
    groups = await idp_groups(identity, request.app.state.directory)
    return await _counted(
        service.amend(id, principal.id, body, amender_groups=groups), budget, principal, service, id
    )


async def _seen(service: ActionService, id: str, principal: Principal) -> ActionStatus:
    """The action's status; 404 unless the principal may see it, exactly as GET answers."""
    status = await service.status(id)
    if not can_view(principal, status):
        raise ActionNotFound(f"no action {id}")
    return status


def _within_budget(budget: RefusalBudget, principal: Principal) -> None:
    """429 with Retry-After while this principal has used up its refused attempts."""
    wait = budget.retry_after(principal.id)
    if wait:
        raise fastapi.HTTPException(
            status_code=429,
            detail={
                "code": "too_many_refusals",
                "message": f"too many refused attempts by {principal.id}; retry in {wait}s",
            },
            headers={"Retry-After": str(wait)},
        )


async def _counted(
    attempt: Awaitable[ActionStatus],
    budget: RefusalBudget,
    principal: Principal,
    service: ActionService,
    id: str,
) -> ActionStatus:
    """A decision, amendment or review: each refusal spends budget and tells only what GET does.

    No visibility check first on purpose: a refused attempt must reach the workflow's record,
    and an accepted one (the usual case) needs no extra status read. Someone who may not see
    the action learns what GET tells them: nothing (no state, groups or digest from a refusal).
    """
    try:
        return await attempt
    except WorkerUnavailable:
        raise
    except ActionNotFound:
        budget.spend(principal.id)
        raise
    except ActionError:
        budget.spend(principal.id)
        if not can_view(principal, await service.status(id)):
            raise ActionNotFound(f"no action {id}") from None
        raise


async def idp_groups(identity: Authenticated, directory: Directory) -> list[str] | None:
    """The verified IdP groups of a person the directory file does not list; else None.

    Workers look approvers up in their directory; for a person known only to the identity
    provider they find nobody, so the gateway vouches (in the signed decision) for what the
    verified token says. Anyone the directory lists is judged by the directory alone.
    """
    if identity.method != "oidc":
        return None  # a static token is always someone the file lists
    return await vouched_groups(directory, identity.principal)


@router.post(
    "/actions/{id}/cancel",
    response_model=ActionStatus,
    responses=documented(400, 401, 403, 404, 409, 422, 503),
)
async def cancel(
    body: CancelBody | None = None,
    id: str = Depends(action_id),
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> ActionStatus:
    """Cancel a pending action; only its requester may (403 for anyone else)."""
    await _seen(service, id, principal)
    reason = body.reason if body is not None else ""
    return await service.cancel(id, CancelRequest(by=principal.id, reason=reason))


@router.post(
    "/actions/{id}/report",
    response_model=ActionStatus,
    responses=documented(400, 401, 403, 404, 409, 422, 503),
)
async def report(
    body: ReportBody,
    id: str = Depends(action_id),
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> ActionStatus:
    """Caller mode: the requester reports the result (or error) of the approved action it ran.

    Answers with the final status. 403: only the requester reports; 409: the action is not
    waiting for a report (not approved yet, worker mode, or already reported).
    """
    await _seen(service, id, principal)
    return await service.report(
        id, ExecutionReport(by=principal.id, result=body.result, error=body.error)
    )


@router.post(
    "/actions/{id}/review",
    response_model=ActionStatus,
    responses=documented(400, 401, 403, 404, 409, 422, 429, 503),
)
async def review(
    body: ReviewBody,
    id: str = Depends(action_id),
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
    budget: RefusalBudget = Depends(refusal_budget),
) -> ActionStatus:
    """Review a break-glass action after the fact, with the digest you were shown.

    403: you may not review it (the breaker, an agent, or not in a reviewer group now);
    404: no such action, or you may not see it; 409: it awaits no review (not break-glass,
    or already reviewed); 422: the digest does not match; 429: too many refused attempts.
    """
    _within_budget(budget, principal)
    request = ReviewRequest(**body.model_dump(), reviewer=principal.id, channel="api")
    return await _counted(service.review(id, request), budget, principal, service, id)


@router.post(
    "/actions/{id}/revoke",
    response_model=ActionStatus,
    responses=documented(400, 401, 403, 404, 409, 422, 503),
)
async def revoke(
    body: RevokeBody | None = None,
    id: str = Depends(action_id),
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> ActionStatus:
    """End an active grant now: its revert runs at once (retried until it succeeds).

    Allowed for the requester, the action's approvers and the policy's `revoke_groups`;
    403 for anyone else (the attempt is recorded); 409 when the action is not active.
    """
    await _seen(service, id, principal)
    reason = body.reason if body is not None else ""
    return await service.revoke(id, RevokeRequest(by=principal.id, reason=reason))


@router.post(
    "/actions/{id}/undo",
    response_model=ActionStatus,
    responses=documented(400, 401, 403, 404, 409, 422, 503),
)
async def undo(
    body: UndoBody | None = None,
    id: str = Depends(action_id),
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> ActionStatus:
    """Ask for a reversible action to be reverted, within its rule's undo window.

    The revert is its own action (`<type>.revert`, `undo_action` in the answer) that the
    policy evaluates and may send for approval. 403: you are not its requester, an approver
    or in its revoke groups (recorded); 409: no undo window, or it closed.
    """
    status = await _seen(service, id, principal)
    reason = body.reason if body is not None else ""
    return await service.undo(id, principal, reason, status)
