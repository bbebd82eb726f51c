"""`@gated` against a live stack: `signoff gateway` and `signoff worker` as child processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from activities.ledger.store import Ledger
from signoff.client import (
    ActionDenied,
    ActionNotFinished,
    Conflict,
    InvalidRequest,
    PermissionDenied,
    SignoffClient,
    SignoffSyncClient,
)
from signoff.gated import gated
from signoff.models import ActionStatus, Status
from tests import gated_tools
from tests.gateway_fixtures import LiveGateway, gateway_process, live_settings, token

ROOT = Path(__file__).resolve().parent.parent
POLICY = {
    "version": 1,
    "default": {"effect": "deny", "reason": "not covered by the gated test policy"},
    "rules": [
        {
            "id": "gated-sandbox",
            "match": {"action": "gated.*", "target": "sandbox*"},
            "effect": "allow",
        },
        {
            "id": "forbidden",
            "match": {"action": "gated.*", "target": "forbidden"},
            "effect": "deny",
            "reason": "forbidden is off limits",
        },
        {
            "id": "gated-one-dba",
            "match": {"action": "gated.*", "target": "one-*"},
            "effect": "require_approval",
            "approvals": [{"group": "dba", "min": 1}],
            "expires_after": "1h",
        },
    ],
}


@dataclass
class Stack:
    """A live gateway and worker, both separate processes, on their own task queue."""

    gateway: LiveGateway
    worker: subprocess.Popen[bytes]
    task_queue: str


async def wait_for_worker(client: Client, task_queue: str) -> None:
    """Wait (bounded) until a worker polls the task queue for workflows and activities."""
    for _ in range(150):
        polled = []
        for kind in (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ):
            described = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=kind,
                )
            )
            polled.append(bool(described.pollers))
        if all(polled):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no worker polls {task_queue}")


@pytest.fixture(scope="module")
async def stack(
    client: Client,
    postgres_url: str,
    ledger: Ledger,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """Gateway and worker loading tests.gated_tools; this process is the agent (agent:bot).

    Depends on `ledger` so the audit tables exist before the worker writes to them.
    """
    tmp = tmp_path_factory.mktemp("gated")
    policy = tmp / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    settings = live_settings(client).model_copy(update={"policy": policy})
    with pytest.MonkeyPatch.context() as env:
        # The gateway child inherits these; the worker child gets them explicitly below.
        env.setenv("SIGNOFF_EXECUTOR_MODULES", '["tests.gated_tools"]')
        env.setenv("PYTHONPATH", f"{ROOT}:{ROOT / 'sdk'}")
        worker = subprocess.Popen(  # noqa: ASYNC220 - started once, before any test runs
            [str(Path(sys.executable).parent / "signoff"), "worker", "--log-level", "WARNING"],
            env={
                **os.environ,
                "SIGNOFF_TEMPORAL_ADDRESS": settings.temporal_address,
                "SIGNOFF_TASK_QUEUE": settings.task_queue,
                "SIGNOFF_POLICY": str(policy),
                "SIGNOFF_DIRECTORY": str(settings.directory),
                "SIGNOFF_TARGETS": str(settings.targets),
                "SIGNOFF_DATABASE_URL": postgres_url,
            },
            start_new_session=True,
        )
        try:
            async with gateway_process(settings, tmp / "gateway.log") as live:
                await wait_for_worker(client, settings.task_queue)
                # How agents configure @gated when they pass no client: the environment.
                env.setenv("SIGNOFF_GATEWAY", live.url)
                env.setenv("SIGNOFF_TOKEN", token("bot"))
                yield Stack(live, worker, settings.task_queue)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


@pytest.fixture
async def alice(stack: Stack) -> AsyncIterator[SignoffClient]:
    """A DBA who may approve `one-*` actions."""
    async with SignoffClient(stack.gateway.url, token("alice")) as client:
        yield client


@pytest.fixture
async def bot(stack: Stack) -> AsyncIterator[SignoffClient]:
    """The agent's own client (agent:bot)."""
    async with SignoffClient(stack.gateway.url, token("bot")) as client:
        yield client


async def awaiting(alice: SignoffClient, action: str) -> ActionStatus:
    """The pending action of type `action` in alice's inbox, once it is there."""
    for _ in range(200):
        found = [s for s in await alice.pending() if s.request.action == action]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{action} never reached alice's inbox")


# --- worker mode ----------------------------------------------------------------------------


async def test_worker_mode_runs_the_body_in_the_worker_process(stack: Stack) -> None:
    result = await gated_tools.where_am_i("hi", times=2)

    assert result == {"pid": stack.worker.pid, "note": "hihi"}
    assert stack.worker.pid != os.getpid()


async def test_worker_mode_for_a_plain_function(stack: Stack) -> None:
    # A sync function uses the sync facade; run it off the loop as a sync agent would.
    result = await asyncio.to_thread(gated_tools.where_am_i_sync, "plain")

    assert result == {"pid": stack.worker.pid, "note": "plain"}


async def test_an_execution_context_parameter_is_the_workers_not_a_param(
    stack: Stack, bot: SignoffClient
) -> None:
    result = await gated_tools.with_context("ctx")

    assert isinstance(result, dict)
    assert result["label"] == "ctx"
    assert result["requester"] == "agent:bot"
    status = await bot.status(str(result["idempotency_key"]))  # the key is the action id
    assert status.request.params == {"label": "ctx"}


async def test_the_gateway_lists_a_gated_type_with_its_signature_as_schema(
    stack: Stack, bot: SignoffClient
) -> None:
    types = {t.action: t for t in await bot.action_types()}

    listed = types["gated.whereami"]
    assert listed.runs_in == ["worker", "caller"]
    assert listed.approval == "depends"
    assert listed.description == "Tell which process ran the body."
    assert listed.params_schema is not None
    assert listed.params_schema["required"] == ["note"]
    assert set(listed.params_schema["properties"]) == {"note", "times"}
    assert [r.rule for r in listed.rules] == [
        "gated-sandbox",
        "forbidden",
        "gated-one-dba",
        "default",
    ]


async def test_arguments_are_checked_before_anything_is_asked(stack: Stack) -> None:
    with pytest.raises(InvalidRequest, match="note"):
        await gated_tools.where_am_i(note=["not", "text"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="missing a required argument"):
        await gated_tools.where_am_i()  # type: ignore[call-arg]


# --- caller mode ----------------------------------------------------------------------------


async def test_caller_mode_runs_only_after_approval_and_reports_the_result(
    stack: Stack, bot: SignoffClient, alice: SignoffClient, ledger: Ledger
) -> None:
    ran: list[tuple[str, bool, float]] = []

    @gated(
        "gated.vacuum",
        target="one-db",
        where="caller",
        client=bot,
        justification=lambda table, full=False: f"vacuum {table} (full={full})",
    )
    async def vacuum(table: str, full: bool = False) -> dict[str, Any]:
        ran.append((table, full, time.monotonic()))
        return {"vacuumed": table, "full": full}

    call = asyncio.create_task(vacuum("orders", full=True))
    pending = await awaiting(alice, "gated.vacuum")
    assert pending.request.params == {"table": "orders", "full": True}
    assert pending.request.execution == "caller"
    assert pending.request.justification == "vacuum orders (full=True)"
    await asyncio.sleep(0.5)
    assert ran == [], "the body ran before anyone approved"

    approved_at = time.monotonic()
    await alice.approve(pending.id)
    result = await asyncio.wait_for(call, 30)

    assert result == {"vacuumed": "orders", "full": True}
    assert [r[:2] for r in ran] == [("orders", True)]
    assert ran[0][2] > approved_at
    final = await bot.status(pending.id)
    assert final.status is Status.SUCCEEDED
    assert final.result == {"vacuumed": "orders", "full": True}
    events = {e.kind: e for e in await ledger.events(pending.id)}
    assert events["execution_started"].payload["runs_in"] == "caller"
    assert events["execution_result"].payload == {
        "result": {"vacuumed": "orders", "full": True},
        "error": None,
    }
    assert events["outcome"].payload["status"] == "succeeded"


async def test_caller_mode_reports_the_exception_and_reraises_it(
    stack: Stack, bot: SignoffClient, ledger: Ledger
) -> None:
    @gated("gated.fails", target="sandbox-db", where="caller", client=bot)
    async def fails(size: int) -> None:
        """Fill the disk."""
        raise OSError(f"disk full after {size} bytes")

    with pytest.raises(OSError, match="disk full after 3 bytes") as raised:
        await fails(3)

    note = raised.value.__notes__[0]
    action_id = note.rsplit(" ", 1)[-1]
    final = await bot.status(action_id)
    assert final.status is Status.FAILED
    assert final.error == "OSError: disk full after 3 bytes"
    events = {e.kind: e for e in await ledger.events(action_id)}
    assert events["execution_result"].payload["error"] == "OSError: disk full after 3 bytes"


async def test_a_human_denial_as_text_for_a_plain_function(
    stack: Stack, alice: SignoffClient
) -> None:
    ran: list[str] = []
    with SignoffSyncClient(stack.gateway.url, token("bot")) as sync_bot:

        @gated(
            "gated.drop",
            target="one-db",
            where="caller",
            client=sync_bot,
            return_denial_as_text=True,
        )
        def drop(table: str) -> str:
            """Drop a table."""
            ran.append(table)
            return "dropped"

        call = asyncio.create_task(asyncio.to_thread(drop, "orders"))
        pending = await awaiting(alice, "gated.drop")
        await alice.deny(pending.id, "use the read replica instead")
        text = await asyncio.wait_for(call, 30)

    assert text == "Denied by alice@example.com: use the read replica instead"
    assert ran == []


async def test_a_policy_denial_raises_with_rule_and_reason(
    stack: Stack, bot: SignoffClient
) -> None:
    @gated("gated.nope", target="forbidden", where="caller", client=bot)
    async def nope() -> None:
        raise AssertionError("a denied body must never run")

    with pytest.raises(ActionDenied) as denied:
        await nope()

    assert denied.value.by_policy
    assert denied.value.rule == "forbidden"
    assert denied.value.reason == "forbidden is off limits"
    assert str(denied.value) == "Denied by policy rule forbidden: forbidden is off limits"


async def test_giving_up_on_approval_withdraws_the_request(
    stack: Stack, bot: SignoffClient
) -> None:
    @gated("gated.slow", target="one-db", where="caller", client=bot, wait=1.0)
    async def slow() -> None:
        raise AssertionError("never approved, never run")

    with pytest.raises(ActionNotFinished) as unfinished:
        await slow()

    final = await bot.status(unfinished.value.status.id)
    assert final.status is Status.CANCELLED
    assert "stopped waiting" in (final.error or "")


# --- the report endpoint, through the SDK ---------------------------------------------------


async def test_only_the_requester_reports_and_only_once_approved(
    stack: Stack, bot: SignoffClient, alice: SignoffClient
) -> None:
    asked = await bot.request(
        "gated.manual", "one-db", {"n": 1}, "caller flow by hand", execution="caller"
    )
    with pytest.raises(Conflict, match="nothing to report"):
        await bot.report(asked.id, result="too early")

    await alice.approve((await awaiting(alice, "gated.manual")).id)
    executing = await bot.wait_for_approval(asked.id, timeout=30)
    assert executing.status is Status.EXECUTING
    with pytest.raises(PermissionDenied, match="only the requester"):
        await alice.report(asked.id, result="not hers to report")

    final = await bot.report(asked.id, result={"rows": 1})
    assert final.status is Status.SUCCEEDED
    assert final.result == {"rows": 1}
    # The same report again, as a retry after a lost answer would send it, finds it recorded;
    # a different one is refused.
    assert (await bot.report(asked.id, result={"rows": 1})).status is Status.SUCCEEDED
    with pytest.raises(Conflict):
        await bot.report(asked.id, result={"rows": 2})


def test_a_signature_without_names_cannot_be_gated() -> None:
    with pytest.raises(TypeError, match="args"):

        @gated("gated.bad", target="sandbox", where="caller")
        def bad(*rows: int) -> None: ...
