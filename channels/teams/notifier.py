"""Teams as an outbound channel: a proactive Adaptive Card per conversation, kept current."""

from __future__ import annotations

import functools
import logging

from channels.notifier import NotifierError
from channels.teams.cards import card_activity, reminder_activity, window_note_activity
from channels.teams.config import CHANNEL
from channels.teams.connector import BotConnector, ConnectorError, with_retries
from channels.teams.store import ConversationStore
from policies.directory import Directory
from policies.microsoft import TokenError
from signoff.links import approval_page_url
from signoff.models import NotificationRef
from workflows.messages import NotifyInput, NotifyUpdateInput, WindowNoteInput

log = logging.getLogger("signoff.teams")


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
        page_base: str | None = None,
    ) -> None:
        # The gateway's public URL: every card links to the action's approval page.
        self.page_base = page_base
        self.directory = directory
        self.connector = connector
        self.store = store
        self.default_service_url = default_service_url

    def _page(self, action_id: str) -> str | None:
        return approval_page_url(self.page_base, action_id) if self.page_base else None

    async def _service_url(self, conversation_id: str) -> str:
        ref = await self.store.get(conversation_id)
        return ref.service_url if ref is not None else self.default_service_url

    async def post(self, request: NotifyInput) -> list[NotificationRef]:
        """Post the card once to each conversation the groups name; one ref per conversation."""
        if request.reminder:
            return await self._remind(request)
        conversations: dict[str, list[str]] = {}
        for group in request.groups:
            targets = self.directory.group(group)
            if targets is not None and targets.teams_conversation:
                conversations.setdefault(targets.teams_conversation, []).append(group)
        activity = card_activity(
            request.status,
            request.ui_url,
            page_url=approval_page_url(self.page_base, request.status.id)
            if self.page_base
            else None,
        )
        refs = []
        for conversation_id, groups in conversations.items():
            service_url = await self._service_url(conversation_id)
            destination = ", ".join(groups)
            try:
                activity_id = await with_retries(
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

    async def _remind(self, request: NotifyInput) -> list[NotificationRef]:
        """A reminder: a reply to each posted card in its conversation, never a new card."""
        wanted = set(request.groups)
        activity = reminder_activity(request.status, request.reminder)
        refs = []
        for posted in request.status.notifications:
            ids = posted.ref
            if (
                posted.channel != self.channel
                or posted.error
                or posted.reminder
                or not {"conversation_id", "activity_id"} <= set(ids)
                or not wanted & {g.strip() for g in posted.destination.split(",")}
            ):
                continue
            service_url = ids.get("service_url") or self.default_service_url
            conversation_id, activity_id = ids["conversation_id"], ids["activity_id"]
            try:
                await self.connector.reply(service_url, conversation_id, activity_id, activity)
            except ConnectorError as err:
                if isinstance(err.__cause__, TokenError) and err.__cause__.permanent:
                    raise NotifierError(str(err)) from err
                log.warning("could not remind in Teams %s: %s", posted.destination, err)
                refs.append(
                    NotificationRef(
                        channel=self.channel,
                        destination=posted.destination,
                        error=str(err),
                        stage=request.stage,
                    )
                )
                continue
            # No activity_id: `update` must never replace a reminder with the card.
            refs.append(
                NotificationRef(
                    channel=self.channel,
                    destination=posted.destination,
                    ref={"kind": "reminder", "reply_to": activity_id},
                    stage=request.stage,
                )
            )
        return refs

    async def update(self, request: NotifyUpdateInput) -> None:
        """Replace each posted card with the current state; a vanished message is skipped."""
        activity = card_activity(
            request.status,
            request.ui_url,
            page_url=approval_page_url(self.page_base, request.status.id)
            if self.page_base
            else None,
        )
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

    async def window_note(self, request: WindowNoteInput) -> None:
        """Reply under each posted approval card with what its window did."""
        activity = window_note_activity(request.window, request.text)
        transient: ConnectorError | None = None
        for ref in request.refs:
            ids = ref.ref
            if ref.channel != self.channel or not {"conversation_id", "activity_id"} <= set(ids):
                continue
            service_url = ids.get("service_url") or self.default_service_url
            try:
                await self.connector.reply(
                    service_url, ids["conversation_id"], ids["activity_id"], activity
                )
            except ConnectorError as err:
                if isinstance(err.__cause__, TokenError) and err.__cause__.permanent:
                    raise NotifierError(str(err)) from err
                log.warning("could not tell Teams %s about a window: %s", ref.destination, err)
                if err.transient:
                    transient = err
        if transient is not None:
            raise transient
