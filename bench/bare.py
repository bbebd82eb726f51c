"""The baseline of B1: a bare Temporal workflow that runs one no-op activity.

`python -m bench.bare --address A --task-queue Q` runs a plain worker (default sandbox, default
converter) until SIGTERM. With `--drive`, the same process also generates the load, so the
client and worker share one process: the only set-up where eager workflow start can work.

The same worker also runs `GateShape`: the history an allowed action makes in the gate, event
for event, with none of the gate's work behind the events. It is B1's floor: what Temporal and
its SDK charge for that shape alone, whatever the gate's own code costs. `DecisionShape` is
B6's: a pending action's history and the update that approves it, run by B6 in its process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from bench.load import closed_loop
from workflows import search_attributes as sa

SHAPE_PATCH = "bench-gate-shape"


@activity.defn(name="bare_noop")
async def bare_noop() -> None:
    """Do nothing."""


@workflow.defn(name="BareNoop")
class BareWorkflow:
    """Client -> workflow -> one activity -> result."""

    @workflow.run
    async def run(self) -> str:
        """Run the no-op activity once."""
        await workflow.execute_activity(bare_noop, start_to_close_timeout=timedelta(seconds=30))
        return "ok"


@activity.defn(name="bare_noop_local")
async def bare_noop_local() -> None:
    """Do nothing, as a local activity."""


@dataclass
class Shape:
    """Which of an allowed action's events `GateShape` makes; the default is all 16."""

    patch: bool = True  # the patch marker and the SDK's TemporalChangeVersion upsert
    first_locals: int = 1  # admission and its rows: write-ahead and claim (two before shape v9)
    upserts: bool = True  # the status before the executor, the final status after
    last_locals: int = 0  # the outcome's (one before shape v10; now the executor writes it)


# Unsandboxed, as the gate's worker runs by default: the floor counts no sandbox either.
@workflow.defn(name="BareGateShape", sandboxed=False)
class GateShape:
    """An allowed action's history with no work behind it: B1's floor.

    Event for event what `workflows.action` writes for an allowed action: one patch marker (and
    the SDK's TemporalChangeVersion upsert), one local activity (admission, then the rows up to
    the write-ahead row and the claim), the status upsert, the executor's activity, the final
    upsert (since shape v10 the executor's activity writes the outcome). Every local activity
    and the activity do nothing; payloads are tiny. A `Shape` adds or leaves out parts, to
    price each.
    """

    @workflow.run
    async def run(self, shape: Shape) -> str:
        """Make the allowed action's events, doing nothing for any of them."""
        if shape.patch:
            workflow.patched(SHAPE_PATCH)
        for _ in range(shape.first_locals):
            await workflow.execute_local_activity(
                bare_noop_local, start_to_close_timeout=timedelta(seconds=30)
            )
        if shape.upserts:
            self._publish("executing")
        await workflow.execute_activity(bare_noop, start_to_close_timeout=timedelta(seconds=30))
        if shape.upserts:
            self._publish("succeeded")
        for _ in range(shape.last_locals):
            await workflow.execute_local_activity(
                bare_noop_local, start_to_close_timeout=timedelta(seconds=30)
            )
        return "ok"

    @staticmethod
    def _publish(status: str) -> None:
        workflow.upsert_search_attributes(
            [
                sa.STATUS.value_set(status),
                sa.ACTION.value_set("noop"),
                sa.TARGET.value_set("sandbox"),
                sa.REQUESTER.value_set("agent:bench"),
                sa.RISK.value_set("low"),
                sa.ESCALATION.value_set(0),
                sa.GROUPS.value_set([]),
            ]
        )


# About the size of a pending action's inbox memo (its status as JSON): a visibility write.
INBOX_ROW = {"status": "pending_approval", "padding": "x" * 1500}


# Unsandboxed, as the gate's worker runs by default.
@workflow.defn(name="BareGateDecisionShape", sandboxed=False)
class DecisionShape:
    """A pending action's history and the update that approves it, no work behind it: B6's floor.

    Event for event what `workflows.action` writes for a `noop` needing one approver (shape
    v9): the patch marker, the admission's local activity, the status and inbox memo, the
    expiry timer, the console's post recorded by a local activity; then the update: its
    checks' local activity, the timer cancelled, the status and the memo cleared, the
    decision's row with the write-ahead row and claim (a local activity), the executor's
    activity (which writes the outcome since shape v10), the final status.
    """

    def __init__(self) -> None:
        self.approved = False
        self.recorded = False

    @workflow.run
    async def run(self) -> str:
        """Wait for the approval, then run the no-op activity, as an approved action does."""
        workflow.patched(SHAPE_PATCH)
        await _local()  # admission and its rows
        _publish_status("pending_approval", memo=INBOX_ROW)
        notified = asyncio.create_task(_local())  # the console's post, recorded
        await workflow.wait_condition(lambda: self.approved, timeout=timedelta(hours=12))
        _publish_status("executing", memo=None)
        await notified
        await workflow.wait_condition(lambda: self.recorded)
        await workflow.execute_activity(bare_noop, start_to_close_timeout=timedelta(seconds=30))
        _publish_status("succeeded")
        return "ok"

    @workflow.update
    async def approve(self, reason: str) -> str:
        """Approve: checked, counted, recorded with the write-ahead row."""
        await _local()  # signature, approver, requester
        self.approved = True
        await _local()  # decision, write-ahead row, claim
        self.recorded = True
        return reason


async def _local() -> None:
    await workflow.execute_local_activity(
        bare_noop_local, start_to_close_timeout=timedelta(seconds=30)
    )


_UNCHANGED: Any = object()


def _publish_status(status: str, memo: Any = _UNCHANGED) -> None:
    GateShape._publish(status)
    if memo is not _UNCHANGED:
        workflow.upsert_memo({"signoff_inbox": memo})


def worker(client: Client, task_queue: str, max_cached_workflows: int = 1000) -> Worker:
    """A plain worker for the bare workflow and the gate's shapes."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BareWorkflow, GateShape, DecisionShape],
        activities=[bare_noop, bare_noop_local],
        max_cached_workflows=max_cached_workflows,
    )


async def drive(
    client: Client,
    task_queue: str,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    eager: bool,
) -> dict[str, object]:
    """Start-and-wait bare workflows in a closed loop; the latencies in seconds."""

    async def one(_: int) -> None:
        handle = await client.start_workflow(
            BareWorkflow.run,
            id=f"bare-{uuid.uuid4().hex}",
            task_queue=task_queue,
            request_eager_start=eager,
        )
        await handle.result()

    result = await closed_loop(one, concurrency=concurrency, duration=duration, warmup=warmup)
    return {
        "latencies": result.latencies,
        "elapsed": result.elapsed,
        "errors": result.errors,
        "first_error": result.first_error,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--drive", action="store_true", help="also generate load, print JSON")
    parser.add_argument("--eager", action="store_true", help="request eager workflow start")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--max-cached-workflows", type=int, default=1000, help="the SDK's default")
    args = parser.parse_args()
    client = await Client.connect(args.address)
    async with worker(client, args.task_queue, args.max_cached_workflows):
        if args.drive:
            out = await drive(
                client,
                args.task_queue,
                concurrency=args.concurrency,
                duration=args.duration,
                warmup=args.warmup,
                eager=args.eager,
            )
            print(json.dumps(out))
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


if __name__ == "__main__":
    # Imported here, not above: the sandbox re-imports this module for its workflows.
    from workers import event_loop
    from workers.settings import Settings

    # The same loop as the gate's worker (SIGNOFF_EVENT_LOOP, inherited from the bench), so
    # the comparison is of the gate's work, not of two event loops.
    event_loop.run(main(), Settings().event_loop)
