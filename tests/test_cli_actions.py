"""The action commands of the CLI against a live `signoff gateway`, worker and dev server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from temporalio.client import Client
from typer.testing import CliRunner

from activities.ledger.store import Ledger
from signoff.models import ActionStatus, action_digest
from tests.cli import app
from tests.conftest import running_worker
from tests.gateway_fixtures import LiveGateway, free_port, gateway_process, live_settings, token

runner = CliRunner()


@pytest.fixture(scope="module")
async def live(
    client: Client, ledger: Ledger, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveGateway]:
    """`signoff gateway` as a child process, with a worker in this process."""
    settings = live_settings(client)
    log = Path(tmp_path_factory.mktemp("gateway")) / "gateway.log"
    async with running_worker(client, settings, ledger), gateway_process(settings, log) as gw:
        yield gw
    # Stopped with SIGTERM, it shut down cleanly rather than dying of the signal.
    assert gw.process.returncode == 0, gw.output()
    assert "gateway stopped" in gw.output()


async def cli(live: LiveGateway, who: str | None, *args: str) -> Result:
    """Run `signoff ARGS` as `who` (SIGNOFF_GATEWAY/SIGNOFF_TOKEN) without blocking the worker."""
    env = {"SIGNOFF_GATEWAY": live.url, "SIGNOFF_TOKEN": token(who) if who else ""}
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


def ok(result: Result) -> str:
    """The output of a command that must have succeeded."""
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def failed(result: Result) -> str:
    """The stderr of a command that must have failed plainly: exit 1, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: "), result.stderr
    return result.stderr


async def submit(live: LiveGateway, target: str = "one-cli", **params: Any) -> ActionStatus:
    """`signoff submit --json` as the bot."""
    args = [f"{key}={json.dumps(value)}" for key, value in params.items()]
    result = await cli(
        live,
        "bot",
        "submit",
        "noop",
        "--target",
        target,
        *[part for arg in args for part in ("--param", arg)],
        "--justification",
        "from the CLI",
        "--json",
    )
    return ActionStatus.model_validate_json(ok(result))


async def until_pending(live: LiveGateway, action_id: str) -> None:
    """Wait until the action waits for a human."""
    for _ in range(100):
        status = ActionStatus.model_validate_json(
            ok(await cli(live, "bot", "status", action_id, "--json"))
        )
        if status.status.value == "pending_approval":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{action_id} never pending")


async def test_submit_json_parses_and_params_are_typed(live: LiveGateway) -> None:
    status = await submit(live, rows=5, name="orders", flags=["a", "b"])
    assert status.request.requester == "agent:bot"
    assert status.request.params == {"rows": 5, "name": "orders", "flags": ["a", "b"]}
    assert status.digest == action_digest("noop", "one-cli", status.request.params)


async def test_submit_with_wait_shows_the_outcome(live: LiveGateway) -> None:
    result = await cli(
        live,
        "bot",
        "submit",
        "noop",
        "--target",
        "sandbox-cli",
        "--param",
        "n=1",
        "--param",
        "word=plain text",
        "--justification",
        "a read",
        "--wait",
        "10",
    )
    output = ok(result)
    assert "succeeded" in output
    assert '"word": "plain text"' in output  # not JSON, so kept as a string


async def test_status_human_and_json(live: LiveGateway) -> None:
    action = await submit(live, rows=1)
    human = ok(await cli(live, "erin", "status", action.id))
    for expected in (action.id, "noop", "one-cli", "from the CLI", action.digest, "agent:bot"):
        assert expected in human
    # The approval page's link, on the gateway the CLI talks to (rich may wrap long lines).
    assert f"{live.url}/a/{action.id}" in "".join(human.split())
    as_json = json.loads(ok(await cli(live, "erin", "status", action.id, "--json")))
    assert as_json["id"] == action.id
    assert as_json["digest"] == action.digest


async def test_approve_shows_what_is_signed_then_approves(live: LiveGateway) -> None:
    action = await submit(live, rows=2)
    await until_pending(live, action.id)
    output = ok(await cli(live, "alice", "approve", action.id, "--reason", "looks right"))
    shown, _, after = output.partition("approved")
    assert "You are about to approve" in shown
    for expected in (action.id, "noop", "one-cli", '"rows": 2', action.digest):
        assert expected in shown
    assert action.id in after
    final = ActionStatus.model_validate_json(
        ok(await cli(live, "bot", "status", action.id, "--wait", "10", "--json"))
    )
    assert final.status.value == "succeeded"
    assert final.decisions[0].approver == "alice@example.com"
    assert final.decisions[0].reason == "looks right"


async def test_deny_needs_a_reason_and_reaches_the_agent(live: LiveGateway) -> None:
    action = await submit(live, rows=3)
    await until_pending(live, action.id)
    missing = await cli(live, "alice", "deny", action.id)
    assert missing.exit_code == 2  # a usage error: --reason is required
    output = ok(await cli(live, "alice", "deny", action.id, "--reason", "use the replica"))
    assert "You are about to deny" in output
    assert "denied" in output
    final = json.loads(ok(await cli(live, "bot", "status", action.id, "--json")))
    assert final["status"] == "denied"
    assert final["error"] == "Denied by alice@example.com: use the replica"


async def test_self_approval_is_refused_plainly(live: LiveGateway) -> None:
    action = await submit(live, rows=4)
    await until_pending(live, action.id)
    error = failed(await cli(live, "dave", "approve", action.id))
    assert "self_approval" in error
    status = ActionStatus.model_validate_json(
        ok(await cli(live, "erin", "status", action.id, "--json"))
    )
    assert [a.approver for a in status.refused] == ["dave@example.com"]


async def test_cancel_then_cancel_again(live: LiveGateway) -> None:
    action = await submit(live, rows=5)
    await until_pending(live, action.id)
    failed(await cli(live, "alice", "cancel", action.id))  # not hers
    assert action.id in ok(await cli(live, "bot", "cancel", action.id, "--reason", "not needed"))
    assert "not_pending" in failed(await cli(live, "bot", "cancel", action.id))


async def test_pending_is_the_inbox(live: LiveGateway) -> None:
    action = await submit(live, target="two-cli", rows=6)  # needs two from security
    await until_pending(live, action.id)
    for _ in range(50):  # visibility is eventually consistent
        inbox = json.loads(ok(await cli(live, "bob", "pending", "--json")))
        if inbox:
            break
        await asyncio.sleep(0.1)
    assert [item["id"] for item in inbox] == [action.id]
    table = ok(await cli(live, "carol", "pending"))
    assert action.id in table
    assert "two-cli" in table
    assert "0/2 security" in table
    assert "nothing waits for you" in ok(await cli(live, "oscar", "pending"))


async def test_flags_instead_of_environment(live: LiveGateway) -> None:
    result = await asyncio.to_thread(
        runner.invoke,
        app,
        ["pending", "--gateway", live.url, "--token", token("alice"), "--json"],
        env={"SIGNOFF_GATEWAY": "http://127.0.0.1:1", "SIGNOFF_TOKEN": "wrong"},
    )
    assert isinstance(json.loads(ok(result)), list)


async def test_errors_are_plain_messages_with_exit_1(live: LiveGateway) -> None:
    assert "no token" in failed(await cli(live, None, "pending"))
    assert "unauthorized" in failed(await cli(live, "mallory", "pending"))
    assert "not_found" in failed(await cli(live, "erin", "status", "act-" + "0" * 32))
    assert "not_found" in failed(await cli(live, "erin", "status", "../../etc/passwd"))
    assert "unknown_action" in failed(
        await cli(live, "bot", "submit", "rm.rf", "--target", "x", "--justification", "no")
    )
    unreachable = await asyncio.to_thread(
        runner.invoke,
        app,
        ["status", "act-1"],
        env={"SIGNOFF_GATEWAY": f"http://127.0.0.1:{free_port()}", "SIGNOFF_TOKEN": "t-erin"},
    )
    assert "cannot reach the gateway" in failed(unreachable)


HOSTILE = "fine\x1b[2J\x1b[8m hidden\x1b[0m \u202eevil\u200b [bold]x[/bold]"


async def test_approve_and_status_show_everything_and_no_raw_escapes(live: LiveGateway) -> None:
    tail = "a" * 10_000 + " DROP TABLE x"
    result = await cli(
        live,
        "bot",
        "submit",
        "noop",
        "--target",
        "one-cli",
        "--param",
        f"sql={json.dumps(tail)}",
        "--param",
        f"note={json.dumps(HOSTILE)}",
        "--justification",
        HOSTILE,
        "--json",
    )
    action = ActionStatus.model_validate_json(ok(result))
    await until_pending(live, action.id)
    for output in (
        ok(await cli(live, "erin", "status", action.id)),
        ok(await cli(live, "alice", "approve", action.id)).partition("approved")[0],
    ):
        for raw in ("\x1b", "\u202e", "\u200b"):
            assert raw not in output  # nothing the agent wrote reaches the terminal raw
        flat = "".join(output.split())
        assert "a" * 10_000 + "DROPTABLEx" in flat  # nothing cut, not even the tail
        assert "\\u001b[2J" in flat
        assert "\\u202eevil\\u200b" in flat
        assert "[bold]x[/bold]" in flat  # markup shown, not applied
        assert "agentowner" in flat
        assert "dave@example.com" in flat  # the agent's owner, always shown


async def test_access_log_lines_hold_no_raw_control_characters(live: LiveGateway) -> None:
    path = "/v1/actions/act-%1B%5B2J%0D%0AINFO%20forged%E2%80%AEline%E2%80%8B"
    async with httpx.AsyncClient(base_url=live.url) as http:
        response = await http.get(path, headers={"Authorization": f"Bearer {token('erin')}"})
    assert response.status_code in (400, 404, 422)
    for _ in range(50):  # the line is written after the response
        if "forged" in live.output():
            break
        await asyncio.sleep(0.05)
    [line] = [line for line in live.output().splitlines() if "forged" in line]
    assert "INFO forged" not in line.split("act-", 1)[0]  # no line of its own
    for raw in ("\x1b", "\r", "\u202e", "\u200b"):
        assert raw not in line
    assert "act-\\u001b[2J\\r\\nINFO forged\\u202eline\\u200b" in line


async def test_break_glass_from_the_cli_then_review(live: LiveGateway) -> None:
    reason = "prod is down and nobody from dba answers"
    base = ["submit", "noop", "--target", "glass-cli", "--justification", "outage"]
    refused = failed(await cli(live, "bot", *base, "--break-glass", reason))
    assert "agents never break glass (agent_break_glass)" in refused
    broke = ActionStatus.model_validate_json(
        ok(await cli(live, "oscar", *base, "--break-glass", reason, "--json"))
    )
    assert broke.break_glass is not None
    assert broke.break_glass.by == "oscar@example.com"
    for _ in range(100):
        shown = ok(await cli(live, "oscar", "status", broke.id))
        if "due" in shown:
            break
        await asyncio.sleep(0.05)
    assert "BREAK-GLASS" in shown
    assert reason in shown
    own = failed(await cli(live, "oscar", "review", broke.id, "--reason", "fine", "--yes"))
    assert "(self_review)" in own
    done = ok(await cli(live, "bob", "review", broke.id, "--reason", "checked it", "--yes"))
    assert f"reviewed {broke.id}" in done
    shown = ok(await cli(live, "bob", "status", broke.id))
    assert "accepted by bob@example.com: checked it" in shown


async def test_amend_shows_the_successor_which_needs_someone_else(live: LiveGateway) -> None:
    action = await submit(live, rows=7, name="orders")
    await until_pending(live, action.id)
    # Nothing to change, or no reason: refused before anything is sent.
    assert "--param" in failed(await cli(live, "alice", "amend", action.id, "--reason", "x"))
    assert "--reason" in failed(
        await cli(live, "alice", "amend", action.id, "--param", "rows=1", "--reason", " ")
    )
    # The agent amending its own request is refused by the workflow, plainly.
    assert "agent_approver" in failed(
        await cli(live, "bot", "amend", action.id, "--param", "rows=1", "--reason", "mine")
    )
    output = ok(
        await cli(live, "alice", "amend", action.id, "--param", "rows=1", "--reason", "fewer")
    )
    shown, _, after = output.partition("amended")
    assert "You are about to replace" in shown
    assert '{"name":"orders","rows":1}' in shown
    original = ActionStatus.model_validate_json(
        ok(await cli(live, "bot", "status", action.id, "--json"))
    )
    assert original.status.value == "superseded"
    assert original.superseded_by is not None
    assert original.superseded_by in "".join(after.split())
    successor = ActionStatus.model_validate_json(
        ok(await cli(live, "bot", "status", original.superseded_by, "--json"))
    )
    assert successor.request.params == {"rows": 1, "name": "orders"}
    assert successor.request.amended_by == "alice@example.com"
    # The amender's own approval does not count for the successor.
    await until_pending(live, successor.id)
    assert "amender" in failed(await cli(live, "alice", "approve", successor.id, "--yes"))
