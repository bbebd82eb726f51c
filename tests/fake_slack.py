"""A local fake of the Slack Web API and Socket Mode, for the real slack-sdk clients to talk to.

It serves the methods signoff calls, records every call, checks the bearer token, and can be
told to fail: a Slack error for a channel, or HTTP 429 with Retry-After. Socket Mode:
`apps.connections.open` hands out ws://127.0.0.1:PORT/link, which says `hello` and then
carries the envelopes a test sends, collecting the client's acknowledgements.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web


@dataclass
class Call:
    """One Web API call as the fake received it."""

    method: str
    args: dict[str, Any]
    token: str | None
    at: float = field(default_factory=time.monotonic)


@dataclass
class FakeSlack:
    """The fake server's state; start with `await fake.start()`, stop with `await fake.stop()`."""

    bot_token: str = "xoxb-fake-bot-token"
    app_token: str = "xapp-fake-app-token"
    team_id: str = "T0FAKE"  # the workspace the bot is installed in (auth.test)
    enterprise_id: str | None = None
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    channel_errors: dict[str, str] = field(default_factory=dict)
    rate_limits: dict[str, list[int]] = field(default_factory=dict)
    acks: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _changed: asyncio.Condition | None = None

    @property
    def url(self) -> str:
        """The Web API base URL (what SIGNOFF_SLACK_API_URL is set to)."""
        return f"http://127.0.0.1:{self.port}/api/"

    async def start(self) -> None:
        """Listen on a free local port."""
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_get("/link", self._socket)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Close sockets and stop listening."""
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- scripting ------------------------------------------------------------------------

    def rate_limit(self, method: str, *retry_after: int) -> None:
        """Answer the next calls of `method` with 429 and these Retry-After values."""
        self.rate_limits.setdefault(method, []).extend(retry_after)

    def of(self, method: str, **match: Any) -> list[Call]:
        """Recorded calls of `method` whose args include `match`."""
        return [
            c
            for c in self.calls
            if c.method == method and all(c.args.get(k) == v for k, v in match.items())
        ]

    async def wait_for(
        self,
        method: str,
        count: int = 1,
        timeout: float = 15,
        where: Callable[[Call], bool] = lambda call: True,
        **match: Any,
    ) -> list[Call]:
        """Wait until at least `count` matching calls (that satisfy `where`) arrived."""
        assert self._changed is not None

        def matching() -> list[Call]:
            return [call for call in self.of(method, **match) if where(call)]

        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(matching()) >= count), timeout
            )
        return matching()

    async def send_envelope(
        self, payload: dict[str, Any], *, timeout: float = 10
    ) -> dict[str, Any]:
        """Send an interactive envelope over Socket Mode; return the client's ack."""
        assert self._changed is not None
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: bool(self._sockets)), timeout)
        envelope_id = str(uuid.uuid4())
        await self._sockets[-1].send_str(
            json.dumps(
                {
                    "envelope_id": envelope_id,
                    "type": "interactive",
                    "payload": payload,
                    "accepts_response_payload": payload.get("type") == "view_submission",
                    "retry_attempt": 0,
                    "retry_reason": "",
                }
            )
        )
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(
                    lambda: any(a.get("envelope_id") == envelope_id for a in self.acks)
                ),
                timeout,
            )
        return next(a for a in self.acks if a.get("envelope_id") == envelope_id)

    # --- the Web API ----------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(dict(await request.post()))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        await self._record(Call(method, args, token))

        pending = self.rate_limits.get(method)
        if pending:
            retry_after = pending.pop(0)
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(retry_after)},
            )
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token is None:
            return web.json_response({"ok": False, "error": "not_authed"})
        if token != expected:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        channel = str(args.get("channel", ""))
        if channel in self.channel_errors:
            return web.json_response({"ok": False, "error": self.channel_errors[channel]})
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        result: dict[str, Any] = handler(args)
        return web.json_response(result)

    async def _record(self, call: Call) -> None:
        assert self._changed is not None
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def _next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("text") and not args.get("blocks") and not args.get("attachments"):
            return {"ok": False, "error": "no_text"}
        return {"ok": True, "channel": args["channel"], "ts": self._next_ts(), "message": args}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "channel": args["channel"], "ts": args["ts"], "text": args.get("text")}

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "message_ts": self._next_ts()}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        return {"ok": True, "view": {"id": "V" + uuid.uuid4().hex[:8], **args["view"]}}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user")))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": {"id": args["user"], **user}}

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "ok": True,
            "url": "https://fake.slack.test/",
            "team": "Fake",
            "user": "signoff",
            "team_id": self.team_id,
            "user_id": "U0SIGNOFF",
            "bot_id": "B0SIGNOFF",
            "is_enterprise_install": False,
        }
        if self.enterprise_id is not None:
            answer["enterprise_id"] = self.enterprise_id
        return answer

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"}

    # --- Socket Mode ----------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": "A0FAKE"},
                }
            )
        )
        assert self._changed is not None
        async with self._changed:
            self._sockets.append(ws)
            self._changed.notify_all()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    async with self._changed:
                        self.acks.append(json.loads(message.data))
                        self._changed.notify_all()
        finally:
            async with self._changed:
                self._sockets.remove(ws)
        return ws
