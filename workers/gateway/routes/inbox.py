"""`/v1/approvals`: the caller's inbox of actions they may decide now."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, HTTPException, Query

from signoff.models import ActionStatus, Principal, parse_duration
from workers.gateway.auth import current_principal
from workers.gateway.dependencies import get_service
from workers.gateway.errors import documented
from workers.gateway.service import ActionService

router = APIRouter(prefix="/v1", tags=["actions"])

# Longer than any action may wait: a bigger value is a typo, not a question.
MAX_AGE = timedelta(days=3650)


async def stale_after(
    older_than: str | None = Query(
        default=None,
        max_length=20,
        description="Only actions requested at least this long ago, e.g. 7d, 12h, 1d12h",
    ),
) -> timedelta | None:
    """The `older_than` query parameter as a positive duration; 422 naming it otherwise."""
    if older_than is None:
        return None
    try:
        value = parse_duration(older_than)
    except ValueError as err:
        raise _invalid(str(err)) from None
    if not isinstance(value, timedelta):
        raise _invalid(f"invalid duration {older_than!r}: use a number with s, m, h or d (7d)")
    if value <= timedelta(0) or value > MAX_AGE:
        raise _invalid("must be greater than 0s and at most 3650d")
    return value


def _invalid(message: str) -> HTTPException:
    return HTTPException(
        status_code=422,
        detail={"code": "invalid_request", "message": f"query.older_than: {message}"},
    )


@router.get(
    "/approvals",
    response_model=list[ActionStatus],
    responses=documented(401, 422, 503),
)
async def approvals(
    limit: int = Query(default=50, ge=1, le=200),
    older_than: timedelta | None = Depends(stale_after),
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> list[ActionStatus]:
    """Your inbox: pending actions you may decide now, newest first (only stale ones with
    `older_than`)."""
    return await service.inbox(principal, limit=limit, older_than=older_than)


@router.get(
    "/reviews",
    response_model=list[ActionStatus],
    responses=documented(401, 422, 503),
)
async def reviews(
    limit: int = Query(default=50, ge=1, le=200),
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> list[ActionStatus]:
    """Break-glass actions waiting for a review you may give now, overdue first, then oldest."""
    return await service.reviews(principal, limit=limit)
