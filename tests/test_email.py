"""The email channel against a real local SMTP server (aiosmtpd: STARTTLS, AUTH)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle

from activities.ledger.store import Ledger
from channels.console import ConsoleNotifier
from channels.email import EmailNotifier, SmtpConfig
from policies.loader import load_directory
from signoff.links import approval_page_url
from signoff.models import ActionStatus, NotificationRef, Status
from tests.conftest import Gate, running_worker
from tests.smtp_server import PASSWORD, USER, Mailbox, smtp_server
from workers.settings import Settings
from workers.wiring.channels import notifiers_for
from workflows.action import ActionWorkflow

PUBLIC = "https://signoff.example.com"
HOSTILE = '<script>alert(1)</script><a href="https://evil.example">Approve now</a>\u202eevil'


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[Controller, Mailbox, Path]]:
    """A running SMTP server that requires STARTTLS and AUTH."""
    with smtp_server(tmp_path) as running:
        yield running


def mail_settings(
    settings: Settings, smtp: tuple[Controller, Mailbox, Path], password: str = PASSWORD
) -> Settings:
    """The test settings with the SMTP server, its account and the CA to trust."""
    controller, _, ca = smtp
    return settings.model_copy(
        update={
            "smtp_host": "localhost",
            "smtp_port": controller.port,
            "smtp_user": USER,
            "smtp_password": SecretStr(password),
            "smtp_sender": "signoff@example.com",
            "smtp_ca_file": ca,
            "public_url": PUBLIC,
        }
    )


def test_link_is_the_public_url_and_the_id_only() -> None:
    assert approval_page_url(PUBLIC + "/", "act-1") == f"{PUBLIC}/a/act-1"
    assert approval_page_url(PUBLIC, "a/../b?x=1") == f"{PUBLIC}/a/a%2F..%2Fb%3Fx%3D1"


async def test_request_is_mailed_with_the_page_link_and_agent_text_neutralised(
    client: Client, settings: Settings, ledger: Ledger, smtp: tuple[Controller, Mailbox, Path]
) -> None:
    _, mailbox, _ = smtp
    configured = mail_settings(settings, smtp)
    notifiers = notifiers_for(configured, load_directory(configured.directory))
    assert [n.channel for n in notifiers] == ["console", "email"]
    gate = Gate(client, configured)
    async with running_worker(client, configured, ledger, notifiers):
        handle = await gate.submit("two-hostile", {"note": HOSTILE})
        status = await gate.wait_for(handle, "pending_approval")
        await _wait_for_refs(handle, "email")
        await gate.decide(handle, "bob@example.com")
        await gate.decide(handle, "carol@example.com")
        outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    assert mailbox.logins == [(USER, True)]
    [message] = mailbox.messages
    assert mailbox.recipients == [["security@example.com", "sec-lead@example.com"]]
    assert message["Subject"] == "Approval needed: noop on two-hostile"
    assert message["From"] == "signoff@example.com"
    link = f"{PUBLIC}/a/{handle.id}"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert link in text
    assert f'href="{link}"' in html
    assert status.digest in text
    assert status.digest in html
    assert "decides nothing" in text
    assert "sign in" in text
    # No tag, link or hidden character of the agent's comes through in the HTML part.
    assert "<script>" not in html
    assert 'evil.example">' not in html
    assert 'href="https://evil.example' not in html
    assert "&lt;script&gt;" in html
    assert "\u202e" not in html
    assert "\u202e" not in text
    assert "\\u202e" in text
    # The link is the only link; it carries no token (nothing but the action id).
    assert html.count("<a ") == 1
    [ref] = [r for r in outcome.notifications if r.channel == "email"]
    assert ref.destination == "security"
    assert not ref.error
    assert ref.ref["message_id"] == message["Message-ID"]


async def test_bad_smtp_password_is_a_clear_error_and_the_api_still_approves(
    client: Client,
    settings: Settings,
    ledger: Ledger,
    smtp: tuple[Controller, Mailbox, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, mailbox, _ = smtp
    wrong = "wrong-" + PASSWORD
    configured = mail_settings(settings, smtp, password=wrong)
    notifiers = notifiers_for(configured, load_directory(configured.directory))
    gate = Gate(client, configured)
    caplog.set_level(logging.DEBUG)
    async with running_worker(client, configured, ledger, notifiers):
        handle = await gate.submit("one-x")
        await gate.wait_for(handle, "pending_approval")
        refs = await _wait_for_refs(handle, "email")
        await gate.decide(handle, "alice@example.com")
        outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    assert mailbox.messages == []
    assert mailbox.logins == [(USER, False)]
    [failed] = refs
    assert failed.error is not None
    assert "SMTP authentication failed" in failed.error
    assert "SIGNOFF_SMTP_PASSWORD" in failed.error
    assert wrong not in failed.error
    assert PASSWORD not in failed.error
    assert "wrong-" not in caplog.text
    assert PASSWORD not in caplog.text
    assert wrong not in repr(notifiers[-1].config)  # type: ignore[attr-defined]


async def test_a_server_without_starttls_gets_no_login_and_no_mail(
    client: Client, settings: Settings, ledger: Ledger
) -> None:
    """A plain server (or a downgrade that strips STARTTLS) is refused before AUTH."""
    mailbox = Mailbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    plain = Controller(mailbox, hostname="127.0.0.1", port=port)
    plain.start()
    try:
        config = SmtpConfig(
            host="127.0.0.1", port=port, sender="s@example.com", user=USER, password=PASSWORD
        )
        notifier = EmailNotifier(config, load_directory(settings.directory), PUBLIC)
        gate = Gate(client, settings)
        async with running_worker(client, settings, ledger, [ConsoleNotifier(), notifier]):
            handle = await gate.submit("one-plain")
            [failed] = await _wait_for_refs(handle, "email")
            await gate.decide(handle, "alice@example.com")
            outcome = await handle.result()
    finally:
        plain.stop()
    assert outcome.status is Status.SUCCEEDED
    assert failed.error is not None
    assert "does not offer STARTTLS" in failed.error
    assert mailbox.logins == []
    assert mailbox.messages == []


async def _wait_for_refs(
    handle: WorkflowHandle[ActionWorkflow, ActionStatus], channel: str
) -> list[NotificationRef]:
    """The channel's notification refs once the notify activity has recorded them."""
    for _ in range(200):
        status = await handle.query(ActionWorkflow.status)
        refs = [r for r in status.notifications if r.channel == channel]
        if refs:
            return refs
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {channel} notification recorded")
