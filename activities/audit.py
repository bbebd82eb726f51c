"""The audit activities: the workflow writes its audit batches and execution claims here.

Storage is the ledger's (`activities.ledger.store`); these activities only turn its outcomes
into what the workflow's retry policy understands: an unreachable ledger is retried until
Postgres is back, a conflicting event is refused for good.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.ledger.store import CONNECTION_ERRORS, Ledger, LedgerConflict
from workflows.messages import (
    AuditBatch,
    ExecutionClaim,
    RecordedOutcome,
    RunCheck,
    RunCheckResult,
    WriteAhead,
)

LEDGER_UNAVAILABLE = "LedgerUnavailable"
LEDGER_CONFLICT = "LedgerConflict"


def unavailable(err: BaseException) -> ApplicationError:
    """A retryable error saying the ledger cannot be reached right now."""
    return ApplicationError(
        f"audit ledger unavailable: {type(err).__name__}: {err}", type=LEDGER_UNAVAILABLE
    )


@contextlib.contextmanager
def ledger_outcomes() -> Iterator[None]:
    """Raise the ledger's failures as the workflow's retry policy takes them.

    A conflicting event is refused for good; an unreachable ledger is retried until it is back.
    """
    try:
        yield
    except LedgerConflict as err:
        raise ApplicationError(str(err), type=LEDGER_CONFLICT, non_retryable=True) from None
    except CONNECTION_ERRORS as err:
        raise unavailable(err) from err


class AuditActivities:
    """The ledger's Temporal activities over one `Ledger`."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @activity.defn(name="record_audit_events")
    async def record_audit_events(self, batch: AuditBatch) -> None:
        """Append a batch of events to the chain, idempotently; retried until Postgres is back."""
        with ledger_outcomes():
            await self.ledger.append(batch.events)

    @activity.defn(name="record_outcome")
    async def record_outcome(self, batch: AuditBatch) -> RecordedOutcome | None:
        """Append an outcome's rows; the outcome already there if the executor wrote it first."""
        with ledger_outcomes():
            return await self.ledger.append_outcome(batch.events)

    @activity.defn(name="check_run")
    async def check_run(self, check: RunCheck) -> RunCheckResult:
        """Whether another run of this workflow id already started executing the action."""
        with ledger_outcomes():
            found = await self.ledger.executed_by(check.action_id, other_than=check.run_id)
        if found is None:
            return RunCheckResult()
        return RunCheckResult(executed_by=found[0] or "(unrecorded)", at=found[1])

    @activity.defn(name="claim_execution")
    async def claim_execution_activity(self, claim: ExecutionClaim) -> ExecutionClaim:
        """Claim the action's one execution for this run; answer with whoever holds it."""
        with ledger_outcomes():
            return await self.ledger.claim_execution(claim.action_id, claim.run_id, claim.digest)

    @activity.defn(name="record_and_claim")
    async def record_and_claim(self, write_ahead: WriteAhead) -> ExecutionClaim:
        """Append the write-ahead batch, then claim the action's one execution for this run.

        One local activity instead of two, and one statement: the claim commits with the rows
        it follows, never before them. A retry appends nothing twice and finds its own claim.
        """
        with ledger_outcomes():
            return await self.ledger.append_and_claim(write_ahead.events, write_ahead.claim)
