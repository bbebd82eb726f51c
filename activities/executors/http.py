"""The `http.request` executor: one request to a path under the target's base URL."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from urllib.parse import unquote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from activities.targets import HTTP_METHODS, HttpTarget
from signoff.executor import ExecutionContext, Executor, ExecutorError

MAX_BODY_BYTES = 64 * 1024


class HttpParams(BaseModel):
    """A request to a path under the target's base URL."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    method: str = "GET"
    path: str = Field(min_length=1, max_length=4000)
    body: JsonValue = Field(default=None, alias="json", description="JSON request body")
    query: dict[str, str | int | float | bool | list[str | int | float | bool]] = Field(
        default_factory=dict
    )

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        method = value.upper()
        if method not in HTTP_METHODS:
            raise ValueError(f"must be one of {', '.join(HTTP_METHODS)}")
        return method

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        # The target decides the host; a path that could leave the base URL is refused (SSRF).
        if any(ch in value for ch in "\\#") or any(ord(ch) < 33 for ch in value):
            raise ValueError("must not contain backslashes, '#', spaces or control characters")
        parts = urlsplit(value)
        if parts.scheme or parts.netloc or value.startswith("//"):
            raise ValueError("must be a path relative to the target, not a URL")
        segments = unquote(parts.path).split("/")
        if any(segment in ("..", ".") for segment in segments):
            raise ValueError("must not contain '.' or '..' segments")
        return value


_RESPONSE_HEADERS = ("content-type", "content-length", "location", "etag", "retry-after")


async def http_request(ctx: ExecutionContext[HttpParams]) -> JsonValue:
    """Send one HTTP request to the target with its stored headers.

    Not idempotent, so at most one attempt: the registry declares retries per action type,
    and one action type covers POST as well as GET. The request carries an `Idempotency-Key`
    header (the workflow id) unless the target sets one. Any status, 4xx and 5xx included,
    is a result: the response is what the approver asked to see.
    """
    assert isinstance(ctx.target, HttpTarget)
    params, target = ctx.params, ctx.target
    if params.method not in target.allowed_methods:
        raise ExecutorError(
            f"method {params.method} is not allowed on {ctx.target_name!r}: "
            f"use {', '.join(target.allowed_methods)}"
        )
    url = f"{target.base_url}/{params.path.lstrip('/')}"
    headers = target.resolved_headers(ctx.target_name)
    headers.setdefault("Idempotency-Key", ctx.idempotency_key)
    async with (
        httpx.AsyncClient(
            headers=headers, timeout=target.timeout.total_seconds(), follow_redirects=False
        ) as client,
        client.stream(
            params.method,
            url,
            params=params.query or None,
            json=params.body if "body" in params.model_fields_set else None,
        ) as response,
    ):
        raw = bytearray()
        truncated = False
        async for chunk in response.aiter_bytes():
            raw.extend(chunk)
            if len(raw) > MAX_BODY_BYTES:
                truncated = True
                del raw[MAX_BODY_BYTES:]
                break
    body: JsonValue = bytes(raw).decode(response.encoding or "utf-8", errors="replace")
    if not truncated and "json" in response.headers.get("content-type", ""):
        with contextlib.suppress(ValueError):
            body = json.loads(raw)
    return {
        "status": response.status_code,
        "headers": {h: response.headers[h] for h in _RESPONSE_HEADERS if h in response.headers},
        "body": body,
        "truncated": truncated,
    }


HTTP_REQUEST = Executor.define(
    http_request,
    "http.request",
    idempotent=False,
    timeout=timedelta(minutes=2),
    params_model=HttpParams,
    target_kind="http",
)
