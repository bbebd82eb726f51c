"""The console notifier: writes approval requests to the worker's log."""

from __future__ import annotations

import logging

from channels.notifier import RISK_EMOJI, compact_params, progress_text, requirement_text
from signoff.models import NotificationRef, NotifyInput, NotifyUpdateInput

log = logging.getLogger("signoff.notify")


class ConsoleNotifier:
    """Logs each request and each update; always on, so the local stack shows what happens."""

    channel = "console"

    async def post(self, request: NotifyInput) -> list[NotificationRef]:
        """Log the request once per group."""
        status = request.status
        risk = status.verdict.risk if status.verdict else "unknown"
        refs = []
        for group in request.groups:
            log.info(
                "%s approval %s: %s on %s by %s (%s risk) needs %s; digest %s; "
                "params %s; approve with: signoff approve %s%s",
                RISK_EMOJI.get(risk, ""),
                "escalated" if request.stage else "requested",
                status.request.action,
                status.request.target,
                status.request.requester,
                risk,
                requirement_text(status),
                status.digest[:12],
                compact_params(status, 200),
                status.id,
                f"; {request.ui_url}" if request.ui_url else "",
            )
            refs.append(
                NotificationRef(channel=self.channel, destination=group, stage=request.stage)
            )
        return refs

    async def update(self, request: NotifyUpdateInput) -> None:
        """Log the new state."""
        status = request.status
        log.info(
            "action %s is %s %s",
            status.id,
            status.status.value,
            progress_text(status) or status.error or "",
        )
