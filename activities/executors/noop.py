"""The `noop` executor: echoes its params; two of them exercise the workflow."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from signoff.executor import ExecutionContext, Executor, ExecutorError


class NoopParams(BaseModel):
    """Anything goes; two optional params change behaviour for tests and benchmarks."""

    model_config = ConfigDict(extra="allow")

    sleep_seconds: float = Field(default=0, ge=0, le=60, description="sleep, heartbeating")
    fail: str | None = Field(default=None, description="fail, not retryable, with this message")


async def noop(ctx: ExecutionContext[NoopParams]) -> JsonValue:
    """Echo the params back as {"echo": params}; any target name works.

    `sleep_seconds` (at most 60) sleeps first, heartbeating every second, and `fail` raises
    a non-retryable ExecutorError with that message: both exist to exercise the workflow.
    """
    remaining = ctx.params.sleep_seconds
    while remaining > 0:
        ctx.heartbeat({"sleeping": remaining})
        await asyncio.sleep(min(1.0, remaining))
        remaining -= 1.0
    if ctx.params.fail is not None:
        raise ExecutorError(ctx.params.fail)
    return {"echo": ctx.request.params}


NOOP = Executor.define(
    noop, "noop", idempotent=True, timeout=timedelta(minutes=2), params_model=NoopParams
)
