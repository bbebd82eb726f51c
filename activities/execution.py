"""The activity that runs an approved action through its registered executor."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pydantic import JsonValue
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.executors.results import json_safe
from activities.ledger.chain import iso_utc
from activities.ledger.store import CONNECTION_ERRORS, Ledger
from activities.targets import TargetError, Targets
from signoff.executor import ExecutorError, ExecutorRegistry
from signoff.models import ExecutorSpec, Status
from workflows.errors import EXECUTOR_ERROR
from workflows.messages import ExecuteInput, ExecuteResult, RevertInput, outcome_events

T = TypeVar("T")

# The ApplicationError type of a run refused because another run of the action executed it.
ALREADY_EXECUTED = "AlreadyExecuted"
# The ApplicationError type of a run refused because its approval is not on record.
NO_WRITE_AHEAD = "NoWriteAhead"
# The ApplicationError type of a success the run had already recorded as another outcome.
OUTCOME_RECORDED = "OutcomeRecorded"


def redact(message: str, secrets: list[str]) -> str:
    """Replace every known secret value in a message with ***."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            message = message.replace(secret, "***")
    return message


def _run() -> tuple[str, str]:
    """This activity's action id and run id: signoff's workflows always have both."""
    info = activity.info()
    assert info.workflow_id, "run only by signoff's workflows (workers/activity_guard.py)"
    assert info.workflow_run_id, "run only by signoff's workflows"
    return info.workflow_id, info.workflow_run_id


class ExecutionActivities:
    """The execute activity with what it needs: the executor registry and the targets."""

    def __init__(
        self,
        registry: ExecutorRegistry,
        targets: Targets,
        *,
        ledger: Ledger | None = None,
        heartbeat_every: timedelta = timedelta(seconds=5),
    ) -> None:
        """Hold the registry and targets; `heartbeat_every` caps the background heartbeat.

        `ledger`: where each execution is claimed before it runs (the worker always gives
        it; without one, as in tests of executors alone, nothing stops a second run).
        """
        self.registry = registry
        self.targets = targets
        self.ledger = ledger
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
        # The first beat waits one interval. The SDK sends a first beat to Temporal at once, a
        # write to the run's state; the heartbeat timeout counts from the start anyway, so an
        # action done sooner (most are) is as safe without it.
        while True:
            await asyncio.sleep(interval.total_seconds())
            activity.heartbeat()

    async def _claim(self, digest: str) -> int | None:
        """Find this run's write-ahead row, then claim its execution: one statement.

        No row: refused (only signoff's workflow on this worker writes one, after the
        approval). Another run's claim refuses it for good. Answers where the row says its run
        kept the places for the outcome's rows (shape v10), if it kept any.
        """
        if self.ledger is None:
            return None
        rows, claim = await self._ask_ledger(
            "the write-ahead check and the execution claim",
            lambda ledger, a, r: ledger.start_execution(a, r, digest),
        )
        self._require_write_ahead(rows, digest)
        assert claim is not None, "claimed once the write-ahead row is found"
        assert claim.claimed_at is not None, "a stored claim has its time"
        if claim.run_id != activity.info().workflow_run_id:
            raise ApplicationError(
                f"already executed by run {claim.run_id} at {iso_utc(claim.claimed_at)}; "
                "a reset or re-run never executes twice",
                non_retryable=True,
                type=ALREADY_EXECUTED,
            )
        return rows[digest]

    async def _require_run(self) -> None:
        """Refuse a revert unless this run wrote its write-ahead row (it executed here).

        Asked once: a ledger that cannot answer fails this attempt like a failing revert,
        which the workflow records and retries.
        """
        if self.ledger is None:
            return
        self._require_write_ahead(await self.ledger.write_ahead(*_run()), None)

    async def _ask_ledger(self, what: str, call: Callable[[Ledger, str, str], Awaitable[T]]) -> T:
        """`call(ledger, action id, run id)` for this activity's run, until the ledger answers."""
        assert self.ledger is not None, "asked only with a ledger"
        action_id, run_id = _run()
        delay = 0.5
        while True:
            # The workflow wrote moments ago; a ledger blip now must not fail an action that
            # never ran, so wait for it (the heartbeat keeps the activity alive).
            try:
                return await call(self.ledger, action_id, run_id)
            except CONNECTION_ERRORS as err:
                activity.logger.warning("ledger unavailable for %s: %s", what, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @staticmethod
    def _require_write_ahead(digests: Mapping[str, int | None], digest: str | None) -> None:
        """Refuse unless the run's write-ahead row is on record (for `digest`, when given)."""
        if digests and (digest is None or digest in digests):
            return
        info = activity.info()
        found = f" for digest {digest}" if digests else ""
        raise ApplicationError(
            f"refused: the ledger holds no write-ahead row{found} for run "
            f"{info.workflow_run_id} of {info.workflow_id}; an action runs only once its "
            "approval is on record",
            non_retryable=True,
            type=NO_WRITE_AHEAD,
        )

    async def _record_success(self, digest: str, kept: int, result: JsonValue) -> ExecuteResult:
        """Write the success's rows at the places the run kept for them (shape v10).

        One local activity fewer for the run. Rows already there win: an earlier attempt's
        (an idempotent action retried after its completion was lost) give the result the ledger
        holds, and the run's own (it gave up on this attempt) refuse this late success.
        """
        action_id, run_id = _run()
        events = outcome_events(
            action_id=action_id,
            run_id=run_id,
            digest=digest,
            seq=kept,
            at=datetime.now(UTC),
            status=Status.SUCCEEDED.value,
            error=None,
            result=result,
        )
        stored = await self._ask_ledger(
            "the outcome", lambda ledger, _action, _run: ledger.append_outcome(events)
        )
        if stored is None:
            return ExecuteResult(result=result, recorded_for=run_id)
        if stored.status != Status.SUCCEEDED.value:
            raise ApplicationError(
                f"the run already recorded this execution as {stored.status}: "
                f"{stored.error or 'no error given'}",
                non_retryable=True,
                type=OUTCOME_RECORDED,
            )
        return ExecuteResult(result=stored.result, recorded_for=run_id)

    @activity.defn(name="revert_action")
    async def revert_action(self, input: RevertInput) -> ExecuteResult:
        """Undo an action that ran, with its executor's revert; the workflow retries it forever."""
        request = input.request
        executor = self.registry.get(request.action)
        if executor is None or executor.revert is None:
            raise ApplicationError(
                f"no revert for action {request.action!r} on this worker",
                non_retryable=True,
                type=EXECUTOR_ERROR,
            )
        target = self.targets.get(request.target)
        secrets = target.secret_values(request.target) if target is not None else []
        activity.logger.info(
            "reverting %s on %s (key %s)", request.action, request.target, input.idempotency_key
        )
        beating = asyncio.create_task(self._heartbeat())
        try:
            await self._require_run()
            result = await executor.run_revert(
                request,
                target,
                input.idempotency_key,
                input.result,
                on_heartbeat=activity.heartbeat,
            )
        except (ExecutorError, TargetError) as exc:
            raise ApplicationError(
                redact(str(exc), secrets), non_retryable=True, type=EXECUTOR_ERROR
            ) from None
        except ApplicationError as exc:
            raise ApplicationError(
                redact(exc.message, secrets), non_retryable=exc.non_retryable, type=exc.type
            ) from None
        except Exception as exc:
            raise ApplicationError(
                redact(f"{type(exc).__name__}: {exc}", secrets), type=type(exc).__name__
            ) from None
        finally:
            beating.cancel()
        return ExecuteResult(result=json_safe(result))

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
                type=EXECUTOR_ERROR,
            )
        target = self.targets.get(request.target)
        secrets = target.secret_values(request.target) if target is not None else []
        activity.logger.info(
            "executing %s on %s (key %s)", request.action, request.target, input.idempotency_key
        )
        beating = asyncio.create_task(self._heartbeat())
        try:
            kept = await self._claim(request.digest)
            result = await executor.run(
                request, target, input.idempotency_key, on_heartbeat=activity.heartbeat
            )
            if kept is not None:
                return await self._record_success(request.digest, kept, json_safe(result))
        except (ExecutorError, TargetError) as exc:
            raise ApplicationError(
                redact(str(exc), secrets), non_retryable=True, type=EXECUTOR_ERROR
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
