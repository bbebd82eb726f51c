"""`/v1/windows`: approval windows (scoped approvals) — list, read, revoke early."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from signoff.models import ApprovalWindow, Principal, WindowRevokeBody, WindowRevokeRequest
from workers.gateway.auth import current_principal
from workers.gateway.errors import documented
from workers.gateway.windows import WindowService
from workflows.errors import MessageRefusedError, WindowNotFound
from workflows.rules import can_view_window

router = APIRouter(prefix="/v1", tags=["windows"])


async def get_windows(request: Request) -> WindowService:
    """FastAPI dependency: approval windows through the app's action service."""
    return WindowService(request.app.state.service)


@router.get("/windows", response_model=list[ApprovalWindow], responses=documented(401, 422, 503))
async def list_windows(
    all: bool = Query(default=False, description="Also windows that expired or were revoked"),
    limit: int = Query(default=50, ge=1, le=200),
    principal: Principal = Depends(current_principal),
    windows: WindowService = Depends(get_windows),
) -> list[ApprovalWindow]:
    """Approval windows you hold, approved, may revoke, or audit; live ones unless `all`."""
    return await windows.list(principal, live_only=not all, limit=limit)


@router.get(
    "/windows/{id}", response_model=ApprovalWindow, responses=documented(401, 404, 422, 503)
)
async def get_window(
    id: str,
    principal: Principal = Depends(current_principal),
    windows: WindowService = Depends(get_windows),
) -> ApprovalWindow:
    """One window: scope, holder, approvers, expiry and every use; 404 if you may not see it."""
    return await windows.visible(principal, id)


@router.post(
    "/windows/{id}/revoke",
    response_model=ApprovalWindow,
    responses=documented(400, 401, 403, 404, 409, 422, 503),
)
async def revoke_window(
    id: str,
    body: WindowRevokeBody | None = None,
    principal: Principal = Depends(current_principal),
    windows: WindowService = Depends(get_windows),
) -> ApprovalWindow:
    """End a window now: its approvers or its rule's revoking groups (403 for anyone else).

    Every refused revoke is recorded in the window's history and the ledger. 409: it ended.
    """
    reason = body.reason if body is not None else ""
    try:
        return await windows.revoke(id, WindowRevokeRequest(by=principal.id, reason=reason))
    except MessageRefusedError:
        # Recorded by the window; someone who may not see it learns nothing more than GET says.
        if not can_view_window(principal, await windows.get(id)):
            raise WindowNotFound(f"no window {id}") from None
        raise
