"""Which channels a deployment runs: notifiers for the worker, routers for the gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING

from channels.console import ConsoleNotifier
from channels.notifier import Notifier
from policies.directory import Directory
from workers.settings import Settings

if TYPE_CHECKING:
    from fastapi import APIRouter

    from channels.review import Reviews

# A channel's SDK (slack_sdk and aiohttp, msal, FastAPI for the routers) is imported only by a
# process that runs the channel: a console-only worker stays tens of megabytes smaller.


def notifiers_for(settings: Settings, directory: Directory) -> list[Notifier]:
    """The channels this deployment is configured for; the console one is always on."""
    notifiers: list[Notifier] = [ConsoleNotifier(page_base=settings.public_url)]
    if settings.slack_bot_token:
        from workers.wiring.slack import slack_notifier

        notifiers.append(slack_notifier(settings, directory))
    if settings.teams_app_id:
        from workers.wiring.teams import teams_notifier

        notifiers.append(teams_notifier(settings, directory))
    if settings.smtp_host:
        from workers.wiring.email import email_notifier

        notifiers.append(email_notifier(settings, directory))
    return notifiers


def channel_routers(settings: Settings, reviews: Reviews, directory: Directory) -> list[APIRouter]:
    """Routers of the chat channels this deployment is configured for (Slack, Teams)."""
    from workers.wiring.slack import slack_router
    from workers.wiring.teams import teams_router

    routers: list[APIRouter] = []
    # Always mounted: without SIGNOFF_TEAMS_APP_ID it answers 401, never a tempting 404.
    routers.append(teams_router(settings, reviews, directory))
    # Always mounted: without SIGNOFF_SLACK_SIGNING_SECRET it answers 401. With
    # SIGNOFF_SLACK_APP_TOKEN it also runs Socket Mode for the app's lifetime.
    routers.append(slack_router(settings, reviews, directory))
    return routers
