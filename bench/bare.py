"""The baseline of B1: a bare Temporal workflow that runs one no-op activity.

`python -m bench.bare --address A --task-queue Q` runs a plain worker (default sandbox, default
converter) until SIGTERM. With `--drive`, the same process also generates the load, so the
client and worker share one process: the only set-up where eager workflow start can work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from bench.load import closed_loop


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


def worker(client: Client, task_queue: str) -> Worker:
    """A plain worker for the bare workflow."""
    return Worker(client, task_queue=task_queue, workflows=[BareWorkflow], activities=[bare_noop])


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
    args = parser.parse_args()
    client = await Client.connect(args.address)
    async with worker(client, args.task_queue):
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
    asyncio.run(main())
