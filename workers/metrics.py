"""The gateway's `/metrics`: pending approvals from Temporal visibility, for Prometheus.

The workflow's own counters and histograms are on the worker's endpoint (Temporal runtime);
what no single worker knows, how many actions wait for humans right now, is counted here
with visibility counts per scrape, reused for a few seconds across gateway replicas' scrapes.
How many expire soon is one more count, over the `SignoffExpires` search attribute. Only runs
that have not published it yet (started by an earlier release) are listed, and their expiry
is read from the inbox memo listed with them; a run without one is asked, once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError

from signoff.models import Status
from workers.settings import Settings
from workflows.action import INBOX_MEMO_KEY, ActionWorkflow

log = logging.getLogger("signoff.metrics")

# Expiry is fixed once an action waits; a few concurrent queries keep a scrape short.
QUERY_CONCURRENCY = 8
QUERY_TIMEOUT = timedelta(seconds=3)


def pending_query(task_queue: str) -> str:
    """The visibility query for actions of this deployment that wait for approval."""
    # Scoped to our task queue (another deployment may share the namespace) and to running
    # workflows (a terminated one keeps its last search attributes).
    return (
        f'TaskQueue = "{task_queue}" AND ExecutionStatus = "Running" '
        f'AND SignoffStatus = "{Status.PENDING_APPROVAL.value}"'
    )


def expiring_query(task_queue: str, before: datetime) -> str:
    """The visibility query for pending actions of this deployment that expire by `before`."""
    return f'{pending_query(task_queue)} AND SignoffExpires <= "{before.isoformat()}"'


def unpublished_expiry_query(task_queue: str) -> str:
    """Pending actions whose runs have not published `SignoffExpires` (an earlier release's)."""
    return f"{pending_query(task_queue)} AND SignoffExpires IS NULL"


def overdue_review_query(task_queue: str) -> str:
    """The visibility query for break-glass actions of this deployment past their review."""
    return (
        f'TaskQueue = "{task_queue}" AND ExecutionStatus = "Running" '
        'AND SignoffBreakGlass = "overdue"'
    )


@dataclass(frozen=True)
class Snapshot:
    """What one visibility scan found."""

    up: bool
    pending: int = 0
    expiring: int = 0
    # None: the count failed (e.g. SignoffBreakGlass is not registered yet); the rest stands.
    overdue_reviews: int | None = None


class PendingApprovals:
    """Counts pending approvals, and those close to expiry, at most once per `ttl` seconds."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.task_queue = settings.task_queue
        self.query = pending_query(settings.task_queue)
        self.overdue_query = overdue_review_query(settings.task_queue)
        self.ttl = settings.metrics_cache_seconds
        self.window = settings.metrics_expiry_warning
        self.scan_limit = settings.metrics_expiry_scan_limit
        self.clock = clock
        self._lock = asyncio.Lock()
        self._snapshot: Snapshot | None = None
        self._taken = 0.0
        # Action id -> expiry: an action's expiry never changes while it waits.
        self._expiry: dict[str, datetime | None] = {}

    async def snapshot(self) -> Snapshot:
        """The latest counts, rescanning when the cached ones are older than the ttl."""
        async with self._lock:  # concurrent scrapes share one scan
            if self._snapshot is None or self.clock() - self._taken >= self.ttl:
                self._snapshot = await self._scan()
                self._taken = self.clock()
            return self._snapshot

    async def _scan(self) -> Snapshot:
        soon = datetime.now(UTC) + self.window
        try:
            pending = (await self.client.count_workflows(self.query)).count
            expiring = (
                await self.client.count_workflows(expiring_query(self.task_queue, soon))
            ).count
            unpublished = [
                w
                async for w in self.client.list_workflows(
                    unpublished_expiry_query(self.task_queue), limit=self.scan_limit
                )
            ]
        except (RPCError, RuntimeError) as err:  # RuntimeError: a lazy client cannot connect
            log.warning("visibility query failed: %s", err)
            return Snapshot(up=False)
        await self._learn_expiry(unpublished)
        expiring += sum(
            1 for w in unpublished if (at := self._expiry.get(w.id)) is not None and at <= soon
        )
        return Snapshot(
            up=True, pending=pending, expiring=expiring, overdue_reviews=await self._overdue()
        )

    async def _overdue(self) -> int | None:
        """Break-glass reviews overdue now; None when the count fails (the rest still counts)."""
        try:
            return (await self.client.count_workflows(self.overdue_query)).count
        except (RPCError, RuntimeError) as err:
            log.warning("break-glass visibility query failed: %s", err)
            return None

    async def _learn_expiry(self, listed: list[WorkflowExecution]) -> None:
        current = {w.id for w in listed}
        for gone in set(self._expiry) - current:
            del self._expiry[gone]
        unknown: list[str] = []
        for execution in listed:
            if execution.id in self._expiry:
                continue
            # The inbox memo has it, listed with the id: a query would make a worker load
            # (often replay) every waiting run, which took most of a scrape at 2,000 pending.
            found, expiry = await memo_expiry(execution)
            if found:
                self._expiry[execution.id] = expiry
            else:
                unknown.append(execution.id)
        gate = asyncio.Semaphore(QUERY_CONCURRENCY)

        async def learn(action_id: str) -> None:
            async with gate:
                handle = self.client.get_workflow_handle_for(ActionWorkflow.run, action_id)
                try:
                    status = await handle.query(ActionWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
                except RPCError:
                    return  # no worker answered in time: try again next scrape
                self._expiry[action_id] = status.expires_at

        await asyncio.gather(*(learn(i) for i in unknown))


async def memo_expiry(listed: WorkflowExecution) -> tuple[bool, datetime | None]:
    """The expiry an action's inbox memo records, and whether the memo had one to read."""
    try:
        row = await listed.memo_value(INBOX_MEMO_KEY, None)
    except (ValueError, TypeError, RuntimeError):  # unreadable: the caller asks the workflow
        return False, None
    if not isinstance(row, dict) or "expires_at" not in row:
        return False, None
    value = row["expires_at"]
    if value is None:
        return True, None
    try:
        expiry = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        expiry = None
    if expiry is None or expiry.tzinfo is None:
        return False, None
    return True, expiry


class _PendingCollector(Collector):
    """Exposes the snapshot the /metrics route has just taken."""

    def __init__(self) -> None:
        self.latest = Snapshot(up=False)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges of the latest snapshot."""
        yield GaugeMetricFamily(
            "signoff_visibility_up",
            "1 if the gateway could query Temporal visibility at the last scrape",
            value=1 if self.latest.up else 0,
        )
        if self.latest.up:
            yield GaugeMetricFamily(
                "signoff_pending_approvals",
                "Actions waiting for human approval",
                value=self.latest.pending,
            )
            yield GaugeMetricFamily(
                "signoff_pending_approvals_expiring_soon",
                "Pending actions that expire within SIGNOFF_METRICS_EXPIRY_WARNING",
                value=self.latest.expiring,
            )
        if self.latest.up and self.latest.overdue_reviews is not None:
            yield GaugeMetricFamily(
                "signoff_break_glass_overdue",
                "Break-glass actions whose after-the-fact review is past its review_within",
                value=self.latest.overdue_reviews,
            )


def metrics_router(client: Client, settings: Settings) -> APIRouter:
    """An APIRouter serving `GET /metrics` in the Prometheus text format."""
    pending = PendingApprovals(client, settings)
    registry = CollectorRegistry(auto_describe=True)
    collector = _PendingCollector()
    registry.register(collector)
    ProcessCollector(registry=registry)
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics of the gateway."""
        collector.latest = await pending.snapshot()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
