"""One log line per request, with who asked; never headers or tokens."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from signoff import neutralise

log = logging.getLogger("signoff.gateway")


class AccessLog:
    """Log each request: principal, method, path, status and time; never headers or tokens."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through and log its outcome."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            principal = scope.get("state", {}).get("principal", "-")
            elapsed = (time.perf_counter() - started) * 1000
            # The path arrives percent-decoded: escape it so no request can forge a log line.
            log.info(
                "%s %s %s %d %.0fms",
                neutralise.one_line(str(principal)),
                neutralise.one_line(scope["method"]),
                neutralise.one_line(scope["path"]),
                status,
                elapsed,
            )
