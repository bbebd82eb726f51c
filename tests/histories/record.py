"""Record one workflow history per lifecycle path, for the replay test.

Run `python -m tests.histories.record` after an intentional workflow change that keeps
compatibility (with `workflow.patched`), and commit the JSON files it writes here.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

import pgserver
import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.executors import register_builtins
from activities.ledger.store import Ledger
from signoff.executor import registry
from signoff.models import (
    ActionRequest,
    ActionStatus,
    AmendRequest,
    ApprovalWindow,
    BreakGlassClaim,
    CancelRequest,
    DecisionRequest,
    RevokeRequest,
    StepUp,
    WindowRevokeRequest,
)
from tests.conftest import DATA, Gate, running_worker, worker_parts
from tests.grant_roles import DSN_ENV, GRANTABLE, grant_targets, granter_roles, new_grantee
from tests.holds import HoldOne, amendment_and_approval
from tests.page_fixtures import policy_with_step_up
from tests.signing import SIGNER
from workers.dev.binaries import temporal_cli, temporal_test_server
from workers.settings import Settings
from workers.worker import build_worker
from workflows import search_attributes as sa
from workflows.action import ActionWorkflow
from workflows.window import WindowWorkflow

HERE = Path(__file__).parent
# The requesting agent's owner in the test directory: never decides its actions.
OWNER = "dave@example.com"


async def record_all(client: Client, settings: Settings, ledger: Ledger) -> dict[str, str]:
    """Drive each lifecycle path to its end and return name -> history JSON."""
    gate = Gate(client, settings)
    handles: dict[str, WorkflowHandle] = {}  # type: ignore[type-arg]
    async with running_worker(client, settings, ledger):
        handles["allowed"] = await gate.submit("sandbox-1", {"x": 1})
        handles["denied_by_policy"] = await gate.submit("forbidden")
        handles["failed"] = await gate.submit("sandbox-1", {"fail": "boom"})

        approved = handles["approved_after_refusal"] = await gate.submit("two-keys")
        await gate.wait_for(approved, "pending_approval")
        with pytest.raises(WorkflowUpdateFailedError):  # the agent's owner: refused
            await gate.decide(approved, "dave@example.com")
        await gate.decide(approved, "bob@example.com")
        await gate.decide(approved, "carol@example.com")

        denied = handles["denied"] = await gate.submit("one-db")
        await gate.wait_for(denied, "pending_approval")
        await gate.decide(denied, "alice@example.com", "deny", reason="not today")

        cancelled = handles["cancelled"] = await gate.submit("one-db")
        await gate.wait_for(cancelled, "pending_approval")
        await cancelled.execute_update(
            ActionWorkflow.cancel, SIGNER.cancel(CancelRequest(by="agent:bot"), cancelled.id)
        )

        handles["escalated_expired"] = await gate.submit("esc-1")
        # A start without the gateway's signature: refused before evaluation (signed-messages).
        handles["rejected"] = await client.start_workflow(
            ActionWorkflow.run,
            ActionRequest(
                action="noop", target="sandbox-1", justification="forged", requester="agent:bot"
            ),
            id=f"act-forged-{uuid.uuid4()}",
            task_queue=settings.task_queue,
        )

        # Break-glass (patch break-glass): on-call forces it through, the breaker's own review
        # is refused, security reviews it; an agent's attempt is refused and recorded.
        glass = handles["break_glass_reviewed"] = await gate.submit(
            "glass-db",
            {"fix": "restart"},
            requester="carol@example.com",
            break_glass=BreakGlassClaim(reason="prod-db is down and cannot wait for a DBA"),
        )
        await gate.wait_for_review(glass)
        with pytest.raises(WorkflowUpdateFailedError):  # nobody reviews their own break
            await gate.review(glass, "carol@example.com")
        await gate.review(glass, "bob@example.com")
        handles["break_glass_refused"] = await gate.submit(
            "glass-db",
            requester="agent:bot",
            break_glass=BreakGlassClaim(reason="the agent wants to skip the approval"),
        )

        # In-flight snapshots: a pending approval is a partial history, and a new worker must
        # pick it up where it stopped.
        snapshots: dict[str, str] = {}
        halfway = await gate.submit("two-keys")
        await gate.wait_for(halfway, "pending_approval")
        await gate.decide(halfway, "bob@example.com")
        snapshots["pending_one_of_two"] = (await halfway.fetch_history()).to_json()
        running = await gate.submit("sandbox-1", {"sleep_seconds": 2})
        await gate.wait_for(running, "executing")
        snapshots["executing"] = (await running.fetch_history()).to_json()

        awaiting = await gate.submit(
            "glass-db",
            requester="oscar@example.com",
            break_glass=BreakGlassClaim(reason="prod-db is down and cannot wait for a DBA"),
        )
        await gate.wait_for_review(awaiting)
        snapshots["break_glass_awaiting_review"] = (await awaiting.fetch_history()).to_json()
        await gate.review(awaiting, "bob@example.com")

        await gate.decide(halfway, "carol@example.com")
        for handle in [*handles.values(), halfway, running, awaiting]:
            await handle.result()
        finished = {name: (await h.fetch_history()).to_json() for name, h in handles.items()}
        windows = await record_windows(client, gate)
    return {**finished, **snapshots, **windows, **await record_step_up(client, settings, ledger)}


async def record_step_up(client: Client, settings: Settings, ledger: Ledger) -> dict[str, str]:
    """A step-up rule (patch step-up): a decision without the signed step-up fact is refused,
    one with it counts."""
    with tempfile.TemporaryDirectory() as folder:
        stepped = settings.model_copy(
            update={
                "task_queue": f"{settings.task_queue}-step-up",
                "policy": policy_with_step_up(Path(folder)),
            }
        )
        gate = Gate(client, stepped)
        async with running_worker(client, stepped, ledger):
            handle = await gate.submit("vault-1")
            status = await gate.wait_for(handle, "pending_approval")
            with pytest.raises(WorkflowUpdateFailedError):  # no security key: step_up_required
                await gate.decide(handle, "bob@example.com")
            request = DecisionRequest(
                approver="bob@example.com",
                decision="approve",
                digest=status.digest,
                step_up=StepUp(method="webauthn", credential_id="recorded-credential"),
            )
            await handle.execute_update(ActionWorkflow.decide, SIGNER.decision(request, handle.id))
            await handle.result()
            return {"step_up": (await handle.fetch_history()).to_json()}


# --- issue 17: reminders and approve-with-changes (patches 'reminders', 'amendments') -------


async def record_issue17(
    client: Client, skipping: WorkflowEnvironment, settings: Settings, ledger: Ledger
) -> dict[str, str]:
    """Reminders (on the time-skipping server: 30-minute timers) and a superseded action with
    its successor (on the dev server)."""
    histories: dict[str, str] = {}
    skip_settings = settings.model_copy(update={"task_queue": "record-skip"})
    gate = Gate(skipping.client, skip_settings, skipping.get_current_time)
    async with running_worker(skipping.client, skip_settings, ledger):
        reminded = await gate.submit("remind-db")
        with skipping.auto_time_skipping_disabled():
            await gate.wait_for(reminded, "pending_approval")
        await skipping.sleep(timedelta(minutes=61))  # two reminders
        await _notified(ledger, reminded.id, 3)
        await gate.decide(reminded, "alice@example.com")
        await reminded.result()
        histories["reminded"] = (await reminded.fetch_history()).to_json()

    gate = Gate(client, settings)
    async with running_worker(client, settings, ledger):
        original = await gate.submit("amend-db", {"rows": 1000})
        status = await gate.wait_for(original, "pending_approval")
        await _notified(ledger, original.id, 1)
        successor_id = f"act-successor-{uuid.uuid4()}"
        successor = ActionRequest(
            **{**status.request.model_dump(exclude={"signature"}), "params": {"rows": 10}},
        ).model_copy(update={"amended_from": original.id, "amended_by": "bob@example.com"})
        amend = AmendRequest(
            by="bob@example.com",
            digest=status.digest,
            reason="10 rows is enough",
            successor_id=successor_id,
            successor=SIGNER.request(successor, successor_id),
        )
        await original.execute_update(ActionWorkflow.amend, SIGNER.amend(amend, original.id))
        await original.result()
        follower = client.get_workflow_handle_for(ActionWorkflow.run, successor_id)
        await gate.wait_for(follower, "pending_approval")
        with pytest.raises(WorkflowUpdateFailedError):  # the amender: refused (amender)
            await gate.decide(follower, "bob@example.com")
        await gate.decide(follower, "carol@example.com")
        await follower.result()
        histories["superseded"] = (await original.fetch_history()).to_json()
        histories["amended_successor"] = (await follower.fetch_history()).to_json()
    return histories


async def record_who_before_when(
    client: Client, settings: Settings, ledger: Ledger
) -> dict[str, str]:
    """Refusals for who sent a message though another decision ended the wait while it was
    checked (patch who-before-when): an agent's approval, and an owner's amendment found late
    right after its signature check (then looked up all the same)."""
    racing = settings.model_copy(update={"task_queue": "record-race"})
    gate = Gate(client, racing)
    async with running_worker(client, racing, ledger):
        decided = await gate.submit("one-db")
        amended = await gate.submit("one-db", {"rows": 1})
        pending = {h.id: await gate.wait_for(h, "pending_approval") for h in (decided, amended)}
    parts = worker_parts(racing, ledger)
    # Each pair is sent while no worker runs, so it arrives in one workflow task, both while
    # the action is pending; the held check then finishes last.
    for approver in ("agent:bot", "alice@example.com"):
        digest = pending[decided.id].digest
        request = DecisionRequest(approver=approver, decision="approve", digest=digest)
        await decided.signal(ActionWorkflow.decision, SIGNER.decision(request, decided.id))
    agent_last = HoldOne("check_decision", lambda check: check.approver == "agent:bot")
    async with build_worker(client, racing, parts, interceptors=[agent_last]):
        await decided.result()

    sent = await amendment_and_approval(
        client, amended, pending[amended.id], OWNER, "alice@example.com"
    )
    owner_last = HoldOne("verify_signature", lambda _: True, after="check_decision")
    async with build_worker(client, racing, parts, interceptors=[owner_last]):
        await asyncio.gather(*sent, return_exceptions=True)
        await amended.result()
    return {
        "refused_by_who": (await decided.fetch_history()).to_json(),
        "amend_refused_by_who": (await amended.fetch_history()).to_json(),
    }


async def _notified(ledger: Ledger, action_id: str, count: int) -> None:
    """Wait until `count` notifications are in the ledger: each recorded path then shows every
    notification delivered before the message that follows."""
    for _ in range(400):
        events = await ledger.events(action_id)
        if sum(e.kind == "notified" for e in events) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{action_id}: fewer than {count} notifications recorded")


async def record_windows(client: Client, gate: Gate) -> dict[str, str]:
    """Approval windows (patch approval-windows): opened by an approval, used, revoked."""
    opener = await gate.submit("deploy-app", {"env": "staging"})
    status = await gate.wait_for(opener, "pending_approval")
    decision = DecisionRequest(
        approver="bob@example.com",
        decision="approve",
        digest=status.digest,
        window=timedelta(minutes=30),
    )
    await opener.execute_update(ActionWorkflow.decide, SIGNER.decision(decision, opener.id))
    opened = await opener.result()
    assert opened.opened_window is not None
    window = client.get_workflow_handle(opened.opened_window, result_type=ApprovalWindow)
    for _ in range(100):  # visibility lists the window a moment after it starts
        query = f'WorkflowId = "{window.id}" AND SignoffWindowStatus = "active"'
        if [w async for w in client.list_workflows(query)]:
            break
        await asyncio.sleep(0.1)
    used = await gate.submit("deploy-app", {"env": "staging", "n": 2})
    await used.result()
    revoke = WindowRevokeRequest(by="bob@example.com", reason="recorded")
    await window.execute_update(WindowWorkflow.revoke, SIGNER.window_revoke(revoke, window.id))
    await window.result()
    return {
        "approved_with_window": (await opener.fetch_history()).to_json(),
        "allowed_by_window": (await used.fetch_history()).to_json(),
        "window_revoked": (await window.fetch_history()).to_json(),
    }


async def record_grants(
    client: Client, settings: Settings, ledger: Ledger, postgres_url: str
) -> dict[str, str]:
    """Reversible actions (patch revertible-actions): a grant in force, one revoked early."""
    os.environ[DSN_ENV] = await granter_roles(postgres_url)
    gate = Gate(client, settings)
    params = {"role": GRANTABLE, "duration": "30m"}
    async with running_worker(client, settings, ledger):
        active = await gate.submit(
            "grant-db",
            {**params, "user": await new_grantee(postgres_url)},
            action="postgres.grant_role",
        )
        revoked = await gate.submit(
            "grant-db",
            {**params, "user": await new_grantee(postgres_url)},
            action="postgres.grant_role",
        )
        for handle in (active, revoked):
            await gate.wait_for(handle, "pending_approval")
            await gate.decide(handle, "alice@example.com")
            await gate.wait_for(handle, "active")
        snapshot = (await active.fetch_history()).to_json()
        await revoked.execute_update(
            ActionWorkflow.revoke, SIGNER.revoke(RevokeRequest(by="agent:bot"), revoked.id)
        )
        await revoked.result()
        await active.execute_update(
            ActionWorkflow.revoke, SIGNER.revoke(RevokeRequest(by="agent:bot"), active.id)
        )
        await active.result()
        return {
            "grant_active": snapshot,
            "grant_revoked": (await revoked.fetch_history()).to_json(),
        }


async def main() -> None:
    """Start a dev server and Postgres, record, and write the histories next to this file."""
    register_builtins(registry)  # as the worker does; pytest's conftest does it for the tests
    with tempfile.TemporaryDirectory() as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        ledger = await Ledger.connect(server.get_uri(), migrate=True)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal_cli()),
            dev_server_extra_args=sa.dev_server_flags(),
            data_converter=pydantic_data_converter,
        )
        settings = Settings(
            task_queue="record",
            policy=DATA / "policy.yaml",
            directory=DATA / "directory.yaml",
            targets=DATA / "targets.yaml",
        )
        skipping = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=str(temporal_test_server()),
            data_converter=pydantic_data_converter,
        )
        await sa.register(skipping.client, "default")
        try:
            recorded = await record_all(env.client, settings, ledger)
            recorded |= await record_issue17(env.client, skipping, settings, ledger)
            recorded |= await record_who_before_when(env.client, settings, ledger)
            for name, text in recorded.items():
                (HERE / f"{name}.json").write_text(text)
                print("recorded", name)
            grants = Settings(
                task_queue="record-grants",
                policy=DATA / "grants-policy.yaml",
                directory=DATA / "directory.yaml",
                targets=grant_targets(Path(tmp)),
            )
            recorded = await record_grants(env.client, grants, ledger, server.get_uri())
            for name, text in recorded.items():
                (HERE / f"{name}.json").write_text(text)
                print("recorded", name)
        finally:
            await skipping.shutdown()
            await env.shutdown()
            await ledger.close()
            server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
