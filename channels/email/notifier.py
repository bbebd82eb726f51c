"""Email, outbound: one message per group's addresses over SMTP with STARTTLS.

Mail cannot be edited once sent, so `update` sends nothing; the approval page (linked from
every message) always shows the current state. smtplib is blocking: it runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from channels.email.message import compose
from channels.notifier import NotifierError
from policies.directory import Directory
from signoff.links import approval_page_url
from signoff.models import NotificationRef
from workflows.messages import NotifyInput, NotifyUpdateInput

log = logging.getLogger("signoff.email")

CHANNEL = "email"
REQUEST = "request"
REMINDER = "reminder"


@dataclass(frozen=True)
class SmtpConfig:
    """Where and as whom to send: STARTTLS is always required before AUTH or any message."""

    host: str
    sender: str
    port: int = 587
    user: str | None = None
    # repr=False: a config printed in a traceback or a log never shows the password.
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    timeout: float = 30.0

    @property
    def where(self) -> str:
        """host:port, for messages."""
        return f"{self.host}:{self.port}"


class EmailNotifier:
    """Mails each group's `email` addresses the request and a link to its approval page."""

    channel = CHANNEL

    def __init__(self, config: SmtpConfig, directory: Directory, public_url: str | None) -> None:
        self.config = config
        self.directory = directory
        self.public_url = public_url

    async def post(self, request: NotifyInput) -> list[NotificationRef]:
        """Send one message per group that has addresses; a reminder replies to the first."""
        status = request.status
        link = approval_page_url(self.public_url, status.id) if self.public_url else None
        earlier = {
            r.destination: r.ref.get("message_id", "")
            for r in status.notifications
            if r.channel == CHANNEL and not r.error and r.ref.get("kind") == REQUEST
        }
        messages: list[tuple[str, EmailMessage]] = []
        for group in request.groups:
            targets = self.directory.group(group)
            if targets is None or not targets.email:
                log.info("group %s has no email addresses; not mailing it", group)
                continue
            messages.append(
                (
                    group,
                    compose(
                        status,
                        sender=self.config.sender,
                        to=list(targets.email),
                        link=link,
                        reminder=request.reminder,
                        in_reply_to=earlier.get(group) or None,
                    ),
                )
            )
        if not messages:
            return []
        await asyncio.to_thread(self._send, [m for _, m in messages])
        return [
            NotificationRef(
                channel=CHANNEL,
                destination=group,
                ref={
                    "kind": REMINDER if request.reminder else REQUEST,
                    "message_id": str(message["Message-ID"]),
                    "to": str(message["To"]),
                },
                stage=request.stage,
            )
            for group, message in messages
        ]

    async def update(self, request: NotifyUpdateInput) -> None:
        """Sent mail cannot change; the linked page shows the current state."""
        return None

    def _send(self, messages: list[EmailMessage]) -> None:
        """Deliver over one SMTP session: STARTTLS, then AUTH when a user is set."""
        config = self.config
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        try:
            with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise NotifierError(
                        f"SMTP server {config.where} does not offer STARTTLS; signoff never "
                        "sends approval mail or credentials in the clear"
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
                if config.user:
                    smtp.login(config.user, config.password or "")
                for message in messages:
                    smtp.send_message(message)
        except smtplib.SMTPAuthenticationError as err:
            # The server's answer, never what we sent: the password stays out of the message.
            raise NotifierError(
                f"SMTP authentication failed at {config.where} for user {config.user!r} "
                f"(server said {err.smtp_code}); check SIGNOFF_SMTP_USER and "
                "SIGNOFF_SMTP_PASSWORD"
            ) from None
        except smtplib.SMTPRecipientsRefused as err:
            raise NotifierError(
                f"SMTP server {config.where} refused the recipients "
                f"{', '.join(sorted(err.recipients))}"
            ) from None
        except ssl.SSLCertVerificationError as err:
            raise NotifierError(
                f"SMTP server {config.where} failed TLS verification: {err.verify_message}; "
                "set SIGNOFF_SMTP_CA_FILE to the CA that signed its certificate"
            ) from None
        except smtplib.SMTPNotSupportedError as err:
            raise NotifierError(f"SMTP server {config.where}: {err}") from None
