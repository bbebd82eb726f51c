"""A workflow that reads the machine's clock, in a module the sandbox can import on its own."""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError


@workflow.defn(sandboxed=True)
class ReadsTheClock:
    """Reads the machine's clock: the sandbox must refuse it."""

    @workflow.run
    async def run(self) -> str:
        """'refused' when the sandbox stopped the read, else the time read."""
        try:
            return datetime.now().isoformat()
        except RestrictedWorkflowAccessError:
            return "refused"
