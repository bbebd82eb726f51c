"""The Teams channel as `SIGNOFF_TEAMS_*` configures it: the notifier and the inbound route."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from fastapi import APIRouter

from activities.ledger.store import create_pool
from channels.review import Reviews
from channels.teams import (
    BotConnector,
    BotFrameworkValidator,
    ConversationStore,
    TeamsConfig,
    TeamsInbound,
    TeamsNotifier,
    bot_framework_tokens,
    messages_router,
)
from policies.directory import Directory
from policies.microsoft import AppTokens, known_to_msal
from workers.database import resolve_database_url
from workers.settings import Settings

STORE_POOL_SIZE = 4
log = logging.getLogger("signoff.teams")


def teams_config(settings: Settings) -> TeamsConfig:
    """The Teams channel's configuration from the settings."""
    return TeamsConfig(
        app_id=settings.teams_app_id,
        tenant_id=settings.teams_tenant_id,
        allowed_tenants=tuple(settings.teams_allowed_tenants),
        allow_any_tenant=settings.teams_allow_any_tenant,
        openid_metadata_url=settings.teams_openid_metadata_url,
        allowed_service_urls=tuple(settings.teams_allowed_service_urls),
        service_url=settings.teams_service_url,
        ui_url=settings.ui_url,
        namespace=settings.temporal_namespace,
        max_body_bytes=settings.max_body_bytes,
        page_base=settings.public_url,
    )


def bot_credential(settings: Settings) -> str | dict[str, Any]:
    """The bot's msal client credential: a PFX certificate when configured, else the password."""
    if settings.teams_certificate_path is not None:
        credential: dict[str, Any] = {"private_key_pfx_path": str(settings.teams_certificate_path)}
        if settings.teams_certificate_password is not None:
            credential["passphrase"] = settings.teams_certificate_password.get_secret_value()
        return credential
    if settings.teams_app_password is None:
        raise ValueError(
            "Teams needs SIGNOFF_TEAMS_APP_PASSWORD or SIGNOFF_TEAMS_CERTIFICATE_PATH "
            "alongside SIGNOFF_TEAMS_APP_ID"
        )
    return settings.teams_app_password.get_secret_value()


def bot_tokens(settings: Settings, *, http_client: Any = None) -> AppTokens:
    """Tokens for calling the Bot Framework connector as our bot."""
    if not settings.teams_app_id:
        raise ValueError("SIGNOFF_TEAMS_APP_ID is not set")
    if not known_to_msal(settings.teams_authority_host):
        # A misspelt cloud is otherwise only noticed at the first card (a DNS or TLS error).
        log.warning(
            "SIGNOFF_TEAMS_AUTHORITY_HOST %s is not a Microsoft cloud msal knows; the bot's "
            "tokens are requested there as configured",
            settings.teams_authority_host,
        )
    return bot_framework_tokens(
        settings.teams_app_id,
        bot_credential(settings),
        tenant_id=settings.teams_tenant_id,
        authority_host=settings.teams_authority_host,
        scope=settings.teams_token_scope,
        http_client=http_client,
    )


def conversation_store(settings: Settings) -> ConversationStore:
    """A store on the ledger's database, as the worker and gateway find it."""

    async def connect() -> asyncpg.Pool:
        # Resolving may start the embedded Postgres, which blocks.
        url = await asyncio.to_thread(resolve_database_url, settings=settings)
        return await create_pool(url, max_size=STORE_POOL_SIZE)

    return ConversationStore(connect=connect)


def teams_notifier(
    settings: Settings,
    directory: Directory,
    *,
    store: ConversationStore | None = None,
    msal_http_client: Any = None,
) -> TeamsNotifier:
    """The notifier as configured by `SIGNOFF_TEAMS_*`."""
    config = teams_config(settings)
    return TeamsNotifier(
        directory,
        BotConnector(
            bot_tokens(settings, http_client=msal_http_client), config.allowed_service_urls
        ),
        store or conversation_store(settings),
        default_service_url=config.service_url,
        page_base=config.page_base,
    )


def teams_router(
    settings: Settings,
    reviews: Reviews,
    directory: Directory,
    *,
    store: ConversationStore | None = None,
    msal_http_client: Any = None,
) -> APIRouter:
    """The `/teams/messages` route; without an app id it refuses everything with 401."""
    config = teams_config(settings)
    if not config.app_id:
        return messages_router(None)
    inbound = TeamsInbound(
        config,
        reviews,
        directory,
        BotFrameworkValidator(config.app_id, config.openid_metadata_url),
        store or conversation_store(settings),
        BotConnector(
            bot_tokens(settings, http_client=msal_http_client), config.allowed_service_urls
        ),
    )
    return messages_router(inbound)
