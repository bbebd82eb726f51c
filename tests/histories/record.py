"""Record one workflow history per lifecycle path, for the replay test.

Run `python -m tests.histories.record` after an intentional workflow change that keeps
compatibility (with `workflow.patched`), and commit the JSON files it writes here.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

import pgserver
import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.ledger.store import Ledger
from workers.dev.binaries import temporal_cli
from signoff.models import (
    ActionRequest,
    ApprovalWindow,
    CancelRequest,
    DecisionRequest,
    WindowRevokeRequest,
)
from workers.settings import Settings
from tests.conftest import DATA, Gate, running_worker
from tests.signing import SIGNER
from workflows import search_attributes as sa
from workflows.action import ActionWorkflow
from workflows.window import WindowWorkflow

HERE = Path(__file__).parent


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

        await gate.decide(halfway, "carol@example.com")
        for handle in [*handles.values(), halfway, running]:
            await handle.result()
        finished = {name: (await h.fetch_history()).to_json() for name, h in handles.items()}
        windows = await record_windows(client, gate)
        return {**finished, **snapshots, **windows}


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


async def main() -> None:
    """Start a dev server and Postgres, record, and write the histories next to this file."""
    with tempfile.TemporaryDirectory() as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        ledger = await Ledger.connect(server.get_uri(), migrate=True)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal_cli()),
            search_attributes=sa.ALL,
            data_converter=pydantic_data_converter,
        )
        settings = Settings(
            task_queue="record",
            policy=DATA / "policy.yaml",
            directory=DATA / "directory.yaml",
            targets=DATA / "targets.yaml",
        )
        try:
            for name, text in (await record_all(env.client, settings, ledger)).items():
                (HERE / f"{name}.json").write_text(text)
                print("recorded", name)
        finally:
            await env.shutdown()
            await ledger.close()
            server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
