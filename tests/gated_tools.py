"""Worker-mode `@gated` functions for tests/test_gated.py.

The test process imports this module to call them; `signoff worker` and `signoff gateway`
import it through SIGNOFF_EXECUTOR_MODULES=["tests.gated_tools"], so the bodies register as
executors there and run in the worker process.
"""

from __future__ import annotations

import os
from typing import Any

from signoff.executor import ExecutionContext
from signoff.gated import gated


@gated("gated.whereami", target="sandbox-gated", idempotent=True, timeout="1m")
async def where_am_i(note: str, times: int = 1) -> dict[str, Any]:
    """Tell which process ran the body."""
    return {"pid": os.getpid(), "note": note * times}


@gated("gated.whereami_sync", target="sandbox-gated", justification="which process runs me?")
def where_am_i_sync(note: str) -> dict[str, Any]:
    """Tell which process ran the body, from a plain function."""
    return {"pid": os.getpid(), "note": note}


@gated("gated.context", target="sandbox-gated", idempotent=True)
async def with_context(label: str, ctx: ExecutionContext[Any]) -> dict[str, Any]:
    """Show what the worker passes to a body that asks for its context."""
    return {
        "label": label,
        "requester": ctx.request.requester,
        "idempotency_key": ctx.idempotency_key,
    }
