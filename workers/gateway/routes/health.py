"""`/healthz` and `/readyz`: is the process up, does Temporal answer."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from workers.gateway.dependencies import get_service
from workers.gateway.errors import documented, error_response
from workers.gateway.service import ActionService


class Health(BaseModel):
    """The answer of the health endpoints."""

    status: str


router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=documented(503))
async def readyz(service: ActionService = Depends(get_service)) -> Health | JSONResponse:
    """Temporal answers; 503 otherwise."""
    if await service.ready():
        return Health(status="ready")
    return error_response(503, "temporal_unavailable", "Temporal is not reachable")
