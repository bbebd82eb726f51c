"""FastAPI dependencies the routes share: the service, a checked action id, the refusal budget."""

from __future__ import annotations

import re

from fastapi import Query, Request

from workers.gateway.ratelimit import RefusalBudget
from workers.gateway.service import MAX_WAIT, ActionService
from workers.settings import Settings
from workflows.errors import ActionNotFound

# Action ids are ours ("act-" + hex or uuid); anything else cannot exist, so it is a 404.
ACTION_ID = re.compile(r"act-[A-Za-z0-9-]{1,80}")

Wait = Query(
    default=None,
    ge=0,
    le=MAX_WAIT,
    description="Long-poll: wait up to this many seconds (at most 60) for a terminal status.",
)


async def get_service(request: Request) -> ActionService:
    """FastAPI dependency: the app's action service."""
    service: ActionService = request.app.state.service
    return service


async def action_id(id: str) -> str:
    """FastAPI dependency: the `{id}` path parameter, or 404 if it cannot be an action id."""
    if not ACTION_ID.fullmatch(id):
        raise ActionNotFound(f"no action {id[:100]}")
    return id


async def refusal_budget(request: Request) -> RefusalBudget:
    """FastAPI dependency: the app's budget of refused decisions per principal."""
    state = request.app.state
    budget: RefusalBudget | None = getattr(state, "refusal_budget", None)
    if budget is None:
        settings: Settings = state.settings
        budget = RefusalBudget(
            settings.refused_decisions_burst, settings.refused_decisions_per_minute
        )
        state.refusal_budget = budget
    return budget
