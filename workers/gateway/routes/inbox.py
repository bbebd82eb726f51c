"""`/v1/approvals`: the caller's inbox of actions they may decide now."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from signoff.models import ActionStatus, Principal
from workers.gateway.auth import current_principal
from workers.gateway.dependencies import get_service
from workers.gateway.errors import documented
from workers.gateway.service import ActionService

router = APIRouter(prefix="/v1", tags=["actions"])


@router.get(
    "/approvals",
    response_model=list[ActionStatus],
    responses=documented(401, 422, 503),
)
async def approvals(
    limit: int = Query(default=50, ge=1, le=200),
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> list[ActionStatus]:
    """Your inbox: pending actions you may decide now, newest first."""
    return await service.inbox(principal, limit=limit)


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
