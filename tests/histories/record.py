"""Record one workflow history per lifecycle path, for the replay test.

Run `python -m tests.histories.record` after an intentional workflow change that keeps
compatibility (with `workflow.patched`), and commit the JSON files it writes here.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from pathlib import Path

import pgserver
import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.ledger.store import Ledger
from workers.dev.binaries import temporal_cli
from signoff.models import ActionRequest, CancelRequest, RevokeRequest
from workers.settings import Settings
from tests.conftest import DATA, Gate, running_worker
from tests.grant_roles import DSN_ENV, GRANTABLE, grant_targets, granter_roles, new_grantee
from tests.signing import SIGNER
from workflows import search_attributes as sa
from workflows.action import ActionWorkflow

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
        return {**finished, **snapshots}


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
            await env.shutdown()
            await ledger.close()
            server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
