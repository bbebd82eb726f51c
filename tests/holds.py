"""Messages that race on a real worker: one activity call held back, updates admitted first.

The hold is Temporal's own extension point (a worker interceptor): nothing of ours is
replaced, one call only starts later, as it does when a directory is slow for one person.
Messages sent while no worker runs, and admitted by the server, arrive together in the next
workflow task, so each passes the checks made on arrival before any of them is applied.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import UpdateWorkflowExecutionLifecycleStage
from temporalio.api.update.v1 import UpdateRef, WaitPolicy
from temporalio.api.workflowservice.v1 import PollWorkflowExecutionUpdateRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from signoff.models import ActionStatus, AmendRequest, DecisionRequest
from tests.signing import SIGNER


async def admitted(
    client: Client, handle: WorkflowHandle[Any, Any], update: str, arg: Any, result_type: type
) -> asyncio.Task[Any]:
    """Send an update while no worker runs, and return once the server has admitted it.

    The SDK waits for a worker to accept an update; the service answers a poll for the
    update's `ADMITTED` stage as soon as it is in the workflow's registry.
    """
    update_id = str(uuid.uuid4())
    sent = asyncio.create_task(
        handle.execute_update(update, arg, id=update_id, result_type=result_type)
    )
    ref = UpdateRef(
        workflow_execution=WorkflowExecution(workflow_id=handle.id), update_id=update_id
    )
    stage = UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED
    for _ in range(100):
        try:
            await client.workflow_service.poll_workflow_execution_update(
                PollWorkflowExecutionUpdateRequest(
                    namespace=client.namespace,
                    update_ref=ref,
                    wait_policy=WaitPolicy(lifecycle_stage=stage),
                ),
                timeout=timedelta(seconds=2),
            )
            return sent
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.05)
    raise AssertionError(f"update {update} was never admitted")


async def amendment_and_approval(
    client: Client,
    handle: WorkflowHandle[Any, Any],
    status: ActionStatus,
    amender: str,
    approver: str,
) -> list[asyncio.Task[Any]]:
    """`amender` amends the pending action (its rows +1) and `approver` approves it, both
    admitted while no worker runs; the tasks end with each update's answer."""
    successor_id = f"act-{uuid.uuid4().hex}"
    rows = status.request.params.get("rows", 0)
    successor = status.request.model_copy(
        update={
            "params": {**status.request.params, "rows": rows + 1 if isinstance(rows, int) else 1},
            "amended_from": handle.id,
            "amended_by": amender,
        }
    )
    amend = AmendRequest(
        by=amender,
        digest=status.digest,
        successor_id=successor_id,
        successor=SIGNER.request(successor, successor_id),
    )
    approve = DecisionRequest(approver=approver, decision="approve", digest=status.digest)
    return [
        await admitted(client, handle, "amend", SIGNER.amend(amend, handle.id), ActionStatus),
        await admitted(client, handle, "decide", SIGNER.decision(approve, handle.id), ActionStatus),
    ]


class HoldOne(Interceptor):
    """Holds the `activity_type` calls `held` picks until a call of type `after` (by default the
    same type) that was not held has finished, and the worker has started an activity of
    another type after it (the handler that waited on it moved on).
    """

    def __init__(
        self,
        activity_type: str,
        held: Callable[[Any], bool],
        *,
        after: str | None = None,
        within: float = 5,
    ) -> None:
        self.activity_type = activity_type
        self.held = held
        self.after = after or activity_type
        self.within = within
        self.other_finished = asyncio.Event()
        self.released = asyncio.Event()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap every activity call of the worker."""
        return _Held(next, self)


class _Held(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, hold: HoldOne) -> None:
        super().__init__(next)
        self.hold = hold

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        hold = self.hold
        kind = activity.info().activity_type
        if kind == hold.activity_type and input.args and hold.held(input.args[0]):
            await asyncio.wait_for(hold.released.wait(), hold.within)
            return await self.next.execute_activity(input)
        if kind != hold.activity_type and hold.other_finished.is_set():
            hold.released.set()
        try:
            return await self.next.execute_activity(input)
        finally:
            if kind == hold.after:
                hold.other_finished.set()
