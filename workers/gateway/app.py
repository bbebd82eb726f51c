"""The gateway: the one authenticated HTTP front door for agents, humans and chat channels.

Every route authenticates a bearer token, then goes through `ActionService`; nothing here
talks to Temporal directly. Errors are always `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import fastapi
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.service import RPCError, RPCStatusCode

import activities.executors  # noqa: F401  (stopgap: importing registers the built-ins)
from activities.audit import Ledger, create_pool
from policies.catalog import catalog
from policies.directory import Directory
from policies.loader import load_policy_and_directory
from signoff import neutralise
from signoff.catalog import ActionType
from signoff.executor import registry
from signoff.models import (
    ActionStatus,
    ActionSubmission,
    CancelBody,
    CancelRequest,
    DecisionBody,
    DecisionRequest,
    ExecutionReport,
    Principal,
    RefusalCode,
    ReportBody,
)
from workers.gateway.auth import current_principal
from workers.gateway.ratelimit import RefusalBudget
from workers.gateway.service import MAX_WAIT, ActionService, load_signer
from workers.settings import Settings
from workers.temporal import connect
from workers.wiring.channels import channel_routers
from workflows.errors import (
    ActionBroken,
    ActionError,
    ActionNotFound,
    ActionNotPending,
    ActionStalled,
    ActionUnreadable,
    DecisionRefusedError,
    IdempotencyConflict,
    InvalidOnBehalfOf,
    InvalidParams,
    MessageRefusedError,
    NotRequester,
    UnknownAction,
    WorkerUnavailable,
)
from workflows.rules import AUDITORS, can_view

log = logging.getLogger("signoff.gateway")

# Action ids are ours ("act-" + hex or uuid); anything else cannot exist, so it is a 404.
ACTION_ID = re.compile(r"act-[A-Za-z0-9-]{1,80}")

ERROR_STATUS: dict[type[ActionError], int] = {
    ActionNotFound: 404,
    ActionNotPending: 409,
    UnknownAction: 422,
    InvalidOnBehalfOf: 422,
    InvalidParams: 422,
    IdempotencyConflict: 409,
    NotRequester: 403,
    WorkerUnavailable: 503,
    # The worker could not verify the gateway's signature (keys out of step): recorded, refused.
    MessageRefusedError: 403,
    # A workflow that cannot say its status: final when it closed, retryable while it stalls.
    ActionBroken: 409,
    ActionStalled: 503,
}
# Refusals about who is deciding are 403; a wrong digest or a missing reason is a bad body,
# and a second decision by the same person conflicts with their first.
REFUSAL_STATUS: dict[RefusalCode, int] = {
    RefusalCode.DIGEST_MISMATCH: 422,
    RefusalCode.MISSING_REASON: 422,
    RefusalCode.DUPLICATE: 409,
}
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    """What went wrong: a stable machine code and a sentence for people."""

    code: str
    message: str


class ErrorResponse(BaseModel):
    """Every error the API answers has this shape."""

    error: ErrorDetail


class Health(BaseModel):
    """The answer of the health endpoints."""

    status: str


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A JSON error in the API's shape."""
    body = ErrorResponse(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def status_for(err: ActionError) -> int:
    """The HTTP status of a service error."""
    if isinstance(err, DecisionRefusedError):
        return REFUSAL_STATUS.get(err.attempt.code, 403)
    return ERROR_STATUS.get(type(err), 400)


# --- middleware -----------------------------------------------------------------------------


class BodyLimit:
    """Refuse bodies over `max_bytes` with 413, counting what arrives, not what is declared.

    The body is read (up to the limit) before the app runs, so no route ever sees an
    oversized one, whether it came with a Content-Length or chunked.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the request body within the limit, then replay it to the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away; nobody is left to answer
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: disconnects, for long polls

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "payload_too_large", f"the request body is over {self.max_bytes} bytes"
        )
        await response(scope, receive, send)


class AccessLog:
    """Log each request: principal, method, path, status and time; never headers or tokens."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through and log its outcome."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            principal = scope.get("state", {}).get("principal", "-")
            elapsed = (time.perf_counter() - started) * 1000
            # The path arrives percent-decoded: escape it so no request can forge a log line.
            log.info(
                "%s %s %s %d %.0fms",
                neutralise.one_line(str(principal)),
                neutralise.one_line(scope["method"]),
                neutralise.one_line(scope["path"]),
                status,
                elapsed,
            )


# --- errors ---------------------------------------------------------------------------------


def _validation_message(err: RequestValidationError) -> str:
    """One line naming each bad field, e.g. 'body.requester: Extra inputs are not permitted'."""
    parts = []
    for error in err.errors()[:5]:
        loc = [str(part) for part in error.get("loc", ())]
        if error.get("type") == "json_invalid":
            detail = error.get("ctx", {}).get("error", "")
            position = loc[1] if len(loc) > 1 else "?"
            parts.append(f"body: invalid JSON at character {position}: {detail}")
            continue
        parts.append(f"{'.'.join(loc) or 'request'}: {error.get('msg', 'invalid')}")
    more = len(err.errors()) - 5
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if isinstance(detail, dict) and {"code", "message"} <= detail.keys():
        code, message = str(detail["code"]), str(detail["message"])
    else:
        code, message = HTTP_CODES.get(exc.status_code, "error"), str(detail)
    return error_response(exc.status_code, code, message, exc.headers)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", _validation_message(exc))


async def _on_action_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ActionError)
    if isinstance(exc, ActionUnreadable) and not await _may_see_unreadable(request, exc):
        return error_response(404, ActionNotFound.code, f"no action {exc.action_id}")
    return error_response(status_for(exc), exc.code, exc.message)


async def _may_see_unreadable(request: Request, exc: ActionUnreadable) -> bool:
    """Only the requester (from the workflow's search attributes) and auditors learn of it."""
    principal_id = getattr(request.state, "principal", None)
    if principal_id is None:
        return False
    if principal_id == exc.requester:
        return True
    directory: Directory = request.app.state.directory
    principal = await directory.principal(principal_id)
    return principal is not None and AUDITORS in principal.groups


def _unreachable(exc: Exception) -> bool:
    if isinstance(exc, RPCError):
        return exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)
    # A lazily connected client reports its first failed connection as a RuntimeError.
    return isinstance(exc, RuntimeError) and str(exc).startswith("Failed client connect")


async def _on_temporal_error(request: Request, exc: Exception) -> JSONResponse:
    if _unreachable(exc):
        log.warning(
            "Temporal unavailable on %s %s: %s",
            neutralise.one_line(request.method),
            neutralise.one_line(request.url.path),
            neutralise.one_line(str(exc)),
        )
        return error_response(503, "temporal_unavailable", "Temporal is not reachable; retry")
    return await _on_unexpected(request, exc)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception(
        "unhandled error on %s %s",
        neutralise.one_line(request.method),
        neutralise.one_line(request.url.path),
    )
    return error_response(500, "internal_error", "an internal error occurred; see gateway logs")


# --- routes ---------------------------------------------------------------------------------


def get_service(request: Request) -> ActionService:
    """FastAPI dependency: the app's action service."""
    service: ActionService = request.app.state.service
    return service


def action_id(id: str) -> str:
    """FastAPI dependency: the `{id}` path parameter, or 404 if it cannot be an action id."""
    if not ACTION_ID.fullmatch(id):
        raise ActionNotFound(f"no action {id[:100]}")
    return id


def refusal_budget(request: Request) -> RefusalBudget:
    """FastAPI dependency: the app's budget of refused decisions per principal."""
    state = request.app.state
    budget: RefusalBudget | None = getattr(state, "refusal_budget", None)
    if budget is None:
        settings: Settings = state.settings
        budget = RefusalBudget(
            settings.refused_decisions_burst, settings.refused_decisions_per_minute
        )
        state.refusal_budget = budget
    return budget


Wait = Query(
    default=None,
    ge=0,
    le=MAX_WAIT,
    description="Long-poll: wait up to this many seconds (at most 60) for a terminal status.",
)

router = APIRouter(prefix="/v1", tags=["actions"])


@router.post(
    "/actions",
    status_code=202,
    response_model=ActionStatus,
    responses=_errors(400, 401, 409, 413, 422, 503),
)
async def submit(
    submission: ActionSubmission,
    wait: float | None = Wait,
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> ActionStatus:
    """Ask for an action; the requester is the authenticated principal.

    Answers 202 with the status. Repeating a request with the same `idempotency_key` answers
    202 with the same action, never a second one; the same key with a different action,
    target or params is a 409.
    """
    return await service.submit(principal, submission, wait=wait or 0.0)


@router.get(
    "/actions/{id}",
    response_model=ActionStatus,
    # 409: the workflow ended without an outcome; 503: its task keeps failing (or no worker).
    responses=_errors(401, 404, 409, 422, 503),
)
async def get_action(
    id: str = Depends(action_id),
    wait: float | None = Wait,
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> ActionStatus:
    """The action's status, for its requester, its possible deciders and auditors; else 404."""
    status = await service.status(id)
    if not can_view(principal, status):
        # The same answer as for an id that does not exist: outsiders learn nothing.
        raise ActionNotFound(f"no action {id}")
    if wait and not status.terminal:
        status = await service.wait(id, wait, current=status)
    return status


@router.post(
    "/actions/{id}/decisions",
    response_model=ActionStatus,
    responses=_errors(400, 401, 403, 404, 409, 422, 429, 503),
)
async def decide(
    body: DecisionBody,
    id: str = Depends(action_id),
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
    budget: RefusalBudget = Depends(refusal_budget),
) -> ActionStatus:
    """Approve or deny with the digest you were shown; every refused attempt is recorded.

    403: you may not decide it; 404: no such action, or you may not see it (as for GET);
    409: it is not pending (or you already decided); 422: the digest does not match the
    action, or a denial has no reason; 429: too many refused attempts, see Retry-After.
    """
    wait = budget.retry_after(principal.id)
    if wait:
        raise fastapi.HTTPException(
            status_code=429,
            detail={
                "code": "too_many_refusals",
                "message": f"too many refused decisions by {principal.id}; retry in {wait}s",
            },
            headers={"Retry-After": str(wait)},
        )
    # No visibility check first on purpose: a refused attempt must reach the workflow's record,
    # and an accepted one (the usual case) needs no extra status read.
    request = DecisionRequest(**body.model_dump(), approver=principal.id, channel="api")
    try:
        return await service.decide(id, request)
    except WorkerUnavailable:
        raise
    except ActionNotFound:
        budget.spend(principal.id)
        raise
    except ActionError:
        budget.spend(principal.id)
        # Someone who may not see the action learns what GET tells them: nothing (no state,
        # eligible groups or digest from the refusal).
        if not can_view(principal, await service.status(id)):
            raise ActionNotFound(f"no action {id}") from None
        raise


@router.post(
    "/actions/{id}/cancel",
    response_model=ActionStatus,
    responses=_errors(400, 401, 403, 404, 409, 422, 503),
)
async def cancel(
    body: CancelBody | None = None,
    id: str = Depends(action_id),
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> ActionStatus:
    """Cancel a pending action; only its requester may (403 for anyone else)."""
    status = await service.status(id)
    if not can_view(principal, status):
        raise ActionNotFound(f"no action {id}")
    reason = body.reason if body is not None else ""
    return await service.cancel(id, CancelRequest(by=principal.id, reason=reason))


@router.get(
    "/approvals",
    response_model=list[ActionStatus],
    responses=_errors(401, 422, 503),
)
async def approvals(
    limit: int = Query(default=50, ge=1, le=200),
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> list[ActionStatus]:
    """Your inbox: pending actions you may decide now, newest first."""
    return await service.inbox(principal, limit=limit)


@router.post(
    "/actions/{id}/report",
    response_model=ActionStatus,
    responses=_errors(400, 401, 403, 404, 409, 422, 503),
)
async def report(
    body: ReportBody,
    id: str = Depends(action_id),
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> ActionStatus:
    """Caller mode: the requester reports the result (or error) of the approved action it ran.

    Answers with the final status. 403: only the requester reports; 409: the action is not
    waiting for a report (not approved yet, worker mode, or already reported).
    """
    status = await service.status(id)
    if not can_view(principal, status):
        raise ActionNotFound(f"no action {id}")
    return await service.report(
        id, ExecutionReport(by=principal.id, result=body.result, error=body.error)
    )


@router.get("/action-types", response_model=list[ActionType], responses=_errors(401, 503))
async def action_types(
    principal: Principal = Depends(current_principal),
    service: ActionService = Depends(get_service),
) -> list[ActionType]:
    """The action types you may ask for: params schema, where they run, and the rules that
    decide whether they need approval."""
    return catalog(service.policy, service.executors)


health = APIRouter(tags=["health"])


@health.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@health.get("/readyz", response_model=Health, responses=_errors(503))
async def readyz(service: ActionService = Depends(get_service)) -> Health | JSONResponse:
    """Temporal answers; 503 otherwise."""
    if await service.ready():
        return Health(status="ready")
    return error_response(503, "temporal_unavailable", "Temporal is not reachable")


# --- the app --------------------------------------------------------------------------------


def create_app(
    service: ActionService,
    directory: Directory,
    settings: Settings,
    *,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The gateway's ASGI app: the API, health checks, and any channel routers."""
    from importlib.metadata import version

    app = FastAPI(
        title="signoff gateway",
        version=version("signoff"),
        description="Human approval for AI agents' privileged actions. "
        'Errors are `{"error": {"code", "message"}}`.',
    )
    app.state.service = service
    app.state.directory = directory
    app.state.settings = settings
    app.include_router(router)
    app.include_router(health)
    for extra in routers:
        app.include_router(extra)
    # Telemetry: /metrics (pending approvals from visibility) for Prometheus.
    from workers.metrics import metrics_router

    app.include_router(metrics_router(service.client, settings))
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ActionError, _on_action_error)
    app.add_exception_handler(RPCError, _on_temporal_error)
    app.add_exception_handler(RuntimeError, _on_temporal_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # Added last, so outermost: the access log also sees what BodyLimit answers.
    app.add_middleware(AccessLog)
    return app


class _Server(uvicorn.Server):
    """uvicorn, stopping on SIGINT/SIGTERM and returning normally.

    Stock uvicorn re-raises the signal once it has shut down, which kills the process with
    SIGTERM's default action before our own cleanup; a supervisor then sees exit 143, not 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install stop handlers on the running loop for the duration of the server."""
        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stop)
                handled.append(sig)
        try:
            yield
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    def _stop(self) -> None:
        # A second signal while shutting down means: stop waiting for open connections.
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


async def serve(app: FastAPI, host: str, port: int, *, sock: socket.socket | None = None) -> None:
    """Serve the app with uvicorn until SIGINT or SIGTERM."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep the process's logging setup
        access_log=False,  # AccessLog logs requests, with the principal
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    server = _Server(config)
    await server.serve(sockets=[sock] if sock is not None else None)


async def gateway_ledger(settings: Settings) -> Ledger | None:
    """The ledger a reused idempotency key is checked against; it connects on first use."""
    from workers.database import DatabaseNotConfigured, resolve_database_url

    try:
        url = resolve_database_url(settings=settings)
    except DatabaseNotConfigured as err:
        log.warning(
            "no audit ledger configured (%s): an idempotency key reused after Temporal's "
            "retention is refused only by the worker, once the action reaches it",
            err,
        )
        return None
    # A pool with min_size 0 opens nothing until a submission needs it.
    return Ledger(await create_pool(url, max_size=4))


async def run_gateway(
    settings: Settings, *, host: str | None = None, port: int | None = None
) -> None:
    """Load configuration, connect to Temporal, and serve the gateway until signalled."""
    policy, directory = load_policy_and_directory(settings.policy, settings.directory)
    registry.load_modules(settings.executor_modules)
    # Telemetry: traces when OTEL_* asks for them (the Temporal client carries them on).
    from workers import telemetry

    tracer_provider = telemetry.setup_tracing("signoff-gateway")
    client = await connect(settings, interceptors=telemetry.client_interceptors(tracer_provider))
    service = ActionService(
        client,
        settings,
        policy,
        directory,
        registry,
        load_signer(settings),
        await gateway_ledger(settings),
    )
    app = create_app(
        service, directory, settings, routers=channel_routers(settings, service, directory)
    )
    if tracer_provider is not None:
        telemetry.instrument_app(app, tracer_provider, lambda: service.client)
    host = host or settings.gateway_host
    port = settings.gateway_port if port is None else port
    log.info(
        "gateway on http://%s:%d, Temporal %s namespace %s task queue %s (policy %s)",
        host,
        port,
        settings.temporal_address,
        settings.temporal_namespace,
        settings.task_queue,
        policy.digest[:12],
    )
    try:
        await serve(app, host, port)
    finally:
        telemetry.shutdown_tracing(tracer_provider)  # telemetry: flush the last spans
    log.info("gateway stopped")
