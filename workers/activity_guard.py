"""Only signoff's own workflows run signoff's activities: none standalone, none for strangers.

Anyone who may write to the namespace can start an activity on its own (Temporal's standalone
activities) or schedule one on signoff's task queue from a workflow of their own, and the
worker that polls the queue would run it with the credentials it holds. Signatures guard what
reaches a workflow; this guards what reaches an activity.

- Every activity must be run by a signoff workflow (`SignoffAction`, `SignoffWindow`).
- The ledger's writers, the signature checks and the policy run only as local activities: a
  local activity runs in the worker that runs its workflow, so no other worker can have this
  one run them. Whoever runs a workflow of their own runs its local activities themselves,
  without the ledger's or the targets' credentials.
- The activities scheduled by signoff's workflows run only for a run the ledger knows: the
  executor's find their run's write-ahead row first (`activities.execution`), and a
  notification finds a row its run wrote (here). Only signoff's code on this worker writes
  rows, so a stranger cannot have this worker's bot post a request that shows one action
  and approves another.
"""

from __future__ import annotations

import logging
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.ledger.store import Ledger
from workflows.action import WORKFLOW_NAME
from workflows.messages import WINDOW_WORKFLOW

log = logging.getLogger("signoff.worker")

# The ApplicationError type of an activity run refused here.
ACTIVITY_REFUSED = "ActivityRefused"

WORKFLOW_TYPES = frozenset({WORKFLOW_NAME, WINDOW_WORKFLOW})

# Run by signoff's workflows only as local activities (every recorded history agrees).
LOCAL_ONLY = frozenset(
    {
        "admit_request",
        "check_decision",
        "check_run",
        "claim_execution",
        "evaluate_policy",
        "record_and_claim",
        "record_audit_events",
        "record_outcome",
        "resolve_principal",
        "verify_signature",
    }
)
# Scheduled by signoff's workflows as activities of their own.
SCHEDULED = frozenset(
    {"execute_action", "revert_action", "notify", "notify_update", "notify_window"}
)
# Run only for a run with a row in the ledger (the executor's check their write-ahead row).
ON_RECORD = frozenset({"notify", "notify_update", "notify_window"})


def refusal(info: activity.Info) -> str | None:
    """Why this activity run is refused, or None when a signoff workflow runs it as it should."""
    name = info.activity_type
    if not info.workflow_id or not info.workflow_run_id:
        return (
            f"{name} was started on its own (a standalone activity); signoff's activities run "
            "only inside signoff's workflows"
        )
    if info.workflow_type not in WORKFLOW_TYPES:
        return (
            f"{name} was scheduled by a workflow of type {info.workflow_type!r}; only "
            f"{', '.join(sorted(WORKFLOW_TYPES))} may run it"
        )
    if name in LOCAL_ONLY and not info.is_local:
        return f"{name} runs only as a local activity of a signoff workflow, never scheduled"
    if name not in LOCAL_ONLY | SCHEDULED:
        return f"{name} is not one of signoff's activities"
    return None


class ActivityGuard(Interceptor):
    """Refuse, without running it, any activity a signoff workflow did not run as it does."""

    def __init__(self, ledger: Ledger) -> None:
        """`ledger`: where a notification's run must have written a row."""
        self.ledger = ledger

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Check each activity run before anything of it runs."""
        return _Guarded(next, self.ledger)


class _Guarded(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, ledger: Ledger) -> None:
        super().__init__(next)
        self.ledger = ledger

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        reason = refusal(info)
        if reason is None and info.activity_type in ON_RECORD:
            reason = await self._unrecorded(info)
        if reason is not None:
            # Ids and types only: an input may carry anything, secrets included.
            log.warning(
                "activity refused: %s (workflow id %r, run %r)",
                reason,
                info.workflow_id,
                info.workflow_run_id,
            )
            raise ApplicationError(f"refused: {reason}", type=ACTIVITY_REFUSED, non_retryable=True)
        return await super().execute_activity(input)

    async def _unrecorded(self, info: activity.Info) -> str | None:
        """Why a notification is refused: its run wrote nothing to the ledger."""
        assert info.workflow_id, "refusal() checked it"
        assert info.workflow_run_id, "refusal() checked it"
        # A ledger that cannot answer raises: the activity's retry policy tries again.
        if await self.ledger.run_recorded(info.workflow_id, info.workflow_run_id):
            return None
        return (
            f"{info.activity_type} is for run {info.workflow_run_id} of {info.workflow_id}, "
            "which wrote nothing to the ledger"
        )
