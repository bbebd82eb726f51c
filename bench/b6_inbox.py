"""B6 inbox at scale: `GET /v1/approvals?limit=50` and `/metrics` with N pending, and decision
throughput with 20 parallel approvers against a bare workflow completing on an update.

N actions that need approval are submitted through the API (or fewer: `--b6-pending`, the
sizes to measure in order, e.g. `--b6-pending 10000 100000`; each size tops up the one before).
At each size the inbox and /metrics are timed. Then `--b6-decide` of them are approved through
the API by `--b6-approvers` parallel clients, and as many bare workflows (started, each
waiting for one update that completes it; a worker in this process) are completed by as many
parallel update calls, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import PollerBehavior, PollerBehaviorAutoscaling, Worker

from bench.b2_approval import count_visible, submit_pending, wait_count
from bench.b3_pending import approve_all
from bench.bare import DecisionShape
from bench.common import (
    APPROVER_TOKEN,
    ROOT,
    Section,
    Stack,
    console,
    cpu_seconds,
    fmt,
    process_groups,
    rss_mb,
    stop_process,
    summary_ms,
    wait_polling,
)
from signoff.models import ActionStatus

BARE_UPDATE_QUEUE = "bench-bare-update"
GOAL_INBOX_MS = 100.0


def add_options(parser: argparse.ArgumentParser) -> None:
    """B6's options."""
    group = parser.add_argument_group("B6 inbox at scale")
    group.add_argument("--b6-pending", type=int, nargs="+", default=[10_000], metavar="N")
    group.add_argument("--b6-samples", type=int, default=20, help="inbox and /metrics GETs")
    group.add_argument("--b6-decide", type=int, default=1000, metavar="M")
    group.add_argument("--b6-approvers", type=int, default=20)
    group.add_argument("--b6-concurrency", type=int, default=20, help="parallel submissions")


@workflow.defn(name="BareApproval", sandboxed=False)
class BareApproval:
    """Waits for one update, then completes: the least an approval workflow can do."""

    def __init__(self) -> None:
        self.approved = False

    @workflow.run
    async def run(self) -> str:
        """Wait for the approval."""
        await workflow.wait_condition(lambda: self.approved)
        return "ok"

    @workflow.update
    async def approve(self, reason: str) -> str:
        """Approve; the run completes."""
        self.approved = True
        return reason


async def bare_decisions(
    client: Client, count: int, parallel: int, *, pollers: PollerBehavior | None = None
) -> tuple[float, list[float]]:
    """Start `count` bare workflows, then complete them with `parallel` update callers.

    `pollers`: the worker's poller behaviour for both kinds of task; the SDK's default if None.
    """
    tuning: dict[str, Any] = (
        {"workflow_task_poller_behavior": pollers, "activity_task_poller_behavior": pollers}
        if pollers is not None
        else {}
    )
    async with Worker(client, task_queue=BARE_UPDATE_QUEUE, workflows=[BareApproval], **tuning):
        ids = await start_runs(client, BareApproval, BARE_UPDATE_QUEUE, count, parallel)
        return await approve_runs(client, BareApproval, ids, parallel)


def decision_orders(
    actions: list[tuple[str, str]], decide: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Up to `decide` of the newest actions, newest first, and as many of the oldest: apart."""
    split = max(len(actions) - decide, len(actions) // 2)
    return actions[split:][::-1], actions[: min(decide, split)]


async def gated_decisions(
    stack: Stack, groups: dict[str, list[int]], chosen: list[tuple[str, str]], approvers: int
) -> tuple[float, int, str, list[float], str]:
    """Approve `chosen` through the API; seconds, failures, the first, latencies, CPU each.

    The executions the decisions set off (and their outcome rows) are counted with them.
    """
    succeeded = 'SignoffStatus = "succeeded"'
    done_before = await count_visible(stack, succeeded)
    before = cpu_seconds(groups)
    took, failures, first, latencies = await approve_all(stack, chosen, approvers)
    await wait_count(stack, succeeded, done_before + len(chosen) - failures, within=300)
    return took, failures, first, latencies, per_decision(before, cpu_seconds(groups), len(chosen))


async def start_runs(
    client: Client, shape: Any, queue: str, count: int, parallel: int
) -> list[str]:
    """Start `count` runs of `shape` on `queue`, `parallel` at a time; their ids."""
    ids = [f"bare-approval-{uuid.uuid4().hex}" for _ in range(count)]
    starts = iter(ids)

    async def start() -> None:
        for workflow_id in starts:
            await client.start_workflow(
                shape.run, id=workflow_id, task_queue=queue, execution_timeout=timedelta(hours=1)
            )

    await asyncio.gather(*(start() for _ in range(parallel)))
    return ids


async def approve_runs(
    client: Client, shape: Any, ids: list[str], parallel: int
) -> tuple[float, list[float]]:
    """Approve each run through `shape.approve`, `parallel` at a time; time and latencies."""
    todo = iter(ids)
    latencies: list[float] = []
    began = time.perf_counter()

    async def decide() -> None:
        for workflow_id in todo:
            t0 = time.perf_counter()
            await client.get_workflow_handle(workflow_id).execute_update(shape.approve, "bench")
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(decide() for _ in range(parallel)))
    return time.perf_counter() - began, latencies


async def floor_decisions(
    stack: Stack, groups: dict[str, list[int]], count: int, parallel: int
) -> tuple[float, list[float], str]:
    """B6's floor: `DecisionShape` runs approved as the gate's are; time, latencies, CPU.

    A pending action's history and its approval with no work behind them, on a worker process
    of their own (as the gate's is) that caches no more runs than are being approved, so each
    approval replays its run, as the gate's do with more pending than its cache holds.
    """
    queue = f"bench-floor-{uuid.uuid4().hex[:8]}"
    log = (stack.data_dir / "logs" / "floor-worker.log").open("ab")
    command = [sys.executable, "-m", "bench.bare", "--address", stack.config.temporal_address]
    process = subprocess.Popen(  # noqa: ASYNC220 - a quick fork; stop_process is sync too
        [*command, "--task-queue", queue, "--max-cached-workflows", str(parallel)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        await wait_polling(stack.client, queue)
        ids = await start_runs(stack.client, DecisionShape, queue, count, parallel)
        # Approvals only, as the gate's figure counts: the starts are its submissions.
        measured = {**groups, "floor worker": [process.pid]}
        before = cpu_seconds(measured)
        took, latencies = await approve_runs(stack.client, DecisionShape, ids, parallel)
        return took, latencies, per_decision(before, cpu_seconds(measured), count)
    finally:
        stop_process(process)
        log.close()


async def timed_gets(
    stack: Stack, path: str, samples: int, **params: str
) -> tuple[list[float], int]:
    """`samples` sequential GETs as the approver; (seconds each, rows in the last answer)."""
    took: list[float] = []
    rows = 0
    async with stack.http(APPROVER_TOKEN) as http:
        for _ in range(samples):
            began = time.perf_counter()
            response = await http.get(path, params=params)
            took.append(time.perf_counter() - began)
            response.raise_for_status()
            if path == "/v1/approvals":
                rows = len(response.json())
    return took, rows


async def old_inbox(stack: Stack, query: str, samples: int) -> list[float]:
    """What the inbox did before rows came from the memo: list 100, query each one's status."""
    took: list[float] = []
    for _ in range(samples):
        began = time.perf_counter()
        ids = [w.id async for w in stack.client.list_workflows(query, limit=100)]
        await asyncio.gather(
            *(
                stack.client.get_workflow_handle(i).query("status", result_type=ActionStatus)
                for i in ids
            )
        )
        took.append(time.perf_counter() - began)
    return took


def per_decision(before: dict[str, float], after: dict[str, float], count: int) -> str:
    """CPU ms per decision of each process between two readings, and their total."""
    used = {name: 1000 * (after[name] - before[name]) / count for name in after}
    parts = [f"{name} {ms:.1f}" for name, ms in used.items() if ms >= 0.05]
    return ", ".join(parts) + f"; total {sum(used.values()):.1f}"


def footprint(stack: Stack) -> str:
    """What the pending actions cost where they are held: each process's RSS, Temporal's file."""
    worker, temporal = rss_mb(stack.pid("worker")), rss_mb(stack.pid("temporal"))
    # The dev server's SQLite file with its write-ahead log.
    size = sum(f.stat().st_size for f in stack.data_dir.glob("temporal.db*")) / 2**20
    return (
        f"worker RSS {worker:,.0f} MiB, Temporal RSS {temporal:,.0f} MiB, "
        f"Temporal's SQLite files {size:,.0f} MiB"
    )


async def run(stack: Stack, args: argparse.Namespace) -> Section:
    """Fill up to each size, time inbox and /metrics, then compare decision throughput."""
    sizes = [300] if args.quick else sorted(args.b6_pending)
    decide = min(100 if args.quick else args.b6_decide, sizes[-1])
    target = f"b6-{uuid.uuid4().hex[:8]}"
    # Each size tops up with a target of its own (submissions' idempotency keys count from 0
    # per target); every pending action on the stack is B6's.
    pending_query = 'SignoffStatus = "pending_approval"'
    section = Section(title="B6 inbox and decisions at scale", columns=["measure", "value"])
    actions: list[tuple[str, str]] = []
    for size in sizes:
        more = size - len(actions)
        console.print(f"[bold]B6[/bold] submitting {more:,} more actions (to {size:,}) ...")
        added, submit_s, _ = await submit_pending(
            stack,
            action="noop",
            target=f"{target}-{size}",
            count=more,
            concurrency=args.b6_concurrency,
        )
        actions += added
        seen, _ = await wait_count(stack, pending_query, size, within=900)
        section.rows.append([f"{size:,}: submitted", f"{more:,} in {submit_s:.0f} s"])
        inbox, rows = await timed_gets(stack, "/v1/approvals", args.b6_samples, limit="50")
        metrics, _ = await timed_gets(stack, "/metrics", args.b6_samples)
        before = summary_ms(await old_inbox(stack, pending_query, max(3, args.b6_samples // 4)))
        inbox_ms, metrics_ms = summary_ms(inbox), summary_ms(metrics)
        section.rows.append(
            [
                f"{seen:,} pending: inbox GET /v1/approvals?limit=50 p50 / p99",
                f"{fmt(inbox_ms['p50'])} / {fmt(inbox_ms['p99'])} ms ({rows} rows)",
            ]
        )
        section.rows.append(
            [
                f"{seen:,} pending: before, list 100 + a status query each (bench-side) p50",
                f"{fmt(before['p50'])} ms",
            ]
        )
        section.rows.append(
            [
                f"{seen:,} pending: GET /metrics p50 / p99",
                f"{fmt(metrics_ms['p50'])} / {fmt(metrics_ms['p99'])} ms",
            ]
        )
        section.rows.append([f"{seen:,} pending: held by each part", footprint(stack)])
        section.goal(
            f"inbox p50 < 100 ms with {seen:,} pending",
            f"{inbox_ms['p50']:.0f} ms",
            inbox_ms["p50"] < GOAL_INBOX_MS,
        )
    groups = process_groups(stack)
    # Approvers work their inbox, newest first: those runs are still in the worker's cache.
    # The oldest are not (more pending than it holds): each of their decisions replays a run.
    newest, oldest = decision_orders(actions, decide)
    decided: dict[str, tuple[float, list[float], str]] = {}
    for order, chosen in (("newest first", newest), ("oldest first", oldest)):
        console.print(
            f"[bold]B6[/bold] approving {len(chosen):,} ({order}) with "
            f"{args.b6_approvers} approvers ..."
        )
        took, failures, first, latencies, cpu = await gated_decisions(
            stack, groups, chosen, args.b6_approvers
        )
        decided[order] = (took, latencies, cpu)
        if failures:
            section.notes.append(f"{order}: {failures} failed, the first: {first}")
    console.print(f"[bold]B6[/bold] bare: {decide:,} workflows completed by an update ...")
    before = cpu_seconds(groups)
    bare_s, bare_lat = await bare_decisions(stack.client, decide, args.b6_approvers)
    bare_cpu = per_decision(before, cpu_seconds(groups), decide)
    # What bare Temporal does tuned: pollers scaled by the server's backlog hints, not 5.
    console.print("[bold]B6[/bold] bare again, its worker's pollers autoscaling ...")
    scaled_s, scaled_lat = await bare_decisions(
        stack.client, decide, args.b6_approvers, pollers=PollerBehaviorAutoscaling()
    )
    console.print("[bold]B6[/bold] floor: the gate's decision shape, each run replayed ...")
    floor_s, floor_lat, floor_cpu = await floor_decisions(stack, groups, decide, args.b6_approvers)
    bare_rate = decide / bare_s
    rates: dict[str, float] = {}
    for order, (took, latencies, _) in decided.items():
        rates[order] = len(newest if order == "newest first" else oldest) / took
        section.rows.append(
            [
                f"decisions through the API, {args.b6_approvers} parallel approvers, {order}",
                f"{rates[order]:.1f}/s, p50 {fmt(summary_ms(latencies)['p50'])} ms; "
                f"{rates[order] / bare_rate:.2f}x of bare",
            ]
        )
    gate_rate = rates["oldest first"]
    section.rows.append(
        [
            f"bare workflow completed by an update, {args.b6_approvers} parallel",
            f"{bare_rate:.1f}/s, p50 {fmt(summary_ms(bare_lat)['p50'])} ms",
        ]
    )
    scaled_rate = decide / scaled_s
    section.rows.append(
        [
            f"bare, its worker's pollers autoscaling, {args.b6_approvers} parallel",
            f"{scaled_rate:.1f}/s, p50 {fmt(summary_ms(scaled_lat)['p50'])} ms; "
            f"gate {gate_rate / scaled_rate:.2f}x of it",
        ]
    )
    floor_rate = decide / floor_s
    section.rows.append(
        [
            "floor: the gate's decision history, no gate work, each run replayed "
            f"(bench/bare.py DecisionShape, its own worker process), "
            f"{args.b6_approvers} parallel",
            f"{floor_rate:.1f}/s, p50 {fmt(summary_ms(floor_lat)['p50'])} ms; "
            f"{floor_rate / bare_rate:.2f}x of bare, gate {gate_rate / floor_rate:.2f}x of it",
        ]
    )
    for order, (_, _, cpu) in decided.items():
        section.rows.append([f"CPU ms per decision, gate, {order} (by process)", cpu])
    section.rows.append(
        ["CPU ms per decision, bare (starts included; its worker is the bench)", bare_cpu]
    )
    section.rows.append(["CPU ms per decision, floor (approvals only, as the gate's)", floor_cpu])
    for order, rate in rates.items():
        section.goal(
            f"decision throughput >= 0.5x bare, {order}",
            f"{rate / bare_rate:.2f}x",
            rate >= bare_rate / 2,
        )
    section.notes.append(
        "the bare workflows' worker runs in the bench process; the gate's decisions go through "
        "the gateway (auth, then a signed update) to the signoff worker, which audits each."
    )
    return section


if __name__ == "__main__":
    from bench.run_all import standalone

    standalone("b6")
