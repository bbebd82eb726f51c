"""Tracing: one approved action through the gateway is one connected trace, without secrets."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client

from activities.ledger.store import Ledger
from channels.console import ConsoleNotifier
from channels.notifier import Notifier
from channels.slack import SlackNotifier, web_client
from policies.loader import load_policy_and_directory
from signoff.executor import registry
from tests.conftest import worker_parts
from tests.fake_slack import FakeSlack
from tests.test_slack import fake  # noqa: F401 - fixture
from workers import telemetry
from workers.gateway.app import create_app
from workers.gateway.service import ActionService
from workers.gateway.tracing import instrument_app
from workers.settings import Settings
from workers.worker import build_worker

PARAM_SECRET = "p4ram-value-never-in-spans"
AGENT_TOKEN = "t-bot"
APPROVER_TOKEN = "t-alice"


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_tracing_is_off_unless_otel_variables_ask_for_it(env: dict[str, str], on: bool) -> None:
    assert telemetry.tracing_requested(env) is on


def test_no_tracer_provider_and_no_interceptors_by_default() -> None:
    assert telemetry.setup_tracing("signoff-test", {}) is None
    assert telemetry.client_interceptors(None) == []


def test_grpc_protocol_is_refused_with_a_clear_message() -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    with pytest.raises(ValueError, match="http/protobuf"):
        telemetry.span_exporters(env)


def by_name(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    """The one span with this name."""
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {len(found)} spans among {sorted(s.name for s in spans)}"
    return found[0]


def parent_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> ReadableSpan:
    """The span's parent, which must be among the exported spans."""
    assert span.parent is not None, f"{span.name} is a root"
    parents = [s for s in spans if s.context.span_id == span.parent.span_id]
    assert parents, f"the parent of {span.name} was not exported"
    return parents[0]


async def test_an_approved_action_is_one_connected_trace(
    client: Client,
    settings: Settings,
    ledger: Ledger,
    fake: FakeSlack,  # noqa: F811
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = client.config()
    config["interceptors"] = telemetry.client_interceptors(provider)
    traced = Client(**config)
    policy, directory = load_policy_and_directory(settings.policy, settings.directory)
    service = ActionService(traced, settings, policy, directory, registry)
    app = create_app(service, directory, settings)
    instrument_app(app, provider, lambda: traced)

    # The console channel is written by the workflow itself; Slack is an activity, traced.
    slack = SlackNotifier(web_client(fake.bot_token, fake.url), directory)
    channels: list[Notifier] = [ConsoleNotifier(), slack]
    transport = httpx.ASGITransport(app=app)
    async with (
        build_worker(traced, settings, worker_parts(settings, ledger, notifiers=channels)),
        httpx.AsyncClient(transport=transport, base_url="http://gateway") as http,
    ):
        submitted = await http.post(
            "/v1/actions",
            json={
                "action": "noop",
                "target": "one-traced",
                "params": {"note": PARAM_SECRET},
                "justification": "trace test",
            },
            headers={"Authorization": f"Bearer {AGENT_TOKEN}"},
        )
        assert submitted.status_code == 202, submitted.text
        action = submitted.json()
        for _ in range(100):
            if action["status"] == "pending_approval":
                break
            await asyncio.sleep(0.1)
            action = (
                await http.get(
                    f"/v1/actions/{action['id']}",
                    headers={"Authorization": f"Bearer {AGENT_TOKEN}"},
                )
            ).json()
        assert action["status"] == "pending_approval"
        decided = await http.post(
            f"/v1/actions/{action['id']}/decisions",
            json={"decision": "approve", "digest": action["digest"]},
            headers={"Authorization": f"Bearer {APPROVER_TOKEN}"},
        )
        assert decided.status_code == 200, decided.text
        final = await http.get(
            f"/v1/actions/{action['id']}",
            params={"wait": 20},
            headers={"Authorization": f"Bearer {AGENT_TOKEN}"},
        )
        assert final.json()["status"] == "succeeded"
        # The status says succeeded before the workflow has closed; wait for it to close.
        await traced.get_workflow_handle(action["id"]).result()
    provider.force_flush()
    spans = exporter.get_finished_spans()

    submit = by_name(spans, "POST /v1/actions")
    trace_id = submit.context.trace_id
    ours = [s for s in spans if s.context.trace_id == trace_id]
    assert submit.parent is None, "the agent's request starts the trace"

    start = by_name(ours, "StartWorkflow:SignoffAction")
    assert parent_of(start, ours) is submit
    assert parent_of(by_name(ours, "RunWorkflow:SignoffAction"), ours) is start
    for activity_type in ("admit_request", "notify", "execute_action"):
        scheduled = by_name(ours, f"StartActivity:{activity_type}")
        assert parent_of(scheduled, ours) is start
        assert parent_of(by_name(ours, f"RunActivity:{activity_type}"), ours) is scheduled
    # The human's decision, another HTTP request, continues the action's trace.
    decision_http = by_name(ours, "POST /v1/actions/{id}/decisions")
    assert parent_of(decision_http, ours) is start
    update = by_name(ours, "StartWorkflowUpdate:decide")
    assert parent_of(update, ours) is decision_http
    handled = by_name(ours, "HandleUpdate:decide")
    assert parent_of(handled, ours) is start
    assert [link.context.span_id for link in handled.links] == [update.context.span_id]
    # Decided, then executed: the execution is scheduled after the update was handled.
    assert by_name(ours, "StartActivity:execute_action").start_time >= handled.start_time
    assert by_name(ours, "CompleteWorkflow:SignoffAction")

    # Our attributes on our spans.
    assert {
        "signoff.action": "noop",
        "signoff.target": "one-traced",
        "signoff.risk": "medium",
        "signoff.status": "evaluating",
    }.items() <= dict(start.attributes or {}).items()
    evaluated = dict(by_name(ours, "RunActivity:admit_request").attributes or {})
    assert evaluated["signoff.effect"] == "require_approval"
    assert evaluated["signoff.risk"] == "medium"
    notified = dict(by_name(ours, "RunActivity:notify").attributes or {})
    assert notified["signoff.status"] == "pending_approval"
    assert notified["signoff.channel"] == "slack"
    assert dict(update.attributes or {})["signoff.decision"] == "approve"
    executed = dict(by_name(ours, "RunActivity:execute_action").attributes or {})
    assert executed["signoff.status"] == "succeeded"
    assert executed["signoff.action"] == "noop"

    # Nothing secret anywhere: no param value, no token, in any span of the test.
    for span in spans:
        for key, value in (span.attributes or {}).items():
            text = str(value)
            for secret in (PARAM_SECRET, AGENT_TOKEN, APPROVER_TOKEN):
                assert secret not in text, f"{span.name} {key} leaks {secret!r}"
