"""Finding and using live approval windows, for the policy activity.

Temporal visibility is only the index: it lists window workflows by holder and status, and it
may lag. Every candidate is then read from its own workflow (the `status` query), vouched for
by the action whose approval opened it, and used through the window's `use` update, which
refuses once the window has ended. A window visibility misses leaves the request to the normal
rules (stricter); one visibility still shows after it ended is refused by the update.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError

from signoff.models import ActionStatus, ApprovalWindow
from workflows.messages import (
    WINDOW_STATUS_QUERY,
    WINDOW_USE_UPDATE,
    WINDOW_WORKFLOW,
    WindowUseRequest,
    window_id_for,
)
from workflows.search_attributes import WINDOW_HOLDER, WINDOW_STATUS

log = logging.getLogger("signoff.windows")

# Ids are directory ids; anything that could break out of a visibility string gets no window.
_QUOTABLE = re.compile(r'^[^"\\\x00-\x1f]+$')
MAX_CANDIDATES = 20
RPC_TIMEOUT = timedelta(seconds=10)


class LiveWindows:
    """Live approval windows on one task queue, as the window workflows themselves say."""

    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    async def candidates(self, holder: str) -> list[ApprovalWindow]:
        """Windows visibility lists as active for `holder`, each as its workflow says now."""
        if not _QUOTABLE.match(holder) or not _QUOTABLE.match(self.task_queue):
            return []
        query = (
            f'WorkflowType = "{WINDOW_WORKFLOW}" AND ExecutionStatus = "Running" '
            f'AND TaskQueue = "{self.task_queue}" '
            f'AND {WINDOW_HOLDER.name} = "{holder}" AND {WINDOW_STATUS.name} = "active"'
        )
        found: list[ApprovalWindow] = []
        try:
            async for execution in self.client.list_workflows(query, limit=MAX_CANDIDATES):
                window = await self._read(execution.id)
                if window is not None and window.live and window.holder == holder:
                    found.append(window)
        except RPCError as err:
            # No index, no window: the request takes the normal rules.
            log.warning("cannot list approval windows: %s", err.message)
        return found

    async def _read(self, window_id: str) -> ApprovalWindow | None:
        try:
            return await self.client.get_workflow_handle(window_id).query(
                WINDOW_STATUS_QUERY, result_type=ApprovalWindow, rpc_timeout=RPC_TIMEOUT
            )
        except Exception as err:  # one unreadable window never stops the evaluation
            log.warning("cannot read approval window %s: %s", window_id, err)
            return None

    async def vouched(self, window: ApprovalWindow) -> bool:
        """Whether the action it names approved exactly this window, with signed decisions.

        A window workflow anyone with Temporal access could start proves nothing by itself;
        the action workflow verified every decision's gateway signature, window included.
        """
        if window.id != window_id_for(window.action_id):
            return False
        try:
            action = await self.client.get_workflow_handle(window.action_id).query(
                "status", result_type=ActionStatus, rpc_timeout=RPC_TIMEOUT
            )
        except Exception as err:
            log.warning("cannot read action %s of window %s: %s", window.action_id, window.id, err)
            return False
        verdict = action.verdict
        approvals = [d for d in action.decisions if d.decision == "approve"]
        durations = [d.window for d in approvals if d.window is not None]
        return (
            action.opened_window == window.id
            and action.request.requester == window.holder
            and action.request.on_behalf_of == window.on_behalf_of
            and verdict is not None
            and verdict.rule_id == window.rule_id
            and verdict.window is not None
            and verdict.window.scope == window.scope
            and bool(approvals)
            and len(durations) == len(approvals)
            and action.decided_at is not None
            and window.expires_at <= action.decided_at + min(durations)
            and sorted(window.approvers) == sorted(d.approver for d in approvals)
        )

    async def use(self, window_id: str, request: WindowUseRequest) -> ApprovalWindow | None:
        """Record one use; None when the window refuses it (ended, or not the holder's)."""
        try:
            return await self.client.get_workflow_handle(window_id).execute_update(
                WINDOW_USE_UPDATE, request, result_type=ApprovalWindow, rpc_timeout=RPC_TIMEOUT
            )
        except WorkflowUpdateFailedError as err:
            log.info("window %s refused %s: %s", window_id, request.action_id, err.cause)
            return None
        except RPCError as err:
            # Closed under us (expired a moment ago): the normal rules apply.
            log.info("window %s could not be used: %s", window_id, err.message)
            return None
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            log.warning("window %s did not answer in time; the normal rules apply", window_id)
            return None
