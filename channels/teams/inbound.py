"""Teams inbound: authenticated Bot Framework activities become installations and decisions.

Every activity's JWT is checked, then its serviceUrl, channel and tenant; a card button press
turns into the same `Reviews.decide` the API uses, and a bot installation into a stored
conversation reference.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from channels.notifier import (
    REVIEW_OUTCOMES,
    REVIEW_REASON_MISSING,
    STEP_UP_TEXT,
    review_refused_text,
    revoke_refused_text,
)
from channels.review import Reviews, WindowReviews
from channels.teams.activity import Activity, CardDecision
from channels.teams.auth import (
    TEAMS_CHANNEL,
    BotFrameworkValidator,
    TeamsAuthError,
    service_url_allowed,
)
from channels.teams.cards import (
    ADAPTIVE_CARD,
    OUTCOME_INPUT,
    REVIEW_VERB,
    REVOKE_VERB,
    REVOKE_WINDOW_VERB,
    VERBS,
    WINDOW_VERB,
    approval_card,
    full_reachable,
    window_note_activity,
)
from channels.teams.config import CHANNEL, TeamsConfig
from channels.teams.connector import BotConnector, ConnectorError
from channels.teams.store import ConversationReference, ConversationStore
from policies.directory import Directory, vouched_groups
from policies.unavailable import IdentityProviderUnavailable
from signoff import neutralise
from signoff.links import approval_page_url
from signoff.models import (
    ActionStatus,
    ApprovalWindow,
    DecisionRequest,
    Principal,
    RefusalCode,
    ReviewOutcome,
    ReviewRequest,
    RevokeRequest,
    WindowRevokeRequest,
)
from workflows.errors import (
    ActionError,
    ActionNotFound,
    ActionNotPending,
    DecisionRefusedError,
    MessageRefusedError,
)

log = logging.getLogger("signoff.teams")

CARD_ACTION = "adaptiveCard/action"
IDP_DOWN = (
    "The identity provider is unavailable, so nobody can say who you are just now: your "
    "click was not counted, try again in a minute."
)
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


def window_note_activity_card(window: ApprovalWindow | None, text: str) -> dict[str, Any]:
    """The note card answering a Revoke press: no button once the window has ended."""
    if window is None:
        body = [{"type": "TextBlock", "text": neutralise.markdown(text), "wrap": True}]
        return {"type": "AdaptiveCard", "version": "1.5", "body": body}
    content: dict[str, Any] = window_note_activity(window, text)["attachments"][0]["content"]
    return content


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


def page_link(config: TeamsConfig, action_id: str) -> str | None:
    """The action's approval page on the gateway (None when no public URL is set)."""
    return approval_page_url(config.page_base, action_id) if config.page_base else None


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
        # The object id comes from Teams in an activity the Bot Framework signed, for a tenant
        # checked above; the file knows it, or Entra does (then by the email Entra holds).
        principal = await self.directory.person_by_aad_object_id(oid) if oid else None
        if principal is None:
            raise BadActivity(
                "your Teams account is not in the signoff directory or the identity provider"
            )
        groups = await vouched_groups(self.directory, principal)
        try:
            current = await self.service.status(decision.action_id)
        except ActionNotFound:
            raise BadActivity(f"no action {decision.action_id}") from None
        # A card that does not show this action's digest was forged or altered: nobody saw
        # what they would be approving, so it is not even an attempt worth recording.
        if current.digest != decision.digest:
            raise BadActivity("the card's digest does not match the action")
        if verb in ("approve", WINDOW_VERB) and not full_reachable(current):
            raise BadActivity(f"too large to review in Teams: use signoff approve {current.id}")
        window = None
        if verb == WINDOW_VERB:
            # The window the card offered: the rule's maximum, read from the checked status.
            offer = current.verdict.window if current.verdict else None
            if offer is None:
                raise BadActivity(f"action {current.id} offers no approval window")
            window = offer.max_duration
        return principal, DecisionRequest(
            approver=principal.id,
            decision="deny" if verb == "deny" else "approve",
            digest=decision.digest,
            reason=decision.reason,
            channel=CHANNEL,
            approver_groups=groups,
            window=window,
        )

    async def _revoke_window(
        self, activity: Activity, data: Any
    ) -> tuple[ApprovalWindow | None, str]:
        """A Revoke window press: a signed revoke the window judges (and records if refused)."""
        window_id = data.get("window_id") if isinstance(data, dict) else None
        if not isinstance(window_id, str) or not window_id.startswith("win-"):
            raise BadActivity("malformed window id")
        if len(window_id) > 200:
            raise BadActivity("malformed window id")
        oid = activity.from_.aad_object_id
        principal = await self.directory.by_aad_object_id(oid) if oid else None
        if principal is None:
            raise BadActivity("your Teams account is not in the signoff directory")
        if not isinstance(self.service, WindowReviews):
            raise BadActivity("this gateway cannot revoke windows from Teams")
        request = WindowRevokeRequest(by=principal.id, channel=CHANNEL)
        try:
            return await self.service.revoke_window(window_id, request), ""
        except ActionError as err:
            return None, f"{principal.id} could not revoke {window_id}: {err.message}"

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

    async def _review(self, activity: Activity, data: Any) -> tuple[ActionStatus, str]:
        """ "Review": who pressed it, with the card's reason and outcome; the workflow judges."""
        if not isinstance(data, dict):
            raise BadActivity("the action carries no data")
        try:
            card = CardDecision.model_validate(data)
        except ValidationError as err:
            raise BadActivity(f"malformed action data: {err.error_count()} problem(s)") from None
        try:
            current = await self.service.status(card.action_id)
        except ActionNotFound:
            raise BadActivity(f"no action {card.action_id}") from None
        if current.digest != card.digest:
            raise BadActivity("the card's digest does not match the action")
        oid = activity.from_.aad_object_id
        try:
            # As a decision's presser: the file by object id, or Entra by the email it holds.
            principal = await self.directory.person_by_aad_object_id(oid) if oid else None
        except IdentityProviderUnavailable as err:
            log.warning("Teams review not counted: %s", err)
            return current, IDP_DOWN
        if principal is None:
            raise BadActivity(
                "your Teams account is not in the signoff directory or the identity provider"
            )
        reason = card.reason.strip()
        outcome = data.get(OUTCOME_INPUT, "accepted")
        if not reason:
            return current, REVIEW_REASON_MISSING
        if outcome not in REVIEW_OUTCOMES:
            return current, "Choose accepted or disputed"
        chosen: ReviewOutcome = "disputed" if outcome == "disputed" else "accepted"
        request = ReviewRequest(
            reviewer=principal.id,
            digest=card.digest,
            reason=reason,
            outcome=chosen,
            channel=CHANNEL,
        )
        try:
            return await self.service.review(card.action_id, request), ""
        except DecisionRefusedError as err:
            notice = review_refused_text(err.message)
        except ActionNotPending as err:
            notice = f"Your review was not counted: {err.message}"
        return await self.service.status(card.action_id), notice

    async def _decide(self, request: DecisionRequest, action_id: str) -> tuple[ActionStatus, str]:
        """Decide through the service; return the status to show and any notice."""
        try:
            return await self.service.decide(action_id, request), ""
        except DecisionRefusedError as err:
            notice = f"{request.approver} could not {request.decision}: {err.message}"
            if err.attempt.code is RefusalCode.STEP_UP_REQUIRED:
                # Refused and recorded by the workflow; the click leads to the page instead.
                url = page_link(self.config, action_id)
                notice = f"{STEP_UP_TEXT}" + (f": {url}" if url else f" (/a/{action_id}).")
        except ActionNotPending as err:
            notice = f"Too late: {err.message}"
        return await self.service.status(action_id), notice

    async def _card_action(self, activity: Activity) -> Response:
        """Universal Actions: decide, and answer with the updated card inline."""
        value = activity.value if isinstance(activity.value, dict) else {}
        action = value.get("action")
        if not isinstance(action, dict) or action.get("type") != "Action.Execute":
            raise BadActivity("not an Action.Execute")
        if action.get("verb") == REVOKE_WINDOW_VERB:
            window, notice = await self._revoke_window(activity, action.get("data"))
            text = notice or f"Approval window {window.id if window else ''} revoked"
            return _invoke_card(window_note_activity_card(window, text))
        if action.get("verb") == REVOKE_VERB:
            status, notice = await self._revoke(activity, action.get("data"))
            action_id = status.id
        elif action.get("verb") == REVIEW_VERB:
            status, notice = await self._review(activity, action.get("data"))
            action_id = status.id
        else:
            try:
                _, request = await self._prepare(activity, action.get("verb"), action.get("data"))
            except IdentityProviderUnavailable as err:
                log.warning("Teams click not counted: %s", err)
                return await self._idp_down_card(action.get("data"))
            action_id = str(action["data"]["action_id"])
            status, notice = await self._decide(request, action_id)
        card = approval_card(
            status,
            ui_link(self.config, action_id),
            notice=notice or None,
            page_url=page_link(self.config, action_id),
        )
        return _invoke_card(card)

    async def _submitted(self, activity: Activity) -> Response:
        """The Action.Submit fallback: decide, and reply in the thread only when refused."""
        data = activity.value
        if data.get("verb") == REVOKE_WINDOW_VERB:
            _, notice = await self._revoke_window(activity, data)
            if notice and activity.reply_to_id:
                with contextlib.suppress(ConnectorError):
                    await self.connector.reply(
                        activity.service_url,
                        activity.conversation.id,
                        activity.reply_to_id,
                        {"type": "message", "text": neutralise.markdown(notice)},
                    )
            return Response(status_code=200)
        if data.get("verb") == REVOKE_VERB:
            _, notice = await self._revoke(activity, data)
        elif data.get("verb") == REVIEW_VERB:
            _, notice = await self._review(activity, data)
        else:
            try:
                _, request = await self._prepare(activity, data.get("verb"), data)
            except IdentityProviderUnavailable as err:
                log.warning("Teams click not counted: %s", err)
                request, notice = None, IDP_DOWN
            if request is not None:
                _, notice = await self._decide(request, str(data["action_id"]))
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

    async def _idp_down_card(self, data: Any) -> Response:
        """The card as it is, saying the click was not counted because the IdP is down."""
        try:
            # Checked by _prepare before it asked the IdP; parsed again, not trusted blindly.
            status = await self.service.status(CardDecision.model_validate(data).action_id)
        except (ValidationError, ActionNotFound):
            raise BadActivity(IDP_DOWN) from None
        return _invoke_card(approval_card(status, ui_link(self.config, status.id), notice=IDP_DOWN))
