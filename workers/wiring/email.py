"""Email built from the settings: the notifier for the worker."""

from __future__ import annotations

from channels.email import EmailNotifier, SmtpConfig
from policies.directory import Directory
from workers.settings import Settings


def smtp_config(settings: Settings) -> SmtpConfig:
    """The SMTP server, account and sender the settings name."""
    if not settings.smtp_host or not settings.smtp_sender:
        raise ValueError("email needs SIGNOFF_SMTP_HOST and SIGNOFF_SMTP_SENDER")
    password = settings.smtp_password
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.smtp_sender,
        user=settings.smtp_user,
        password=password.get_secret_value() if password else None,
        ca_file=settings.smtp_ca_file,
    )


def email_notifier(settings: Settings, directory: Directory) -> EmailNotifier:
    """A notifier mailing through the settings' SMTP server, linking to the public URL."""
    return EmailNotifier(smtp_config(settings), directory, settings.public_url)
