"""The Python SDK against the real gateway, dev server and worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from temporalio.client import Client

from activities.ledger.store import Ledger
from signoff.client import (
    ActionCancelled,
    ActionDenied,
    ActionExpired,
    ActionFailed,
    ActionNotFinished,
    AuthenticationError,
    Conflict,
    GatewayUnavailable,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    SignoffClient,
    SignoffError,
    SignoffSyncClient,
    outcome,
)
from signoff.models import Status
from tests.conftest import running_worker
from tests.gateway_fixtures import (
    BASE_URL,
    LiveGateway,
    build_app,
    count_workflows,
    free_port,
    gateway_process,
    live_settings,
    token,
)
from workers.settings import Settings


@pytest.fixture
def app(client: Client, settings: Settings, worker: None) -> FastAPI:
    """The gateway app on the test's task queue, with a worker running."""
    return build_app(client, settings)


def sdk(
    app: FastAPI, name: str, transport: httpx.AsyncBaseTransport | None = None
) -> SignoffClient:
    """An SDK client of the in-process gateway, as `name`."""
    return SignoffClient(
        BASE_URL,
        token(name),
        transport=transport or httpx.ASGITransport(app=app),
        backoff=0.01,
    )


async def pending_action(bot: SignoffClient, target: str = "one-db") -> str:
    """Request an action that waits for approval, once it is waiting."""
    status = await bot.request("noop", target, {"rows": 5}, "needs a human")
    for _ in range(100):
        if status.status is Status.PENDING_APPROVAL:
            return status.id
        await asyncio.sleep(0.05)
        status = await bot.status(status.id)
    raise AssertionError(f"never pending: {status}")


# --- outcomes -------------------------------------------------------------------------------


async def test_run_returns_the_result(app: FastAPI) -> None:
    async with sdk(app, "bot") as bot:
        result = await bot.run("noop", "sandbox-1", {"n": 1}, "read something")
    assert result == {"echo": {"n": 1}}


async def test_run_after_human_approval(app: FastAPI) -> None:
    async with sdk(app, "bot") as bot, sdk(app, "alice") as alice:
        running = asyncio.create_task(bot.run("noop", "one-db", {"n": 2}, "needs a DBA"))
        for _ in range(100):
            inbox = await alice.pending()
            if inbox:
                break
            await asyncio.sleep(0.1)
        approved = await alice.approve(inbox[0].id, reason="fine")
        assert approved.decisions[0].approver == "alice@example.com"
        assert await running == {"echo": {"n": 2}}


async def test_denied_by_policy_says_which_rule_and_why(app: FastAPI) -> None:
    async with sdk(app, "bot") as bot:
        with pytest.raises(ActionDenied) as caught:
            await bot.run("noop", "forbidden", {}, "try it")
    denied = caught.value
    assert denied.by_policy
    assert denied.rule == "forbidden"
    assert denied.reason == "forbidden is off limits"
    assert denied.decisions == []
    assert denied.code == "denied_by_policy"
    assert str(denied) == "Denied by policy rule forbidden: forbidden is off limits"


async def test_denied_by_a_human_carries_their_reason(app: FastAPI) -> None:
    async with sdk(app, "bot") as bot, sdk(app, "alice") as alice:
        action_id = await pending_action(bot)
        await alice.deny(action_id, "use the read replica instead")
        final = await bot.wait(action_id, 10)
        with pytest.raises(ActionDenied) as caught:
            outcome(final)
    denied = caught.value
    assert not denied.by_policy
    assert denied.denied_by == "alice@example.com"
    assert denied.reason == "use the read replica instead"
    assert denied.rule == "one-dba"
    assert [d.decision for d in denied.decisions] == ["deny"]
    assert str(denied) == "Denied by alice@example.com: use the read replica instead"


async def test_failed_carries_the_executor_error(app: FastAPI) -> None:
    async with sdk(app, "bot") as bot:
        with pytest.raises(ActionFailed) as caught:
            await bot.run("noop", "sandbox-1", {"fail": "disk full"}, "fail on purpose")
    assert "disk full" in str(caught.value)
    assert caught.value.status.status is Status.FAILED


async def test_cancelled(app: FastAPI) -> None:
    async with sdk(app, "bot") as bot:
        action_id = await pending_action(bot)
        running = asyncio.create_task(bot.wait(action_id, 10))
        cancelled = await bot.cancel(action_id, reason="plan changed")
        assert cancelled.status is Status.CANCELLED
        with pytest.raises(ActionCancelled):
            outcome(await running)


async def test_run_raises_expired(app: FastAPI) -> None:
    async with sdk(app, "bot") as bot:
        # esc-* expires after 6s in the test policy.
        with pytest.raises(ActionExpired) as caught:
            await bot.run("noop", "esc-db", {}, "nobody will answer", timeout=30)
    assert caught.value.code == "expired"


async def test_run_gives_up_waiting_but_the_action_goes_on(app: FastAPI) -> None:
    async with sdk(app, "bot") as bot:
        with pytest.raises(ActionNotFinished) as caught:
            await bot.run("noop", "one-db", {}, "slow humans", timeout=0.5)
        status = caught.value.status
        assert status.status is Status.PENDING_APPROVAL
        assert (await bot.status(status.id)).status is Status.PENDING_APPROVAL


# --- errors ---------------------------------------------------------------------------------


async def test_errors_are_typed_with_the_api_code(app: FastAPI) -> None:
    async with sdk(app, "bot") as bot, sdk(app, "alice") as alice:
        with pytest.raises(NotFound) as missing:
            await bot.status("act-" + "0" * 32)
        assert (missing.value.code, missing.value.status_code) == ("not_found", 404)

        with pytest.raises(InvalidRequest) as unknown:
            await bot.request("rm.rf", "x", {}, "no such executor")
        assert unknown.value.code == "unknown_action"

        with pytest.raises(InvalidRequest) as local:
            await bot.request("Not An Action", "x", {}, "checked before sending")
        assert "action" in local.value.message

        action_id = await pending_action(bot)
        with pytest.raises(PermissionDenied) as own:
            await bot.approve(action_id)
        assert own.value.code == "agent_approver"

        await bot.request("noop", "one-db", {"rows": 6}, "x", idempotency_key="k1")
        with pytest.raises(Conflict) as reused:
            await bot.request("noop", "one-db", {"rows": 7}, "x", idempotency_key="k1")
        assert reused.value.code == "idempotency_conflict"

        await alice.approve(action_id)
        await bot.wait(action_id, 10)
        with pytest.raises(Conflict) as late:
            await alice.approve(action_id)
        assert late.value.code == "not_pending"
        assert isinstance(late.value, SignoffError)

    async with sdk(app, "nobody") as stranger:
        with pytest.raises(AuthenticationError) as unauthenticated:
            await stranger.pending()
    assert unauthenticated.value.status_code == 401


async def test_an_unreachable_gateway_is_retried_then_reported() -> None:
    attempts = 0

    class Counting(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            nonlocal attempts
            attempts += 1
            return await super().handle_async_request(request)

    async with SignoffClient(
        f"http://127.0.0.1:{free_port()}", "t-bot", retries=2, backoff=0.01, transport=Counting()
    ) as bot:
        with pytest.raises(GatewayUnavailable) as caught:
            await bot.status("act-1")
    assert attempts == 3
    assert caught.value.code == "gateway_unavailable"


async def test_503_from_the_gateway_is_retried(settings: Settings) -> None:
    attempts = 0
    unreachable = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)
    inner = httpx.ASGITransport(app=build_app(unreachable, settings))

    class Counting(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            nonlocal attempts
            attempts += 1
            return await inner.handle_async_request(request)

    async with SignoffClient(
        BASE_URL, "t-erin", retries=2, backoff=0.01, transport=Counting()
    ) as c:
        with pytest.raises(GatewayUnavailable) as caught:
            await c.status("act-1")
    assert attempts == 3
    assert caught.value.code == "temporal_unavailable"


class DropFirstAnswer(httpx.AsyncBaseTransport):
    """The network loses the gateway's answer to the first submission after it was processed."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.submissions = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Forward the request; drop the first POST /v1/actions answer on the floor."""
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path == "/v1/actions":
            self.submissions += 1
            if self.submissions == 1:
                await response.aclose()
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                )
        return response


async def test_a_retry_after_a_lost_answer_creates_no_second_action(
    app: FastAPI, client: Client, settings: Settings
) -> None:
    network = DropFirstAnswer(httpx.ASGITransport(app=app))
    async with sdk(app, "bot", transport=network) as bot:
        status = await bot.request("noop", "one-db", {"rows": 1}, "only once, please")
    assert network.submissions == 2  # the gateway really got it twice
    assert status.request.idempotency_key is not None  # generated for us
    assert await count_workflows(client, settings.task_queue) == 1


async def test_decisions_are_not_retried_once_sent(app: FastAPI) -> None:
    async with sdk(app, "bot") as bot:
        action_id = await pending_action(bot)

    class DropDecision(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.ASGITransport(app=app)
            self.decisions = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            if request.url.path.endswith("/decisions"):
                self.decisions += 1
                await response.aclose()
                raise httpx.ReadError("connection reset", request=request)
            return response

    network = DropDecision()
    async with sdk(app, "alice", transport=network) as alice:
        with pytest.raises(GatewayUnavailable):
            await alice.approve(action_id)
        # Sent once; the approval did land, and no duplicate attempt was recorded.
        status = await alice.status(action_id)
    assert network.decisions == 1
    assert [d.approver for d in status.decisions] == ["alice@example.com"]
    assert status.refused == []


# --- the sync facade, against a live `signoff gateway` --------------------------------------


@pytest.fixture(scope="module")
async def live(
    client: Client, ledger: Ledger, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveGateway]:
    """`signoff gateway` as a child process, with a worker in this process."""
    settings = live_settings(client)
    log = Path(tmp_path_factory.mktemp("gateway")) / "gateway.log"
    async with running_worker(client, settings, ledger), gateway_process(settings, log) as gw:
        yield gw
    assert gw.process.returncode == 0, gw.output()


def sync_round_trip(url: str) -> tuple[object, str, object]:
    """A non-async agent and approver doing a full round trip."""
    with SignoffSyncClient(url, "t-bot") as bot, SignoffSyncClient(url, "t-alice") as alice:
        quick = bot.run("noop", "sandbox-sync", {"n": 3}, "sync read")
        action = bot.request("noop", "one-sync", {"n": 4}, "sync write", wait=0.5)
        for _ in range(100):
            if any(item.id == action.id for item in alice.pending()):
                break
            time.sleep(0.1)
        alice.approve(action.id)
        final = bot.wait(action.id, 20)
        return quick, final.status.value, final.result


async def test_the_sync_facade_round_trip(live: LiveGateway) -> None:
    quick, status, result = await asyncio.to_thread(sync_round_trip, live.url)
    assert quick == {"echo": {"n": 3}}
    assert status == "succeeded"
    assert result == {"echo": {"n": 4}}


async def test_the_sync_facade_raises_the_same_errors(live: LiveGateway) -> None:
    def deny_then_run() -> None:
        with SignoffSyncClient(live.url, "t-bot") as bot:
            bot.run("noop", "forbidden", {}, "not allowed")

    with pytest.raises(ActionDenied) as caught:
        await asyncio.to_thread(deny_then_run)
    assert caught.value.rule == "forbidden"
