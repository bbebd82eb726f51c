"""Bounded input: params caps at every edge, and poisoned workflows that end (or alert) visibly.

The gateway app, the dev server, the worker and the metrics exporter are all real. Poisoned
workflows are started straight through the Temporal client, as someone with Temporal access
(bypassing the gateway) would.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import RawValue, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError

from activities.ledger.store import Ledger
from signoff.models import (
    MAX_PARAMS_DEPTH,
    MAX_PARAMS_KEY,
    MAX_PARAMS_NODES,
    MAX_PARAMS_STRING,
    ActionSubmission,
)
from tests.conftest import running_worker, worker_parts
from tests.gateway_fixtures import api, build_app
from tests.test_metrics import free_port, scrape_until, value
from workers import telemetry
from workers.settings import Settings
from workers.temporal import connect
from workers.worker import build_worker
from workflows import search_attributes as sa

ALERTS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yaml"


def nested(depth: int) -> Any:
    """A JSON value `depth` arrays deep."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def body(**overrides: Any) -> dict[str, Any]:
    """A valid submission, overridden."""
    return {
        "action": "noop",
        "target": "one-db",
        "params": {"rows": 1},
        "justification": "bounded input",
        **overrides,
    }


def raw_request(params: dict[str, Any], requester: str = "agent:bot") -> dict[str, Any]:
    """An ActionRequest as JSON, built without the contract's checks (an attacker's payload)."""
    return {
        "action": "noop",
        "target": "one-db",
        "params": params,
        "justification": "poisoned",
        "requester": requester,
    }


async def workflows_on(client: Client, task_queue: str) -> int:
    """How many workflows a task queue has, after visibility had time to catch up."""
    await asyncio.sleep(1.0)
    return (await client.count_workflows(f'TaskQueue = "{task_queue}"')).count


# --- the caps -------------------------------------------------------------------------------


async def test_params_nested_250_deep_are_422_naming_the_depth_limit(
    client: Client, settings: Settings, ledger: Ledger
) -> None:
    app = build_app(client, settings)
    async with running_worker(client, settings, ledger), api(app, "bot") as http:
        response = await http.post("/v1/actions", json=body(params={"a": nested(250)}))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert "body.params" in error["message"]
    assert f"depth limit (MAX_PARAMS_DEPTH) is {MAX_PARAMS_DEPTH}" in error["message"]
    # Changes nothing: no workflow was started.
    assert await workflows_on(client, settings.task_queue) == 0


@pytest.mark.parametrize(
    ("params", "limit"),
    [
        ({"a": nested(MAX_PARAMS_DEPTH)}, "MAX_PARAMS_DEPTH"),
        ({"many": list(range(MAX_PARAMS_NODES))}, "MAX_PARAMS_NODES"),
        ({"long": "x" * (MAX_PARAMS_STRING + 1)}, "MAX_PARAMS_STRING"),
        ({"k" * (MAX_PARAMS_KEY + 1): 1}, "MAX_PARAMS_KEY"),
    ],
    ids=["depth", "nodes", "string", "key"],
)
async def test_each_params_cap_is_a_422_naming_it(
    client: Client, settings: Settings, params: dict[str, Any], limit: str
) -> None:
    app = build_app(client, settings)
    async with api(app, "bot") as http:
        response = await http.post("/v1/actions", json=body(params=params))
    assert response.status_code == 422, response.text
    assert f"({limit})" in response.json()["error"]["message"]


async def test_a_caller_mode_report_is_bounded_like_params(
    client: Client, settings: Settings
) -> None:
    # The report becomes workflow state and an update argument: the same caps apply.
    app = build_app(client, settings)
    async with api(app, "bot") as http:
        response = await http.post(
            f"/v1/actions/act-{uuid.uuid4()}/report", json={"result": {"a": nested(250)}}
        )
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert "body.result" in message
    assert f"depth limit (MAX_PARAMS_DEPTH) is {MAX_PARAMS_DEPTH}" in message


def test_params_just_inside_every_cap_are_accepted() -> None:
    params = {
        "a": nested(MAX_PARAMS_DEPTH - 2),  # the params object is the first level
        "long": "x" * MAX_PARAMS_STRING,
        "k" * MAX_PARAMS_KEY: list(range(MAX_PARAMS_NODES - 2 - (MAX_PARAMS_DEPTH - 2) - 2)),
    }
    submission = ActionSubmission(action="noop", target="t", justification="j", params=params)
    assert submission.digest


async def test_raw_json_nested_past_any_parser_is_a_client_error(
    client: Client, settings: Settings
) -> None:
    # Deeper than Python's json module recurses: the body must still get a 4xx, not a 500.
    depth = 200_000
    raw = '{"action":"noop","target":"one-db","justification":"j","params":{"a":'
    raw += "[" * depth + "]" * depth + "}}"
    app = build_app(client, settings)
    async with api(app, "bot") as http:
        response = await http.post(
            "/v1/actions", content=raw, headers={"Content-Type": "application/json"}
        )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["message"]


# --- poisoned workflows -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "reason"),
    [
        (50, f"depth limit (MAX_PARAMS_DEPTH) is {MAX_PARAMS_DEPTH}"),
        (250, "recursion limit exceeded"),  # past pydantic's JSON parser, before our check
    ],
)
async def test_a_workflow_started_with_poisoned_input_fails_at_once_with_the_reason(
    client: Client, settings: Settings, ledger: Ledger, depth: int, reason: str
) -> None:
    app = build_app(client, settings)
    port = free_port()
    metered = await connect(
        settings.model_copy(update={"temporal_address": client.service_client.config.target_host}),
        runtime=telemetry.prometheus_runtime(f"127.0.0.1:{port}"),
    )
    async with build_worker(metered, settings, worker_parts(settings, ledger)):
        handle: WorkflowHandle[Any, Any] = await client.start_workflow(
            "SignoffAction",
            raw_request({"a": nested(depth)}),
            id=f"act-{uuid.uuid4()}",
            task_queue=settings.task_queue,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(sa.REQUESTER, "agent:bot")]
            ),
        )
        started = time.monotonic()
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 20)
        assert time.monotonic() - started < 10  # the first task, not after retries
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.type == "UndecodablePayload"
        assert reason in cause.message
        description = await handle.describe()
        assert description.status == WorkflowExecutionStatus.FAILED
        # Counted, for the SignoffActionWorkflowFailed alert.
        series = "temporal_workflow_failed_total"
        labels = {"workflow_type": "SignoffAction", "task_queue": settings.task_queue}
        text = await scrape_until(
            f"http://127.0.0.1:{port}/metrics", lambda t: value(t, series, **labels) == 1
        )
        assert value(text, series, **labels) == 1

        # The gateway answers a clear 409 to those who may know, never a 500.
        for who in ("bot", "erin"):  # the requester (per search attribute), an auditor
            async with api(app, who) as http:
                response = await http.get(f"/v1/actions/{handle.id}")
            assert response.status_code == 409, (who, response.text)
            error = response.json()["error"]
            assert error["code"] == "action_failed"
            assert "ended without an outcome (failed)" in error["message"]
            assert reason in error["message"]
            async with api(app, who) as http:
                cancelled = await http.post(f"/v1/actions/{handle.id}/cancel", json={})
            assert cancelled.status_code == 409, cancelled.text
        # Anyone else learns nothing, as for an id that does not exist.
        async with api(app, "alice") as http:
            response = await http.get(f"/v1/actions/{handle.id}")
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
    # Nothing of it reached the ledger: it never became an action.
    assert await ledger.events(handle.id) == []


async def test_a_workflow_whose_first_task_keeps_failing_is_503_and_counted_for_the_alert(
    client: Client, settings: Settings, ledger: Ledger
) -> None:
    # Input in an encoding this worker has no converter for (a missing payload codec, say): a
    # deploy can fix that, so it stays a retried task failure, but nobody may miss it.
    port = free_port()
    target = client.service_client.config.target_host
    metered = await connect(
        settings.model_copy(update={"temporal_address": target}),
        runtime=telemetry.prometheus_runtime(f"127.0.0.1:{port}"),
    )
    app = build_app(client, settings)
    async with build_worker(metered, settings, worker_parts(settings, ledger)):
        handle: WorkflowHandle[Any, Any] = await client.start_workflow(
            "SignoffAction",
            RawValue(Payload(metadata={"encoding": b"binary/x-sealed"}, data=b"\x00\x01")),
            id=f"act-{uuid.uuid4()}",
            task_queue=settings.task_queue,
        )
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            text = await scrape_until(
                url,
                lambda t: (value(t, "temporal_workflow_task_execution_failed_total") or 0) >= 2,
                seconds=30,
            )
            failed = value(
                text,
                "temporal_workflow_task_execution_failed_total",
                workflow_type="SignoffAction",
                task_queue=settings.task_queue,
            )
            assert failed is not None, text
            assert failed >= 2
            for _ in range(150):
                description = await handle.describe()
                pending = description.raw_description.pending_workflow_task
                if pending.attempt >= 3:
                    break
                await asyncio.sleep(0.2)
            assert description.status == WorkflowExecutionStatus.RUNNING
            started = time.monotonic()
            async with api(app, "erin") as http:
                response = await http.get(f"/v1/actions/{handle.id}")
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "action_stalled"
            assert "workflow task keeps failing or timing out (attempt" in error["message"]
            assert time.monotonic() - started < 5  # no query left to time out
            # Without the requester on record, only auditors learn of it.
            async with api(app, "bot") as http:
                hidden = await http.get(f"/v1/actions/{handle.id}")
            assert hidden.status_code == 404, hidden.text
            # A decision no worker can take is the same 503 (once the update gives up).
            decision = {"decision": "approve", "digest": "0" * 64}
            async with api(app, "erin") as http:
                decided = await http.post(f"/v1/actions/{handle.id}/decisions", json=decision)
            assert decided.status_code == 503, decided.text
            assert decided.json()["error"]["code"] == "action_stalled"
        finally:
            await handle.terminate("test over")


def test_alert_rules_cover_failing_workflow_tasks_and_failed_workflows() -> None:
    rules = {
        r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
    }
    failing = rules["SignoffWorkflowTaskFailing"]
    assert "temporal_workflow_task_execution_failed_total" in failing["expr"]
    assert failing["labels"]["severity"] == "critical"
    failed = rules["SignoffActionWorkflowFailed"]
    assert re.search(
        r'temporal_workflow_failed_total\{[^}]*workflow_type="SignoffAction"', failed["expr"]
    )
    assert json.dumps(failed["annotations"])
