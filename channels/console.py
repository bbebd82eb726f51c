"""The console notifier: writes approval requests to the worker's log."""

from __future__ import annotations

import logging

from channels.notifier import RISK_EMOJI, break_glass_text, progress_text, requirement_text
from signoff import neutralise
from signoff.links import approval_page_url
from signoff.models import NotificationRef, format_duration
from workflows.messages import NotifyInput, NotifyUpdateInput, WindowNoteInput

log = logging.getLogger("signoff.notify")


class ConsoleNotifier:
    """Logs each request and each update; always on, so the local stack shows what happens."""

    channel = "console"

    def __init__(
        self,
        *,
        page_base: str | None = None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        # The gateway's public URL: each request line then ends with the approval page's link.
        self.page_base = page_base
        # The action workflow writes its console lines itself, through Temporal's replay-aware
        # adapter (workflows.action), so a replay never logs a request twice.
        self.log = log

    async def post(self, request: NotifyInput) -> list[NotificationRef]:
        """Log the request once per group."""
        status = request.status
        risk = status.verdict.risk if status.verdict else "unknown"
        refs = []
        glass = break_glass_text(status)
        if glass is not None:
            # A break-glass action is not asking for approval: it ran, and asks for a review.
            for group in request.groups:
                self.log.warning(
                    "%s; action %s, %s on %s, digest %s; review %s",
                    neutralise.one_line(glass),
                    neutralise.one_line(status.id),
                    neutralise.one_line(status.request.action),
                    neutralise.one_line(status.request.target),
                    status.digest,
                    "escalated" if request.stage else "requested",
                )
                refs.append(
                    NotificationRef(channel=self.channel, destination=group, stage=request.stage)
                )
            return refs
        for group in request.groups:
            # Everything, uncut, on one line: nothing the agent wrote can hide or forge a line.
            self.log.info(
                "%s approval %s: %s on %s by %s on behalf of %s (agent owner %s; %s risk) "
                "needs %s; digest %s; justification %s; params %s; "
                "approve with: signoff approve %s%s%s",
                RISK_EMOJI.get(risk, ""),
                f"reminder {request.reminder}"
                if request.reminder
                else "escalated"
                if request.stage
                else "requested",
                neutralise.one_line(status.request.action),
                neutralise.one_line(status.request.target),
                neutralise.one_line(status.request.requester),
                neutralise.one_line(status.request.on_behalf_of or "-"),
                neutralise.one_line(status.owner or "-"),
                risk,
                neutralise.one_line(requirement_text(status)),
                status.digest,
                neutralise.one_line(status.request.justification),
                neutralise.visible_json(status.request.params),
                neutralise.one_line(status.id),
                f"; {request.ui_url}" if request.ui_url else "",
                f"; page {approval_page_url(self.page_base, status.id)}" if self.page_base else "",
            )
            offer = status.verdict.window if status.verdict else None
            if offer is not None:
                # What an approver may also grant (the rule's scope and maximum).
                self.log.info(
                    "window offer for %s: up to %s for requests matching %s; grant with: "
                    "signoff approve %s --window %s",
                    neutralise.one_line(status.id),
                    format_duration(offer.max_duration),
                    neutralise.one_line(offer.scope),
                    neutralise.one_line(status.id),
                    format_duration(offer.max_duration),
                )
            refs.append(
                NotificationRef(channel=self.channel, destination=group, stage=request.stage)
            )
        return refs

    async def update(self, request: NotifyUpdateInput) -> None:
        """Log the new state."""
        status = request.status
        self.log.info(
            "action %s is %s %s",
            neutralise.one_line(status.id),
            status.status.value,
            neutralise.one_line(
                break_glass_text(status) or progress_text(status) or status.error or ""
            ),
        )

    async def window_note(self, request: WindowNoteInput) -> None:
        """Log what the approval window did."""
        self.log.info("window %s: %s", request.window.id, neutralise.one_line(request.text))
