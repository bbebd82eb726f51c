"""The `/teams/messages` route the Bot Framework posts Teams activities to."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from channels.teams.inbound import TeamsInbound, unauthorized


def messages_router(inbound: TeamsInbound | None) -> APIRouter:
    """The route; without an inbound handler (no app id) it refuses everything with 401."""
    router = APIRouter()

    @router.post("/teams/messages", include_in_schema=False)
    async def teams_messages(request: Request) -> Response:
        """Bot Framework activities from Microsoft Teams."""
        if inbound is None:
            return unauthorized("Teams is not configured (no SIGNOFF_TEAMS_APP_ID)")
        return await inbound.handle(request)

    return router
