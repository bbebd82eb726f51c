"""A real local SMTP server for the email tests: aiosmtpd with STARTTLS and AUTH."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.certs import self_signed_certificate

USER = "signoff-mailer"
PASSWORD = "s3cret-smtp-pa55word"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A fresh key and self-signed certificate for localhost / 127.0.0.1, as PEM files."""
    return self_signed_certificate(directory, name="localhost", stem="smtp-cert")


@dataclass
class Mailbox:
    """What the server received, and the logins it saw."""

    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd's hook: keep the message (only authenticated sessions get here)."""
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        """Accept only USER / PASSWORD."""
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = data.login.decode() == USER and data.password.decode() == PASSWORD
        self.logins.append((data.login.decode(), ok))
        # handled=False: the server answers (235 or 535) itself.
        return AuthResult(success=ok, handled=False)


@contextmanager
def smtp_server(directory: Path) -> Iterator[tuple[Controller, Mailbox, Path]]:
    """Run the server on a free port; yields it, its mailbox and the CA file to trust."""
    cert, key = self_signed(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox = Mailbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        server_hostname="localhost",
        tls_context=context,
        require_starttls=True,
        auth_require_tls=True,
        auth_required=True,
        authenticator=mailbox.authenticate,
        # smtplib tries LOGIN after a failed PLAIN; one mechanism keeps a failure one answer.
        auth_exclude_mechanism=["LOGIN"],
    )
    controller.start()
    try:
        yield controller, mailbox, cert
    finally:
        controller.stop()
