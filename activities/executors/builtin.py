"""How a built-in executor is declared: an `Executor` value, registered only by an explicit call."""

from __future__ import annotations

import inspect
from datetime import timedelta

from pydantic import BaseModel

from signoff.executor import Executor, ExecutorFn


def builtin(
    fn: ExecutorFn,
    action: str,
    *,
    idempotent: bool,
    timeout: timedelta,
    params_model: type[BaseModel],
    target_kind: str | None = None,
) -> Executor:
    """The executor `fn` for `action`, described by its docstring's first line as the SDK does."""
    doc = (inspect.getdoc(fn) or "").splitlines()
    return Executor(
        action=action,
        fn=fn,
        idempotent=idempotent,
        timeout=timeout,
        params_model=params_model,
        target_kind=target_kind,
        description=doc[0] if doc else "",
    )
