"""Slack's Socket Mode: interactions over an outbound WebSocket, fed to the same handler.

The WebSocket is authenticated by the app-level token, so envelopes carry no signature; a
redelivered envelope (same id) is acknowledged and not acted on twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from channels.slack.interactions import REPLAY_MAX, REPLAY_TTL, SlackInteractions
from channels.slack.reply import OK
from policies.cache import BoundedCache

log = logging.getLogger("signoff.slack")


class SlackSocketMode:
    """Receives interactions over Socket Mode and feeds them to the same handler."""

    def __init__(
        self,
        interactions: SlackInteractions,
        app_token: str,
        web_client: AsyncWebClient,
    ) -> None:
        self.interactions = interactions
        self.app_token = app_token
        self.web_client = web_client
        self._envelopes: BoundedCache[str, None] = BoundedCache(REPLAY_MAX, ttl=REPLAY_TTL)
        self.client: SocketModeClient | None = None
        self._connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start connecting (apps.connections.open, then the WebSocket) in the background.

        The SDK retries until it gets through; the gateway's API must not wait for Slack.
        """
        self.client = SocketModeClient(
            app_token=self.app_token, web_client=self.web_client, logger=log
        )
        self.client.socket_mode_request_listeners.append(self._on_request)
        self._connecting = asyncio.create_task(self._connect(self.client))

    async def _connect(self, client: SocketModeClient) -> None:
        await client.connect()
        if not client.closed:
            log.info("slack socket mode connected")

    async def connected(self) -> bool:
        """Whether the WebSocket is up."""
        return self.client is not None and await self.client.is_connected()

    async def stop(self) -> None:
        """Close the WebSocket."""
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
            self._connecting = None

    async def _on_request(
        self, client: AsyncBaseSocketModeClient, request: SocketModeRequest
    ) -> None:
        """Acknowledge every envelope; interactive ones carry the modal's answer, if any."""
        reply = OK
        if request.type != "interactive":
            log.info("slack socket mode envelope of type %r ignored", request.type)
        elif not self._envelopes.add(request.envelope_id, None):
            log.info("slack socket mode envelope %s redelivered; ignored", request.envelope_id)
        else:
            reply = await self.interactions.handle_payload(request.payload)
        payload = reply.body if reply.status == 200 else None
        await client.send_socket_mode_response(
            SocketModeResponse(envelope_id=request.envelope_id, payload=payload)
        )
