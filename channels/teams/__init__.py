"""Microsoft Teams as an approval channel: proactive Adaptive Cards out, Bot Framework in.

Outbound, `TeamsNotifier` posts a card to each group's `teams_conversation` through the Bot
Framework connector and replaces it as the action progresses. Inbound, `messages_router`
serves `POST /teams/messages`: `TeamsInbound` authenticates the Bot Framework's JWT, remembers
where the bot is installed (`ConversationStore`), and turns card button presses into the same
`Reviews.decide` the API uses. The process configures it all with a `TeamsConfig`.
"""

from channels.teams.activity import Activity, CardDecision, ChannelAccount, ConversationAccount
from channels.teams.auth import (
    TEAMS_CHANNEL,
    BotFrameworkValidator,
    TeamsAuthError,
    allowed_hosts,
    bot_framework_tokens,
    service_url_allowed,
)
from channels.teams.cards import ADAPTIVE_CARD, approval_card, card_activity, full_reachable
from channels.teams.config import CHANNEL, TeamsConfig
from channels.teams.connector import BotConnector, ConnectorError, with_retries
from channels.teams.inbound import BadActivity, TeamsInbound, tenant_problem, ui_link
from channels.teams.notifier import TeamsNotifier
from channels.teams.router import messages_router
from channels.teams.store import ConversationReference, ConversationStore

__all__ = [
    "ADAPTIVE_CARD",
    "CHANNEL",
    "TEAMS_CHANNEL",
    "Activity",
    "BadActivity",
    "BotConnector",
    "BotFrameworkValidator",
    "CardDecision",
    "ChannelAccount",
    "ConnectorError",
    "ConversationAccount",
    "ConversationReference",
    "ConversationStore",
    "TeamsAuthError",
    "TeamsConfig",
    "TeamsInbound",
    "TeamsNotifier",
    "allowed_hosts",
    "approval_card",
    "bot_framework_tokens",
    "card_activity",
    "full_reachable",
    "messages_router",
    "service_url_allowed",
    "tenant_problem",
    "ui_link",
    "with_retries",
]
