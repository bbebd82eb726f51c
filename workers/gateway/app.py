"""The gateway's ASGI app: the one authenticated HTTP front door for agents, humans and chat.

Every route authenticates a bearer token, then goes through `ActionService`; nothing here
talks to Temporal directly. Errors are always `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version

from fastapi import APIRouter, FastAPI

from policies.directory import Directory
from workers.gateway.errors import add_error_handlers
from workers.gateway.middleware.access_log import AccessLog
from workers.gateway.middleware.body_limit import BodyLimit
from workers.gateway.routes import action_types, actions, health, inbox, me, page, windows
from workers.gateway.service import ActionService
from workers.gateway.web.credentials import CredentialStore
from workers.metrics import metrics_router
from workers.settings import Settings


def create_app(
    service: ActionService,
    directory: Directory,
    settings: Settings,
    *,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The gateway's ASGI app: the API, health checks, and any channel routers."""
    app = FastAPI(
        title="signoff gateway",
        version=version("signoff"),
        description="Human approval for AI agents' privileged actions. "
        'Errors are `{"error": {"code", "message"}}`.',
    )
    app.state.service = service
    app.state.directory = directory
    app.state.settings = settings
    app.include_router(actions.router)
    app.include_router(inbox.router)
    app.include_router(action_types.router)
    app.include_router(me.router)
    app.include_router(windows.router)
    app.include_router(health.router)
    # The approval page (/a/{id}); security keys live in the gateway's database when it has one.
    credentials = CredentialStore(service.ledger.pool) if service.ledger is not None else None
    app.state.web = page.web_page(settings, credentials)
    app.include_router(page.router)
    for extra in routers:
        app.include_router(extra)
    # Telemetry: /metrics (pending approvals from visibility) for Prometheus.
    app.include_router(metrics_router(service.client, settings))
    add_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # Added last, so outermost: the access log also sees what BodyLimit answers.
    app.add_middleware(AccessLog)
    return app
