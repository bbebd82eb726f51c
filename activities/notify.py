"""Notification activities: dispatch to the configured channel by name."""

from __future__ import annotations

from collections.abc import Iterable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from channels.notifier import Notifier, NotifierError, WindowNotifier
from workflows.errors import NOTIFIER_ERROR
from workflows.messages import NotifyInput, NotifyResult, NotifyUpdateInput, WindowNoteInput


class Notifications:
    """The notifiers this worker has, exposed as the `notify` and `notify_update` activities."""

    def __init__(self, notifiers: Iterable[Notifier]) -> None:
        self._notifiers = {n.channel: n for n in notifiers}

    @property
    def channels(self) -> list[str]:
        """The names of the configured channels."""
        return list(self._notifiers)

    def _get(self, channel: str) -> Notifier:
        try:
            return self._notifiers[channel]
        except KeyError:
            raise ApplicationError(
                f"channel {channel!r} is not configured on this worker",
                type=NOTIFIER_ERROR,
                non_retryable=True,
            ) from None

    @activity.defn(name="notify")
    async def notify(self, request: NotifyInput) -> NotifyResult:
        """Post an approval request to one channel."""
        notifier = self._get(request.channel)
        try:
            return NotifyResult(refs=await notifier.post(request))
        except NotifierError as err:
            raise ApplicationError(str(err), type=NOTIFIER_ERROR, non_retryable=True) from err

    @activity.defn(name="notify_update")
    async def notify_update(self, request: NotifyUpdateInput) -> None:
        """Update one channel's posted messages to the current status."""
        notifier = self._get(request.channel)
        try:
            await notifier.update(request)
        except NotifierError as err:
            raise ApplicationError(str(err), type=NOTIFIER_ERROR, non_retryable=True) from err

    @activity.defn(name="notify_window")
    async def notify_window(self, request: WindowNoteInput) -> None:
        """Tell one channel's approval thread what an approval window did (if it can)."""
        notifier = self._get(request.channel)
        if not isinstance(notifier, WindowNotifier):
            return
        try:
            await notifier.window_note(request)
        except NotifierError as err:
            raise ApplicationError(str(err), type=NOTIFIER_ERROR, non_retryable=True) from err
