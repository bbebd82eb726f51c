"""Traces of the gateway's FastAPI app, when `OTEL_*` asks for them.

Apart from `workers.telemetry` so a worker never loads FastAPI's instrumentation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from starlette.types import ASGIApp
from temporalio import client

from workers.gateway.middleware.join_trace import JoinActionTrace

# Health probes and scrapes would drown the interesting spans.
UNTRACED_URLS = "/healthz,/readyz,/metrics"


def instrument_app(
    app: Any, provider: TracerProvider, client_of: Callable[[], client.Client]
) -> None:
    """Trace the gateway's FastAPI app; decision requests continue their action's trace."""
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=UNTRACED_URLS,
        exclude_spans=["receive", "send"],
    )
    # Outside the OpenTelemetry middleware: it reads the parent context from the headers.
    instrumented = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return JoinActionTrace(instrumented(), client_of)

    app.build_middleware_stack = build_middleware_stack
