"""Slack's Web API: the client we build, and one call that sorts failures into retry or not."""

from __future__ import annotations

from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from channels.notifier import NotifierError

# Errors that will not go away by retrying, with what the operator should do about them.
PERMANENT_ERRORS: dict[str, str] = {
    "channel_not_found": (
        "the channel does not exist or the app cannot see it; check the group's "
        "slack_channel in the directory"
    ),
    "not_in_channel": "the app is not a member of the channel; /invite the app there",
    "is_archived": "the channel is archived",
    "channel_is_archived": "the channel is archived",
    "restricted_action": "the workspace does not allow the app to post there",
    "invalid_auth": "the bot token is not valid; check SIGNOFF_SLACK_BOT_TOKEN",
    "not_authed": "no bot token was sent; set SIGNOFF_SLACK_BOT_TOKEN",
    "account_inactive": "the bot token belongs to a deactivated app",
    "token_revoked": "the bot token was revoked; reinstall the app",
    "token_expired": "the bot token expired; reinstall the app",
    "missing_scope": "the app lacks a scope; reinstall it from deploy/slack/manifest.yaml",
    "no_permission": "the app has no permission for this; check its scopes",
    "message_not_found": "the message was deleted",
    "user_not_found": "no such Slack user",
    "user_not_visible": "the app cannot see this Slack user",
    "cant_update_message": "the message cannot be edited by the app",
    "edit_window_closed": "the message is too old to edit",
    "invalid_blocks": "Slack rejected the message blocks (a signoff bug; please report it)",
    "msg_too_long": "the message is too long (a signoff bug; please report it)",
}


class SlackPermanentError(NotifierError):
    """Slack refused a call in a way that retrying will not fix; names the channel."""

    def __init__(self, message: str, destination: str) -> None:
        super().__init__(message)
        self.destination = destination


class SlackUnavailable(Exception):
    """Slack could not be reached, or kept rate limiting, or failed on its side: retry later."""

    def __init__(self, message: str, destination: str) -> None:
        super().__init__(message)
        self.destination = destination


def api_base_url(api_url: str) -> str:
    """The Web API base URL, with the trailing slash slack-sdk joins method names onto."""
    return api_url.rstrip("/") + "/"


def retry_handlers() -> list[AsyncRetryHandler]:
    """slack-sdk's own retries: rate limits wait out Retry-After; blips and 5xx retry briefly."""
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncRateLimitErrorRetryHandler(max_retry_count=3),
        AsyncServerErrorRetryHandler(max_retry_count=2),
    ]


def web_client(bot_token: str | None, api_url: str) -> AsyncWebClient:
    """A Web API client with the bot token, the API URL and the retry handlers."""
    # Without a token slack-sdk sends no Authorization header; Slack answers not_authed.
    return AsyncWebClient(
        token=bot_token,
        base_url=api_base_url(api_url),
        timeout=10,
        retry_handlers=retry_handlers(),
    )


async def call_slack(method: str, destination: str, call: Any, **kwargs: Any) -> AsyncSlackResponse:
    """Call one Web API method, turning its failures into permanent or retryable errors."""
    try:
        response: AsyncSlackResponse = await call(**kwargs)
        return response
    except SlackApiError as err:
        code = str(err.response.get("error") or f"HTTP {err.response.status_code}")
        hint = PERMANENT_ERRORS.get(code)
        if hint is not None:
            raise SlackPermanentError(
                f"Slack {method} to {destination} failed: {code} ({hint})", destination
            ) from None
        raise SlackUnavailable(
            f"Slack {method} to {destination} failed: {code}", destination
        ) from None
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as err:
        raise SlackUnavailable(
            f"Slack {method} to {destination} failed: {type(err).__name__} (is Slack reachable?)",
            destination,
        ) from None


def raise_failures(failures: list[SlackPermanentError | SlackUnavailable]) -> None:
    """Raise one error for several failed calls: retryable if any of them is worth a retry."""
    if not failures:
        return
    message = "; ".join(str(f) for f in failures)
    if any(isinstance(f, SlackUnavailable) for f in failures):
        raise SlackUnavailable(message, failures[0].destination)
    raise NotifierError(message)
