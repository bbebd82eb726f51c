"""Approval windows: a scoped approval allows only its holder's requests in scope, until it ends.

Real Temporal (dev server for visibility, the time-skipping server for the expiry), real
Postgres ledger, real workers; decisions and revokes signed with the test gateway key.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.ledger.store import Ledger
from activities.windows import LiveWindows
from policies.lint import condition_warnings
from policies.loader import PolicyError, load_directory, load_policy
from signoff.executor import registry
from signoff.models import (
    ActionStatus,
    ApprovalWindow,
    DecisionRequest,
    RefusalCode,
    RefusedAttempt,
    Status,
    WindowRevokeRequest,
)
from tests.conftest import DATA, Gate, running_worker, worker_parts
from tests.gateway_fixtures import api, build_app
from tests.signing import SIGNER
from tests.test_metrics import free_port, scrape_until, value
from workers import telemetry
from workers.audit.report import records, render
from workers.audit.verify import compare, ledger_view, temporal_view
from workers.dev.binaries import temporal_test_server
from workers.gateway.service import ActionService
from workers.settings import Settings
from workers.temporal import connect
from workers.worker import build_worker
from workflows import search_attributes
from workflows.action import ActionWorkflow
from workflows.errors import ActionNotPending
from workflows.messages import WindowStart, WindowUseRequest, window_id_for
from workflows.window import WindowWorkflow

STAGING = {"env": "staging"}


async def approve(
    gate: Gate,
    handle: WorkflowHandle[ActionWorkflow, ActionStatus],
    approver: str,
    window: timedelta | None,
) -> ActionStatus:
    """Approve as the gateway would, asking for a window."""
    status = await gate.wait_for(handle, "pending_approval")
    request = DecisionRequest(
        approver=approver, decision="approve", digest=status.digest, window=window
    )
    return await handle.execute_update(
        ActionWorkflow.decide, SIGNER.decision(request, handle.id, now=await gate._now())
    )


def refusal_of(err: WorkflowUpdateFailedError) -> RefusedAttempt:
    """The refused attempt a failed update carries."""
    cause = err.cause
    assert isinstance(cause, ApplicationError)
    return RefusedAttempt.model_validate(cause.details[0])


async def listed(client: Client, window_id: str) -> None:
    """Wait (bounded) until visibility lists the window as active: the index lags a little."""
    query = f'WorkflowId = "{window_id}" AND SignoffWindowStatus = "active"'
    for _ in range(100):
        if [w async for w in client.list_workflows(query)]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{window_id} never listed")


async def opened(
    client: Client, gate: Gate, window: timedelta = timedelta(minutes=30)
) -> tuple[ActionStatus, WorkflowHandle[ApprovalWindow, ApprovalWindow]]:
    """An approved deploy whose approver granted a window, and that window's handle."""
    first = await gate.submit("deploy-app", STAGING)
    await approve(gate, first, "bob@example.com", window)
    outcome = await first.result()
    assert outcome.status is Status.SUCCEEDED
    assert outcome.opened_window == window_id_for(first.id)
    await listed(client, outcome.opened_window)
    return outcome, client.get_workflow_handle(outcome.opened_window, result_type=ApprovalWindow)


async def test_window_allows_uses_in_scope_and_refuses_everything_else(
    client: Client, gate: Gate, worker: None, ledger: Ledger
) -> None:
    first, handle = await opened(client, gate)
    window = await handle.query(WindowWorkflow.status)
    assert window.status == "active"
    assert window.holder == "agent:bot"
    assert window.approvers == ["bob@example.com"]
    assert window.rule_id == "windowed-deploys"
    assert "deploy-app" in window.scope
    assert window.expires_at == first.decided_at + timedelta(minutes=30)  # type: ignore[operator]

    # In scope, same requester: allowed by the window, its own action, rows naming the window.
    use = await (await gate.submit("deploy-app", {"env": "staging", "n": 2})).result()
    assert use.status is Status.SUCCEEDED
    assert use.decisions == []
    assert use.verdict is not None
    assert use.verdict.window_id == window.id
    assert use.verdict.effect == "allow"
    assert use.verdict.rule_id == "windowed-deploys"
    rows = await ledger.events(use.id)
    verdict_row = next(r for r in rows if r.kind == "verdict")
    assert verdict_row.payload["window_id"] == window.id
    window = await handle.query(WindowWorkflow.status)
    assert [u.action_id for u in window.uses] == [use.id]
    kinds = [r.kind for r in await ledger.events(window.id)]
    assert kinds == ["window_created", "window_used"]

    # The evidence lists the window apart from the actions, and the ledger agrees with Temporal.
    # As `signoff audit export` reads the ledger: every action and window of the period.
    ours = {first.id, use.id, window.id}
    items = [r async for r in records(ledger, first.created_at - timedelta(seconds=1), None)]
    items = [r for r in items if r.action_id in ours]
    evidence = json.loads(render(items, "json", generated_at=datetime.now(UTC)))
    assert sorted(a["action_id"] for a in evidence["actions"]) == sorted([first.id, use.id])
    allowed = next(a for a in evidence["actions"] if a["action_id"] == use.id)
    assert allowed["allowed_by_window"] == window.id
    assert [w["window_id"] for w in evidence["windows"]] == [window.id]
    assert evidence["windows"][0]["uses"] == [f"{use.id} (noop on deploy-app)"]
    assert evidence["windows"][0]["approvers"] == ["bob@example.com"]
    html = render(items, "html", generated_at=datetime.now(UTC))
    assert f'data-window-id="{window.id}"' in html
    temporal = await temporal_view(client, window.id)
    assert temporal is not None
    assert compare(ledger_view(window.id, await ledger.events(window.id)), temporal) == []

    # Outside the scope, or not the holder: the normal rules (one security approver).
    outside = [
        await gate.submit("deploy-db", STAGING),  # another target
        await gate.submit("deploy-app", {"env": "prod"}),  # params outside the scope
        await gate.submit("deploy-app", STAGING, requester="alice@example.com"),  # not holder
        # the holder acting for someone else than the window was granted for
        await gate.submit("deploy-app", STAGING, on_behalf_of="alice@example.com"),
    ]
    for other in outside:
        status = await gate.wait_for(other, "pending_approval")
        assert status.verdict is not None
        assert status.verdict.window_id is None
    assert len((await handle.query(WindowWorkflow.status)).uses) == 1


async def test_an_agent_cannot_use_someone_elses_window_by_asking_it_directly(
    client: Client, gate: Gate, worker: None
) -> None:
    _, handle = await opened(client, gate)
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(
            WindowWorkflow.use,
            WindowUseRequest(
                action_id="act-x",
                requester="alice@example.com",
                rule_id="windowed-deploys",
                action="noop",
                target="deploy-app",
                digest="0" * 64,
            ),
        )
    assert "agent:bot's, not alice@example.com's" in str(caught.value.cause)
    assert (await handle.query(WindowWorkflow.status)).uses == []


async def test_a_window_workflow_started_without_an_approval_allows_nothing(
    client: Client, gate: Gate, settings: Settings, worker: None, ledger: Ledger
) -> None:
    # Someone with Temporal access starts a window for the agent without any approval.
    fake_action = f"act-{uuid.uuid4()}"
    now = (await (await gate.submit("sandbox-1")).result()).created_at
    fake = await client.start_workflow(
        WindowWorkflow.run,
        WindowStart(
            action_id=fake_action,
            digest="0" * 64,
            rule_id="windowed-deploys",
            scope="true",
            holder="agent:bot",
            approvers=["bob@example.com"],
            created_at=now,
            expires_at=now + timedelta(hours=1),
            duration=timedelta(hours=1),
        ),
        id=window_id_for(fake_action),
        task_queue=settings.task_queue,
        search_attributes=None,
    )
    # It ends at once, on the record, and never lists as active.
    ended = await fake.result()
    assert ended.status == "revoked"
    assert ended.reason == f"not opened by the approval of {fake_action}"
    assert [r.kind for r in await ledger.events(fake.id)] == ["window_revoked"]
    status = await gate.wait_for(await gate.submit("deploy-app", STAGING), "pending_approval")
    assert status.verdict is not None
    assert status.verdict.window_id is None
    assert (await fake.query(WindowWorkflow.status)).uses == []

    # Defence in depth: a window counts only as the action it names approved it, exactly.
    windows = LiveWindows(client, settings.task_queue)
    plain = await gate.submit("deploy-app", STAGING)
    await approve(gate, plain, "bob@example.com", None)  # approved without a window
    await plain.result()
    claimed = ended.model_copy(
        update={"id": window_id_for(plain.id), "action_id": plain.id, "status": "active"}
    )
    assert not await windows.vouched(claimed)
    _, real = await opened(client, gate)
    window = await real.query(WindowWorkflow.status)
    assert await windows.vouched(window)
    assert not await windows.vouched(window.model_copy(update={"scope": "true"}))
    longer = window.expires_at + timedelta(minutes=1)
    assert not await windows.vouched(window.model_copy(update={"expires_at": longer}))
    assert not await windows.vouched(window.model_copy(update={"holder": "alice@example.com"}))


async def test_window_longer_than_the_rule_allows_is_refused_clearly(
    gate: Gate, worker: None
) -> None:
    handle = await gate.submit("deploy-app", STAGING)
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await approve(gate, handle, "bob@example.com", timedelta(hours=2))
    attempt = refusal_of(caught.value)
    assert attempt.code is RefusalCode.WINDOW_TOO_LONG
    assert attempt.message == (
        "window 2h is longer than rule 'windowed-deploys''s window max_duration 1h"
    )
    # A rule that offers no window: refused too, nothing approved.
    other = await gate.submit("one-db")
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await approve(gate, other, "alice@example.com", timedelta(minutes=5))
    assert refusal_of(caught.value).code is RefusalCode.WINDOW_NOT_OFFERED
    assert (await other.query(ActionWorkflow.status)).status is Status.PENDING_APPROVAL


async def test_window_added_to_a_signed_decision_without_the_gateway_is_refused(
    gate: Gate, worker: None
) -> None:
    handle = await gate.submit("deploy-app", STAGING)
    status = await gate.wait_for(handle, "pending_approval")
    signed = SIGNER.decision(
        DecisionRequest(approver="bob@example.com", decision="approve", digest=status.digest),
        handle.id,
    )
    forged = signed.model_copy(update={"window": timedelta(hours=1)})
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(ActionWorkflow.decide, forged)
    assert refusal_of(caught.value).code is RefusalCode.SIGNATURE_MISMATCH
    status = await handle.query(ActionWorkflow.status)
    assert status.status is Status.PENDING_APPROVAL
    assert status.opened_window is None


async def test_window_revoked_early_by_its_approver_and_not_by_others(
    client: Client, gate: Gate, worker: None, ledger: Ledger
) -> None:
    _, handle = await opened(client, gate)
    # Carol is in security but did not approve it, and is in no revoking group.
    for who in ("carol@example.com", "agent:bot"):
        with pytest.raises(WorkflowUpdateFailedError) as caught:
            await handle.execute_update(
                WindowWorkflow.revoke, SIGNER.window_revoke(WindowRevokeRequest(by=who), handle.id)
            )
        assert refusal_of(caught.value).code is RefusalCode.NOT_REVOKER
    # Unsigned: refused too.
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(
            WindowWorkflow.revoke, WindowRevokeRequest(by="bob@example.com")
        )
    assert refusal_of(caught.value).code is RefusalCode.UNSIGNED
    window = await handle.query(WindowWorkflow.status)
    assert window.status == "active"
    assert [r.approver for r in window.refused] == [
        "carol@example.com",
        "agent:bot",
        "bob@example.com",
    ]

    revoked = await handle.execute_update(
        WindowWorkflow.revoke,
        SIGNER.window_revoke(
            WindowRevokeRequest(by="bob@example.com", reason="done for today"), handle.id
        ),
    )
    assert revoked.status == "revoked"
    assert revoked.revoked_by == "bob@example.com"
    assert (await handle.result()).status == "revoked"
    # A request in scope now takes the normal rules.
    status = await gate.wait_for(await gate.submit("deploy-app", STAGING), "pending_approval")
    assert status.verdict is not None
    assert status.verdict.window_id is None
    kinds = [r.kind for r in await ledger.events(handle.id)]
    assert kinds == ["window_created", "refused", "refused", "refused", "window_revoked"]


async def test_auditors_may_revoke_as_the_rules_revoking_group(
    client: Client, gate: Gate, worker: None
) -> None:
    _, handle = await opened(client, gate)
    revoked = await handle.execute_update(
        WindowWorkflow.revoke,
        SIGNER.window_revoke(WindowRevokeRequest(by="erin@example.com"), handle.id),
    )
    assert revoked.status == "revoked"


# --- the expiry, on the time-skipping server ----------------------------------------------------


@pytest.fixture(scope="module")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Java time-skipping server."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=pydantic_data_converter,
    )
    await search_attributes.register(env.client, "default")
    yield env
    await env.shutdown()


async def test_window_expires_on_time_and_then_refuses_uses(
    skipping_env: WorkflowEnvironment, ledger: Ledger
) -> None:
    settings = Settings(
        task_queue=f"skip-{uuid.uuid4()}",
        policy=DATA / "policy.yaml",
        directory=DATA / "directory.yaml",
        targets=DATA / "targets.yaml",
    )
    gate = Gate(skipping_env.client, settings, skipping_env.get_current_time)
    async with running_worker(skipping_env.client, settings, ledger):
        first = await gate.submit("deploy-app", STAGING)
        with skipping_env.auto_time_skipping_disabled():
            await approve(gate, first, "bob@example.com", timedelta(minutes=30))
            outcome = await first.result()
        assert outcome.opened_window is not None
        described = await skipping_env.client.get_workflow_handle(outcome.opened_window).describe()
        handle = skipping_env.client.get_workflow_handle(
            outcome.opened_window, run_id=described.run_id, result_type=ApprovalWindow
        )
        await skipping_env.sleep(timedelta(minutes=29))
        assert (await handle.query(WindowWorkflow.status)).status == "active"
        # Skip past the window's timer. (The test server does not wake a history long-poll
        # for a child its closed parent abandoned, so `result()` would idle for a minute.)
        skipping = asyncio.create_task(skipping_env.sleep(timedelta(minutes=2)))
        try:
            for _ in range(200):
                if (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED:
                    break
                await asyncio.sleep(0.05)
        finally:
            skipping.cancel()
        window = await handle.result()
        assert window.status == "expired"
        # Ended by its own timer, in the workflow task the timer fired (server time).
        assert window.ended_at is not None
        assert window.expires_at <= window.ended_at < window.expires_at + timedelta(seconds=1)
        assert window.expires_at == outcome.decided_at + timedelta(minutes=30)  # type: ignore[operator]
        kinds = [r.kind for r in await ledger.events(handle.id)]
        assert kinds == ["window_created", "window_expired"]
        # A request racing the expiry finds it closed: no use, the normal rules apply.
        late = WindowUseRequest(
            action_id="act-late",
            requester="agent:bot",
            rule_id="windowed-deploys",
            action="noop",
            target="deploy-app",
            digest="0" * 64,
        )
        assert (
            await LiveWindows(skipping_env.client, settings.task_queue).use(window.id, late) is None
        )


# --- the policy file ------------------------------------------------------------------------------

WINDOWED = """\
version: 1
default: {effect: deny}
rules:
  - id: r
    match: {action: noop}
    effect: %s
    approvals: [{group: g, min: 1}]
    expires_after: 1h
    window: %s
"""


def _load(tmp_path: Path, effect: str, window: str) -> str:
    path = tmp_path / "policy.yaml"
    text = WINDOWED % (effect, window)
    if effect != "require_approval":
        text = text.replace("    approvals: [{group: g, min: 1}]\n    expires_after: 1h\n", "")
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    return str(caught.value)


def test_window_typos_and_misuse_are_load_errors_naming_the_field(tmp_path: Path) -> None:
    message = _load(tmp_path, "require_approval", "{max_durtion: 1h, scope: 'true'}")
    assert "rule 'r': field 'window.max_durtion': unknown key 'max_durtion'" in message
    message = _load(tmp_path, "require_approval", "{max_duration: 1h, scope: 'requester == 1'}")
    assert "rule 'r': field 'window.scope': a window scope may use only" in message
    message = _load(tmp_path, "require_approval", "{max_duration: 0s, scope: 'true'}")
    assert "rule 'r': field 'window.max_duration': must be greater than 0" in message
    message = _load(tmp_path, "require_approval", "{max_duration: 1h, scope: 'target =='}")
    assert "rule 'r': field 'window.scope': invalid CEL" in message
    message = _load(tmp_path, "allow", "{max_duration: 1h, scope: 'true'}")
    assert "rule 'r': field 'window': not allowed when effect is 'allow'" in message


def test_the_approver_sees_the_scope_and_maximum_in_the_verdict() -> None:
    policy = load_policy(DATA / "policy.yaml")
    rule = policy.rule("windowed-deploys")
    assert rule is not None
    assert rule.window is not None
    assert rule.window.max_duration == timedelta(hours=1)


# --- the API ----------------------------------------------------------------------------------


async def test_api_grants_lists_shows_and_revokes_windows(
    client: Client, settings: Settings, gate: Gate, worker: None, ledger: Ledger
) -> None:
    app = build_app(client, settings, ledger)
    handle = await gate.submit("deploy-app", STAGING)
    status = await gate.wait_for(handle, "pending_approval")
    assert status.verdict is not None
    assert status.verdict.window is not None  # the approver sees the offer: scope and maximum
    assert status.verdict.window.max_duration == timedelta(hours=1)
    async with api(app, "bob") as bob, api(app, "carol") as carol, api(app, "alice") as alice:
        url = f"/v1/actions/{handle.id}/decisions"
        body = {"decision": "approve", "digest": status.digest}
        too_long = await bob.post(url, json={**body, "window": "2h"})
        assert too_long.status_code == 422
        assert too_long.json()["error"] == {
            "code": "window_too_long",
            "message": "window 2h is longer than rule 'windowed-deploys''s window max_duration 1h",
        }
        for bad in ("999999999999999d", "0s", "soon", -60):
            hostile = await bob.post(url, json={**body, "window": bad})
            assert hostile.status_code == 422, (bad, hostile.text)
            assert "window" in hostile.json()["error"]["message"]
        on_deny = await bob.post(
            url, json={**body, "decision": "deny", "reason": "x", "window": "1h"}
        )
        assert on_deny.status_code == 422
        assert "only an approval can grant a window" in on_deny.json()["error"]["message"]
        approved = await bob.post(url, json={**body, "window": "45m"})
        assert approved.status_code == 200, approved.text
        window_id = approved.json()["opened_window"]
        assert window_id == window_id_for(handle.id)
        await listed(client, window_id)

        listing = (await bob.get("/v1/windows")).json()
        assert [w["id"] for w in listing] == [window_id]
        assert listing[0]["duration"] == "45m"
        assert (await alice.get("/v1/windows")).json() == []  # not party to it
        assert (await alice.get(f"/v1/windows/{window_id}")).status_code == 404
        assert (await bob.get(f"/v1/windows/{window_id}")).json()["holder"] == "agent:bot"

        # Carol may not see it: 404, and her attempt is on the window's record all the same.
        refused = await carol.post(f"/v1/windows/{window_id}/revoke", json={"reason": "mine?"})
        assert refused.status_code == 404
        window = await client.get_workflow_handle(window_id).query(
            WindowWorkflow.status, result_type=ApprovalWindow
        )
        assert [(r.approver, r.code) for r in window.refused] == [
            ("carol@example.com", RefusalCode.NOT_REVOKER)
        ]
        revoked = await bob.post(f"/v1/windows/{window_id}/revoke", json={"reason": "enough"})
        assert revoked.status_code == 200
        assert revoked.json()["status"] == "revoked"
        again = await bob.post(f"/v1/windows/{window_id}/revoke")
        assert again.status_code == 409
        assert (await bob.get("/v1/windows?all=true")).json()[0]["revoked_by"] == "bob@example.com"
        assert (await bob.get("/v1/windows/win-act-nope")).status_code == 404
        assert (await bob.get('/v1/windows/win-act-x" OR 1')).status_code == 404


async def test_six_revokes_at_once_end_the_window_once_and_the_rest_get_409(
    client: Client, settings: Settings, gate: Gate, worker: None, ledger: Ledger
) -> None:
    # One revoke ends the window; each other one is answered "already revoked" (409), never a
    # 500 and never a second revocation on the record. (The window now also waits for a
    # revoke that arrives while its last notes go out: patch `window-late-revokes`.)
    app = build_app(client, settings, ledger)
    _, handle = await opened(client, gate)
    async with api(app, "bob") as bob:
        answers = await asyncio.gather(
            *(
                bob.post(f"/v1/windows/{handle.id}/revoke", json={"reason": f"r{i}"})
                for i in range(6)
            )
        )
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200, 409, 409, 409, 409, 409], [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["error"]["code"] == "not_pending", answer.text
    window = await handle.result()
    assert window.status == "revoked"
    assert window.revoked_by == "bob@example.com"
    kinds = [row.kind for row in await ledger.events(handle.id)]
    assert kinds == ["window_created", "window_revoked"]


@workflow.defn(name="SignoffWindowBeforeLateRevokes", sandboxed=False)
class EndsUnderARevoke:
    """A window as builds before `window-late-revokes` could end: under a revoke it accepted."""

    def __init__(self) -> None:
        self.revoking = False

    @workflow.run
    async def run(self) -> None:
        """End as soon as a revoke is under way, without waiting for it."""
        await workflow.wait_condition(lambda: self.revoking)

    # Abandoning it is the point (and says so, instead of the SDK's warning).
    @workflow.update(unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON)
    async def revoke(self, request: WindowRevokeRequest) -> None:
        """Accept the revoke, then take longer than the window lives."""
        self.revoking = True
        await workflow.wait_condition(lambda: False)


async def test_a_window_that_ended_under_the_revoke_is_not_pending_not_a_crash(
    client: Client, settings: Settings
) -> None:
    # Temporal fails such a revoke with its own type (AcceptedUpdateCompletedWorkflow); the
    # gateway must say the window ended (409), as for a window that had already closed.
    window_id = window_id_for(f"act-{uuid.uuid4().hex}")
    queue = f"ends-under-a-revoke-{uuid.uuid4().hex}"
    service = ActionService(
        client, settings, load_policy(settings.policy), load_directory(settings.directory), registry
    )
    async with Worker(
        client,
        task_queue=queue,
        workflows=[EndsUnderARevoke],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        await client.start_workflow(EndsUnderARevoke.run, id=window_id, task_queue=queue)
        with pytest.raises(ActionNotPending) as caught:
            await service.revoke_window(window_id, WindowRevokeRequest(by="bob@example.com"))
    assert str(caught.value) == f"window {window_id} ended before the revoke was answered"


async def test_an_agent_cannot_ride_a_persons_window(
    client: Client, gate: Gate, worker: None
) -> None:
    # Alice (a person) is granted a window; the agent asks for the same thing, also "for" her.
    mine = await gate.submit("deploy-app", STAGING, requester="alice@example.com")
    await approve(gate, mine, "bob@example.com", timedelta(minutes=30))
    opened_by_alice = await mine.result()
    assert opened_by_alice.opened_window is not None
    await listed(client, opened_by_alice.opened_window)
    for extra in ({}, {"on_behalf_of": "alice@example.com"}):
        status = await gate.wait_for(
            await gate.submit("deploy-app", STAGING, **extra), "pending_approval"
        )
        assert status.verdict is not None
        assert status.verdict.window_id is None
    # Alice herself is allowed by it.
    own = await (await gate.submit("deploy-app", STAGING, requester="alice@example.com")).result()
    assert own.verdict is not None
    assert own.verdict.window_id == opened_by_alice.opened_window


async def test_with_two_approvers_a_window_needs_both_and_lasts_the_shorter(
    gate: Gate, worker: None
) -> None:
    one = await gate.submit("deploy2-app")
    await approve(gate, one, "bob@example.com", timedelta(minutes=30))
    await approve(gate, one, "carol@example.com", None)
    assert (await one.result()).opened_window is None  # carol granted no window

    two = await gate.submit("deploy2-app")
    await approve(gate, two, "bob@example.com", timedelta(minutes=30))
    approved = await approve(gate, two, "carol@example.com", timedelta(minutes=10))
    assert approved.opened_window == window_id_for(two.id)
    outcome = await two.result()
    assert outcome.decided_at is not None
    window = await gate.client.get_workflow_handle(
        window_id_for(two.id), result_type=ApprovalWindow
    ).query(WindowWorkflow.status)
    assert window.approvers == ["bob@example.com", "carol@example.com"]
    assert window.expires_at == outcome.decided_at + timedelta(minutes=10)


async def test_the_worker_counts_window_events_for_prometheus(
    client: Client, settings: Settings, ledger: Ledger
) -> None:
    port = free_port()
    runtime = telemetry.prometheus_runtime(f"127.0.0.1:{port}")
    target = client.service_client.config.target_host
    metered = await connect(
        settings.model_copy(update={"temporal_address": target}), runtime=runtime
    )
    gate = Gate(metered, settings)
    async with build_worker(metered, settings, worker_parts(settings, ledger)):
        _, handle = await opened(metered, gate)
        await (await gate.submit("deploy-app", STAGING)).result()
        await handle.execute_update(
            WindowWorkflow.revoke,
            SIGNER.window_revoke(WindowRevokeRequest(by="bob@example.com"), handle.id),
        )
        tq = {"task_queue": settings.task_queue}
        text = await scrape_until(
            f"http://127.0.0.1:{port}/metrics",
            lambda t: value(t, "signoff_approval_windows_total", event="revoked", **tq) == 1,
        )
    for event in ("opened", "used", "revoked"):
        assert value(text, "signoff_approval_windows_total", event=event, **tq) == 1, event


def test_policy_check_warns_about_a_scope_that_errors_on_valid_params(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        WINDOWED.replace("group: g", "group: sre")
        % ("require_approval", "{max_duration: 1h, scope: 'params.rows > 3'}")
    )
    [warning] = condition_warnings(load_policy(path), registry)
    assert warning.field == "window.scope"
    message = warning.message("policy.yaml")
    assert message.startswith("policy.yaml: rule 'r': field 'window.scope': errors on valid noop")
    assert "an approval window then allows nothing (fails closed)" in message
    # Guarded with has(), it is clean.
    path.write_text(
        WINDOWED.replace("group: g", "group: sre")
        % ("require_approval", "{max_duration: 1h, scope: 'has(params.rows) && params.rows > 3'}")
    )
    assert condition_warnings(load_policy(path), registry) == []
