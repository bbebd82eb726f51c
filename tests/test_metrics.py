"""Metrics: the worker's Prometheus endpoint and the gateway's /metrics, scraped for real."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from activities.ledger.store import Ledger
from channels.console import ConsoleNotifier
from channels.notifier import NotifierError
from policies.loader import load_policy_and_directory
from signoff.executor import registry
from signoff.models import ActionRequest, NotificationRef, RevokeRequest, Status
from tests.conftest import DATA, Gate, worker_parts
from tests.grant_roles import DSN_ENV, GRANTABLE, grant_targets, granter_roles, new_grantee
from tests.signing import SIGNER
from workers import telemetry
from workers.gateway.app import create_app
from workers.gateway.service import ActionService
from workers.metrics import memo_expiry, pending_query
from workers.settings import Settings
from workers.temporal import connect
from workers.worker import build_worker
from workflows import search_attributes as sa
from workflows.action import INBOX_MEMO_KEY, ActionWorkflow
from workflows.messages import NotifyInput, NotifyUpdateInput

Labels = dict[str, str]
ALERTS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yaml"
# The series the alert rules may use: checked against real scrapes below.
WORKER_SERIES = {
    "signoff_actions_total",
    "signoff_refused_attempts_total",
    "signoff_escalations_total",
    "signoff_time_to_decision_seconds_bucket",
    "signoff_notification_failures_total",
    "temporal_worker_task_slots_available",
}
# Only exported once someone breaks glass; tests/test_break_glass.py scrapes it.
BREAK_GLASS_SERIES = {"signoff_break_glass_total"}
# Only exported once a workflow task or run fails; tests/test_bounded_input.py scrapes them.
FAILURE_SERIES = {
    "temporal_workflow_task_execution_failed_total",
    "temporal_workflow_failed_total",
}
# Only exported once a revert fails; test_a_failing_revert_is_counted scrapes it.
REVERT_SERIES = {"signoff_revert_failures_total"}
GATEWAY_SERIES = {
    "signoff_break_glass_overdue",
    "signoff_pending_approvals",
    "signoff_pending_approvals_expiring_soon",
    "signoff_visibility_up",
}


class BrokenChannel:
    """A channel whose every post fails, as a revoked bot token would."""

    channel = "broken"

    async def post(self, request: NotifyInput) -> list[NotificationRef]:
        """Fail the post."""
        raise NotifierError("token revoked")

    async def update(self, request: NotifyUpdateInput) -> None:
        """Never reached: nothing was posted."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def samples(text: str, name: str) -> list[tuple[Labels, float]]:
    """Every sample called `name` in a Prometheus text exposition."""
    return [
        (dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def value(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples of `name` whose labels include `labels`; None if none match."""
    found = [v for ls, v in samples(text, name) if labels.items() <= ls.items()]
    return sum(found) if found else None


async def scrape_until(url: str, done: Callable[[str], bool], *, seconds: float = 15.0) -> str:
    """Scrape until `done(text)` holds (metrics reach the exporter asynchronously)."""
    text = ""
    async with httpx.AsyncClient() as http:
        for _ in range(int(seconds / 0.2)):
            text = (await http.get(url)).text
            if done(text):
                return text
            await asyncio.sleep(0.2)
    return text


async def test_worker_exports_action_metrics_with_the_issue_names(
    client: Client, settings: Settings, ledger: Ledger
) -> None:
    port = free_port()
    runtime = telemetry.prometheus_runtime(f"127.0.0.1:{port}")
    target = client.service_client.config.target_host
    metered = await connect(
        settings.model_copy(update={"temporal_address": target}), runtime=runtime
    )
    gate = Gate(metered, settings)
    parts = worker_parts(settings, ledger, notifiers=[ConsoleNotifier(), BrokenChannel()])
    tq = {"task_queue": settings.task_queue}

    async with build_worker(metered, settings, parts):
        allowed = await gate.submit("sandbox-1")
        denied = await gate.submit("forbidden")
        approved = await gate.submit("one-a")
        escalated = await gate.submit("esc-1")
        for target_name in ("one-b", "one-c"):
            await gate.wait_for(await gate.submit(target_name), "pending_approval")
        await gate.wait_for(approved, "pending_approval")
        with pytest.raises(WorkflowUpdateFailedError):
            await gate.decide(approved, "bob@example.com")  # security, not dba: refused
        await gate.decide(approved, "alice@example.com")
        for handle, status in [
            (allowed, "succeeded"),
            (denied, "denied_by_policy"),
            (approved, "succeeded"),
            (escalated, "expired"),  # escalates after 3 s, expires after 6 s
        ]:
            assert (await handle.result()).status.value == status

        url = f"http://127.0.0.1:{port}/metrics"
        text = await scrape_until(
            url,
            lambda t: (
                value(t, "signoff_actions_total", status="expired", **tq) == 1
                and value(t, "signoff_notification_failures_total", **tq) == 5
            ),
        )

    def count(status: str) -> float | None:
        return value(text, "signoff_actions_total", action="noop", status=status, **tq)

    assert count("succeeded") == 2
    assert count("denied_by_policy") == 1
    assert count("expired") == 1
    assert value(text, "signoff_refused_attempts_total", reason="not_eligible", **tq) == 1
    assert value(text, "signoff_escalations_total", **tq) == 1
    assert value(text, "signoff_time_to_decision_seconds_count", **tq) == 1
    assert value(text, "signoff_time_to_decision_seconds_bucket", le="+Inf", **tq) == 1
    # One failed post per notify: one-a, one-b, one-c, and esc-1 at stages 0 and 1.
    assert (
        value(
            text, "signoff_notification_failures_total", channel="broken", activity="notify", **tq
        )
        == 5
    )
    assert value(text, "signoff_notification_failures_total", channel="console", **tq) is None
    # Exactly the names of the issue: no double `_total`, no unit suffix.
    names = {name for name, _ in _all(text) if name.startswith("signoff_")}
    assert not {n for n in names if "_total_total" in n or n.endswith("_seconds_s")}
    # The SDK's own metrics come with them.
    slots = value(text, "temporal_worker_task_slots_available", worker_type="WorkflowWorker", **tq)
    assert slots is not None
    # Every worker-side series the example alert rules use exists.
    exported = {name for name, _ in _all(text)}
    assert exported >= WORKER_SERIES, WORKER_SERIES - exported
    assert "temporal_workflow_completed_total" in exported  # SDK counters get _total too


def _all(text: str) -> list[tuple[str, float]]:
    return [(s.name, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


async def scrape(client: Client, settings: Settings) -> httpx.Response:
    """GET /metrics from a gateway built on `settings` (its policy and directory)."""
    policy, directory = load_policy_and_directory(settings.policy, settings.directory)
    service = ActionService(client, settings, policy, directory, registry)
    app = create_app(service, directory, settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw"
    ) as http:
        return await http.get("/metrics")


async def three_pending(gate: Gate) -> list[WorkflowHandle[Any, Any]]:
    """Three actions that each wait for one DBA's approval, once they are waiting."""
    pending = [await gate.submit(f"one-{i}") for i in range(3)]
    for handle in pending:
        await gate.wait_for(handle, "pending_approval")
    return pending


async def test_gateway_metrics_count_pending_approvals(
    client: Client, settings: Settings, ledger: Ledger
) -> None:
    gate = Gate(client, settings)

    async with build_worker(client, settings, worker_parts(settings, ledger)):
        pending = await three_pending(gate)
        await (await gate.submit("sandbox-2")).result()
        # Visibility is eventually consistent: wait until it sees the three.
        for _ in range(100):
            if (await client.count_workflows(pending_query(settings.task_queue))).count == 3:
                break
            await asyncio.sleep(0.1)

        # Each run publishes when it expires: the policy's hour after it was created.
        status = await pending[0].query(ActionWorkflow.status)
        described = await pending[0].describe()
        assert described.typed_search_attributes.get(sa.EXPIRES) == status.expires_at
        for window, expiring in [(timedelta(minutes=15), 0), (timedelta(hours=2), 3)]:
            # Exact beyond the scan limit: it is one count over SignoffExpires, not a list.
            # (A list of the newest 1,000 missed the oldest, which expire first.)
            warn = settings.model_copy(
                update={"metrics_expiry_warning": window, "metrics_expiry_scan_limit": 1}
            )
            response = await scrape(client, warn)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            text = response.text
            assert value(text, "signoff_visibility_up") == 1
            assert {name for name, _ in _all(text)} >= GATEWAY_SERIES
            assert value(text, "signoff_pending_approvals") == 3
            # The policy expires them after 1 h: none within 15 minutes, all within 2 hours.
            assert value(text, "signoff_pending_approvals_expiring_soon") == expiring

        # An approved action leaves the gauge once the cache (5 s by default) has expired.
        await gate.decide(pending[0], "alice@example.com")
        await pending[0].result()
        fast = settings.model_copy(update={"metrics_cache_seconds": 0.0})
        for _ in range(100):
            text = (await scrape(client, fast)).text
            if value(text, "signoff_pending_approvals") == 2:
                break
            await asyncio.sleep(0.1)
        assert value(text, "signoff_pending_approvals") == 2
        for handle in pending[1:]:
            await handle.terminate("test over")


async def test_runs_of_an_earlier_release_are_read_from_their_memo_not_the_workers(
    client: Client, settings: Settings
) -> None:
    # Runs started before SignoffExpires existed have only their inbox memo until they publish
    # again. A query per waiting action would make a worker load (often replay) each one: at
    # 2,000 pending the first scrape took seconds. So they are listed with their memo, and
    # counted with no worker running at all. Such a run's visibility record is its start's:
    # the pending status and the memo, without the attribute.
    now = datetime.now(UTC)
    earlier = []
    for expires_in in (timedelta(minutes=5), timedelta(hours=1)):
        action_id = f"act-{uuid.uuid4()}"
        request = ActionRequest(
            action="noop", target="one", params={}, justification="testing", requester="agent:bot"
        )
        earlier.append(
            await client.start_workflow(
                ActionWorkflow.run,
                SIGNER.request(request, action_id),
                id=action_id,
                task_queue=settings.task_queue,
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(sa.STATUS, Status.PENDING_APPROVAL.value)]
                ),
                memo={INBOX_MEMO_KEY: {"expires_at": (now + expires_in).isoformat()}},
            )
        )
    # Visibility is eventually consistent: wait until it lists the two with their memo.
    for _ in range(100):
        listed = [w async for w in client.list_workflows(pending_query(settings.task_queue))]
        if len(listed) == 2 and all([(await memo_expiry(w))[0] for w in listed]):
            break
        await asyncio.sleep(0.1)
    text = (await scrape(client, settings)).text  # expiring soon: within 15 minutes
    assert value(text, "signoff_pending_approvals") == 2
    assert value(text, "signoff_pending_approvals_expiring_soon") == 1
    for handle in earlier:
        await handle.terminate("test over")


async def test_unreachable_visibility_reports_down(settings: Settings) -> None:
    """With Temporal gone, /metrics still answers, and says so."""
    closed = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)
    text = (await scrape(closed, settings)).text
    assert value(text, "signoff_visibility_up") == 0
    assert value(text, "signoff_pending_approvals") is None


def test_alert_rules_are_well_formed_and_use_exported_metrics() -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
        used = set(re.findall(r"\b(?:signoff|temporal)_[a-z_]+", rule["expr"]))
        assert used, rule["alert"]
        known = WORKER_SERIES | GATEWAY_SERIES | FAILURE_SERIES | BREAK_GLASS_SERIES | REVERT_SERIES
        assert used <= known, (rule["alert"], used)
    covered = " ".join(r["expr"] for r in rules)
    for needed in ("expiring_soon", "refused_attempts", "notification_failures"):
        assert needed in covered  # near expiry, refused spikes, notification failures


async def test_a_failing_revert_is_counted(
    client: Client,
    settings: Settings,
    ledger: Ledger,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    granter = await granter_roles(postgres_url)
    monkeypatch.setenv(DSN_ENV, granter)
    settings = settings.model_copy(
        update={"policy": DATA / "grants-policy.yaml", "targets": grant_targets(tmp_path)}
    )
    port = free_port()
    runtime = telemetry.prometheus_runtime(f"127.0.0.1:{port}")
    target = client.service_client.config.target_host
    metered = await connect(
        settings.model_copy(update={"temporal_address": target}), runtime=runtime
    )
    gate = Gate(metered, settings)
    tq = {"task_queue": settings.task_queue}
    async with build_worker(metered, settings, worker_parts(settings, ledger)):
        handle = await gate.submit(
            "grant-db",
            {"role": GRANTABLE, "user": await new_grantee(postgres_url), "duration": "30m"},
            action="postgres.grant_role",
        )
        await gate.wait_for(handle, "pending_approval")
        await gate.decide(handle, "alice@example.com")
        await gate.wait_for(handle, "active")
        monkeypatch.setenv(DSN_ENV, "postgresql://jit_granter:x@/postgres?host=/nonexistent")
        await handle.execute_update(
            ActionWorkflow.revoke, SIGNER.revoke(RevokeRequest(by="agent:bot"), handle.id)
        )
        text = await scrape_until(
            f"http://127.0.0.1:{port}/metrics",
            lambda t: (value(t, "signoff_revert_failures_total", **tq) or 0) >= 1,
        )
        monkeypatch.setenv(DSN_ENV, granter)
        assert (await handle.result()).status.value == "reverted"
    failures = value(text, "signoff_revert_failures_total", action="postgres.grant_role", **tq)
    assert failures is not None
    assert failures >= 1
