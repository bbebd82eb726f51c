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
# Scraped as signoff_break_glass_total and signoff_break_glass_reviews_overdue_total; the
# gateway's gauge signoff_break_glass_overdue counts the reviews overdue right now.
BREAK_GLASS = "signoff_break_glass"
BREAK_GLASS_OVERDUE = "signoff_break_glass_reviews_overdue"
WINDOWS = "signoff_approval_windows"
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


def break_glass(action: str, outcome: str) -> None:
    """Count a break-glass attempt: `granted` (it ran at once) or `refused`."""
    workflow.metric_meter().create_counter(BREAK_GLASS, "Break-glass attempts by outcome").add(
        1, {"action": action, "outcome": outcome}
    )


def break_glass_overdue(action: str) -> None:
    """Count a break-glass review that passed its `review_within` unreviewed (an alert)."""
    workflow.metric_meter().create_counter(
        BREAK_GLASS_OVERDUE, "Break-glass reviews past their review_within"
    ).add(1, {"action": action})


def window_event(event: str) -> None:
    """Count an approval window event: opened, used, expired or revoked."""
    workflow.metric_meter().create_counter(WINDOWS, "Approval window events").add(
        1, {"event": event}
    )


def revert_failed(action: str) -> None:
    """Count a failed attempt to revert an action (scraped as signoff_revert_failures_total)."""
    workflow.metric_meter().create_counter(
        REVERT_FAILURES, "Failed attempts to revert a reversible action (retried until done)"
    ).add(1, {"action": action})
