"""B3 pending at scale: N actions waiting for approval at once, then all approved.

Reports the worker's RSS while they wait (its workflow cache is bounded by
SIGNOFF_MAX_CACHED_WORKFLOWS), the inbox's latency (`GET /v1/approvals`), the time to approve
every action through the API, and proof that all N completed: counted in Temporal visibility
(SignoffStatus = succeeded) and in the audit ledger (one `outcome: succeeded` row each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid

import asyncpg
import psutil

from bench.b2_approval import count_visible, submit_pending, wait_count
from bench.common import (
    APPROVER_TOKEN,
    Section,
    Stack,
    console,
    fmt,
    rss_mb,
    summary_ms,
)

GOAL_RSS_MB = 300.0


def add_options(parser: argparse.ArgumentParser) -> None:
    """B3's options."""
    group = parser.add_argument_group("B3 pending at scale")
    group.add_argument("--b3-actions", type=int, default=10_000, metavar="N")
    group.add_argument("--b3-concurrency", type=int, default=20, help="parallel API calls")
    group.add_argument("--b3-inbox-samples", type=int, default=10)


class RssSampler:
    """Samples the RSS of the stack's processes once a second, by phase."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.phase = "start"
        self.samples: dict[tuple[str, str], list[float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                with contextlib.suppress(psutil.Error):
                    self.samples.setdefault((self.phase, name), []).append(rss_mb(pid))
            await asyncio.sleep(1.0)

    def start(self) -> None:
        """Begin sampling in the background."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def peak(self, phase: str, name: str) -> float:
        """The highest RSS of a process in a phase (MiB)."""
        return max(self.samples.get((phase, name), [float("nan")]))

    def last(self, phase: str, name: str) -> float:
        """The last RSS of a process in a phase (MiB)."""
        return self.samples.get((phase, name), [float("nan")])[-1]


async def approve_all(
    stack: Stack, actions: list[tuple[str, str]], concurrency: int
) -> tuple[float, int, str, list[float]]:
    """Approve every action through the API; (seconds, failures, first failure, latencies)."""
    queue = iter(actions)
    failures = 0
    first = ""
    latencies: list[float] = []
    started = time.perf_counter()
    async with stack.http(APPROVER_TOKEN, connections=concurrency) as http:

        async def loop() -> None:
            nonlocal failures, first
            for action_id, digest in queue:
                body = {"decision": "approve", "digest": digest, "reason": "bench"}
                for attempt in range(5):
                    began = time.perf_counter()
                    response = await http.post(f"/v1/actions/{action_id}/decisions", json=body)
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - began)
                        break
                    if response.status_code != 503 or attempt == 4:
                        failures += 1
                        first = first or f"{response.status_code} {response.text[:200]}"
                        break
                    await asyncio.sleep(1.0)  # no worker answered in time: retry

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return time.perf_counter() - started, failures, first, latencies


async def ledger_succeeded(database_url: str, ids: list[str]) -> int:
    """Actions among `ids` whose ledger holds an `outcome` row with status succeeded."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(DISTINCT action_id) FROM audit_events WHERE kind = 'outcome' "
                "AND payload->>'status' = 'succeeded' AND action_id = ANY($1::text[])",
                ids,
            )
        )
    finally:
        await conn.close()


async def run(stack: Stack, args: argparse.Namespace) -> Section:
    """Submit N pending actions, measure while they wait, approve all, prove completion."""
    count = 300 if args.quick else args.b3_actions
    concurrency = args.b3_concurrency
    target = f"b3-{uuid.uuid4().hex[:8]}"
    sampler = RssSampler({n: stack.pid(n) for n in ("worker", "gateway", "temporal")})
    baseline = {n: rss_mb(p) for n, p in sampler.pids.items()}
    sampler.start()
    section = Section(
        title=f"B3 {count:,} actions pending at once "
        f"(SIGNOFF_MAX_CACHED_WORKFLOWS={args.max_cached_workflows})",
        columns=["measure", "value"],
    )
    try:
        sampler.phase = "submit"
        console.print(f"[bold]B3[/bold] submitting {count:,} actions that need approval ...")
        actions, submit_s, retried = await submit_pending(
            stack, action="noop", target=target, count=count, concurrency=concurrency
        )
        pending = f'SignoffTarget = "{target}" AND SignoffStatus = "pending_approval"'
        seen, _ = await wait_count(stack, pending, count, within=600)
        sampler.phase = "waiting"
        console.print(f"[bold]B3[/bold] {seen:,} pending; measuring while they wait ...")
        await asyncio.sleep(5 if args.quick else 15)
        inbox: list[float] = []
        returned = 0
        async with stack.http(APPROVER_TOKEN) as http:
            for _ in range(args.b3_inbox_samples):
                began = time.perf_counter()
                response = await http.get("/v1/approvals", params={"limit": 50})
                inbox.append(time.perf_counter() - began)
                response.raise_for_status()
                returned = len(response.json())
        sampler.phase = "approve"
        console.print(f"[bold]B3[/bold] approving all {len(actions):,} through the API ...")
        approve_s, failures, first, decide = await approve_all(stack, actions, concurrency)
        sampler.phase = "complete"
        done_query = f'SignoffTarget = "{target}" AND SignoffStatus = "succeeded"'
        succeeded, settle_s = await wait_count(stack, done_query, count, within=900)
        in_ledger = await ledger_succeeded(stack.database_url, [a for a, _ in actions])
        still_pending = await count_visible(stack, pending)
    finally:
        await sampler.stop()
    inbox_ms = summary_ms(inbox)
    decide_ms = summary_ms(decide)
    waiting_rss = sampler.peak("waiting", "worker")
    peak_rss = max(sampler.peak(p, "worker") for p in ("submit", "waiting", "approve", "complete"))
    rows = [
        (
            "actions submitted",
            f"{len(actions):,} in {submit_s:.0f} s ({len(actions) / submit_s:.0f}/s)",
        ),
        ("pending at once (visibility)", f"{seen:,}"),
        (
            "worker RSS before → while waiting (peak)",
            f"{baseline['worker']:.0f} → {waiting_rss:.0f} MiB",
        ),
        ("worker RSS peak over the whole run", f"{peak_rss:.0f} MiB"),
        ("gateway RSS while waiting", f"{sampler.peak('waiting', 'gateway'):.0f} MiB"),
        ("Temporal dev server RSS while waiting", f"{sampler.peak('waiting', 'temporal'):.0f} MiB"),
        (
            "inbox GET /v1/approvals?limit=50 p50 / p99",
            f"{fmt(inbox_ms['p50'])} / {fmt(inbox_ms['p99'])} ms ({returned} returned)",
        ),
        (
            "approve all through the API",
            f"{approve_s:.0f} s ({len(actions) / approve_s:.0f}/s, {failures} failed)",
        ),
        (
            "POST decisions p50 / p99 under that load",
            f"{fmt(decide_ms['p50'])} / {fmt(decide_ms['p99'])} ms",
        ),
        (
            "completed: succeeded in visibility",
            f"{succeeded:,} of {count:,} ({settle_s:.0f} s after the last approval)",
        ),
        ("completed: outcome=succeeded in the ledger", f"{in_ledger:,} of {count:,}"),
        ("still pending afterwards", f"{still_pending:,}"),
    ]
    section.rows += [[k, v] for k, v in rows]
    section.goal(
        "worker RSS < 300 MB while pending", f"{waiting_rss:.0f} MiB", waiting_rss < GOAL_RSS_MB
    )
    section.goal(
        f"all {count:,} completed",
        f"{succeeded:,} visibility, {in_ledger:,} ledger",
        succeeded == count and in_ledger == count,
    )
    if failures:
        section.notes.append(f"first failed decision: {first}")
    if retried:
        section.notes.append(
            "submissions answered other than 202 and retried with the same idempotency key: "
            + ", ".join(f"{code}: {n}" for code, n in sorted(retried.items()))
        )
    section.notes.append(
        f"{concurrency} parallel API clients for submits and approvals; RSS sampled once a second."
    )
    return section


if __name__ == "__main__":
    from bench.run_all import standalone

    standalone("b3")
