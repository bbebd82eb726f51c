"""An executor for the scale-out check: one effect row per action, however often it runs.

Loaded by `signoff worker` through SIGNOFF_EXECUTOR_MODULES=tests.executors_for_scale. Every
attempt is recorded (with the worker's pid) before the work, and the effect is an INSERT keyed
by the idempotency key with ON CONFLICT DO NOTHING: a retry after a crash cannot apply it twice.
"""

from __future__ import annotations

import asyncio
import os

import asyncpg
from pydantic import BaseModel, Field, JsonValue

from activities.targets import PostgresTarget
from signoff.executor import ExecutionContext, ExecutorError, registry

SCHEMA = """
CREATE TABLE IF NOT EXISTS scale_attempts (
    id bigserial PRIMARY KEY,
    idempotency_key text NOT NULL,
    worker_pid integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS scale_effects (
    idempotency_key text PRIMARY KEY,
    worker_pid integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
"""


class EffectParams(BaseModel):
    """How long the work takes before its effect is written."""

    sleep_seconds: float = Field(default=0, ge=0, le=30)


@registry.executor(
    "scale.effect", idempotent=True, timeout="1m", params_model=EffectParams, target_kind="postgres"
)
async def effect(ctx: ExecutionContext[EffectParams]) -> JsonValue:
    """Record the attempt, work (heartbeating), then write the effect at most once."""
    if not isinstance(ctx.target, PostgresTarget):
        raise ExecutorError("scale.effect needs a postgres target")
    conn = await asyncpg.connect(ctx.target.dsn(ctx.target_name))
    try:
        await conn.execute(
            "INSERT INTO scale_attempts (idempotency_key, worker_pid) VALUES ($1, $2)",
            ctx.idempotency_key,
            os.getpid(),
        )
        remaining = ctx.params.sleep_seconds
        while remaining > 0:
            ctx.heartbeat({"remaining": remaining})
            await asyncio.sleep(min(0.5, remaining))
            remaining -= 0.5
        inserted = await conn.execute(
            "INSERT INTO scale_effects (idempotency_key, worker_pid) VALUES ($1, $2) "
            "ON CONFLICT (idempotency_key) DO NOTHING",
            ctx.idempotency_key,
            os.getpid(),
        )
    finally:
        await conn.close()
    return {"applied": inserted == "INSERT 0 1"}
