"""Slack, outbound: post approval requests as Block Kit and keep the messages current.

The inbound side (button clicks, the deny modal, Socket Mode) is in `channels.slack.interactions`.
Messages are found again through the `channel` and `ts` stored in each `NotificationRef`, which
the notify activity returns into workflow state.
"""

from __future__ import annotations

import logging

from slack_sdk.web.async_client import AsyncWebClient

from channels.notifier import outcome_recipient
from channels.slack.blocks import (
    escalation_text,
    escape,
    fallback_text,
    group_mention,
    is_open,
    outcome_reply,
    reminder_text,
    request_attachments,
    window_note_blocks,
)
from channels.slack.client import SlackPermanentError, SlackUnavailable, call_slack, raise_failures
from policies.cache import BoundedCache
from policies.directory import Directory
from signoff.links import approval_page_url
from signoff.models import ActionStatus, NotificationRef
from workflows.messages import NotifyInput, NotifyUpdateInput, WindowNoteInput

log = logging.getLogger("signoff.slack")

CHANNEL = "slack"
REQUEST = "request"
ESCALATION = "escalation"
REMINDER = "reminder"

SEEN_MAX = 10_000


class SlackNotifier:
    """Posts requests to each group's `slack_channel` and edits them as the action moves on."""

    channel = CHANNEL

    def __init__(
        self, client: AsyncWebClient, directory: Directory, *, page_base: str | None = None
    ) -> None:
        self.client = client
        self.directory = directory
        # The gateway's public URL: every message links to the action's approval page.
        self.page_base = page_base
        # Per worker process: which messages got their outcome reply, and how fresh each
        # message's content is. Concurrent update activities must not post the outcome twice
        # or put an older state back over a newer one.
        self._freshness: BoundedCache[tuple[str, str], tuple[int, ...]] = BoundedCache(SEEN_MAX)
        self._told: BoundedCache[tuple[str, str], None] = BoundedCache(SEEN_MAX)

    def _page(self, status: ActionStatus) -> str | None:
        return approval_page_url(self.page_base, status.id) if self.page_base else None

    # --- outbound -------------------------------------------------------------------------

    async def post(self, request: NotifyInput) -> list[NotificationRef]:
        """Post the request to each group's channel; on escalation, reply in earlier threads."""
        if request.reminder:
            return await self._remind(request)
        status = request.status
        mentions = await self._mentions(status)
        refs: list[NotificationRef] = []
        failures: list[SlackPermanentError | SlackUnavailable] = []
        already: set[str] = set()
        if request.stage > 0:
            threads = [r for r in status.notifications if _is_request(r)]
            already = {r.ref["channel"] for r in threads}
            text = escalation_text(status, self._group_mentions(request.groups), request.stage)
            verdict = status.verdict
            last = verdict is not None and request.stage >= len(verdict.escalation)
            for thread in threads:
                channel, ts = thread.ref["channel"], thread.ref["ts"]
                try:
                    reply = await call_slack(
                        "chat.postMessage",
                        channel,
                        self.client.chat_postMessage,
                        channel=channel,
                        thread_ts=ts,
                        text=text,
                        reply_broadcast=last,
                    )
                except (SlackPermanentError, SlackUnavailable) as err:
                    failures.append(err)
                    continue
                refs.append(
                    NotificationRef(
                        channel=CHANNEL,
                        destination=channel,
                        ref={"kind": ESCALATION, "channel": channel, "ts": str(reply["ts"])},
                        stage=request.stage,
                    )
                )
        for channel, groups in self._destinations(request.groups).items():
            if channel in already:
                continue
            try:
                posted = await call_slack(
                    "chat.postMessage",
                    channel,
                    self.client.chat_postMessage,
                    channel=channel,
                    text=fallback_text(status),
                    attachments=request_attachments(
                        status, request.ui_url, mentions, page_url=self._page(status)
                    ),
                    unfurl_links=False,
                    unfurl_media=False,
                )
            except (SlackPermanentError, SlackUnavailable) as err:
                failures.append(err)
                continue
            refs.append(
                NotificationRef(
                    channel=CHANNEL,
                    destination=channel,
                    ref={
                        "kind": REQUEST,
                        "channel": str(posted["channel"]),
                        "ts": str(posted["ts"]),
                        "groups": ",".join(groups),
                    },
                    stage=request.stage,
                )
            )
        if not refs:
            # Nothing landed, so a retry cannot post twice: let Temporal retry what may pass.
            raise_failures(failures)
        # Some messages landed: keep them (a retry would duplicate them) and show the rest.
        for failure in failures:
            log.warning("%s", failure)
            refs.append(
                NotificationRef(
                    channel=CHANNEL,
                    destination=failure.destination,
                    error=str(failure),
                    stage=request.stage,
                )
            )
        return refs

    async def _remind(self, request: NotifyInput) -> list[NotificationRef]:
        """A reminder: a reply in each request's thread, never a new message in the channel."""
        status = request.status
        wanted = set(request.groups)
        threads = [
            r
            for r in status.notifications
            if _is_request(r) and wanted & set(r.ref.get("groups", "").split(","))
        ]
        refs: list[NotificationRef] = []
        failures: list[SlackPermanentError | SlackUnavailable] = []
        for thread in threads:
            channel, ts = thread.ref["channel"], thread.ref["ts"]
            groups = [g for g in thread.ref.get("groups", "").split(",") if g in wanted]
            try:
                reply = await call_slack(
                    "chat.postMessage",
                    channel,
                    self.client.chat_postMessage,
                    channel=channel,
                    thread_ts=ts,
                    text=reminder_text(status, self._group_mentions(groups), request.reminder),
                )
            except (SlackPermanentError, SlackUnavailable) as err:
                failures.append(err)
                continue
            refs.append(
                NotificationRef(
                    channel=CHANNEL,
                    destination=channel,
                    ref={"kind": REMINDER, "channel": channel, "ts": str(reply["ts"])},
                    stage=request.stage,
                )
            )
        if not refs:
            raise_failures(failures)
        for failure in failures:
            log.warning("%s", failure)
            refs.append(
                NotificationRef(
                    channel=CHANNEL,
                    destination=failure.destination,
                    error=str(failure),
                    stage=request.stage,
                )
            )
        return refs

    async def update(self, request: NotifyUpdateInput) -> None:
        """Edit each posted request in place; at the end, tell the owner in its thread."""
        status = request.status
        mentions = await self._mentions(status)
        failures: list[SlackPermanentError | SlackUnavailable] = []
        for ref in request.refs:
            if not _is_request(ref):
                continue
            channel, ts = ref.ref["channel"], ref.ref["ts"]
            if not self._fresh((channel, ts), status):
                continue
            try:
                await call_slack(
                    "chat.update",
                    channel,
                    self.client.chat_update,
                    channel=channel,
                    ts=ts,
                    text=fallback_text(status),
                    attachments=request_attachments(
                        status, request.ui_url, mentions, page_url=self._page(status)
                    ),
                )
                if status.terminal:
                    await self._tell_outcome(channel, ts, status, mentions)
            except (SlackPermanentError, SlackUnavailable) as err:
                failures.append(err)
        raise_failures(failures)

    async def _tell_outcome(
        self, channel: str, ts: str, status: ActionStatus, mentions: dict[str, str]
    ) -> None:
        """Reply once in the request's thread with the outcome, mentioning the owner."""
        key = (channel, ts)
        if key in self._told:
            return
        # Claimed before the first await, so a concurrent update of the same message skips it.
        self._told.put(key, None)
        recipient = outcome_recipient(status)
        try:
            await call_slack(
                "chat.postMessage",
                channel,
                self.client.chat_postMessage,
                channel=channel,
                thread_ts=ts,
                text=outcome_reply(status, mentions.get(recipient) or f"*{escape(recipient)}*"),
            )
        except BaseException:
            self._told.pop(key)  # not told after all: the activity's retry tries again
            raise

    async def window_note(self, request: WindowNoteInput) -> None:
        """Reply in each of the approval's threads with what its window did."""
        failures: list[SlackPermanentError | SlackUnavailable] = []
        for ref in request.refs:
            if not _is_request(ref):
                continue
            channel, ts = ref.ref["channel"], ref.ref["ts"]
            try:
                await call_slack(
                    "chat.postMessage",
                    channel,
                    self.client.chat_postMessage,
                    channel=channel,
                    thread_ts=ts,
                    text=escape(request.text),
                    blocks=[b.to_dict() for b in window_note_blocks(request.window, request.text)],
                )
            except (SlackPermanentError, SlackUnavailable) as err:
                failures.append(err)
        raise_failures(failures)

    def _fresh(self, key: tuple[str, str], status: ActionStatus) -> bool:
        """Whether `status` is at least as far along as what the message already shows."""
        rank = (int(status.terminal), len(status.decisions), int(not is_open(status)))
        if rank < (self._freshness.get(key) or (0, 0, 0)):
            return False
        self._freshness.put(key, rank)
        return True

    # --- helpers --------------------------------------------------------------------------

    def _destinations(self, groups: list[str]) -> dict[str, list[str]]:
        """Slack channel -> the groups it serves, in the order the groups came."""
        channels: dict[str, list[str]] = {}
        for group in groups:
            targets = self.directory.group(group)
            if targets is None or not targets.slack_channel:
                log.info("group %s has no slack_channel; not posting to Slack for it", group)
                continue
            channels.setdefault(targets.slack_channel, []).append(group)
        return channels

    def _group_mentions(self, groups: list[str]) -> list[str]:
        mentions = []
        for group in groups:
            targets = self.directory.group(group)
            mentions.append(
                group_mention(
                    group,
                    targets.slack_channel if targets else None,
                    targets.slack_mention if targets else None,
                )
            )
        return mentions

    async def _mentions(self, status: ActionStatus) -> dict[str, str]:
        """Principal id -> `<@U…>` for the people the message names who have a Slack id."""
        ids = {status.request.requester, status.request.on_behalf_of, status.owner}
        ids.update(d.approver for d in status.decisions)
        mentions = {}
        for principal_id in ids - {None}:
            assert principal_id is not None
            principal = await self.directory.principal(principal_id)
            if principal is not None and principal.slack_user_id:
                mentions[principal_id] = f"<@{principal.slack_user_id}>"
        return mentions


def _is_request(ref: NotificationRef) -> bool:
    """Whether the ref is a posted Slack request message (not a reply, not a failure)."""
    return (
        ref.channel == CHANNEL
        and not ref.error
        and ref.ref.get("kind") == REQUEST
        and bool(ref.ref.get("channel"))
        and bool(ref.ref.get("ts"))
    )
