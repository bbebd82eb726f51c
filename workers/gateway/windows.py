"""The gateway's side of approval windows: list, read and revoke them in Temporal.

Reads come from the window workflow itself (its `status` query, or its result once it ended);
visibility only finds which windows exist. A revoke is signed like a cancel and judged by the
window workflow, which records refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from signoff.models import ApprovalWindow, Principal, WindowRevokeRequest
from workers.gateway.service import QUERY_TIMEOUT, ActionService
from workflows.errors import (
    WindowNotFound,
    WorkerUnavailable,
)
from workflows.messages import WINDOW_WORKFLOW
from workflows.rules import can_view_window
from workflows.window import WindowWorkflow

# Window ids are ours: "win-" and an action id.
WINDOW_ID = re.compile(r"win-act-[A-Za-z0-9-]{1,80}")


class WindowService:
    """Approval windows for authenticated principals, through the action service's client."""

    def __init__(self, actions: ActionService) -> None:
        self.actions = actions

    def _handle(self, window_id: str) -> WorkflowHandle[WindowWorkflow, ApprovalWindow]:
        return self.actions.client.get_workflow_handle_for(WindowWorkflow.run, window_id)

    async def get(self, window_id: str) -> ApprovalWindow:
        """The window as its workflow says: its result once ended, else its `status` query."""
        if not WINDOW_ID.fullmatch(window_id):
            raise WindowNotFound(f"no window {window_id[:100]}")
        handle = self._handle(window_id)
        try:
            description = await handle.describe()
            if description.workflow_type != WINDOW_WORKFLOW:
                raise WindowNotFound(f"no window {window_id}")
            if description.status == WorkflowExecutionStatus.COMPLETED:
                return await handle.result()
            return await handle.query(WindowWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise WindowNotFound(f"no window {window_id}") from None
            if err.status in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
                raise WorkerUnavailable(
                    f"no worker answered for window {window_id}; is a worker running on task "
                    f"queue {self.actions.settings.task_queue!r}?"
                ) from None
            raise

    async def visible(self, principal: Principal, window_id: str) -> ApprovalWindow:
        """The window, or 404 for anyone who may not see it (as for a window that is not)."""
        window = await self.get(window_id)
        if not can_view_window(principal, window):
            raise WindowNotFound(f"no window {window_id}")
        return window

    async def list(
        self, principal: Principal, *, live_only: bool = True, limit: int = 50
    ) -> list[ApprovalWindow]:
        """Windows the principal may see, newest first; live ones unless `live_only` is off."""
        query = (
            f'WorkflowType = "{WINDOW_WORKFLOW}" '
            f'AND TaskQueue = "{self.actions.settings.task_queue}"'
        )
        if live_only:
            query += ' AND SignoffWindowStatus = "active"'
        ids = [w.id async for w in self.actions.client.list_workflows(query, limit=limit * 2)]
        windows = await asyncio.gather(*(self._quiet(i) for i in ids))
        mine = [w for w in windows if w is not None and can_view_window(principal, w)]
        return sorted(mine, key=lambda w: w.created_at, reverse=True)[:limit]

    async def _quiet(self, window_id: str) -> ApprovalWindow | None:
        # One unreadable window must not hide the rest.
        with contextlib.suppress(WindowNotFound, WorkerUnavailable, RPCError):
            return await self.get(window_id)
        return None

    async def revoke(self, window_id: str, request: WindowRevokeRequest) -> ApprovalWindow:
        """End the window now, signed; the window refuses (and records) anyone else."""
        await self.get(window_id)
        return await self.actions.revoke_window(window_id, request)
