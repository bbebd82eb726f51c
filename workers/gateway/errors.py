"""The API's one error shape, and the handlers mapping every failure to it.

Errors are always `{"error": {"code", "message"}}`. The neutral errors of `workflows.errors`
get their HTTP status here; Temporal being unreachable is a 503, anything else a 500.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from temporalio.service import RPCError, RPCStatusCode

from policies.directory import Directory
from policies.unavailable import IdentityProviderUnavailable
from signoff import neutralise
from signoff.models import RefusalCode
from workflows.errors import (
    ActionBroken,
    ActionError,
    ActionNotFound,
    ActionNotPending,
    ActionStalled,
    ActionUnreadable,
    DecisionRefusedError,
    DurationRefused,
    IdempotencyConflict,
    InvalidOnBehalfOf,
    InvalidParams,
    MessageRefusedError,
    NotRequester,
    UnknownAction,
    WindowNotFound,
    WorkerUnavailable,
)
from workflows.rules import AUDITORS

log = logging.getLogger("signoff.gateway")

ERROR_STATUS: dict[type[ActionError], int] = {
    ActionNotFound: 404,
    ActionNotPending: 409,
    UnknownAction: 422,
    InvalidOnBehalfOf: 422,
    InvalidParams: 422,
    DurationRefused: 422,
    IdempotencyConflict: 409,
    NotRequester: 403,
    WorkerUnavailable: 503,
    # The worker could not verify the gateway's signature (keys out of step): recorded, refused.
    MessageRefusedError: 403,
    # A workflow that cannot say its status: final when it closed, retryable while it stalls.
    ActionBroken: 409,
    ActionStalled: 503,
    WindowNotFound: 404,
}
# Refusals about who is deciding are 403; a wrong digest or a missing reason is a bad body,
# and a second decision by the same person conflicts with their first.
REFUSAL_STATUS: dict[RefusalCode, int] = {
    RefusalCode.DIGEST_MISMATCH: 422,
    RefusalCode.MISSING_REASON: 422,
    RefusalCode.DUPLICATE: 409,
    # A window the rule does not offer, or longer than it allows: the body asks for too much.
    RefusalCode.WINDOW_NOT_OFFERED: 422,
    RefusalCode.WINDOW_TOO_LONG: 422,
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


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route: these statuses answer with the error model."""
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


def add_error_handlers(app: FastAPI) -> None:
    """Answer every failure of `app` in the API's error shape."""
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ActionError, _on_action_error)
    app.add_exception_handler(IdentityProviderUnavailable, _on_identity_provider_error)
    app.add_exception_handler(RPCError, _on_temporal_error)
    app.add_exception_handler(RuntimeError, _on_temporal_error)
    app.add_exception_handler(Exception, _on_unexpected)


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
        # CANCELLED: the call's connection went away under it (a fresh-clone suite run saw one
        # on an inbox list). As with UNAVAILABLE, the caller asks again: submissions carry
        # idempotency keys, and a decision that did land is refused the second time.
        return exc.status in (
            RPCStatusCode.UNAVAILABLE,
            RPCStatusCode.DEADLINE_EXCEEDED,
            RPCStatusCode.CANCELLED,
        )
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


# Seconds a caller waits before asking again when the identity provider cannot answer.
IDP_RETRY_AFTER = 5


async def _on_identity_provider_error(request: Request, exc: Exception) -> JSONResponse:
    # Who is in which group cannot be known now: answer "retry", never guess and never 500.
    log.warning(
        "identity provider unavailable on %s %s: %s",
        neutralise.one_line(request.method),
        neutralise.one_line(request.url.path),
        neutralise.one_line(str(exc)),
    )
    retry_after = max(IDP_RETRY_AFTER, math.ceil(getattr(exc, "retry_after", 0)))
    return error_response(
        503,
        "identity_provider_unavailable",
        "the identity provider cannot be reached to resolve group membership; "
        "nothing was changed, retry shortly",
        {"Retry-After": str(retry_after)},
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception(
        "unhandled error on %s %s",
        neutralise.one_line(request.method),
        neutralise.one_line(request.url.path),
    )
    return error_response(500, "internal_error", "an internal error occurred; see gateway logs")
