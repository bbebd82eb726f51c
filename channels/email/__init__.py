"""Email as an approval channel: SMTP with STARTTLS, a message linking to the approval page."""

from channels.email.message import compose
from channels.email.notifier import EmailNotifier, SmtpConfig

__all__ = ["EmailNotifier", "SmtpConfig", "compose"]
