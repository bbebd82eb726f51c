"""Teams inbound: authenticated Bot Framework activities become installations and decisions.

Every activity's JWT is checked, then its serviceUrl, channel and tenant; a card button press
turns into the same `Reviews.decide` the API uses, and a bot installation into a stored
conversation reference.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from channels.notifier import revoke_refused_text
from channels.review import Reviews
from channels.teams.activity import Activity, CardDecision
from channels.teams.auth import (
    TEAMS_CHANNEL,
    BotFrameworkValidator,
    TeamsAuthError,
    service_url_allowed,
)
from channels.teams.cards import (
    ADAPTIVE_CARD,
    REVOKE_VERB,
    VERBS,
    approval_card,
    full_reachable,
)
from channels.teams.config import CHANNEL, TeamsConfig
from channels.teams.connector import BotConnector, ConnectorError
from channels.teams.store import ConversationReference, ConversationStore
from policies.directory import Directory
from signoff import neutralise
from signoff.models import ActionStatus, DecisionRequest, Principal, RevokeRequest
from workflows.errors import (
    ActionNotFound,
    ActionNotPending,
    DecisionRefusedError,
    MessageRefusedError,
)

log = logging.getLogger("signoff.teams")

CARD_ACTION = "adaptiveCard/action"
ERROR_TYPE = "application/vnd.microsoft.error"


class BadActivity(Exception):
    """The activity is not one we can act on; answered with 400 and nothing recorded."""


def unauthorized(message: str) -> Response:
    """A 401 for a request we do not accept from the Bot Framework; the reason is only logged."""
    log.warning("refused /teams/messages: %s", message)
    return JSONResponse({"error": "unauthorized"}, status_code=401)


def _invoke_error(message: str, status_code: int = 400) -> Response:
    return JSONResponse(
        {
            "statusCode": status_code,
            "type": ERROR_TYPE,
            "value": {"code": "BadRequest", "message": message},
        },
        status_code=status_code,
    )


def _invoke_card(card: dict[str, Any]) -> Response:
    return JSONResponse({"statusCode": 200, "type": ADAPTIVE_CARD, "value": card})


def tenant_problem(activity: Activity, config: TeamsConfig) -> str | None:
    """Why an activity's tenant is not accepted; None when it is.

    Every tenant the activity names must be allowed (channelData's and the conversation's), and
    it must name one: checking is on unless `allow_any_tenant` turns it off explicitly.
    """
    if config.allow_any_tenant:
        return None
    allowed = config.tenants
    if not allowed:
        return (
            "no Teams tenant is allowed: set SIGNOFF_TEAMS_TENANT_ID or "
            "SIGNOFF_TEAMS_ALLOWED_TENANTS (or SIGNOFF_TEAMS_ALLOW_ANY_TENANT=true to accept any)"
        )
    tenant = activity.channel_data.get("tenant")
    named = {
        value
        for value in (
            tenant.get("id") if isinstance(tenant, dict) else None,
            activity.conversation.tenant_id,
        )
        if value is not None
    }
    if not named:
        return "the activity names no tenant"
    for value in sorted(map(str, named)):
        if value not in allowed:
            return f"tenant {value[:80]!r} is not ours"
    return None


def ui_link(config: TeamsConfig, action_id: str) -> str | None:
    """The action's page in the Temporal UI, as the workflow links it."""
    if not config.ui_url:
        return None
    base = config.ui_url.rstrip("/")
    return f"{base}/namespaces/{config.namespace}/workflows/{action_id}"


class TeamsInbound:
    """Handles authenticated activities: installations and card decisions."""

    def __init__(
        self,
        config: TeamsConfig,
        service: Reviews,
        directory: Directory,
        validator: BotFrameworkValidator,
        store: ConversationStore,
        connector: BotConnector,
    ) -> None:
        self.config = config
        self.service = service
        self.directory = directory
        self.validator = validator
        self.store = store
        self.connector = connector
        if config.app_id and not config.allow_any_tenant and not config.tenants:
            # Said once at startup: otherwise the only sign is a 401 per activity.
            log.error(
                "Teams refuses every activity: no tenant is allowed (set SIGNOFF_TEAMS_TENANT_ID "
                "or SIGNOFF_TEAMS_ALLOWED_TENANTS, or SIGNOFF_TEAMS_ALLOW_ANY_TENANT=true)"
            )

    async def handle(self, request: Request) -> Response:
        """Authenticate, parse and dispatch one activity."""
        if not self.config.app_id:
            return unauthorized("Teams is not configured (no SIGNOFF_TEAMS_APP_ID)")
        try:
            claims = await self.validator.validate(request.headers.get("authorization"))
        except TeamsAuthError as err:
            return unauthorized(str(err))
        body = await request.body()
        if len(body) > self.config.max_body_bytes:
            return _invoke_error("activity too large", 413)
        try:
            activity = Activity.model_validate_json(body)
        except ValidationError as err:
            return _invoke_error(f"malformed activity: {err.error_count()} problem(s)")
        # The token names the serviceUrl it was issued for; anything else is a replay elsewhere.
        if claims.get("serviceurl") != activity.service_url:
            return unauthorized("serviceUrl does not match the token's serviceurl claim")
        if activity.channel_id != TEAMS_CHANNEL:
            return unauthorized(f"channel {activity.channel_id!r} is not msteams")
        if not service_url_allowed(activity.service_url, self.config.allowed_service_urls):
            return unauthorized(f"serviceUrl {activity.service_url!r} is not allow-listed")
        problem = tenant_problem(activity, self.config)
        if problem is not None:
            return unauthorized(problem)
        try:
            if activity.type == "invoke" and activity.name == CARD_ACTION:
                return await self._card_action(activity)
            if activity.type == "invoke":
                raise BadActivity(f"unsupported invoke {activity.name!r}")
            if activity.type == "message" and isinstance(activity.value, dict):
                return await self._submitted(activity)
            if activity.type in ("conversationUpdate", "installationUpdate"):
                await self._installation(activity)
        except BadActivity as err:
            log.info("bad Teams activity: %s", err)
            return _invoke_error(str(err))
        return Response(status_code=200)

    async def _installation(self, activity: Activity) -> None:
        """Remember (or forget) the conversation the bot was added to (or removed from)."""
        bot_id = activity.recipient.id if activity.recipient else None
        removed = activity.action == "remove" or any(
            m.id == bot_id for m in activity.members_removed
        )
        if removed:
            await self.store.remove(activity.conversation.id)
            log.info("Teams bot removed from %s", activity.conversation.id)
            return
        await self.store.save(
            ConversationReference(
                conversation_id=activity.conversation.id,
                service_url=activity.service_url,
                tenant_id=activity.tenant_id,
                conversation_type=activity.conversation.conversation_type,
                name=activity.conversation.name,
                team_id=activity.team_id,
                bot_id=bot_id,
            )
        )
        log.info(
            "Teams conversation %s (%s) reachable at %s",
            activity.conversation.id,
            activity.conversation.name or activity.conversation.conversation_type,
            activity.service_url,
        )

    async def _prepare(
        self, activity: Activity, verb: Any, data: Any
    ) -> tuple[Principal, DecisionRequest]:
        """Check the button's payload and who pressed it; BadActivity when anything is off."""
        if verb not in VERBS:
            raise BadActivity(f"unknown verb {verb!r}")
        if not isinstance(data, dict):
            raise BadActivity("the action carries no data")
        try:
            decision = CardDecision.model_validate(data)
        except ValidationError as err:
            raise BadActivity(f"malformed action data: {err.error_count()} problem(s)") from None
        oid = activity.from_.aad_object_id
        principal = await self.directory.by_aad_object_id(oid) if oid else None
        if principal is None:
            raise BadActivity("your Teams account is not in the signoff directory")
        try:
            current = await self.service.status(decision.action_id)
        except ActionNotFound:
            raise BadActivity(f"no action {decision.action_id}") from None
        # A card that does not show this action's digest was forged or altered: nobody saw
        # what they would be approving, so it is not even an attempt worth recording.
        if current.digest != decision.digest:
            raise BadActivity("the card's digest does not match the action")
        if verb == "approve" and not full_reachable(current):
            raise BadActivity(f"too large to review in Teams: use signoff approve {current.id}")
        return principal, DecisionRequest(
            approver=principal.id,
            decision=verb,
            digest=decision.digest,
            reason=decision.reason,
            channel=CHANNEL,
        )

    async def _revoke(self, activity: Activity, data: Any) -> tuple[ActionStatus, str]:
        """ "Revoke now": who pressed it, on the card's action; the workflow decides if they may."""
        if not isinstance(data, dict):
            raise BadActivity("the action carries no data")
        try:
            card = CardDecision.model_validate(data)
        except ValidationError as err:
            raise BadActivity(f"malformed action data: {err.error_count()} problem(s)") from None
        oid = activity.from_.aad_object_id
        principal = await self.directory.by_aad_object_id(oid) if oid else None
        if principal is None:
            raise BadActivity("your Teams account is not in the signoff directory")
        try:
            current = await self.service.status(card.action_id)
        except ActionNotFound:
            raise BadActivity(f"no action {card.action_id}") from None
        if current.digest != card.digest:
            raise BadActivity("the card's digest does not match the action")
        request = RevokeRequest(by=principal.id, reason="revoked in Teams")
        try:
            return await self.service.revoke(card.action_id, request), ""
        except MessageRefusedError as err:
            notice = revoke_refused_text(err.message)
        except ActionNotPending as err:
            notice = f"Nothing was revoked: {err.message}"
        return await self.service.status(card.action_id), notice

    async def _decide(self, request: DecisionRequest, action_id: str) -> tuple[ActionStatus, str]:
        """Decide through the service; return the status to show and any notice."""
        try:
            return await self.service.decide(action_id, request), ""
        except DecisionRefusedError as err:
            notice = f"{request.approver} could not {request.decision}: {err.message}"
        except ActionNotPending as err:
            notice = f"Too late: {err.message}"
        return await self.service.status(action_id), notice

    async def _card_action(self, activity: Activity) -> Response:
        """Universal Actions: decide, and answer with the updated card inline."""
        value = activity.value if isinstance(activity.value, dict) else {}
        action = value.get("action")
        if not isinstance(action, dict) or action.get("type") != "Action.Execute":
            raise BadActivity("not an Action.Execute")
        if action.get("verb") == REVOKE_VERB:
            status, notice = await self._revoke(activity, action.get("data"))
            action_id = status.id
        else:
            _, request = await self._prepare(activity, action.get("verb"), action.get("data"))
            action_id = str(action["data"]["action_id"])
            status, notice = await self._decide(request, action_id)
        card = approval_card(status, ui_link(self.config, action_id), notice=notice or None)
        return _invoke_card(card)

    async def _submitted(self, activity: Activity) -> Response:
        """The Action.Submit fallback: decide, and reply in the thread only when refused."""
        data = activity.value
        if data.get("verb") == REVOKE_VERB:
            _, notice = await self._revoke(activity, data)
        else:
            _, request = await self._prepare(activity, data.get("verb"), data)
            action_id = str(data["action_id"])
            _, notice = await self._decide(request, action_id)
        # On success the workflow's own card update shows the decision.
        if notice and activity.reply_to_id:
            try:
                await self.connector.reply(
                    activity.service_url,
                    activity.conversation.id,
                    activity.reply_to_id,
                    {"type": "message", "text": neutralise.markdown(notice)},
                )
            except ConnectorError as err:
                log.warning("could not reply in Teams: %s", err)
        return Response(status_code=200)
