"""Slack: approval requests as Block Kit messages, decisions from button clicks and a modal.

`client` talks to the Web API, `notifier` posts and edits messages (laid out by `blocks`),
`interactions` verifies and acts on clicks from `router` (HTTP) or `socket_mode`. Building
these from the settings is `workers.wiring.slack`'s job.
"""

from channels.slack.client import (
    SlackPermanentError,
    SlackUnavailable,
    call_slack,
    raise_failures,
    retry_handlers,
    web_client,
)
from channels.slack.interactions import SlackInteractions
from channels.slack.notifier import SlackNotifier
from channels.slack.reply import Rejected, Reply
from channels.slack.router import interactions_router
from channels.slack.socket_mode import SlackSocketMode
from channels.slack.workspace import Clicker, Workspace

__all__ = [
    "Clicker",
    "Rejected",
    "Reply",
    "SlackInteractions",
    "SlackNotifier",
    "SlackPermanentError",
    "SlackSocketMode",
    "SlackUnavailable",
    "Workspace",
    "call_slack",
    "interactions_router",
    "raise_failures",
    "retry_handlers",
    "web_client",
]
