"""The lifecycle of one action read from its Temporal history, without the ledger."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory

LOCAL_ACTIVITY_MARKER = "core_local_activity"


class HistoryLine(BaseModel):
    """One readable step of an action's lifecycle."""

    at: datetime
    event_id: int
    text: str


async def fetch_lines(client: Client, action_id: str) -> list[HistoryLine]:
    """Fetch the workflow history of an action and describe each meaningful event."""
    history = await client.get_workflow_handle(action_id).fetch_history()
    return describe_history(history)


def describe_history(history: WorkflowHistory) -> list[HistoryLine]:
    """Describe the meaningful events of a workflow history, one line each."""
    activities: dict[int, str] = {}
    updates: dict[int, str] = {}
    lines = []
    for event in history.events:
        text = _describe(event, activities, updates)
        if text is not None:
            at = event.event_time.ToDatetime(tzinfo=UTC)
            lines.append(HistoryLine(at=at, event_id=event.event_id, text=text))
    return lines


def _decode(payload: Payload) -> Any:
    # The pydantic converter writes json/plain; anything else (e.g. encrypted) stays opaque.
    if payload.metadata.get("encoding") == b"json/plain":
        try:
            return json.loads(payload.data)
        except ValueError:
            return None
    if payload.metadata.get("encoding") == b"binary/null":
        return None
    return "<encoded>"


def _first(payloads: Payloads | Sequence[Payload]) -> Any:
    items = payloads.payloads if isinstance(payloads, Payloads) else payloads
    return _decode(items[0]) if items else None


def _summary(event: HistoryEvent) -> str | None:
    if event.HasField("user_metadata") and event.user_metadata.HasField("summary"):
        value = _decode(event.user_metadata.summary)
        return value if isinstance(value, str) else None
    return None


def _describe(
    event: HistoryEvent, activities: dict[int, str], updates: dict[int, str]
) -> str | None:
    t = event.event_type
    if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
        started = event.workflow_execution_started_event_attributes
        request = _first(started.input)
        if isinstance(request, dict):
            glass = request.get("break_glass")
            return (
                f"started {started.workflow_type.name}: {request.get('requester')} requests "
                f"{request.get('action')} on {request.get('target')}"
                + (f", BREAK-GLASS: {glass.get('reason')}" if isinstance(glass, dict) else "")
            )
        return f"started {started.workflow_type.name}"
    if t == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        name = event.activity_task_scheduled_event_attributes.activity_type.name
        activities[event.event_id] = name
        summary = _summary(event)
        return f"activity scheduled: {name}" + (f" ({summary})" if summary else "")
    if t == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
        c = event.activity_task_completed_event_attributes
        return f"activity completed: {activities.get(c.scheduled_event_id, '?')}"
    if t == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
        f = event.activity_task_failed_event_attributes
        name = activities.get(f.scheduled_event_id, "?")
        return f"activity failed: {name}: {f.failure.message}"
    if t == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
        o = event.activity_task_timed_out_event_attributes
        return f"activity timed out: {activities.get(o.scheduled_event_id, '?')}"
    if t == EventType.EVENT_TYPE_MARKER_RECORDED:
        return _describe_marker(event)
    if t == EventType.EVENT_TYPE_TIMER_STARTED:
        summary = _summary(event)
        timeout = event.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        return f"timer started: {summary or 'timer'} in {timeout}"
    if t == EventType.EVENT_TYPE_TIMER_FIRED:
        return f"timer fired: {event.timer_fired_event_attributes.timer_id}"
    if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
        request = event.workflow_execution_update_accepted_event_attributes.accepted_request
        args = _first(request.input.args)
        who = _who(args)
        updates[event.event_id] = f"{request.input.name}{who}"
        return f"update accepted: {request.input.name}{who}"
    if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
        done = event.workflow_execution_update_completed_event_attributes
        name = updates.get(done.accepted_event_id, "update")
        if done.outcome.HasField("failure"):
            return f"update refused: {name}: {done.outcome.failure.message}"
        return f"update completed: {name}"
    if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
        s = event.workflow_execution_signaled_event_attributes
        return f"signal: {s.signal_name}{_who(_first(s.input))}"
    if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
        result = _first(event.workflow_execution_completed_event_attributes.result)
        if isinstance(result, dict):
            error = f" ({result['error']})" if result.get("error") else ""
            return f"completed: {result.get('status')}{error}"
        return "completed"
    if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        return f"failed: {event.workflow_execution_failed_event_attributes.failure.message}"
    if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        return f"terminated: {event.workflow_execution_terminated_event_attributes.reason}"
    if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
        return "timed out"
    if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
        return "cancelled"
    if t == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
        failed = event.workflow_task_failed_event_attributes
        if failed.cause == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW:
            # A reset replays this run from here: say so, since it re-runs what follows.
            reason = failed.failure.message or "no reason given"
            return f"reset from run {failed.base_run_id} ({reason}); now run {failed.new_run_id}"
        return None
    if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
        return "continued as new"
    return None


def _who(args: Any) -> str:
    if not isinstance(args, dict):
        return ""
    person = args.get("approver") or args.get("by") or args.get("reviewer")
    decision = args.get("decision")
    text = f" by {person}" if person else ""
    if decision:
        text += f" ({decision}"
        text += f": {args['reason']})" if args.get("reason") else ")"
    return text


def _describe_marker(event: HistoryEvent) -> str | None:
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != LOCAL_ACTIVITY_MARKER:
        return f"marker: {marker.marker_name}"
    data = marker.details.get("data")
    info = _first(data) if data is not None else None
    name = info.get("activity_type", "?") if isinstance(info, dict) else "?"
    summary = _summary(event)
    outcome = "failed" if marker.HasField("failure") else "completed"
    return f"local activity {outcome}: {name}" + (f" ({summary})" if summary else "")
