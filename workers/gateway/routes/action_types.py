"""`/v1/action-types`: what may be asked for, and the rules that apply to it."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from policies.catalog import catalog
from signoff.catalog import ActionType
from signoff.models import Principal
from workers.gateway.auth import current_principal
from workers.gateway.dependencies import get_service
from workers.gateway.errors import documented
from workers.gateway.service import ActionService

router = APIRouter(prefix="/v1", tags=["actions"])


@router.get("/action-types", response_model=list[ActionType], responses=documented(401, 503))
async def action_types(
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> list[ActionType]:
    """The action types you may ask for: params schema, where they run, and the rules that
    decide whether they need approval."""
    return catalog(service.policy, service.executors)
