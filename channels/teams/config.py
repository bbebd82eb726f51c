"""What the Teams channel is told about its deployment: our bot, the tenants, the hosts, the UI."""

from __future__ import annotations

from dataclasses import dataclass

CHANNEL = "teams"


@dataclass(frozen=True, kw_only=True)
class TeamsConfig:
    """The Teams channel's configuration; the process builds it from its settings."""

    # Without an app id the channel refuses every inbound activity.
    app_id: str | None
    tenant_id: str | None
    # Inbound activities must come from one of these tenants (tenant_id counts as one); with
    # none, every activity is refused unless allow_any_tenant says otherwise.
    allowed_tenants: tuple[str, ...]
    allow_any_tenant: bool
    openid_metadata_url: str
    # Hosts that may receive our bot token (the serviceUrl of an activity).
    allowed_service_urls: tuple[str, ...]
    # Where to post to a conversation the bot has no stored reference for.
    service_url: str
    # The Temporal UI a card links to (none: no link), and the namespace the actions run in.
    ui_url: str | None
    namespace: str
    max_body_bytes: int
    # The gateway's public URL: cards link to the action's approval page (none: no link).
    page_base: str | None = None

    @property
    def tenants(self) -> set[str]:
        """The Entra tenants whose activities we accept: the allow-list and our own tenant."""
        return {t for t in (*self.allowed_tenants, self.tenant_id) if t}
