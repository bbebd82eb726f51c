"""`signoff mcp` driven by the official MCP client, against a live gateway, worker, dev server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client as MCPClient
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent
from temporalio.client import Client

from activities.ledger.store import Ledger
from signoff.client import SignoffClient
from tests.conftest import ROOT, running_worker
from tests.gateway_fixtures import LiveGateway, free_port, gateway_process, live_settings, token

SIGNOFF = str(Path(sys.executable).parent / "signoff")


@pytest.fixture(scope="module")
async def live(
    client: Client, ledger: Ledger, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveGateway]:
    """`signoff gateway` on the test policy, with a worker on its task queue."""
    settings = live_settings(client)
    async with (
        running_worker(client, settings, ledger),
        gateway_process(settings, tmp_path_factory.mktemp("mcp") / "gateway.log") as gateway,
    ):
        yield gateway


@asynccontextmanager
async def mcp_session(live: LiveGateway) -> AsyncIterator[ClientSession]:
    """An MCP session with `signoff mcp` over stdio, as agent:bot.

    A context manager, not a fixture: anyio's task groups must be entered and left in one
    task, and pytest-asyncio sets fixtures up and tears them down in different ones.
    """
    server = StdioServerParameters(
        command=SIGNOFF,
        args=["mcp", "--max-wait", "2"],
        # This checkout's code, not whatever the environment has installed.
        env={
            "SIGNOFF_GATEWAY": live.url,
            "SIGNOFF_TOKEN": token("bot"),
            "PYTHONPATH": f"{ROOT}:{ROOT / 'sdk'}",
        },
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as mcp:
        await mcp.initialize()
        yield mcp


@pytest.fixture
async def alice(live: LiveGateway) -> AsyncIterator[SignoffClient]:
    """A DBA, who approves through the API."""
    async with SignoffClient(live.url, token("alice")) as client:
        yield client


def answer(result: Any) -> Any:
    """The JSON a tool answered with; the model reads the same as text."""
    assert isinstance(result, CallToolResult)
    assert not result.is_error, result.content
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert json.loads(block.text) == result.structured_content
    return result.structured_content


async def test_the_tools_and_what_they_tell_the_model(live: LiveGateway) -> None:
    async with mcp_session(live) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}

        assert set(tools) == {"request_privileged_action", "get_action_status", "list_action_types"}
        request = tools["request_privileged_action"]
        assert set(request.input_schema["required"]) == {
            "action",
            "target",
            "params",
            "justification",
        }
        assert "minutes to hours" in (request.description or "")
        assert "get_action_status" in (request.description or "")
        assert "calling it repeatedly" in (tools["get_action_status"].description or "")


async def test_list_action_types_says_what_needs_approval(live: LiveGateway) -> None:
    async with mcp_session(live) as session:
        types = answer(await session.call_tool("list_action_types", {}))["action_types"]
        by_name = {t["action"]: t for t in types}

        # The test policy: noop is allowed, approved or denied by target; shell.run always runs.
        assert by_name["noop"]["approval"] == "depends"
        assert "sleep_seconds" in by_name["noop"]["params_schema"]["properties"]
        one_dba = next(r for r in by_name["noop"]["rules"] if r["rule"] == "one-dba")
        assert one_dba["targets"] == ["one-*"]
        assert one_dba["approvals"] == [{"group": "dba", "min": 1}]
        assert by_name["shell.run"]["approval"] == "never"
        # Denied by the default for everyone: listing them would only invite denied requests.
        assert "sql.execute" not in by_name
        # report.build has no executor: only callers can run it, and this server asks workers.
        assert "report.build" not in by_name


async def test_request_approve_and_see_the_result(live: LiveGateway, alice: SignoffClient) -> None:
    async with mcp_session(live) as session:
        params = {"rows": 5, "table": "orders"}
        pending = answer(
            await session.call_tool(
                "request_privileged_action",
                {
                    "action": "noop",
                    "target": "one-db",
                    "params": params,
                    "justification": "nightly cleanup",
                },
            )
        )
        assert pending["status"] == "pending_approval"
        assert pending["waiting_for"] == ["1 of group dba (0 approved so far)"]
        assert pending["id"] in pending["next"]

        await alice.approve(pending["id"], digest=pending["digest"])

        done: dict[str, Any] = {}
        for _ in range(10):
            done = answer(await session.call_tool("get_action_status", {"id": pending["id"]}))
            if done["status"] == "succeeded":
                break
        assert done["status"] == "succeeded"
        assert done["result"] == {"echo": params}


async def test_a_policy_denial_reaches_the_model_with_its_reason(live: LiveGateway) -> None:
    async with mcp_session(live) as session:
        denied = answer(
            await session.call_tool(
                "request_privileged_action",
                {"action": "noop", "target": "forbidden", "params": {}, "justification": "try it"},
            )
        )

        assert denied["status"] == "denied_by_policy"
        assert denied["reason"] == "forbidden is off limits"
        assert denied["rule"] == "forbidden"
        assert denied["denied_by"] == "policy"


async def test_a_human_denial_reaches_the_model_with_its_reason(
    live: LiveGateway, alice: SignoffClient
) -> None:
    async with mcp_session(live) as session:
        pending = answer(
            await session.call_tool(
                "request_privileged_action",
                {"action": "noop", "target": "one-db", "params": {}, "justification": "drop it"},
            )
        )
        await alice.deny(pending["id"], "use the read replica instead")

        denied = answer(await session.call_tool("get_action_status", {"id": pending["id"]}))

        assert denied["status"] == "denied"
        assert denied["reason"] == "use the read replica instead"
        assert denied["denied_by"] == "alice@example.com"
        assert denied["message"] == "Denied by alice@example.com: use the read replica instead"


async def test_a_bad_request_is_a_tool_error_the_model_can_read(live: LiveGateway) -> None:
    async with mcp_session(live) as session:
        result = await session.call_tool(
            "request_privileged_action",
            {"action": "nuke.all", "target": "prod", "params": {}, "justification": "why not"},
        )

        assert result.is_error
        block = result.content[0]
        assert isinstance(block, TextContent)
        assert "unknown action type 'nuke.all'" in block.text


async def test_streamable_http_transport(live: LiveGateway) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        SIGNOFF,
        "mcp",
        "--transport",
        "http",
        "--port",
        str(port),
        env={**os.environ, "SIGNOFF_GATEWAY": live.url, "SIGNOFF_TOKEN": token("bot")},
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(150):
                try:
                    await http.get(url)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        async with MCPClient(url) as mcp:
            names = {t.name for t in (await mcp.list_tools()).tools}
            status = await mcp.call_tool(
                "request_privileged_action",
                {"action": "noop", "target": "sandbox", "params": {"n": 1}, "justification": "ok"},
            )
        assert "request_privileged_action" in names
        assert answer(status)["result"] == {"echo": {"n": 1}}
    finally:
        process.terminate()
        await process.wait()
