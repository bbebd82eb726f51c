"""Executors written as `@gated` functions: the worker runs their bodies, the agent calls them.

Both sides import this module. The agent (examples/gated_worker.py) calls `create_ticket(...)`,
which asks signoff and waits. The worker and the gateway load it through

    SIGNOFF_EXECUTOR_MODULES='["examples.gated_tools"]'

so the body is registered as the executor of `ticket.create` and runs in the worker, with
the `ticketing` target's secret (TICKETING_TOKEN), which the agent process never has.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from signoff.executor import ConfiguredTarget, ExecutionContext, ExecutorError
from signoff.gated import gated

OUTBOX = Path(".signoff") / "tickets.jsonl"


@gated("ticket.create", target="ticketing", idempotent=True, timeout="2m")
async def create_ticket(
    title: str, body: str, ctx: ExecutionContext[Any], priority: Literal["low", "high"] = "low"
) -> dict[str, Any]:
    """Open a ticket in the ops tracker."""
    target = ctx.target
    if not isinstance(target, ConfiguredTarget) or target.kind != "generic":
        raise ExecutorError("ticket.create needs the generic 'ticketing' target")
    token = target.secret(ctx.target_name, "token")  # read in the worker, never sent anywhere
    # The idempotency key is the action id: a retried run opens the same ticket, not another.
    number = int(hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()[:6], 16) % 100_000
    ticket = f"{target.config.get('project', 'OPS')}-{number}"
    # A real tracker call would go here, authenticated with `token`; the example writes a file.
    OUTBOX.parent.mkdir(parents=True, exist_ok=True)
    with OUTBOX.open("a") as out:
        out.write(json.dumps({"ticket": ticket, "title": title, "priority": priority}) + "\n")
    return {"ticket": ticket, "title": title, "priority": priority, "authenticated": bool(token)}
