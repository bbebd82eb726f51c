"""The action workflow against a real Temporal dev server, real worker and real Postgres ledger."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.admission import Admission
from activities.audit import AuditActivities
from activities.decision_checks import DecisionChecks
from activities.execution import ExecutionActivities
from activities.ledger.store import Ledger
from activities.notify import Notifications
from activities.policy import PolicyActivities
from activities.verify import SignatureActivities
from signoff.models import (
    ActionRequest,
    ActionStatus,
    CancelRequest,
    DecisionRequest,
    ExecutionReport,
    RefusalCode,
    Status,
    action_digest,
)
from tests.conftest import Gate, running_worker, worker_parts
from tests.holds import HoldOne, amendment_and_approval
from tests.signing import SIGNER
from tests.test_replay import replayer
from workers.settings import Settings
from workers.worker import build_worker
from workflows.action import ActionWorkflow
from workflows.messages import AuditKind

pytestmark = pytest.mark.usefixtures("worker")


def patch_ids(events: Sequence[HistoryEvent]) -> list[str]:
    """The patches a run recorded, in order (the SDK's `core_patch` markers)."""
    return [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        for e in events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]


def status_digest(details: str) -> str:
    """The digest shown in the workflow's current details."""
    return details.split("Digest: `")[1].split("`")[0]


async def refused(gate: Gate, handle, approver: str, **kwargs) -> ApplicationError:  # type: ignore[no-untyped-def]
    """Send a decision that must be refused; return the failure's cause."""
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await gate.decide(handle, approver, **kwargs)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "DecisionRefused"
    return cause


async def test_allowed_action_runs_without_approval(gate: Gate) -> None:
    handle = await gate.submit("sandbox-1", {"x": 1})
    outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    assert outcome.result == {"echo": {"x": 1}}
    assert outcome.verdict is not None
    assert outcome.verdict.rule_id == "sandbox-allowed"
    assert outcome.decisions == []


async def test_policy_deny_returns_reason_and_never_executes(gate: Gate) -> None:
    handle = await gate.submit("forbidden")
    outcome = await handle.result()
    assert outcome.status is Status.DENIED_BY_POLICY
    assert outcome.error == "forbidden is off limits"
    assert outcome.result is None


async def test_unknown_action_type_is_denied_by_policy(gate: Gate) -> None:
    handle = await gate.submit("sandbox-1", action="rocket.launch")
    outcome = await handle.result()
    assert outcome.status is Status.DENIED_BY_POLICY
    assert "unknown action type 'rocket.launch'" in (outcome.error or "")


async def test_single_approval_executes(gate: Gate) -> None:
    handle = await gate.submit("one-db", {"n": 1})
    pending = await gate.wait_for(handle, "pending_approval")
    assert pending.eligible_groups == ["dba"]
    assert pending.expires_at is not None
    status = await gate.decide(handle, "alice@example.com", reason="fine")
    assert status.status in (Status.EXECUTING, Status.SUCCEEDED)
    outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    assert [(d.approver, d.decision) for d in outcome.decisions] == [
        ("alice@example.com", "approve")
    ]
    assert outcome.progress[0].approved_by == ["alice@example.com"]
    assert outcome.decided_at is not None


async def test_a_decision_is_timed_when_it_arrives_and_replays_at_that_time(
    gate: Gate,
) -> None:
    # Core may resolve a decision's local activity in an earlier task on replay than it ran
    # in, so a time read after it could replay earlier than it ran: an approval window, opened
    # from the time that ran, then no longer matched its action replayed for a query (the
    # flake of test_windows_slack). A decision's time is its arriving task's start, as is a
    # refused attempt's, and the run replayed (a completed run is not cached) agrees.
    handle = await gate.submit("one-db", {"n": 2})
    await gate.wait_for(handle, "pending_approval")
    await refused(gate, handle, "mallory@example.com")
    await gate.decide(handle, "alice@example.com", reason="fine")
    outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    events = (await handle.fetch_history()).events
    arrivals = []
    for i, event in enumerate(events):
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            task = next(
                e
                for e in reversed(events[:i])
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
            )
            arrivals.append(task.event_time.ToDatetime(tzinfo=UTC))
    assert len(arrivals) == 2
    [attempt] = outcome.refused
    [decision] = outcome.decisions
    # Event times are in nanoseconds; the workflow's clock rounds them to microseconds.
    assert [
        abs(t - a) <= timedelta(microseconds=1)
        for t, a in zip([attempt.at, decision.at], arrivals, strict=True)
    ] == [True, True]
    assert outcome.decided_at == decision.at
    replayed = await handle.query(ActionWorkflow.status)
    assert replayed.decided_at == outcome.decided_at
    assert [d.at for d in replayed.decisions] == [decision.at]
    assert [r.at for r in replayed.refused] == [attempt.at]


async def test_two_of_n_quorum_needs_two_distinct_approvers(gate: Gate) -> None:
    handle = await gate.submit("two-keys")
    await gate.wait_for(handle, "pending_approval")
    first = await gate.decide(handle, "bob@example.com")
    assert first.status is Status.PENDING_APPROVAL
    assert (first.progress[0].min, first.progress[0].approved_by) == (2, ["bob@example.com"])
    second = await gate.decide(handle, "carol@example.com")
    assert second.status is not Status.PENDING_APPROVAL
    outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    assert sorted(outcome.progress[0].approved_by) == ["bob@example.com", "carol@example.com"]


async def test_one_person_in_both_groups_cannot_meet_a_two_group_rule(gate: Gate) -> None:
    # dave is in dba and security; the rule needs one of each, so two people.
    handle = await gate.submit("pair-1", requester="erin@example.com")
    await gate.wait_for(handle, "pending_approval")
    status = await gate.decide(handle, "dave@example.com")
    assert status.status is Status.PENDING_APPROVAL
    status = await gate.decide(handle, "alice@example.com")
    # matching moves dave to security and counts alice for dba
    assert status.status is not Status.PENDING_APPROVAL
    outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    assert {p.group: p.approved_by for p in outcome.progress} == {
        "dba": ["alice@example.com"],
        "security": ["dave@example.com"],
    }


async def test_any_deny_ends_the_action_with_the_reason(gate: Gate) -> None:
    handle = await gate.submit("two-keys")
    await gate.wait_for(handle, "pending_approval")
    await gate.decide(handle, "bob@example.com")
    await gate.decide(handle, "carol@example.com", "deny", reason="use the read replica instead")
    outcome = await handle.result()
    assert outcome.status is Status.DENIED
    assert outcome.error == "Denied by carol@example.com: use the read replica instead"
    assert outcome.result is None


@pytest.mark.parametrize(
    ("approver", "extra", "code"),
    [
        ("agent:bot", {}, RefusalCode.AGENT_APPROVER),
        ("dave@example.com", {}, RefusalCode.SELF_APPROVAL),  # the agent's owner
        ("alice@example.com", {"on_behalf_of": "alice@example.com"}, RefusalCode.SELF_APPROVAL),
        ("erin@example.com", {}, RefusalCode.NOT_ELIGIBLE),
        ("oscar@example.com", {}, RefusalCode.NOT_ELIGIBLE),  # on-call only after escalation
        ("mallory@example.com", {}, RefusalCode.UNKNOWN_PRINCIPAL),
    ],
)
async def test_refused_attempts_are_refused_and_recorded(
    gate: Gate, client: Client, approver: str, extra: dict[str, str], code: RefusalCode
) -> None:
    handle = await gate.submit("one-db", **extra)
    await gate.wait_for(handle, "pending_approval")
    cause = await refused(gate, handle, approver)
    assert approver in cause.message or code is RefusalCode.NOT_ELIGIBLE
    status = await handle.query(ActionWorkflow.status)
    assert status.status is Status.PENDING_APPROVAL
    assert [(r.approver, r.code) for r in status.refused] == [(approver, code)]
    assert status.decisions == []
    # The attempt is in history too: an accepted update whose outcome is that failure.
    history = await handle.fetch_history()
    failures = [
        e.workflow_execution_update_completed_event_attributes.outcome.failure.message
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED
    ]
    assert failures == [cause.message]
    await handle.terminate("test done")


async def test_requester_cannot_approve_own_request(gate: Gate) -> None:
    handle = await gate.submit("one-db", requester="alice@example.com")
    await gate.wait_for(handle, "pending_approval")
    cause = await refused(gate, handle, "alice@example.com")
    assert "requester" in cause.message
    status = await handle.query(ActionWorkflow.status)
    assert status.refused[0].code is RefusalCode.SELF_APPROVAL
    await handle.terminate("test done")


async def test_digest_mismatch_is_refused(gate: Gate) -> None:
    handle = await gate.submit("one-db", {"statement": "select 1"})
    await gate.wait_for(handle, "pending_approval")
    other = action_digest("noop", "one-db", {"statement": "drop table users"})
    cause = await refused(gate, handle, "alice@example.com", digest=other)
    assert "does not match" in cause.message
    status = await handle.query(ActionWorkflow.status)
    assert status.refused[0].code is RefusalCode.DIGEST_MISMATCH
    assert status.status is Status.PENDING_APPROVAL
    await handle.terminate("test done")


async def test_duplicate_decision_is_refused(gate: Gate) -> None:
    handle = await gate.submit("two-keys")
    await gate.wait_for(handle, "pending_approval")
    await gate.decide(handle, "bob@example.com")
    cause = await refused(gate, handle, "bob@example.com")
    assert "already decided" in cause.message
    status = await handle.query(ActionWorkflow.status)
    assert len(status.decisions) == 1
    assert status.refused[0].code is RefusalCode.DUPLICATE
    await handle.terminate("test done")


async def test_deny_without_reason_is_refused(gate: Gate) -> None:
    handle = await gate.submit("one-db")
    await gate.wait_for(handle, "pending_approval")
    await refused(gate, handle, "alice@example.com", decision="deny")
    assert (await handle.query(ActionWorkflow.status)).status is Status.PENDING_APPROVAL
    await handle.terminate("test done")


async def test_a_decision_sent_while_the_action_is_admitted_is_recorded_after_its_rows(
    client: Client, settings: Settings, ledger: Ledger
) -> None:
    # Update-with-start: the decision reaches the run in its first task, while the admission
    # (which numbers its own rows) runs. Its refusal used to take the admission's first place:
    # the ledger refused one of the two and the action never left `evaluating`.
    action_id = f"act-{uuid.uuid4()}"
    request = ActionRequest(
        action="noop", target="one-db", params={}, justification="t", requester="agent:bot"
    )
    early = DecisionRequest(
        approver="alice@example.com",
        decision="approve",
        digest=action_digest("noop", "one-db", {}),
        reason="too early",
    )
    start = WithStartWorkflowOperation(
        ActionWorkflow.run,
        SIGNER.request(request, action_id),
        id=action_id,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await client.execute_update_with_start_workflow(
            ActionWorkflow.decide,
            SIGNER.decision(early, action_id),
            start_workflow_operation=start,
        )
    assert isinstance(info.value.cause, ApplicationError)
    assert "evaluating, not pending" in info.value.cause.message
    handle = await start.workflow_handle()
    status = await Gate(client, settings).wait_for(handle, "pending_approval")
    assert [(r.approver, r.code) for r in status.refused] == [
        ("alice@example.com", RefusalCode.NOT_PENDING)
    ]
    rows = await ledger.events(action_id)
    assert [r.seq for r in rows] == list(range(len(rows)))
    kinds = [r.kind for r in rows]
    assert kinds[0] == AuditKind.REQUESTED, kinds
    assert kinds[-1] == AuditKind.REFUSED, kinds
    await handle.terminate("test done")


async def test_decision_once_no_longer_pending_is_refused_and_recorded(gate: Gate) -> None:
    handle = await gate.submit("one-db", {"sleep_seconds": 2})
    await gate.wait_for(handle, "pending_approval")
    await gate.decide(handle, "alice@example.com")
    cause = await refused(gate, handle, "bob@example.com")
    assert "not pending" in cause.message
    outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    assert [r.code for r in outcome.refused] == [RefusalCode.NOT_PENDING]
    # Once closed, Temporal itself rejects the update; the gateway answers 409.
    with pytest.raises(RPCError, match="already completed"):
        await gate.decide(handle, "dave@example.com")


async def test_escalation_widens_approvers_then_expiry_fails_closed(gate: Gate) -> None:
    handle = await gate.submit("esc-1")
    await gate.wait_for(handle, "pending_approval")
    await refused(gate, handle, "oscar@example.com")  # on-call cannot decide yet
    for _ in range(100):
        status = await handle.query(ActionWorkflow.status)
        if status.escalation_level == 1:
            break
        await asyncio.sleep(0.1)
    assert status.escalation_level == 1
    assert status.eligible_groups == ["dba", "oncall"]
    # a second action, left alone, expires
    other = await gate.submit("esc-2")
    decided = await gate.decide(handle, "oscar@example.com")
    assert decided.status is not Status.PENDING_APPROVAL
    assert (await handle.result()).status is Status.SUCCEEDED
    expired = await other.result()
    assert expired.status is Status.EXPIRED
    assert expired.result is None
    assert expired.escalation_level == 1
    with pytest.raises(Exception):  # noqa: B017, PT011 - closed workflows reject updates
        await gate.decide(other, "alice@example.com")


async def test_cancel_only_by_requester(gate: Gate) -> None:
    handle = await gate.submit("one-db")
    await gate.wait_for(handle, "pending_approval")
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(
            ActionWorkflow.cancel, SIGNER.cancel(CancelRequest(by="alice@example.com"), handle.id)
        )
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.type == "NotRequester"
    status = await handle.execute_update(
        ActionWorkflow.cancel,
        SIGNER.cancel(CancelRequest(by="agent:bot", reason="plan changed"), handle.id),
    )
    assert status.status is Status.CANCELLED
    outcome = await handle.result()
    assert outcome.status is Status.CANCELLED
    assert outcome.error == "cancelled by agent:bot: plan changed"


async def test_executor_failure_fails_the_action(gate: Gate, ledger: Ledger) -> None:
    handle = await gate.submit("sandbox-1", {"fail": "disk full"})
    outcome = await handle.result()
    assert outcome.status is Status.FAILED
    assert "disk full" in (outcome.error or "")
    # Shape v10: a failure's rows are the run's, at the places its write-ahead row kept.
    rows = await ledger.events(handle.id)
    assert [(r.seq, r.kind) for r in rows] == ALLOWED_ROWS
    assert rows[2].payload["outcome_seq"] == 3
    assert rows[3].payload == {"result": None, "error": outcome.error}
    assert rows[4].payload == {"status": "failed", "error": outcome.error}
    assert await ledger_writes(handle) == ["audit execution_result, outcome"]


async def test_signal_decision_is_accepted_and_refusals_recorded(gate: Gate) -> None:
    handle = await gate.submit("one-db")
    status = await gate.wait_for(handle, "pending_approval")
    await handle.signal(
        ActionWorkflow.decision,
        SIGNER.decision(
            DecisionRequest(approver="agent:bot", decision="approve", digest=status.digest),
            handle.id,
        ),
    )
    await handle.signal(
        ActionWorkflow.decision,
        SIGNER.decision(
            DecisionRequest(approver="alice@example.com", decision="approve", digest=status.digest),
            handle.id,
        ),
    )
    outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    assert [r.code for r in outcome.refused] == [RefusalCode.AGENT_APPROVER]


async def test_an_agents_approval_is_refused_as_an_agents_when_a_person_approves_first(
    client: Client, settings: Settings, ledger: Ledger
) -> None:
    # Both arrive while the action is pending, in one workflow task; the person's check
    # finishes first and approves. The agent's attempt is still on record as an agent's, not
    # as "not pending".
    racing = settings.model_copy(update={"task_queue": settings.task_queue + "-race"})
    gate = Gate(client, racing)
    async with running_worker(client, racing, ledger):
        handle = await gate.submit("one-db")
        status = await gate.wait_for(handle, "pending_approval")
    for approver in ("agent:bot", "alice@example.com"):
        request = DecisionRequest(approver=approver, decision="approve", digest=status.digest)
        await handle.signal(ActionWorkflow.decision, SIGNER.decision(request, handle.id))
    hold = HoldOne("check_decision", lambda check: check.approver == "agent:bot")
    async with build_worker(client, racing, worker_parts(racing, ledger), interceptors=[hold]):
        outcome = await handle.result()
    assert hold.released.is_set()  # the agent's check did finish last
    assert [d.approver for d in outcome.decisions] == ["alice@example.com"]
    assert outcome.status is Status.SUCCEEDED
    assert [(r.approver, r.code) for r in outcome.refused] == [
        ("agent:bot", RefusalCode.AGENT_APPROVER)
    ]
    refused = [e for e in await ledger.events(handle.id) if e.kind == AuditKind.REFUSED]
    assert [(e.actor, e.payload["code"]) for e in refused] == [("agent:bot", "agent_approver")]
    # The run that took the new answer says so in its history, and replays.
    history = await handle.fetch_history()
    assert "who-before-when" in patch_ids(history.events)
    replayed = await replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None


# Which of dave's checks finishes after alice's approval: the signature check (the state is
# then checked after it, and found decided) or the directory lookup after that.
AMEND_CHECKS = {
    "signature": ("verify_signature", lambda _: True),
    "lookup": ("resolve_principal", lambda lookup: lookup.id == "dave@example.com"),
}


@pytest.mark.parametrize("late_check", AMEND_CHECKS)
async def test_an_owners_amendment_is_refused_as_self_approval_when_a_person_approves_first(
    client: Client, settings: Settings, ledger: Ledger, late_check: str
) -> None:
    # dave owns the requesting agent and is in dba: he may not amend its action (approve with
    # changes). His amendment and alice's approval arrive in one workflow task; her check
    # finishes first. His attempt is still on record as self-approval, not as "not pending".
    racing = settings.model_copy(update={"task_queue": settings.task_queue + "-amend-race"})
    gate = Gate(client, racing)
    async with running_worker(client, racing, ledger):
        handle = await gate.submit("one-db", {"rows": 1})
        status = await gate.wait_for(handle, "pending_approval")
    sends = await amendment_and_approval(
        client, handle, status, "dave@example.com", "alice@example.com"
    )
    activity_type, held = AMEND_CHECKS[late_check]
    hold = HoldOne(activity_type, held, after="check_decision")
    async with build_worker(client, racing, worker_parts(racing, ledger), interceptors=[hold]):
        amended, approved = await asyncio.gather(*sends, return_exceptions=True)
        outcome = await handle.result()
    assert hold.released.is_set()  # dave's check did finish last
    assert isinstance(approved, ActionStatus), approved
    assert isinstance(amended, WorkflowUpdateFailedError), amended
    assert isinstance(amended.cause, ApplicationError)
    assert amended.cause.details[0]["code"] == RefusalCode.SELF_APPROVAL
    assert outcome.status is Status.SUCCEEDED
    assert outcome.superseded_by is None
    assert [(r.approver, r.kind, r.code) for r in outcome.refused] == [
        ("dave@example.com", "amend", RefusalCode.SELF_APPROVAL)
    ]


async def test_cel_condition_decides_which_rule_applies(gate: Gate) -> None:
    small = await (await gate.submit("cel-1", {"rows": 10})).result()
    assert small.status is Status.SUCCEEDED
    assert small.verdict is not None
    assert small.verdict.rule_id == "small-noop-allowed"
    big = await gate.submit("cel-1", {"rows": 5000})
    status = await gate.wait_for(big, "pending_approval")
    assert status.verdict is not None
    assert status.verdict.rule_id == "big-noop-needs-dba"
    await big.terminate("test done")


async def test_search_attributes_and_details_show_what_waits_on_whom(
    gate: Gate, client: Client
) -> None:
    handle = await gate.submit("one-db")
    await gate.wait_for(handle, "pending_approval")
    query = f'WorkflowId = "{handle.id}" AND SignoffStatus = "pending_approval"'
    found = []
    for _ in range(50):
        found = [w async for w in client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.1)
    assert [w.id for w in found] == [handle.id]
    attrs = found[0].typed_search_attributes
    values = {pair.key.name: pair.value for pair in attrs}
    assert values["SignoffAction"] == "noop"
    assert values["SignoffTarget"] == "one-db"
    assert values["SignoffRequester"] == "agent:bot"
    assert values["SignoffRisk"] == "medium"
    assert list(values["SignoffGroups"]) == ["dba"]
    # The UI reads current details through this built-in query.
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert "Waits for: 0 of 1 from dba" in metadata.current_details
    assert (
        status_digest(metadata.current_details)
        == (await handle.query(ActionWorkflow.status)).digest
    )
    await handle.terminate("test done")


async def test_pending_approval_survives_worker_replacement(
    client: Client, settings: Settings, ledger: Ledger
) -> None:
    other = settings.model_copy(update={"task_queue": settings.task_queue + "-replaced"})
    gate = Gate(client, other)
    async with running_worker(client, other, ledger):
        handle = await gate.submit("one-db")
        await gate.wait_for(handle, "pending_approval")
    # The first worker is gone; a new one picks the action up from history.
    async with running_worker(client, other, ledger):
        await gate.decide(handle, "alice@example.com")
        outcome: ActionStatus = await handle.result()
    assert outcome.status is Status.SUCCEEDED


async def test_caller_mode_runs_in_the_caller_after_approval_and_records_the_report(
    gate: Gate, ledger: Ledger
) -> None:
    handle = await gate.submit("one-db", {"n": 7}, action="report.build", execution="caller")
    await gate.wait_for(handle, "pending_approval")
    early = SIGNER.report(ExecutionReport(by="agent:bot", result={"rows": 7}), handle.id)
    with pytest.raises(WorkflowUpdateFailedError):  # nothing to report before approval
        await handle.execute_update(ActionWorkflow.report, early)
    await gate.decide(handle, "alice@example.com")
    await gate.wait_for(handle, "executing")
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(
            ActionWorkflow.report,
            SIGNER.report(ExecutionReport(by="alice@example.com", result="forged"), handle.id),
        )
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.type == "NotRequester"
    final = await handle.execute_update(ActionWorkflow.report, early)
    assert final.status is Status.SUCCEEDED
    outcome = await handle.result()
    assert outcome.result == {"rows": 7}
    kinds = [(e.kind, e.payload.get("runs_in")) for e in await ledger.events(handle.id)]
    assert ("execution_started", "caller") in kinds
    assert [k for k, _ in kinds][-2:] == ["execution_result", "outcome"]


async def test_caller_mode_error_report_fails_the_action(gate: Gate) -> None:
    handle = await gate.submit("sandbox-1", action="report.build", execution="caller")
    await gate.wait_for(handle, "executing")
    await handle.execute_update(
        ActionWorkflow.report,
        SIGNER.report(ExecutionReport(by="agent:bot", error="ValueError: bad month"), handle.id),
    )
    outcome = await handle.result()
    assert outcome.status is Status.FAILED
    assert outcome.error == "ValueError: bad month"


# An allowed action's ledger rows, (seq, kind), in order.
ALLOWED_ROWS = [
    (0, "requested"),
    (1, "verdict"),
    (2, "execution_started"),
    (3, "execution_result"),
    (4, "outcome"),
]


async def ledger_writes(handle: WorkflowHandle[ActionWorkflow, ActionStatus]) -> list[str]:
    """The summaries of the ledger writes in the action's history, in order."""
    history = await handle.fetch_history()
    return [
        json.loads(e.user_metadata.summary.data)
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
        and e.user_metadata.summary.data.startswith(b'"audit ')
    ]


async def test_write_ahead_row_shares_the_verdicts_or_the_deciding_write(
    gate: Gate, ledger: Ledger
) -> None:
    # Shape v9: an allowed action's admission writes the request, the verdict and the
    # write-ahead row, then claims the execution, in its one local activity. Shape v10: the
    # executor's activity writes the success's rows, so the run writes no row itself.
    allowed = await gate.submit("sandbox-1")
    await allowed.result()
    assert await ledger_writes(allowed) == []
    rows = await ledger.events(allowed.id)
    assert [r.kind for r in rows] == [
        "requested",
        "verdict",
        "execution_started",
        "execution_result",
        "outcome",
    ]
    assert [r.seq for r in rows] == [0, 1, 2, 3, 4]
    # The run claimed the action's one execution: another run asking finds that run's claim.
    held = await ledger.claim_execution(allowed.id, "another-run", rows[0].digest)
    assert not held.granted
    assert held.run_id == rows[0].run_id
    approved = await gate.submit("two-keys")
    await gate.wait_for(approved, "pending_approval")
    await gate.decide(approved, "bob@example.com")
    await gate.decide(approved, "carol@example.com")
    assert (await approved.result()).status is Status.SUCCEEDED
    writes = await ledger_writes(approved)
    assert writes[-2:] == [
        "audit decision",
        "audit decision, execution_started, claim execution",
    ]
    # The deciding write kept the two places after its write-ahead row for the executor's rows.
    rows = await ledger.events(approved.id)
    assert [r.seq for r in rows] == list(range(len(rows)))
    start = next(r for r in rows if r.kind == "execution_started")
    assert start.payload["outcome_seq"] == start.seq + 1
    assert [r.kind for r in rows[start.seq + 1 :]] == ["execution_result", "outcome"]


async def test_rows_written_while_the_executor_runs_come_after_its_outcome(
    gate: Gate, ledger: Ledger
) -> None:
    # Shape v10: the run keeps the outcome's two places when it schedules the executor, so a
    # refusal it records meanwhile takes the place after them, and no row meets another.
    handle = await gate.submit("sandbox-1", {"sleep_seconds": 1})
    await gate.wait_for(handle, "executing")
    with pytest.raises(WorkflowUpdateFailedError):
        await gate.decide(handle, "bob@example.com")
    outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    assert outcome.result == {"echo": {"sleep_seconds": 1}}
    rows = await ledger.events(handle.id)
    assert [(r.seq, r.kind) for r in rows] == [*ALLOWED_ROWS, (5, "refused")]
    assert rows[2].payload["outcome_seq"] == 3
    assert rows[3].payload == {"result": outcome.result, "error": None}
    # The refusal was written first, the executor's rows when it was done.
    assert rows[5].id < rows[3].id
    assert rows[5].at < rows[3].at


async def test_a_new_run_records_one_patch_marker_and_checks_before_its_ledger_row(
    gate: Gate,
) -> None:
    # Shape v11 (implying v10 to v5): one patch marker (and one TemporalChangeVersion
    # upsert) per run instead of one per patch; the request admitted, and its first rows
    # written, in one local activity; the decision's signature check beside its principal
    # lookups.
    approved = await gate.submit("two-keys")
    await gate.wait_for(approved, "pending_approval")
    await gate.decide(approved, "bob@example.com")
    await gate.decide(approved, "carol@example.com")
    assert (await approved.result()).status is Status.SUCCEEDED
    events = (await approved.fetch_history()).events
    assert patch_ids(events) == ["shape-v11"]
    versions = [
        e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields[
            "TemporalChangeVersion"
        ].data
        for e in events
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
        and "TemporalChangeVersion"
        in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    ]
    assert versions == [b'["shape-v11"]']
    # Each decision's task: one local activity checks its signature and looks up approver
    # and requester, before the decision's ledger row (with the write-ahead row and claim).
    summaries = [
        json.loads(e.user_metadata.summary.data)
        for e in events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    ]
    requester = (await approved.query(ActionWorkflow.status)).request.requester
    # The first task: the request's signature, earlier runs and the policy in one step.
    assert summaries[0] == "admit request: signature, earlier runs, policy, then its ledger rows"
    assert not [s for s in summaries if s.startswith("audit requested")]
    assert not [s for s in summaries if s.startswith(("verify request", "check earlier", "eval"))]
    deciding = summaries.index("audit decision, execution_started, claim execution")
    assert summaries[deciding - 1] == (
        f"check decision signature, resolve approver carol@example.com and requester {requester}"
    )
    assert summaries[deciding - 3 : deciding - 1] == [
        f"check decision signature, resolve approver bob@example.com and requester {requester}",
        "audit decision",
    ]
    assert not [s for s in summaries if s.startswith(("verify decision", "resolve "))]


def test_activity_names_recorded_in_history_never_change() -> None:
    # The workflow calls activities by reference; their names, fixed once in each
    # `@activity.defn`, are what recorded histories (and running workflows) hold.
    called: dict[Callable[..., Any], str] = {
        PolicyActivities.evaluate_policy: "evaluate_policy",
        PolicyActivities.resolve_principal: "resolve_principal",
        SignatureActivities.verify_signature: "verify_signature",
        AuditActivities.record_audit_events: "record_audit_events",
        AuditActivities.check_run: "check_run",
        AuditActivities.claim_execution_activity: "claim_execution",
        AuditActivities.record_and_claim: "record_and_claim",
        AuditActivities.record_outcome: "record_outcome",
        DecisionChecks.check_decision: "check_decision",
        Admission.admit_request: "admit_request",
        ExecutionActivities.execute_action: "execute_action",
        Notifications.notify: "notify",
        Notifications.notify_update: "notify_update",
    }
    for method, name in called.items():
        assert activity._Definition.must_from_callable(method).name == name
