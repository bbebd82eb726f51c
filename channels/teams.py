"""Microsoft Teams as an approval channel: proactive Adaptive Cards out, Bot Framework in.

Outbound, `TeamsNotifier` posts a card to each group's `teams_conversation` through the Bot
Framework connector and replaces it as the action progresses. Inbound, `teams_router` serves
`POST /teams/messages`: it authenticates the Bot Framework's JWT, remembers where the bot is
installed, and turns card button presses into the same `Reviews.decide` the API uses.

Conversation references live in Postgres (the ledger's database, table `teams_conversations`),
because the gateway learns them and the worker needs them, and the two run as separate
processes (pods) that share the database but no file system.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from channels.notifier import NotifierError
from channels.review import Reviews
from channels.teams_auth import (
    TEAMS_CHANNEL,
    AppTokens,
    BotFrameworkValidator,
    TeamsAuthError,
    TokenError,
    bot_tokens,
    service_url_allowed,
)
from channels.teams_cards import (
    ADAPTIVE_CARD,
    REASON_INPUT,
    VERBS,
    approval_card,
    card_activity,
    full_reachable,
)
from policies.directory import Directory
from signoff import neutralise
from signoff.models import ActionStatus, DecisionRequest, NotificationRef, Principal
from workers.settings import Settings
from workflows.errors import ActionNotFound, ActionNotPending, DecisionRefusedError
from workflows.messages import NotifyInput, NotifyUpdateInput

log = logging.getLogger("signoff.teams")

CHANNEL = "teams"
CARD_ACTION = "adaptiveCard/action"
ERROR_TYPE = "application/vnd.microsoft.error"
SEND_ATTEMPTS = 3


# --- conversation references ----------------------------------------------------------------


class ConversationReference(BaseModel):
    """Where the bot can reach one conversation: its id and the serviceUrl Teams gave for it."""

    conversation_id: str
    service_url: str
    tenant_id: str | None = None
    conversation_type: str | None = None
    name: str | None = None
    team_id: str | None = None
    bot_id: str | None = None
    updated_at: datetime | None = None


class ConversationStore:
    """Conversation references in Postgres; the pool is opened on first use."""

    def __init__(
        self,
        pool: asyncpg.Pool | None = None,
        *,
        url: Callable[[], str] | None = None,
    ) -> None:
        if pool is None and url is None:
            raise ValueError("give a pool or a database URL")
        self._pool = pool
        self._url = url
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ConversationStore:
        """A store on the ledger's database, as the worker and gateway find it."""

        def url() -> str:
            from workers.database import resolve_database_url

            return resolve_database_url(settings=settings)

        return cls(url=url)

    async def pool(self) -> asyncpg.Pool:
        """The connection pool, opened on first use."""
        async with self._lock:
            if self._pool is None:
                from activities.ledger.store import create_pool

                assert self._url is not None
                # Resolving may start the embedded Postgres, which blocks.
                url = await asyncio.to_thread(self._url)
                self._pool = await create_pool(url, max_size=4)
            return self._pool

    async def save(self, ref: ConversationReference) -> None:
        """Insert or refresh one conversation reference."""
        pool = await self.pool()
        await pool.execute(
            """
            INSERT INTO teams_conversations
                (conversation_id, service_url, tenant_id, conversation_type, name, team_id,
                 bot_id, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, now())
            ON CONFLICT (conversation_id) DO UPDATE SET
                service_url = excluded.service_url,
                tenant_id = coalesce(excluded.tenant_id, teams_conversations.tenant_id),
                conversation_type = coalesce(
                    excluded.conversation_type, teams_conversations.conversation_type),
                name = coalesce(excluded.name, teams_conversations.name),
                team_id = coalesce(excluded.team_id, teams_conversations.team_id),
                bot_id = coalesce(excluded.bot_id, teams_conversations.bot_id),
                updated_at = now()
            """,
            ref.conversation_id,
            ref.service_url,
            ref.tenant_id,
            ref.conversation_type,
            ref.name,
            ref.team_id,
            ref.bot_id,
        )

    async def get(self, conversation_id: str) -> ConversationReference | None:
        """The stored reference of a conversation, if the bot was installed there."""
        pool = await self.pool()
        row = await pool.fetchrow(
            "SELECT * FROM teams_conversations WHERE conversation_id = $1", conversation_id
        )
        return None if row is None else ConversationReference(**dict(row))

    async def remove(self, conversation_id: str) -> None:
        """Forget a conversation the bot was removed from."""
        pool = await self.pool()
        await pool.execute(
            "DELETE FROM teams_conversations WHERE conversation_id = $1", conversation_id
        )

    async def all(self) -> list[ConversationReference]:
        """Every stored reference, for `signoff` operators binding groups to conversations."""
        pool = await self.pool()
        rows = await pool.fetch("SELECT * FROM teams_conversations ORDER BY conversation_id")
        return [ConversationReference(**dict(r)) for r in rows]

    async def close(self) -> None:
        """Close the pool if this store opened it."""
        if self._pool is not None and self._url is not None:
            await self._pool.close()
            self._pool = None


# --- the connector --------------------------------------------------------------------------


class ConnectorError(Exception):
    """The Bot Framework connector refused a request; `transient` when a retry may work."""

    def __init__(self, message: str, *, transient: bool, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


class BotConnector:
    """Calls the Bot Framework connector REST API as our bot, only at allow-listed hosts."""

    def __init__(
        self, tokens: AppTokens, allowed_service_urls: list[str], *, timeout: float = 10.0
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


async def _with_retries(attempt: Callable[[], Awaitable[str]]) -> str:
    """Run a connector call, retrying transient failures briefly (Retry-After is honoured)."""
    for n in range(SEND_ATTEMPTS):
        try:
            return await attempt()
        except ConnectorError as err:
            if not err.transient or n == SEND_ATTEMPTS - 1:
                raise
            await asyncio.sleep(min(max(err.retry_after, 0.5 * 2**n), 5.0))
    raise AssertionError("unreachable")


# --- the notifier ---------------------------------------------------------------------------


class TeamsNotifier:
    """Posts approval cards to groups' Teams conversations and keeps them current."""

    channel = CHANNEL

    def __init__(
        self,
        directory: Directory,
        connector: BotConnector,
        store: ConversationStore,
        *,
        default_service_url: str,
    ) -> None:
        self.directory = directory
        self.connector = connector
        self.store = store
        self.default_service_url = default_service_url

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        directory: Directory,
        *,
        store: ConversationStore | None = None,
        msal_http_client: Any = None,
    ) -> TeamsNotifier:
        """The notifier as configured by `SIGNOFF_TEAMS_*`."""
        tokens = bot_tokens(settings, http_client=msal_http_client)
        return cls(
            directory,
            BotConnector(tokens, settings.teams_allowed_service_urls),
            store or ConversationStore.from_settings(settings),
            default_service_url=settings.teams_service_url,
        )

    async def _service_url(self, conversation_id: str) -> str:
        ref = await self.store.get(conversation_id)
        return ref.service_url if ref is not None else self.default_service_url

    async def post(self, request: NotifyInput) -> list[NotificationRef]:
        """Post the card once to each conversation the groups name; one ref per conversation."""
        conversations: dict[str, list[str]] = {}
        for group in request.groups:
            targets = self.directory.group(group)
            if targets is not None and targets.teams_conversation:
                conversations.setdefault(targets.teams_conversation, []).append(group)
        activity = card_activity(request.status, request.ui_url)
        refs = []
        for conversation_id, groups in conversations.items():
            service_url = await self._service_url(conversation_id)
            destination = ", ".join(groups)
            try:
                activity_id = await _with_retries(
                    functools.partial(self.connector.send, service_url, conversation_id, activity)
                )
            except ConnectorError as err:
                if isinstance(err.__cause__, TokenError) and err.__cause__.permanent:
                    raise NotifierError(str(err)) from err
                log.warning("could not post to Teams %s: %s", destination, err)
                refs.append(
                    NotificationRef(
                        channel=self.channel,
                        destination=destination,
                        error=str(err),
                        stage=request.stage,
                    )
                )
                continue
            refs.append(
                NotificationRef(
                    channel=self.channel,
                    destination=destination,
                    ref={
                        "conversation_id": conversation_id,
                        "activity_id": activity_id,
                        "service_url": service_url,
                    },
                    stage=request.stage,
                )
            )
        return refs

    async def update(self, request: NotifyUpdateInput) -> None:
        """Replace each posted card with the current state; a vanished message is skipped."""
        activity = card_activity(request.status, request.ui_url)
        transient: ConnectorError | None = None
        for ref in request.refs:
            ids = ref.ref
            if ref.channel != self.channel or not {"conversation_id", "activity_id"} <= set(ids):
                continue
            service_url = ids.get("service_url") or self.default_service_url
            try:
                await self.connector.replace(
                    service_url, ids["conversation_id"], ids["activity_id"], activity
                )
            except ConnectorError as err:
                if isinstance(err.__cause__, TokenError) and err.__cause__.permanent:
                    raise NotifierError(str(err)) from err
                log.warning("could not update Teams card in %s: %s", ref.destination, err)
                if err.transient:
                    transient = err
        if transient is not None:
            # Replacing is idempotent, so Temporal may retry all of them.
            raise transient


# --- inbound: /teams/messages ---------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ChannelAccount(_Lenient):
    """A user or bot in an activity."""

    id: str = Field(min_length=1)
    name: str | None = None
    aad_object_id: str | None = Field(default=None, alias="aadObjectId")


class ConversationAccount(_Lenient):
    """The conversation an activity belongs to."""

    id: str = Field(min_length=1)
    conversation_type: str | None = Field(default=None, alias="conversationType")
    tenant_id: str | None = Field(default=None, alias="tenantId")
    name: str | None = None


class Activity(_Lenient):
    """The parts of a Bot Framework activity we read; anything else is ignored."""

    type: str = Field(min_length=1)
    id: str | None = None
    name: str | None = None
    channel_id: str = Field(alias="channelId", min_length=1)
    service_url: str = Field(alias="serviceUrl", min_length=1)
    from_: ChannelAccount = Field(alias="from")
    recipient: ChannelAccount | None = None
    conversation: ConversationAccount
    reply_to_id: str | None = Field(default=None, alias="replyToId")
    value: Any = None
    action: str | None = None
    members_added: list[ChannelAccount] = Field(default_factory=list, alias="membersAdded")
    members_removed: list[ChannelAccount] = Field(default_factory=list, alias="membersRemoved")
    channel_data: dict[str, Any] = Field(default_factory=dict, alias="channelData")

    @property
    def tenant_id(self) -> str | None:
        """The Entra tenant the activity comes from."""
        tenant = self.channel_data.get("tenant")
        if isinstance(tenant, dict) and isinstance(tenant.get("id"), str):
            return str(tenant["id"])
        return self.conversation.tenant_id

    @property
    def team_id(self) -> str | None:
        """The team's id when the conversation is a team channel."""
        team = self.channel_data.get("team")
        return str(team["id"]) if isinstance(team, dict) and "id" in team else None


class CardDecision(BaseModel):
    """What a card button sends back, after Teams merged in the reason input."""

    model_config = ConfigDict(extra="ignore")

    action_id: str = Field(min_length=1, max_length=200)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    reason: str = Field(default="", max_length=2000, alias=REASON_INPUT)


class BadActivity(Exception):
    """The activity is not one we can act on; answered with 400 and nothing recorded."""


def _unauthorized(message: str) -> Response:
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


def allowed_tenants(settings: Settings) -> set[str]:
    """The Entra tenants whose activities we accept: the allow-list and our own tenant."""
    return {t for t in (*settings.teams_allowed_tenants, settings.teams_tenant_id) if t}


def tenant_problem(activity: Activity, settings: Settings) -> str | None:
    """Why an activity's tenant is not accepted; None when it is.

    Every tenant the activity names must be allowed (channelData's and the conversation's), and
    it must name one: checking is on unless `teams_allow_any_tenant` turns it off explicitly.
    """
    if settings.teams_allow_any_tenant:
        return None
    allowed = allowed_tenants(settings)
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


def ui_link(settings: Settings, action_id: str) -> str | None:
    """The action's page in the Temporal UI, as the workflow links it."""
    if not settings.ui_url:
        return None
    base = settings.ui_url.rstrip("/")
    return f"{base}/namespaces/{settings.temporal_namespace}/workflows/{action_id}"


class TeamsInbound:
    """Handles authenticated activities: installations and card decisions."""

    def __init__(
        self,
        settings: Settings,
        service: Reviews,
        directory: Directory,
        validator: BotFrameworkValidator,
        store: ConversationStore,
        connector: BotConnector,
    ) -> None:
        self.settings = settings
        self.service = service
        self.directory = directory
        self.validator = validator
        self.store = store
        self.connector = connector

    async def handle(self, request: Request) -> Response:
        """Authenticate, parse and dispatch one activity."""
        if not self.settings.teams_app_id:
            return _unauthorized("Teams is not configured (no SIGNOFF_TEAMS_APP_ID)")
        try:
            claims = await self.validator.validate(request.headers.get("authorization"))
        except TeamsAuthError as err:
            return _unauthorized(str(err))
        body = await request.body()
        if len(body) > self.settings.max_body_bytes:
            return _invoke_error("activity too large", 413)
        try:
            activity = Activity.model_validate_json(body)
        except ValidationError as err:
            return _invoke_error(f"malformed activity: {err.error_count()} problem(s)")
        # The token names the serviceUrl it was issued for; anything else is a replay elsewhere.
        if claims.get("serviceurl") != activity.service_url:
            return _unauthorized("serviceUrl does not match the token's serviceurl claim")
        if activity.channel_id != TEAMS_CHANNEL:
            return _unauthorized(f"channel {activity.channel_id!r} is not msteams")
        if not service_url_allowed(activity.service_url, self.settings.teams_allowed_service_urls):
            return _unauthorized(f"serviceUrl {activity.service_url!r} is not allow-listed")
        problem = tenant_problem(activity, self.settings)
        if problem is not None:
            return _unauthorized(problem)
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
        _, request = await self._prepare(activity, action.get("verb"), action.get("data"))
        action_id = str(action["data"]["action_id"])
        status, notice = await self._decide(request, action_id)
        card = approval_card(status, ui_link(self.settings, action_id), notice=notice or None)
        return _invoke_card(card)

    async def _submitted(self, activity: Activity) -> Response:
        """The Action.Submit fallback: decide, and reply in the thread only when refused."""
        data = activity.value
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


def teams_router(
    settings: Settings,
    service: Reviews,
    directory: Directory,
    *,
    store: ConversationStore | None = None,
    msal_http_client: Any = None,
) -> APIRouter:
    """The `/teams/messages` route; without an app id it refuses everything with 401."""
    router = APIRouter()
    inbound: TeamsInbound | None = None
    if settings.teams_app_id:
        if not settings.teams_allow_any_tenant and not allowed_tenants(settings):
            log.error(
                "Teams refuses every activity: no tenant is allowed (set SIGNOFF_TEAMS_TENANT_ID "
                "or SIGNOFF_TEAMS_ALLOWED_TENANTS, or SIGNOFF_TEAMS_ALLOW_ANY_TENANT=true)"
            )
        inbound = TeamsInbound(
            settings,
            service,
            directory,
            BotFrameworkValidator(settings.teams_app_id, settings.teams_openid_metadata_url),
            store or ConversationStore.from_settings(settings),
            BotConnector(
                bot_tokens(settings, http_client=msal_http_client),
                settings.teams_allowed_service_urls,
            ),
        )

    @router.post("/teams/messages", include_in_schema=False)
    async def teams_messages(request: Request) -> Response:
        """Bot Framework activities from Microsoft Teams."""
        if inbound is None:
            return _unauthorized("Teams is not configured (no SIGNOFF_TEAMS_APP_ID)")
        return await inbound.handle(request)

    return router
