"""Slack built from the settings: the notifier for the worker, the router for the gateway."""

from __future__ import annotations

from fastapi import APIRouter
from slack_sdk.web.async_client import AsyncWebClient

from channels.review import Reviews
from channels.slack import (
    SlackInteractions,
    SlackNotifier,
    SlackSocketMode,
    Workspace,
    interactions_router,
    web_client,
)
from policies.directory import Directory
from workers.settings import Settings


def slack_web_client(settings: Settings) -> AsyncWebClient:
    """A Web API client with the settings' bot token and API URL."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    return web_client(token, settings.slack_api_url)


def slack_notifier(settings: Settings, directory: Directory) -> SlackNotifier:
    """A notifier using the settings' bot token and API URL."""
    return SlackNotifier(slack_web_client(settings), directory, page_base=settings.public_url)


def slack_workspace(settings: Settings) -> Workspace | None:
    """Our workspace as the settings name it; None leaves it to the bot token's own."""
    if settings.slack_team_id or settings.slack_enterprise_id:
        return Workspace(settings.slack_team_id, settings.slack_enterprise_id)
    return None


def slack_interactions(
    settings: Settings, reviews: Reviews, directory: Directory
) -> SlackInteractions:
    """A handler with the settings' signing secret, bot token, API URL and workspace."""
    secret = settings.slack_signing_secret
    return SlackInteractions(
        reviews,
        directory,
        slack_web_client(settings),
        secret.get_secret_value() if secret else None,  # an empty secret is no secret
        slack_workspace(settings),
        page_base=settings.public_url,
    )


def slack_router(
    settings: Settings,
    reviews: Reviews,
    directory: Directory,
    *,
    socket_mode: bool | None = None,
) -> APIRouter:
    """The Slack router as the settings configure it; Socket Mode is on with an app token."""
    interactions = slack_interactions(settings, reviews, directory)
    if socket_mode is None:
        socket_mode = bool(settings.slack_app_token)
    socket = None
    if socket_mode:
        if not settings.slack_app_token:
            raise ValueError(
                "Slack Socket Mode needs an app-level token: set SIGNOFF_SLACK_APP_TOKEN (xapp-…)"
            )
        socket = SlackSocketMode(
            interactions, settings.slack_app_token.get_secret_value(), slack_web_client(settings)
        )
    return interactions_router(interactions, socket, max_body_bytes=settings.max_body_bytes)
