"""The activity that runs an approved action through its registered executor."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.executors import ExecutorError, ExecutorRegistry, json_safe
from activities.targets import TargetError, Targets
from signoff.models import ExecuteInput, ExecuteResult, ExecutorSpec


def redact(message: str, secrets: list[str]) -> str:
    """Replace every known secret value in a message with ***."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            message = message.replace(secret, "***")
    return message


class Executors:
    """The execute activity with what it needs: the executor registry and the targets."""

    def __init__(
        self,
        registry: ExecutorRegistry,
        targets: Targets,
        *,
        heartbeat_every: timedelta = timedelta(seconds=5),
    ) -> None:
        """Hold the registry and targets; `heartbeat_every` caps the background heartbeat."""
        self.registry = registry
        self.targets = targets
        self.heartbeat_every = heartbeat_every

    def spec(self, action: str, heartbeat_timeout: timedelta | None = None) -> ExecutorSpec | None:
        """How the workflow must run `action`, or None when no executor is registered."""
        return self.registry.spec(action, heartbeat_timeout)

    async def _heartbeat(self) -> None:
        # Beat well inside the heartbeat timeout so a dead worker, not a slow one, is detected.
        interval = self.heartbeat_every
        timeout = activity.info().heartbeat_timeout
        if timeout:
            interval = min(interval, timeout / 3)
        while True:
            activity.heartbeat()
            await asyncio.sleep(interval.total_seconds())

    @activity.defn(name="execute_action")
    async def execute_action(self, input: ExecuteInput) -> ExecuteResult:
        """Run the request's executor against its target; bad requests fail without retry."""
        request = input.request
        executor = self.registry.get(request.action)
        if executor is None:
            raise ApplicationError(
                f"no executor for action {request.action!r}; "
                f"registered: {', '.join(self.registry.actions())}",
                non_retryable=True,
                type="ExecutorError",
            )
        target = self.targets.get(request.target)
        secrets = target.secret_values(request.target) if target is not None else []
        activity.logger.info(
            "executing %s on %s (key %s)", request.action, request.target, input.idempotency_key
        )
        beating = asyncio.create_task(self._heartbeat())
        try:
            result = await executor.run(request, target, input.idempotency_key)
        except (ExecutorError, TargetError) as exc:
            raise ApplicationError(
                redact(str(exc), secrets), non_retryable=True, type="ExecutorError"
            ) from None
        except ApplicationError as exc:
            raise ApplicationError(
                redact(exc.message, secrets), non_retryable=exc.non_retryable, type=exc.type
            ) from None
        except Exception as exc:
            # Retryable: the workflow's retry policy decides, and it allows retries only for
            # idempotent actions. Rebuilt so the chained original cannot carry a secret out.
            raise ApplicationError(
                redact(f"{type(exc).__name__}: {exc}", secrets), type=type(exc).__name__
            ) from None
        finally:
            beating.cancel()
        return ExecuteResult(result=json_safe(result))
