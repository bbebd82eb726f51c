"""An executor for B2, loaded by the worker through SIGNOFF_EXECUTOR_MODULES=["bench.executor"].

`bench.mark` appends "<action id> <unix time>" to $BENCH_MARK_FILE the moment it starts, so the
benchmark can measure from the quorum-completing decision to the executor starting.
"""

from __future__ import annotations

import asyncio
import os
import time

from pydantic import JsonValue

from signoff.executor import ExecutionContext, registry


def _append(path: str, line: str) -> None:
    # One short O_APPEND write per line: lines from concurrent runs never interleave.
    with open(path, "a", encoding="utf-8") as out:
        out.write(line)


@registry.executor("bench.mark", idempotent=True, timeout="1m")
async def mark(ctx: ExecutionContext[dict[str, JsonValue]]) -> JsonValue:
    """Record when execution started (the time is taken first); nothing else."""
    started = time.time()
    path = os.environ.get("BENCH_MARK_FILE")
    if path:
        await asyncio.to_thread(_append, path, f"{ctx.idempotency_key} {started:.6f}\n")
    return {"started": started}
