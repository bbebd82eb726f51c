"""The gateway over HTTP: the real app, a real Temporal dev server and an in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI
from temporalio.client import Client

from signoff.models import ActionStatus, action_digest
from tests.gateway_fixtures import api, build_app, count_workflows, free_port, token
from workers.dev.binaries import temporal_cli
from workers.settings import Settings

pytestmark = pytest.mark.usefixtures("worker")

ERROR_KEYS = {"error"}


@pytest.fixture
def app(client: Client, settings: Settings) -> FastAPI:
    """The gateway app on the test's task queue."""
    return build_app(client, settings)


def body(**overrides: Any) -> dict[str, Any]:
    """A submission body that needs one DBA's approval."""
    return {
        "action": "noop",
        "target": "one-db",
        "params": {"rows": 1},
        "justification": "testing the gateway",
        **overrides,
    }


def error_of(response: httpx.Response) -> dict[str, str]:
    """The `{error: {code, message}}` of a response, checking the shape on the way."""
    data = response.json()
    assert set(data) == ERROR_KEYS, data
    assert set(data["error"]) == {"code", "message"}, data
    assert isinstance(data["error"]["message"], str)
    assert data["error"]["message"]
    return data["error"]


async def submit(app: FastAPI, who: str = "bot", **overrides: Any) -> dict[str, Any]:
    """Submit as `who` and return the status body."""
    async with api(app, who) as http:
        response = await http.post("/v1/actions", json=body(**overrides))
    assert response.status_code == 202, response.text
    return response.json()


async def wait_status(app: FastAPI, action_id: str, status: str) -> dict[str, Any]:
    """Poll as the auditor until the action reaches `status`."""
    async with api(app, "erin") as http:
        for _ in range(100):
            data = (await http.get(f"/v1/actions/{action_id}", params={"wait": 5})).json()
            if data["status"] == status:
                return data
            await asyncio.sleep(0.05)
    raise AssertionError(f"{action_id} never reached {status}: {data}")


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic dC1hbGljZTp4", "Bearer", "Bearer nope", "Bearer t-alice2", "t-alice"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/actions"),
        ("GET", "/v1/actions/act-123"),
        ("POST", "/v1/actions/act-123/decisions"),
        ("POST", "/v1/actions/act-123/cancel"),
        ("GET", "/v1/approvals"),
    ],
)
async def test_every_endpoint_needs_a_known_bearer_token(
    app: FastAPI, authorization: str | None, method: str, path: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    payload = body() if path == "/v1/actions" else None
    if path.endswith("/decisions"):
        payload = {"decision": "approve", "digest": "0" * 64}
    async with api(app) as http:
        response = await http.request(method, path, headers=headers, json=payload)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert error_of(response)["code"] == "unauthorized"
    assert "t-alice" not in response.text


async def test_requests_are_logged_with_the_principal_never_the_token(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="signoff.gateway")
    async with api(app, "alice") as http:
        assert (await http.get("/v1/approvals")).status_code == 200
    async with api(app) as http:
        await http.get("/v1/approvals", headers={"Authorization": "Bearer t-secret-guess"})
    lines = [r.getMessage() for r in caplog.records if r.name == "signoff.gateway"]
    assert any(line.startswith("alice@example.com GET /v1/approvals 200") for line in lines)
    assert any(line.startswith("- GET /v1/approvals 401") for line in lines)
    assert not any("t-alice" in line or "t-secret-guess" in line for line in caplog.text.split())


# --- submit ---------------------------------------------------------------------------------


async def test_submit_answers_202_with_status_id_and_digest(app: FastAPI) -> None:
    data = await submit(app, params={"rows": 1, "note": "café ✓ 日本"})
    status = ActionStatus.model_validate(data)
    assert status.id.startswith("act-")
    assert status.request.requester == "agent:bot"
    assert status.digest == action_digest("noop", "one-db", {"rows": 1, "note": "café ✓ 日本"})
    assert status.status.value in ("evaluating", "pending_approval")


async def test_submit_with_wait_returns_the_outcome(app: FastAPI) -> None:
    async with api(app, "bot") as http:
        response = await http.post(
            "/v1/actions", params={"wait": 10}, json=body(target="sandbox-1", params={"n": 1})
        )
    assert response.status_code == 202
    assert response.json()["status"] == "succeeded"
    assert response.json()["result"] == {"echo": {"n": 1}}


async def test_requester_is_the_token_holder_never_a_body_field(app: FastAPI) -> None:
    async with api(app, "bot") as http:
        response = await http.post("/v1/actions", json=body(requester="alice@example.com"))
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert "body.requester" in error["message"]


async def test_unknown_action_type_is_422(app: FastAPI) -> None:
    async with api(app, "bot") as http:
        response = await http.post("/v1/actions", json=body(action="rm.rf"))
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "unknown_action"
    assert "noop" in error["message"]  # it lists the known types


async def test_same_idempotency_key_gives_the_same_action_and_one_workflow(
    app: FastAPI, client: Client, settings: Settings
) -> None:
    first = await submit(app, idempotency_key="key-1")
    second = await submit(app, idempotency_key="key-1")
    assert first["id"] == second["id"]
    # Once finished, too: the key's action comes back, no second run.
    done = await submit(app, target="sandbox-1", idempotency_key="key-2")
    await wait_status(app, done["id"], "succeeded")
    again = await submit(app, target="sandbox-1", idempotency_key="key-2")
    assert again["id"] == done["id"]
    assert again["status"] == "succeeded"
    assert await count_workflows(client, settings.task_queue, expected_at_least=2) == 2


async def test_same_key_is_per_requester(app: FastAPI) -> None:
    mine = await submit(app, "bot", idempotency_key="shared")
    theirs = await submit(app, "carol", idempotency_key="shared")
    assert mine["id"] != theirs["id"]


async def test_same_key_for_a_different_action_is_409(app: FastAPI) -> None:
    await submit(app, idempotency_key="key-3")
    async with api(app, "bot") as http:
        response = await http.post(
            "/v1/actions", json=body(params={"rows": 2}, idempotency_key="key-3")
        )
    assert response.status_code == 409
    assert error_of(response)["code"] == "idempotency_conflict"


# --- bad input: never a 500 -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"action": "noop", "target": ', "invalid JSON"),
        (b"[1, 2, 3]", "body"),
        (b'"just a string"', "body"),
        (json.dumps(body(params="x")).encode(), "body.params"),
        (json.dumps(body(justification=7)).encode(), "body.justification"),
        (json.dumps(body(justification="   ")).encode(), "body.justification"),
        (json.dumps(body(risk="extreme")).encode(), "body.risk"),
        (json.dumps(body(action="Noop!")).encode(), "body.action"),
        (json.dumps(body(target="../etc")).encode(), "body.target"),
        (json.dumps(body(justification="x" * 5000)).encode(), "body.justification"),
        (json.dumps({"action": "noop"}).encode(), "body.target"),
        (
            b'{"action": "noop", "target": "x", "justification": "j", "params": {"n": NaN}}',
            "params",
        ),
        (
            b'{"action": "noop", "target": "x", "justification": "j", "params": {"n": 1e999}}',
            "params",
        ),
        (b'{"action": "noop", "target": "x", "justification": "\\ud800"}', "justification"),
        (
            b'{"action": "noop", "target": "x", "justification": "j", "params": {"\\udfff": 1}}',
            "params",
        ),
        (b"", "body"),
    ],
)
async def test_malformed_bodies_are_422_with_the_field_named(
    app: FastAPI, content: bytes, field: str
) -> None:
    async with api(app, "bot") as http:
        response = await http.post(
            "/v1/actions", content=content, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert field in error["message"]


async def test_absurd_numbers_are_client_errors(app: FastAPI) -> None:
    huge = b'{"action": "noop", "target": "x", "justification": "j", "params": {"n": '
    huge += b"9" * 5000 + b"}}"
    async with api(app, "bot") as http:
        too_long = await http.post(
            "/v1/actions", content=huge, headers={"Content-Type": "application/json"}
        )
        for wait in ("1e309", "-1", "61", "nan", "soon"):
            response = await http.post("/v1/actions", params={"wait": wait}, json=body())
            assert response.status_code == 422, (wait, response.text)
            assert "query.wait" in error_of(response)["message"]
        limit = await http.get("/v1/approvals", params={"limit": "10" * 50})
    assert too_long.status_code == 400
    assert error_of(too_long)["code"] == "bad_request"
    assert limit.status_code == 422


async def test_a_body_over_one_mebibyte_is_413(app: FastAPI) -> None:
    big = json.dumps(body(params={"blob": "x" * (1024 * 1024)})).encode()
    async with api(app, "bot") as http:
        response = await http.post(
            "/v1/actions", content=big, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


async def test_a_chunked_body_over_the_limit_is_413_without_content_length(app: FastAPI) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(40):
            sent += 64 * 1024
            yield b" " * (64 * 1024)

    async with api(app, "bot") as http:
        request = http.build_request(
            "POST", "/v1/actions", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in request.headers
        response = await http.send(request)
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


async def test_a_body_just_under_the_limit_is_read(app: FastAPI) -> None:
    padded = json.dumps(body()).encode()
    padded += b" " * (1024 * 1024 - len(padded))
    async with api(app, "bot") as http:
        response = await http.post(
            "/v1/actions", content=padded, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    "bad_id", ["nope", "act-", "act-../../x", "act-%00", "act-ü", "act-" + "a" * 200, "ACT-1"]
)
async def test_ids_that_cannot_exist_are_404(app: FastAPI, bad_id: str) -> None:
    async with api(app, "erin") as http:
        for method, path in (
            ("GET", f"/v1/actions/{bad_id}"),
            ("POST", f"/v1/actions/{bad_id}/cancel"),
        ):
            response = await http.request(method, path)
            assert response.status_code == 404, (path, response.text)
            assert error_of(response)["code"] == "not_found"


async def test_unknown_routes_and_methods_answer_in_the_error_shape(app: FastAPI) -> None:
    async with api(app, "erin") as http:
        missing = await http.get("/v2/nothing")
        wrong = await http.delete("/v1/approvals")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"
    assert wrong.status_code == 405
    assert error_of(wrong)["code"] == "method_not_allowed"


# --- reading --------------------------------------------------------------------------------


async def test_visibility_requester_deciders_and_auditors_only(app: FastAPI) -> None:
    action = await submit(app, "bot")
    action_id = action["id"]
    for who in ("bot", "dave", "alice", "erin"):  # requester, its owner, a DBA, an auditor
        async with api(app, who) as http:
            response = await http.get(f"/v1/actions/{action_id}")
        assert response.status_code == 200, who
        assert response.json()["id"] == action_id
    missing_id = "act-" + "0" * 32
    for who in ("bob", "oscar"):  # security and on-call have no part in a DBA action
        async with api(app, who) as http:
            hidden = await http.get(f"/v1/actions/{action_id}")
            missing = await http.get(f"/v1/actions/{missing_id}")
        assert hidden.status_code == missing.status_code == 404, who
        assert hidden.json() == json.loads(missing.text.replace(missing_id, action_id))


async def test_unknown_action_is_404(app: FastAPI) -> None:
    async with api(app, "erin") as http:
        response = await http.get("/v1/actions/act-" + "f" * 32)
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


async def test_long_poll_returns_as_soon_as_the_action_finishes(app: FastAPI) -> None:
    action = await submit(app, "bot")
    await wait_status(app, action["id"], "pending_approval")

    async def poll() -> tuple[float, httpx.Response]:
        started = time.monotonic()
        async with api(app, "bot") as http:
            response = await http.get(f"/v1/actions/{action['id']}", params={"wait": 5})
        return time.monotonic() - started, response

    polling = asyncio.create_task(poll())
    await asyncio.sleep(0.3)
    async with api(app, "alice") as http:
        decided = await http.post(
            f"/v1/actions/{action['id']}/decisions",
            json={"decision": "approve", "digest": action["digest"]},
        )
    assert decided.status_code == 200, decided.text
    elapsed, response = await polling
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert elapsed < 4.5


async def test_long_poll_gives_up_after_the_wait(app: FastAPI) -> None:
    action = await submit(app, "bot")
    await wait_status(app, action["id"], "pending_approval")
    started = time.monotonic()
    async with api(app, "bot") as http:
        response = await http.get(f"/v1/actions/{action['id']}", params={"wait": 1.5})
    elapsed = time.monotonic() - started
    assert response.json()["status"] == "pending_approval"
    assert 1.4 <= elapsed < 4


async def test_inbox_holds_what_each_person_may_decide_now(app: FastAPI) -> None:
    dba = await submit(app, "bot")
    security = await submit(app, "alice", target="two-db")
    await wait_status(app, dba["id"], "pending_approval")
    await wait_status(app, security["id"], "pending_approval")

    async def inbox(who: str) -> list[str]:
        async with api(app, who) as http:
            for _ in range(50):  # visibility is eventually consistent
                response = await http.get("/v1/approvals")
                assert response.status_code == 200
                ids = [item["id"] for item in response.json()]
                if ids or who in ("bot", "erin", "oscar"):
                    return ids
                await asyncio.sleep(0.1)
        return ids

    assert await inbox("alice") == [dba["id"]]  # not her own security one
    assert await inbox("bob") == [security["id"]]
    assert await inbox("carol") == [security["id"]]
    assert await inbox("bot") == []  # agents never decide
    assert await inbox("erin") == []  # auditors see, but do not decide
    assert await inbox("oscar") == []
    # Dave is in both groups but owns the bot: only the security one is his to decide.
    assert await inbox("dave") == [security["id"]]


async def test_inbox_looks_past_newer_actions_someone_else_decides(app: FastAPI) -> None:
    # The inbox first reads the newest pending actions unfiltered; with limit=1 that is two.
    # Both are the DBAs', so Bob's security one, older, must come from the filtered list.
    security = await submit(app, "alice", target="two-db")
    await wait_status(app, security["id"], "pending_approval")
    newer = [await submit(app, "bot", params={"rows": rows}) for rows in (1, 2)]
    for action in newer:
        await wait_status(app, action["id"], "pending_approval")

    async def inbox(who: str, limit: int) -> list[str]:
        async with api(app, who) as http:
            for _ in range(50):  # visibility is eventually consistent
                response = await http.get("/v1/approvals", params={"limit": limit})
                assert response.status_code == 200
                ids = [item["id"] for item in response.json()]
                if len(ids) == limit:
                    return ids
                await asyncio.sleep(0.1)
        return ids

    assert await inbox("bob", 1) == [security["id"]]
    assert await inbox("alice", 1) == [newer[1]["id"]]  # the newest of the DBAs' two
    assert await inbox("alice", 2) == [newer[1]["id"], newer[0]["id"]]


# --- deciding -------------------------------------------------------------------------------


async def decide(
    app: FastAPI, who: str, action_id: str, **decision: Any
) -> tuple[int, dict[str, Any]]:
    """POST a decision as `who`."""
    async with api(app, who) as http:
        response = await http.post(f"/v1/actions/{action_id}/decisions", json=decision)
    return response.status_code, response.json()


async def test_decisions_200_403_409_422(app: FastAPI) -> None:
    action = await submit(app, "bot")
    action_id, digest = action["id"], action["digest"]
    await wait_status(app, action_id, "pending_approval")

    code, data = await decide(app, "bot", action_id, decision="approve", digest=digest)
    assert (code, data["error"]["code"]) == (403, "agent_approver")
    code, data = await decide(app, "dave", action_id, decision="approve", digest=digest)
    assert (code, data["error"]["code"]) == (403, "self_approval")
    # bob may not even see a DBA action: 404, as GET answers him (the attempt is recorded).
    code, data = await decide(app, "bob", action_id, decision="approve", digest=digest)
    assert (code, data["error"]["code"]) == (404, "not_found")
    code, data = await decide(app, "alice", action_id, decision="approve", digest="a" * 64)
    assert (code, data["error"]["code"]) == (422, "digest_mismatch")
    code, data = await decide(app, "alice", action_id, decision="deny", digest=digest)
    assert (code, data["error"]["code"]) == (422, "missing_reason")
    code, data = await decide(app, "alice", action_id, decision="maybe", digest=digest)
    assert (code, data["error"]["code"]) == (422, "invalid_request")
    assert "body.decision" in data["error"]["message"]
    code, data = await decide(app, "alice", action_id, decision="approve", digest="short")
    assert (code, data["error"]["code"]) == (422, "invalid_request")

    code, data = await decide(app, "alice", action_id, decision="approve", digest=digest)
    assert code == 200, data
    assert data["status"] in ("executing", "succeeded")  # the quorum is met: it runs
    assert [d["approver"] for d in data["decisions"]] == ["alice@example.com"]
    assert data["decisions"][0]["channel"] == "api"
    # Every refused attempt is on record, self-approvals first among them.
    refused = [(r["approver"], r["code"]) for r in data["refused"]]
    assert refused == [
        ("agent:bot", "agent_approver"),
        ("dave@example.com", "self_approval"),
        ("bob@example.com", "not_eligible"),
        ("alice@example.com", "digest_mismatch"),
        ("alice@example.com", "missing_reason"),
    ]

    await wait_status(app, action_id, "succeeded")
    code, data = await decide(app, "alice", action_id, decision="approve", digest=digest)
    assert (code, data["error"]["code"]) == (409, "not_pending")


async def test_a_duplicate_decision_is_409(app: FastAPI) -> None:
    action = await submit(app, "bot", target="two-db")
    await wait_status(app, action["id"], "pending_approval")
    first = await decide(app, "bob", action["id"], decision="approve", digest=action["digest"])
    assert first[0] == 200
    code, data = await decide(app, "bob", action["id"], decision="approve", digest=action["digest"])
    assert (code, data["error"]["code"]) == (409, "duplicate")


async def test_a_denial_reaches_the_requester(app: FastAPI) -> None:
    action = await submit(app, "bot")
    await wait_status(app, action["id"], "pending_approval")
    code, data = await decide(
        app, "alice", action["id"], decision="deny", digest=action["digest"], reason="use replica"
    )
    assert code == 200, data
    assert data["status"] == "denied"
    assert data["error"] == "Denied by alice@example.com: use replica"


async def test_decision_on_a_missing_action_is_404(app: FastAPI) -> None:
    code, data = await decide(app, "alice", "act-" + "e" * 32, decision="approve", digest="a" * 64)
    assert (code, data["error"]["code"]) == (404, "not_found")


# --- cancelling -----------------------------------------------------------------------------


async def test_cancel_is_for_the_requester_only(app: FastAPI) -> None:
    action = await submit(app, "bot")
    action_id = action["id"]
    await wait_status(app, action_id, "pending_approval")
    async with api(app, "alice") as http:
        refused = await http.post(f"/v1/actions/{action_id}/cancel")
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "not_requester"
    async with api(app, "bob") as http:
        hidden = await http.post(f"/v1/actions/{action_id}/cancel")
    assert hidden.status_code == 404
    async with api(app, "bot") as http:
        cancelled = await http.post(
            f"/v1/actions/{action_id}/cancel", json={"reason": "plan changed"}
        )
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["error"] == "cancelled by agent:bot: plan changed"
        again = await http.post(f"/v1/actions/{action_id}/cancel")
        assert again.status_code == 409
        assert error_of(again)["code"] == "not_pending"
        extra = await http.post(f"/v1/actions/{action_id}/cancel", json={"by": "alice"})
        assert extra.status_code == 422


# --- health and the document ----------------------------------------------------------------


async def test_health_and_readiness(app: FastAPI) -> None:
    async with api(app) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_not_ready_and_503_when_temporal_is_unreachable(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)
    app = build_app(unreachable, settings)
    async with api(app, "erin") as http:
        assert (await http.get("/healthz")).status_code == 200
        with caplog.at_level(logging.WARNING, logger="signoff.gateway"):
            ready = await http.get("/readyz")
        status = await http.get("/v1/actions/act-" + "1" * 32)
    assert ready.status_code == 503
    assert error_of(ready)["code"] == "temporal_unavailable"
    # The probe sees only 503; the log says why, for whoever runs the gateway.
    [reason] = [m for r in caplog.records if (m := r.getMessage()).startswith("not ready")]
    assert reason.startswith("not ready: Temporal's health check failed: "), reason
    assert "Connection refused" in reason, reason
    assert status.status_code == 503, status.text
    assert error_of(status)["code"] == "temporal_unavailable"


def draining_dev_server(port: int, drain_seconds: int) -> subprocess.Popen[bytes]:
    """A dev server of its own whose frontend fails health checks for a while once stopped."""
    return subprocess.Popen(
        [
            *[str(temporal_cli()), "server", "start-dev", "--headless", "--ip", "127.0.0.1"],
            *["--port", str(port), "--http-port", str(free_port())],
            *["--metrics-port", str(free_port()), "--log-level", "error"],
            "--dynamic-config-value",
            f'frontend.shutdownFailHealthCheckDuration="{drain_seconds}s"',
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def test_not_ready_while_temporals_frontend_drains(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # A Temporal frontend told to stop keeps serving but answers health checks "not serving"
    # for `shutdownFailHealthCheckDuration`, so load balancers take it out first. A gateway in
    # front of it must not call itself ready then.
    port = free_port()
    server = draining_dev_server(port, drain_seconds=30)
    try:
        client = None
        for _ in range(200):
            with contextlib.suppress(RuntimeError):
                client = await Client.connect(f"127.0.0.1:{port}")
                break
            await asyncio.sleep(0.1)
        assert client is not None, "the dev server never answered"
        app = build_app(client, settings)
        async with api(app) as http:
            assert (await http.get("/readyz")).status_code == 200
            server.send_signal(signal.SIGTERM)
            with caplog.at_level(logging.WARNING, logger="signoff.gateway"):
                for _ in range(100):
                    ready = await http.get("/readyz")
                    if ready.status_code != 200:
                        break
                    await asyncio.sleep(0.1)
        assert ready.status_code == 503
        assert error_of(ready)["code"] == "temporal_unavailable"
        reasons = [m for r in caplog.records if (m := r.getMessage()).startswith("not ready")]
        assert reasons == ["not ready: Temporal answers but its workflow service is not serving"]
    finally:
        server.kill()
        server.wait()


async def test_openapi_documents_bearer_auth_and_the_error_model(app: FastAPI) -> None:
    async with api(app) as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    error_ref = "#/components/schemas/ErrorResponse"
    assert doc["components"]["schemas"]["ErrorResponse"]["properties"]["error"]
    expected = {
        ("post", "/v1/actions"),
        ("get", "/v1/actions/{id}"),
        ("post", "/v1/actions/{id}/decisions"),
        ("post", "/v1/actions/{id}/cancel"),
        ("post", "/v1/actions/{id}/report"),
        ("post", "/v1/actions/{id}/amend"),
        ("post", "/v1/actions/{id}/review"),
        ("post", "/v1/actions/{id}/revoke"),
        ("post", "/v1/actions/{id}/undo"),
        ("get", "/v1/approvals"),
        ("get", "/v1/reviews"),
        ("get", "/v1/action-types"),
        ("get", "/v1/me"),
        ("get", "/v1/windows"),
        ("get", "/v1/windows/{id}"),
        ("post", "/v1/windows/{id}/revoke"),
    }
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops if p.startswith("/v1/")}
    assert found == expected
    for method, path in expected:
        operation = doc["paths"][path][method]
        assert operation["security"] == [{"bearer": []}], path
        takes_input = "parameters" in operation or "requestBody" in operation
        for status in ("401", "422") if takes_input else ("401",):
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": error_ref}, (path, status)
    assert "security" not in doc["paths"]["/healthz"]["get"]
    # Every reference resolves.
    refs = {
        value
        for value in _walk(doc)
        if isinstance(value, str) and value.startswith("#/components/schemas/")
    }
    assert refs
    assert all(ref.rsplit("/", 1)[1] in doc["components"]["schemas"] for ref in refs)


def _walk(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [v for value in node.values() for v in _walk(value)]
    if isinstance(node, list):
        return [v for value in node for v in _walk(value)]
    return [node]


async def test_tokens_are_compared_as_whole_tokens(app: FastAPI) -> None:
    async with api(app) as http:
        spaced = await http.get(
            "/v1/approvals", headers={"Authorization": f"bearer   {token('alice')}"}
        )
    # Scheme names are case-insensitive (RFC 7235) and surrounding spaces are not the token.
    assert spaced.status_code == 200


async def test_no_worker_is_a_503_not_a_hang(client: Client, settings: Settings) -> None:
    lonely = settings.model_copy(update={"task_queue": f"{settings.task_queue}-no-worker"})
    app = build_app(client, lonely)
    started = time.monotonic()
    async with api(app, "bot") as http:
        response = await http.post("/v1/actions", json=body())
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "worker_unavailable"
    assert lonely.task_queue in error["message"]
    assert time.monotonic() - started < 20


async def test_requests_never_wait_for_a_worker_thread(app: FastAPI) -> None:
    # FastAPI runs a plain `def` dependency in a worker thread: a hop per request for
    # dependencies that do no I/O, and the refusal budget's lazy creation then raced across
    # threads. With every worker thread taken, the API must still answer all of its routes.
    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens = limiter.total_tokens
    limiter.total_tokens = 1
    held = False
    try:
        with anyio.fail_after(20):
            await limiter.acquire()
            held = True
            action = await submit(app, "bot")
            await wait_status(app, action["id"], "pending_approval")
            status, _ = await decide(
                app, "alice", action["id"], decision="approve", digest=action["digest"]
            )
            assert status == 200
            async with api(app, "alice") as http:
                stale = await http.get("/v1/approvals", params={"older_than": "1d"})
                assert stale.status_code == 200
                assert stale.json() == []
                windows = await http.get("/v1/windows")
                assert windows.status_code == 200
    finally:
        if held:
            limiter.release()
        limiter.total_tokens = tokens
