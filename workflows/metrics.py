"""Metrics the workflow emits through Temporal's replay-safe metric meter.

The worker's runtime exports them on its Prometheus endpoint with the SDK's own metrics.
The exporter appends `_total` to counters (see `signoff.telemetry.prometheus_runtime`), so
counters are named without it here: `signoff_actions` is scraped as `signoff_actions_total`.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

ACTIONS = "signoff_actions"
REFUSED = "signoff_refused_attempts"
ESCALATIONS = "signoff_escalations"
TIME_TO_DECISION = "signoff_time_to_decision_seconds"
REVERT_FAILURES = "signoff_revert_failures"


def action_finished(action: str, status: str) -> None:
    """Count a finished action by type and final status."""
    workflow.metric_meter().create_counter(ACTIONS, "Actions by final status").add(
        1, {"action": action, "status": status}
    )


def refused(reason: str) -> None:
    """Count a refused decision attempt by reason."""
    workflow.metric_meter().create_counter(REFUSED, "Refused decision attempts").add(
        1, {"reason": reason}
    )


def escalated() -> None:
    """Count an escalation stage reached."""
    workflow.metric_meter().create_counter(ESCALATIONS, "Escalation stages reached").add(1)


def decided(after: timedelta) -> None:
    """Record how long humans took to reach a decision."""
    workflow.metric_meter().create_histogram_float(
        TIME_TO_DECISION, "Time from request to decision", "s"
    ).record(after.total_seconds())


def revert_failed(action: str) -> None:
    """Count a failed attempt to revert an action (scraped as signoff_revert_failures_total)."""
    workflow.metric_meter().create_counter(
        REVERT_FAILURES, "Failed attempts to revert a reversible action (retried until done)"
    ).add(1, {"action": action})
