"""Approve with changes: an approver's params supersede the action by a successor that needs
someone else's approval; the agent's SDK follows the successor."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from mcp.types import CallToolResult
from temporalio.client import Client

from activities.ledger.store import Ledger
from signoff.client import Conflict, InvalidRequest, PermissionDenied, SignoffClient
from signoff.mcp_server import build_server, summarise
from signoff.models import ActionStatus, RefusalCode, Status
from tests.conftest import running_worker
from tests.gateway_fixtures import BASE_URL, build_app, token
from tests.page_fixtures import policy_with_step_up
from workers.settings import Settings


@pytest.fixture
def app(client: Client, settings: Settings, worker: None) -> FastAPI:
    """The gateway app on the test's task queue, with a worker running."""
    return build_app(client, settings)


def sdk(app: FastAPI, name: str) -> SignoffClient:
    """An SDK client of the in-process gateway, as `name`."""
    return SignoffClient(
        BASE_URL, token(name), transport=httpx.ASGITransport(app=app), backoff=0.01
    )


async def until(client: SignoffClient, action_id: str, status: Status) -> ActionStatus:
    """Poll until the action reaches `status`."""
    found = await client.status(action_id)
    for _ in range(200):
        if found.status is status:
            return found
        await asyncio.sleep(0.05)
        found = await client.status(action_id)
    raise AssertionError(f"{action_id} never {status.value}: {found.status.value}")


async def pending(app: FastAPI, target: str = "amend-db", **params: object) -> ActionStatus:
    """An action of the bot's that waits for one of security."""
    async with sdk(app, "bot") as bot:
        status = await bot.request("noop", target, params or {"rows": 1000}, "nightly batch")
        return await until(bot, status.id, Status.PENDING_APPROVAL)


async def test_amended_action_is_superseded_and_the_successor_runs_the_new_params(
    app: FastAPI, ledger: Ledger
) -> None:
    async with sdk(app, "bot") as bot, sdk(app, "bob") as bob, sdk(app, "carol") as carol:
        # The agent asks and waits, as an agent does; it must end up with the successor.
        asked = await bot.request("noop", "amend-db", {"rows": 1000}, "nightly batch")
        original = await until(bot, asked.id, Status.PENDING_APPROVAL)
        waiting = asyncio.create_task(bot.wait(original.id, timeout=60))

        superseded = await bob.amend(original.id, {"rows": 10}, reason="10 rows is enough")
        assert superseded.id == original.id
        assert superseded.status is Status.SUPERSEDED
        successor_id = superseded.superseded_by
        assert successor_id is not None
        assert successor_id != original.id
        # The requester sees it at once; an approver only once the policy has made it theirs
        # (while it is evaluated, GET answers them 404 like any action they may not see).
        successor = await until(bot, successor_id, Status.PENDING_APPROVAL)
        assert successor.request.requester == "agent:bot"
        assert successor.request.params == {"rows": 10}
        assert successor.request.amended_from == original.id
        assert successor.request.amended_by == "bob@example.com"
        assert successor.digest != original.digest
        assert successor.verdict is not None
        assert successor.verdict.rule_id == "amend-security"  # evaluated afresh

        # The amender's approval never counts for what they proposed: refused and recorded.
        with pytest.raises(PermissionDenied) as refused:
            await bob.approve(successor_id, digest=successor.digest)
        assert refused.value.code == "amender"
        still = await carol.status(successor_id)
        assert still.status is Status.PENDING_APPROVAL
        assert [(r.approver, r.code.value) for r in still.refused] == [
            ("bob@example.com", "amender")
        ]
        # Nor can they approve the original any more (it is over), nor decide it twice.
        with pytest.raises(Conflict):
            await carol.approve(original.id, digest=original.digest)

        await carol.approve(successor_id, digest=successor.digest)
        final = await waiting
    assert final.id == successor_id  # the SDK followed the successor
    assert final.status is Status.SUCCEEDED
    assert final.result == {"echo": {"rows": 10}}
    assert [d.approver for d in final.decisions] == ["carol@example.com"]

    original_events = await ledger.events(original.id)
    [moved] = [e for e in original_events if e.kind == "superseded"]
    assert moved.actor == "bob@example.com"
    assert moved.payload["successor_id"] == successor_id
    assert moved.payload["successor_digest"] == final.digest
    assert original_events[-1].payload["status"] == "superseded"
    assert not [e for e in original_events if e.kind == "execution_started"]
    successor_events = await ledger.events(successor_id)
    requested = successor_events[0]
    assert requested.kind == "requested"
    assert requested.payload["amended_from"] == original.id
    assert requested.payload["amended_by"] == "bob@example.com"
    summary = summarise(final)
    assert summary["amended_from"] == original.id
    assert summary["params"] == {"rows": 10}


async def test_the_agent_cannot_amend_its_own_request(app: FastAPI) -> None:
    original = await pending(app)
    async with sdk(app, "bot") as bot:
        with pytest.raises(PermissionDenied) as refused:
            await bot.amend(original.id, {"rows": 1}, reason="approve my smaller one")
        assert refused.value.code == "agent_approver"
        after = await bot.status(original.id)
    assert after.status is Status.PENDING_APPROVAL
    assert after.superseded_by is None
    [attempt] = after.refused
    assert (attempt.approver, attempt.kind, attempt.code.value) == (
        "agent:bot",
        "amend",
        "agent_approver",
    )


async def test_the_owner_and_people_outside_the_groups_cannot_amend(app: FastAPI) -> None:
    original = await pending(app)
    async with sdk(app, "dave") as dave, sdk(app, "alice") as alice:
        with pytest.raises(PermissionDenied) as owner:
            await dave.amend(original.id, {"rows": 1})
        assert owner.value.code == "self_approval"
        # alice is a DBA: she may see no security action, so she learns nothing of it.
        with pytest.raises(Exception) as outsider:  # noqa: PT011 - 404 or 403, checked below
            await alice.amend(original.id, {"rows": 1}, digest=original.digest)
        assert getattr(outsider.value, "status_code", None) in (403, 404)
        after = await dave.status(original.id)
    assert after.status is Status.PENDING_APPROVAL
    assert after.superseded_by is None
    assert {(r.approver, r.code.value) for r in after.refused} == {
        ("dave@example.com", "self_approval"),
        ("alice@example.com", "not_eligible"),
    }


async def test_only_a_pending_action_can_be_amended(app: FastAPI) -> None:
    async with sdk(app, "bot") as bot, sdk(app, "bob") as bob:
        done = await bot.request("noop", "sandbox-amend", {"rows": 1}, "a read", wait=10)
        assert done.status is Status.SUCCEEDED
        with pytest.raises(Exception) as refused:  # noqa: PT011 - 404 (cannot see) or 409
            await bob.amend(done.id, {"rows": 2}, digest=done.digest)
        assert getattr(refused.value, "status_code", None) in (404, 409)
        original = await pending(app)
        await bob.approve(original.id, digest=original.digest)
        await until(bob, original.id, Status.SUCCEEDED)
        with pytest.raises(Conflict):
            await bob.amend(original.id, {"rows": 2}, digest=original.digest)


async def test_invalid_or_unchanged_params_are_422_and_nothing_changes(app: FastAPI) -> None:
    original = await pending(app)
    async with sdk(app, "bob") as bob:
        for bad in ({"sleep_seconds": -1}, {"sleep_seconds": "soon"}):
            with pytest.raises(InvalidRequest) as invalid:
                await bob.amend(original.id, bad, digest=original.digest)
            assert invalid.value.status_code == 422
            assert "sleep_seconds" in invalid.value.message
        with pytest.raises(InvalidRequest) as same:
            await bob.amend(original.id, {"rows": 1000}, digest=original.digest)
        assert same.value.status_code == 422
        with pytest.raises(InvalidRequest) as stale:
            await bob.amend(original.id, {"rows": 5}, digest="0" * 64)
        assert stale.value.code == "digest_mismatch"
        after = await bob.status(original.id)
    assert after.status is Status.PENDING_APPROVAL
    assert after.superseded_by is None
    assert after.request.params == {"rows": 1000}
    # Refused in the workflow (recorded): the unchanged params and the stale digest only.
    assert sorted(r.code.value for r in after.refused) == ["digest_mismatch", "digest_mismatch"]


async def test_caller_mode_agent_runs_only_the_amended_params(app: FastAPI) -> None:
    """What `@gated` in caller mode does: wait for approval, run the params approved, report."""
    async with sdk(app, "bot") as bot, sdk(app, "bob") as bob, sdk(app, "carol") as carol:
        asked = await bot.request(
            "noop", "amend-caller", {"rows": 1000}, "nightly batch", execution="caller"
        )
        original = await until(bot, asked.id, Status.PENDING_APPROVAL)
        approved = asyncio.create_task(bot.wait_for_approval(original.id, timeout=60))
        superseded = await bob.amend(original.id, {"rows": 10})
        assert superseded.superseded_by is not None
        successor = await until(bot, superseded.superseded_by, Status.PENDING_APPROVAL)
        await carol.approve(successor.id, digest=successor.digest)
        go = await approved
        assert go.id == successor.id
        assert go.status is Status.EXECUTING
        assert go.request.params == {"rows": 10}
        done = await bot.report(go.id, result={"ran": go.request.params})
    assert done.status is Status.SUCCEEDED
    assert done.result == {"ran": {"rows": 10}}


async def test_mcp_tools_answer_with_the_successor(app: FastAPI) -> None:
    original = await pending(app)
    server = build_server(lambda: sdk(app, "bot"), max_wait=0.5)
    async with sdk(app, "bob") as bob:
        superseded = await bob.amend(original.id, {"rows": 10}, reason="smaller")
    result = await server.call_tool("get_action_status", {"id": original.id})
    assert isinstance(result, CallToolResult)
    assert not result.is_error, result.content
    answer = result.structured_content
    assert answer is not None
    assert answer["id"] == superseded.superseded_by
    assert answer["amended_from"] == original.id
    assert answer["amended_by"] == "bob@example.com"
    assert answer["params"] == {"rows": 10}
    assert answer["status"] in ("evaluating", "pending_approval")


async def test_a_step_up_rule_cannot_be_amended_without_the_key(
    client: Client, settings: Settings, ledger: Ledger, tmp_path: Path
) -> None:
    # Amending ends the action as a denial does; on a step-up rule no door may do that by API.
    stepped = settings.model_copy(
        update={
            "task_queue": f"{settings.task_queue}-step-up",
            "policy": policy_with_step_up(tmp_path),
        }
    )
    app = build_app(client, stepped)
    async with running_worker(client, stepped, ledger):
        async with sdk(app, "bot") as bot:
            submitted = await bot.request("noop", "vault-1", {"rows": 1000}, "rotate")
            original = await until(bot, submitted.id, Status.PENDING_APPROVAL)
        async with sdk(app, "bob") as bob:
            with pytest.raises(PermissionDenied) as refused:
                await bob.amend(original.id, {"rows": 1}, digest=original.digest)
            assert refused.value.code == "step_up_required"
            after = await bob.status(original.id)
    assert after.status is Status.PENDING_APPROVAL
    assert after.superseded_by is None
    assert [(r.approver, r.code) for r in after.refused] == [
        ("bob@example.com", RefusalCode.STEP_UP_REQUIRED)
    ]
