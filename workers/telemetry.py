"""Traces and Temporal runtime metrics for signoff processes.

Tracing is off unless the standard `OTEL_*` variables ask for it (an OTLP endpoint or
`OTEL_TRACES_EXPORTER`). When on, the Temporal client carries the trace through workflows and
activities, the gateway's FastAPI app is instrumented (`workers.gateway.tracing`), and our
spans get `signoff.action`, `signoff.target`, `signoff.risk` and `signoff.status` attributes,
never params or tokens.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from temporalio import activity, client, worker
from temporalio.common import TypedSearchAttributes
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from signoff.models import ActionRequest, ActionStatus, DecisionRequest
from workers.settings import Settings
from workflows import search_attributes as sa
from workflows.messages import (
    AdmissionCheck,
    AdmissionResult,
    Evaluation,
    ExecuteInput,
    ExecuteResult,
    NotifyInput,
    NotifyResult,
    NotifyUpdateInput,
)

log = logging.getLogger("signoff.telemetry")

# Memo key holding the W3C trace context of the request that started an action, so a later
# decision (another HTTP request, maybe hours later) continues the same trace.
TRACE_MEMO = "signoff.trace"
ATTR = "signoff."
# Counter base names: the Prometheus exporter adds `_total` (counters_total_suffix=True).
NOTIFICATION_FAILURES = "signoff_notification_failures"
TIME_TO_DECISION = "signoff_time_to_decision_seconds"
# Seconds: humans decide in seconds to hours, so the default (millisecond-sized) buckets
# would put every decision in +Inf.
DECISION_BUCKETS = [5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0]
DECISION_BUCKETS += [14400.0, 28800.0, 86400.0, 259200.0]


# --- OpenTelemetry setup ----------------------------------------------------------------------


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OTEL_* variables ask for traces (off when none are set)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def span_exporters(env: Mapping[str, str] | None = None) -> list[SpanExporter]:
    """The exporters `OTEL_TRACES_EXPORTER` names (default otlp, over HTTP/protobuf)."""
    env = os.environ if env is None else env
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    exporters: list[SpanExporter] = []
    for name in filter(None, names):
        if name == "otlp":
            protocol = env.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
            )
            if protocol.strip().lower() == "grpc":
                # Only the HTTP exporter ships; sending HTTP to a gRPC port would fail silently.
                raise ValueError(
                    "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported: use http/protobuf "
                    "(port 4318) or install opentelemetry-exporter-otlp-proto-grpc"
                )
            exporters.append(OTLPSpanExporter())  # endpoint, headers, timeout from OTEL_*
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported (otlp, console)")
    return exporters


def setup_tracing(service: str, env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A global tracer provider exporting as OTEL_* says, or None when tracing is off."""
    env = os.environ if env is None else env
    if not tracing_requested(env):
        return None
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; the process name is the fallback.
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in span_exporters(env):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing on: %s", env.get("OTEL_TRACES_EXPORTER", "otlp"))
    return provider


def client_interceptors(provider: TracerProvider | None) -> list[client.Interceptor]:
    """Interceptors for `Client.connect`: tracing (empty when off); workers inherit them."""
    if provider is None:
        return []
    # Temporal's span first, so ours sets attributes on the span it has just opened.
    return [TracingInterceptor(provider.get_tracer("signoff")), ActionSpans()]


def shutdown_tracing(provider: TracerProvider | None) -> None:
    """Flush and stop the exporters, so the last spans of a stopping process are sent."""
    if provider is not None:
        provider.shutdown()


# --- our span attributes ----------------------------------------------------------------------


def action_attributes(
    request: ActionRequest | None = None,
    *,
    risk: str | None = None,
    status: str | None = None,
    **extra: str | None,
) -> dict[str, str]:
    """Span attributes for an action: type, target, risk, status; never params or tokens."""
    values: dict[str, str | None] = {
        "action": request.action if request else None,
        "target": request.target if request else None,
        "risk": risk or (request.risk if request else None),
        "status": status,
        **extra,
    }
    return {ATTR + key: value for key, value in values.items() if value is not None}


def _set(attributes: Mapping[str, str]) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)


def _status_attributes(status: ActionStatus) -> dict[str, str]:
    risk = status.verdict.risk if status.verdict else None
    return action_attributes(status.request, risk=risk, status=status.status.value)


class ActionSpans(client.Interceptor, worker.Interceptor):
    """Adds signoff attributes to Temporal's spans and remembers each action's trace context."""

    def intercept_client(self, next: client.OutboundInterceptor) -> client.OutboundInterceptor:
        """Wrap client calls: starts and updates of actions."""
        return _ActionSpansClient(next)

    def intercept_activity(
        self, next: worker.ActivityInboundInterceptor
    ) -> worker.ActivityInboundInterceptor:
        """Wrap activity runs: policy, notify and execute."""
        return _ActionSpansActivity(next)


class _ActionSpansClient(client.OutboundInterceptor):
    async def start_workflow(
        self, input: client.StartWorkflowInput
    ) -> client.WorkflowHandle[Any, Any]:
        request = input.args[0] if input.args else None
        if isinstance(request, ActionRequest):
            attrs = input.search_attributes
            typed = attrs if isinstance(attrs, TypedSearchAttributes) else None
            _set(
                action_attributes(
                    request,
                    risk=typed.get(sa.RISK) if typed else None,
                    status=typed.get(sa.STATUS) if typed else None,
                )
            )
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            if carrier:
                input.memo = {**(input.memo or {}), TRACE_MEMO: carrier}
        return await super().start_workflow(input)

    async def start_workflow_update(
        self, input: client.StartWorkflowUpdateInput
    ) -> client.WorkflowUpdateHandle[Any]:
        request = input.args[0] if input.args else None
        if isinstance(request, DecisionRequest):
            _set({ATTR + "decision": request.decision, ATTR + "channel": request.channel})
        return await super().start_workflow_update(input)


class _ActionSpansActivity(worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: worker.ExecuteActivityInput) -> Any:
        arg = input.args[0] if input.args else None
        if isinstance(arg, ActionRequest):
            _set(action_attributes(arg))
        elif isinstance(arg, ExecuteInput | AdmissionCheck):
            _set(action_attributes(arg.request))
        elif isinstance(arg, NotifyInput | NotifyUpdateInput):
            _set({**_status_attributes(arg.status), ATTR + "channel": arg.channel})
        try:
            result = await super().execute_activity(input)
        except BaseException:
            if isinstance(arg, ExecuteInput):
                _set({ATTR + "status": "failed"})
            raise
        evaluated = result.evaluation if isinstance(result, AdmissionResult) else result
        if isinstance(evaluated, Evaluation):
            verdict = evaluated.verdict
            _set({ATTR + "risk": verdict.risk, ATTR + "effect": verdict.effect})
        elif isinstance(result, ExecuteResult):
            _set({ATTR + "status": "succeeded"})
        return result


# --- metrics --------------------------------------------------------------------------------


def prometheus_runtime(bind_address: str) -> Runtime:
    """A Temporal runtime serving SDK and workflow metrics for Prometheus at `bind_address`."""
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=bind_address,
                # Prometheus naming: counters end in _total, durations are seconds. Our counters
                # are therefore created without _total (see workflows/metrics.py).
                counters_total_suffix=True,
                unit_suffix=False,
                durations_as_seconds=True,
                histogram_bucket_overrides={TIME_TO_DECISION: DECISION_BUCKETS},
            )
        )
    )


def worker_runtime(settings: Settings) -> Runtime | None:
    """The worker's runtime with Prometheus on SIGNOFF_WORKER_METRICS_PORT, if set."""
    if settings.worker_metrics_port is None:
        return None
    return prometheus_runtime(f"{settings.worker_metrics_host}:{settings.worker_metrics_port}")


class NotificationMetrics(worker.Interceptor):
    """Counts failed notification deliveries by channel: raised errors and failed refs."""

    def intercept_activity(
        self, next: worker.ActivityInboundInterceptor
    ) -> worker.ActivityInboundInterceptor:
        """Wrap activity runs; only notify and notify_update are counted."""
        return _NotificationMetricsActivity(next)


class _NotificationMetricsActivity(worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: worker.ExecuteActivityInput) -> Any:
        arg = input.args[0] if input.args else None
        if not isinstance(arg, NotifyInput | NotifyUpdateInput):
            return await super().execute_activity(input)
        kind = activity.info().activity_type
        try:
            result = await super().execute_activity(input)
        except BaseException:
            _count_failures(arg.channel, kind, 1)
            raise
        if isinstance(result, NotifyResult):
            _count_failures(arg.channel, kind, sum(1 for r in result.refs if r.error))
        return result


def _count_failures(channel: str, kind: str, count: int) -> None:
    if count:
        activity.metric_meter().create_counter(
            NOTIFICATION_FAILURES, "Failed notification deliveries (each attempt)"
        ).add(count, {"channel": channel, "activity": kind})
