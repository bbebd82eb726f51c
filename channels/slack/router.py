"""The gateway's Slack route: `POST /slack/interactions`, and Socket Mode for the app's life."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response

from channels.slack.interactions import SlackInteractions
from channels.slack.socket_mode import SlackSocketMode

log = logging.getLogger("signoff.slack")

MAX_BODY_BYTES = 1024 * 1024


def interactions_router(
    interactions: SlackInteractions,
    socket: SlackSocketMode | None = None,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> APIRouter:
    """`POST /slack/interactions`, plus Socket Mode for the app's lifetime when given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if socket is not None:
            await socket.start()
        try:
            yield
        finally:
            if socket is not None:
                await socket.stop()
            await interactions.aclose()

    router = APIRouter(lifespan=lifespan)

    @router.post("/slack/interactions", include_in_schema=False)
    async def slack_interactions(request: Request) -> Response:
        """Slack's interactivity request URL."""
        body = await read_body(request, max_body_bytes)
        if body is None:
            log.warning("slack interaction rejected (413): body over %d bytes", max_body_bytes)
            return Response(status_code=413)
        reply = await interactions.handle_http(body, request.headers)
        return reply.response()

    return router


async def read_body(request: Request, limit: int) -> bytes | None:
    """The raw body (the signature covers its exact bytes), or None past `limit` bytes."""
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
