"""Stale requests: `signoff pending --older-than` and the bulk `signoff deny --older-than`,
each denial one decision through the normal API, checked in its own workflow."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from activities.ledger.store import Ledger
from signoff.models import ActionStatus
from tests.conftest import running_worker
from tests.gateway_fixtures import LiveGateway, gateway_process, live_settings, token
from tests.test_cli_actions import cli, failed, ok, submit, until_pending


@pytest.fixture(scope="module")
async def live(
    client: Client, ledger: Ledger, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveGateway]:
    """`signoff gateway` as a child process, with a worker in this process."""
    settings = live_settings(client)
    log = Path(tmp_path_factory.mktemp("gateway")) / "gateway.log"
    async with running_worker(client, settings, ledger), gateway_process(settings, log) as gw:
        yield gw


async def aged(created: list[ActionStatus], age: timedelta) -> None:
    """Wait (a little) until every action was requested at least `age` ago."""
    oldest_allowed = max(a.created_at for a in created) + age
    wait = (oldest_allowed - datetime.now(UTC)).total_seconds()
    if wait > 0:
        await asyncio.sleep(wait + 0.1)


async def test_bulk_deny_decides_each_stale_action_on_its_own(
    live: LiveGateway, ledger: Ledger
) -> None:
    first = await submit(live, "one-stale-a", rows=1)
    second = await submit(live, "one-stale-b", rows=2)
    allowed = await submit(live, "sandbox-stale", rows=3)  # never pending: never listed
    for action in (first, second):
        await until_pending(live, action.id)
    await aged([first, second], timedelta(seconds=1))

    fresh = json.loads(ok(await cli(live, "alice", "pending", "--older-than", "1h", "--json")))
    assert fresh == []
    stale = json.loads(ok(await cli(live, "alice", "pending", "--older-than", "1s", "--json")))
    assert {s["id"] for s in stale} == {first.id, second.id}
    # An agent has no inbox: nothing to deny, nothing sent.
    assert "nothing older" in ok(
        await cli(live, "bot", "deny", "--older-than", "1s", "--reason", "x", "--yes")
    )

    result = await cli(
        live, "alice", "deny", "--older-than", "1s", "--reason", "stale", "--yes", "--json"
    )
    outcomes = json.loads(ok(result))
    assert sorted((o["id"], o["outcome"]) for o in outcomes) == sorted(
        [(first.id, "denied"), (second.id, "denied")]
    )
    for action in (first, second):
        final = ActionStatus.model_validate_json(
            ok(await cli(live, "bot", "status", action.id, "--json"))
        )
        assert final.status.value == "denied"
        assert final.error == "Denied by alice@example.com: stale"
        [decision] = [e for e in await ledger.events(action.id) if e.kind == "decision"]
        assert decision.actor == "alice@example.com"
        assert decision.channel == "api"
    assert allowed.id not in {o["id"] for o in outcomes}
    again = ok(await cli(live, "alice", "deny", "--older-than", "1s", "--reason", "x", "--yes"))
    assert "nothing older than 1s waits for you" in again


async def test_older_than_is_validated(live: LiveGateway) -> None:
    async with httpx.AsyncClient(
        base_url=live.url, headers={"Authorization": f"Bearer {token('alice')}"}
    ) as http:
        for bad in ("7 days", "0s", "-1d", "9999d", "x" * 30, "P1D"):
            answer = await http.get("/v1/approvals", params={"older_than": bad})
            assert answer.status_code == 422, (bad, answer.text)
            assert "older_than" in answer.json()["error"]["message"]
        assert (await http.get("/v1/approvals", params={"older_than": "7d"})).status_code == 200
    message = failed(await cli(live, "alice", "pending", "--older-than", "soon"))
    assert "older_than" in message
    both = failed(await cli(live, "alice", "deny", "act-1", "--older-than", "1d", "--reason", "x"))
    assert "not both" in both
    neither = failed(await cli(live, "alice", "deny", "--reason", "x"))
    assert "not both" in neither


async def test_bulk_deny_lists_the_refused_ones_and_denies_the_rest(
    client: Client, ledger: Ledger, tmp_path: Path
) -> None:
    """The gateway's directory still has alice in dba; the worker's (newer) one moved her to
    security. Her inbox lists both stale actions; each workflow checks her decision itself."""
    gateway_settings = live_settings(client)
    moved = tmp_path / "directory.yaml"
    text = gateway_settings.directory.read_text()
    alice = next(line for line in text.splitlines() if '"alice@example.com"' in line)
    moved.write_text(text.replace(alice, alice.replace("groups: [dba]", "groups: [security]")))
    worker_settings = gateway_settings.model_copy(update={"directory": moved})
    log = tmp_path / "gateway.log"
    async with (
        running_worker(client, worker_settings, ledger),
        gateway_process(gateway_settings, log) as gw,
    ):
        dba_only = await submit(gw, "one-moved", rows=1)
        dba_and_security = await submit(gw, "pair-moved", rows=2)
        for action in (dba_only, dba_and_security):
            await until_pending(gw, action.id)
        await aged([dba_only, dba_and_security], timedelta(seconds=1))
        result = await cli(gw, "alice", "deny", "--older-than", "1s", "--reason", "stale", "--yes")
        assert result.exit_code == 1, result.output
        human = result.output
        json_result = await cli(
            gw, "alice", "status", dba_only.id, "--json"
        )  # alice may still see it (the gateway thinks she is a DBA)
        after = ActionStatus.model_validate_json(ok(json_result))
    assert f"refused {dba_only.id}: not_eligible" in " ".join(human.split())
    assert f"denied {dba_and_security.id}: now denied" in " ".join(human.split())
    assert "1 denied, 1 refused" in human
    assert after.status.value == "pending_approval"
    assert [(r.approver, r.code.value) for r in after.refused] == [
        ("alice@example.com", "not_eligible")
    ]
