"""An API decision or cancel continues the trace its action started in."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio import client
from temporalio.service import RPCError

from workers.telemetry import TRACE_MEMO


class JoinActionTrace:
    """ASGI middleware: an API decision or cancel continues the trace its action started in.

    A human decides hours after the agent asked, in another request with no trace headers;
    the action's workflow memo holds the context, which becomes the request's parent.
    """

    PATH = re.compile(r"^/v1/actions/(act-[A-Za-z0-9-]{1,80})/(decisions|cancel)$")

    def __init__(self, app: ASGIApp, client_of: Callable[[], client.Client]) -> None:
        self.app = app
        self.client_of = client_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the action's `traceparent` to a decision request that carries none."""
        match = self.PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        headers = scope.get("headers", [])
        if match and not any(k.lower() == b"traceparent" for k, _ in headers):
            carrier = await self._carrier(match.group(1))
            if carrier:
                extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items()]
                scope = {**scope, "headers": [*headers, *extra]}
        await self.app(scope, receive, send)

    async def _carrier(self, action_id: str) -> dict[str, str] | None:
        try:
            description = (
                await self.client_of()
                .get_workflow_handle(action_id)
                .describe(rpc_timeout=timedelta(seconds=2))
            )
            carrier = await description.memo_value(TRACE_MEMO, None)
        except (RPCError, TypeError, ValueError):
            return None  # no such action, or no context: the request starts its own trace
        if not isinstance(carrier, dict):
            return None
        return {str(k): str(v) for k, v in carrier.items() if k in ("traceparent", "tracestate")}
