"""The Bot Framework connector's REST API, called as our bot and only at allow-listed hosts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import quote

import httpx

from channels.teams.auth import service_url_allowed
from policies.microsoft import AppTokens, TokenError

SEND_ATTEMPTS = 3


class ConnectorError(Exception):
    """The Bot Framework connector refused a request; `transient` when a retry may work."""

    def __init__(self, message: str, *, transient: bool, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


class BotConnector:
    """Calls the Bot Framework connector REST API as our bot, only at allow-listed hosts."""

    def __init__(
        self, tokens: AppTokens, allowed_service_urls: Iterable[str], *, timeout: float = 10.0
    ) -> None:
        self.tokens = tokens
        self.allowed = list(allowed_service_urls)
        self.timeout = timeout

    @staticmethod
    def _activities_url(service_url: str, conversation_id: str, activity_id: str = "") -> str:
        url = f"{service_url.rstrip('/')}/v3/conversations/{quote(conversation_id, safe='')}"
        url += "/activities"
        return f"{url}/{quote(activity_id, safe='')}" if activity_id else url

    async def _call(self, method: str, url: str, service_url: str, body: dict[str, Any]) -> Any:
        # Checked before the token is even fetched: an unlisted host never sees it.
        if not service_url_allowed(service_url, self.allowed):
            raise ConnectorError(
                f"serviceUrl {service_url!r} is not in SIGNOFF_TEAMS_ALLOWED_SERVICE_URLS",
                transient=False,
            )
        try:
            token = await self.tokens.token()
        except TokenError as err:
            raise ConnectorError(str(err), transient=not err.permanent) from err
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as http:
                response = await http.request(
                    method, url, json=body, headers={"Authorization": f"Bearer {token}"}
                )
        except httpx.HTTPError as err:
            raise ConnectorError(f"{method} {url}: {err!r}", transient=True) from err
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("Retry-After", "")
            raise ConnectorError(
                f"{method} {url}: HTTP {response.status_code}",
                transient=True,
                retry_after=float(retry_after) if retry_after.isdigit() else 0.0,
            )
        if response.status_code >= 300:
            raise ConnectorError(
                f"{method} {url}: HTTP {response.status_code} {response.text[:200]}",
                transient=False,
            )
        return response.json() if response.content else {}

    async def send(self, service_url: str, conversation_id: str, activity: dict[str, Any]) -> str:
        """Post an activity to a conversation; return the new activity's id."""
        url = self._activities_url(service_url, conversation_id)
        answer = await self._call("POST", url, service_url, activity)
        activity_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(activity_id, str) or not activity_id:
            raise ConnectorError(f"POST {url}: the answer has no activity id", transient=False)
        return activity_id

    async def replace(
        self, service_url: str, conversation_id: str, activity_id: str, activity: dict[str, Any]
    ) -> None:
        """Replace a posted activity (the card) in place."""
        url = self._activities_url(service_url, conversation_id, activity_id)
        await self._call("PUT", url, service_url, {**activity, "id": activity_id})

    async def reply(
        self, service_url: str, conversation_id: str, reply_to: str, activity: dict[str, Any]
    ) -> None:
        """Reply to an activity in its thread."""
        url = self._activities_url(service_url, conversation_id, reply_to)
        await self._call("POST", url, service_url, {**activity, "replyToId": reply_to})


async def with_retries(attempt: Callable[[], Awaitable[str]]) -> str:
    """Run a connector call, retrying transient failures briefly (Retry-After is honoured)."""
    for n in range(SEND_ATTEMPTS):
        try:
            return await attempt()
        except ConnectorError as err:
            if not err.transient or n == SEND_ATTEMPTS - 1:
                raise
            await asyncio.sleep(min(max(err.retry_after, 0.5 * 2**n), 5.0))
    raise AssertionError("unreachable")
