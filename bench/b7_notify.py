"""B7 submit to the approval message reaching Slack and Teams: `POST /v1/actions` → the post.

The bench runs tests/fake_slack.py (a local server speaking Slack's Web API, the one the tests
drive the real slack-sdk client against) in this process, and points the stack's worker at it
with SIGNOFF_SLACK_API_URL and the fake's bot token before the stack starts (`prepare`).

Teams likewise: tests/fake_teams.py plays Microsoft (Entra's token endpoint, the Bot Framework's
signing keys and connector) in this process. The worker's msal cannot be rerouted in-process as
the tests do, so the fake also listens over TLS as an authority of its own, which the worker
reaches through SIGNOFF_TEAMS_AUTHORITY_HOST (the sovereign-cloud setting), trusting the fake's
self-signed certificate through REQUESTS_CA_BUNDLE (msal's HTTP client is requests). The
conversation reference of the sre group's channel is stored the way the product learns it:
the Bot Framework tells the gateway's /teams/messages that the bot was installed there (a
signed conversationUpdate), naming the serviceUrl the worker then posts cards to.

N `bench.mark` actions are submitted one after the other through the real gateway; each needs
one SRE, so the worker's notify activities post to the sre group's Slack channel and Teams
conversation. The clock starts just before the HTTP submit and stops at each fake's receipt of
the post that names the action (the fakes stamp each request with time.monotonic, the same
clock as this process's).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import AGENT_TOKEN, Section, Stack, console, fmt, summary_ms
from tests.fake_slack import Call, FakeSlack
from tests.fake_teams import FakeMicrosoft, Recorded, self_signed_certificate, server_tls

GOAL_P50_MS = 150.0
SRE_CHANNEL = "C0000000SRE"  # policies/examples/directory.yaml
SRE_CONVERSATION = "19:sre@thread.tacv2"  # policies/examples/directory.yaml
TEAMS_APP_ID = "00000000-0000-4000-8000-0000000000b7"
TEAMS_TENANT = "00000000-0000-4000-8000-00000000b7b7"
TEAMS_SECRET = "bench-bot-secret"  # noqa: S105 - the fake's, nothing real
_FAKE: dict[str, FakeSlack] = {}
_TEAMS: dict[str, FakeMicrosoft] = {}
_CERT_DIR: list[Path] = []


def add_options(parser: argparse.ArgumentParser) -> None:
    """B7's options."""
    group = parser.add_argument_group("B7 submit to the approval message in Slack and Teams")
    group.add_argument("--b7-actions", type=int, default=200, metavar="N")


async def prepare(args: argparse.Namespace) -> None:
    """Start the fake Slack and Microsoft; set the environment the stack's processes inherit."""
    fake = FakeSlack()
    await fake.start()
    _FAKE["slack"] = fake
    os.environ["SIGNOFF_SLACK_BOT_TOKEN"] = fake.bot_token
    os.environ["SIGNOFF_SLACK_API_URL"] = fake.url

    cert_dir = Path(tempfile.mkdtemp(prefix="signoff-b7-"))
    _CERT_DIR.append(cert_dir)
    cert, key = self_signed_certificate(cert_dir)
    microsoft = await FakeMicrosoft(client_id=TEAMS_APP_ID, client_secret=TEAMS_SECRET).start(
        tls=server_tls(cert, key)
    )
    _TEAMS["teams"] = microsoft
    os.environ.update(
        {
            "SIGNOFF_TEAMS_APP_ID": TEAMS_APP_ID,
            "SIGNOFF_TEAMS_APP_PASSWORD": TEAMS_SECRET,
            "SIGNOFF_TEAMS_TENANT_ID": TEAMS_TENANT,
            "SIGNOFF_TEAMS_AUTHORITY_HOST": microsoft.authority_url,
            "SIGNOFF_TEAMS_OPENID_METADATA_URL": microsoft.metadata_url,
            "SIGNOFF_TEAMS_ALLOWED_SERVICE_URLS": '["127.0.0.1"]',
            # Where a conversation without a stored reference would go: the bench checks that
            # the cards go to the installation's serviceUrl instead.
            "SIGNOFF_TEAMS_SERVICE_URL": f"{microsoft.url}/default/",
            # Only msal uses requests here; the fake's connector and keys are plain loopback HTTP.
            "REQUESTS_CA_BUNDLE": str(cert),
        }
    )


async def finish() -> None:
    """Stop the fakes."""
    fake = _FAKE.pop("slack", None)
    if fake is not None:
        await fake.stop()
    microsoft = _TEAMS.pop("teams", None)
    if microsoft is not None:
        await microsoft.stop()
    while _CERT_DIR:
        shutil.rmtree(_CERT_DIR.pop(), ignore_errors=True)


def installation(service_url: str) -> dict[str, Any]:
    """The conversationUpdate Teams sends when the bot is added to the sre group's channel."""
    bot = {"id": f"28:{TEAMS_APP_ID}", "name": "signoff"}
    return {
        "type": "conversationUpdate",
        "id": "f:b7",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": "29:bench", "name": "bench"},
        "recipient": bot,
        "conversation": {
            "id": SRE_CONVERSATION,
            "conversationType": "channel",
            "tenantId": TEAMS_TENANT,
        },
        "channelData": {"tenant": {"id": TEAMS_TENANT}, "team": {"id": "19:b7@thread.tacv2"}},
        "membersAdded": [bot],
    }


async def install_bot(stack: Stack, microsoft: FakeMicrosoft) -> str:
    """Tell the gateway the bot was installed in the sre channel; its serviceUrl."""
    service_url = f"{microsoft.url}/b7/"
    token = microsoft.bot_jwt(service_url=service_url, audience=TEAMS_APP_ID)
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        response = await http.post(
            "/teams/messages",
            json=installation(service_url),
            headers={"Authorization": f"Bearer {token}"},
        )
    if response.status_code != 200:
        raise RuntimeError(f"the gateway refused the installation: {response.status_code}")
    return service_url


async def teams_card(
    microsoft: FakeMicrosoft, action_id: str, path: str, within: float = 30
) -> Recorded:
    """The connector's receipt of the card naming the action, waited for (bounded)."""
    deadline = time.monotonic() + within
    seen = 0
    while True:
        posted = microsoft.connector
        for record in posted[seen:]:
            if record.method == "POST" and record.path == path and action_id in repr(record.body):
                return record
        seen = len(posted)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{action_id}: no Teams card in {within:g} s")
        # The fake stamps the receipt; this poll's delay does not count.
        await asyncio.sleep(0.01)


def _names(call: Call, action_id: str) -> bool:
    return action_id in repr(call.args)


async def run(stack: Stack, args: argparse.Namespace) -> Section:
    """Submit N actions one by one and time each to its Slack message and Teams card."""
    fake = _FAKE["slack"]
    microsoft = _TEAMS["teams"]
    count = 30 if args.quick else args.b7_actions
    target = f"b7-{uuid.uuid4().hex[:8]}"
    service_url = await install_bot(stack, microsoft)
    card_path = f"/b7/v3/conversations/{SRE_CONVERSATION}/activities"
    console.print(f"[bold]B7[/bold] submitting {count} actions, timing each to Slack and Teams ...")
    latencies: list[float] = []
    to_teams_s: list[float] = []
    answered: list[float] = []
    failures = 0
    first_failure = ""
    teams_failures = 0
    first_teams_failure = ""
    async with stack.http(AGENT_TOKEN, connections=2) as http:
        for i in range(count + 3):  # the first 3 warm up connections and caches, not counted
            body = {
                "action": "bench.mark",
                "target": target,
                "params": {"i": i},
                "justification": "bench",
                "idempotency_key": f"{target}-{i}",
            }
            began = time.monotonic()
            response = await http.post("/v1/actions", json=body)
            done = time.monotonic()
            if response.status_code != 202:
                failures += 1
                first_failure = first_failure or f"{response.status_code} {response.text[:200]}"
                continue
            action_id = response.json()["id"]
            try:
                calls = await fake.wait_for(
                    "chat.postMessage",
                    timeout=30,
                    where=lambda c, a=action_id: _names(c, a),
                    channel=SRE_CHANNEL,
                )
            except TimeoutError:
                failures += 1
                first_failure = first_failure or f"{action_id}: no chat.postMessage in 30 s"
                calls = []
            try:
                card = await teams_card(microsoft, action_id, card_path)
            except TimeoutError as err:
                teams_failures += 1
                first_teams_failure = first_teams_failure or str(err)
                card = None
            if i >= 3:
                if calls:
                    latencies.append(calls[0].at - began)
                if card is not None:
                    to_teams_s.append(card.at - began)
                answered.append(done - began)
    to_slack = summary_ms(latencies)
    to_teams = summary_ms(to_teams_s)
    to_answer = summary_ms(answered)
    section = Section(
        title=f"B7 submit to the approval message in Slack and Teams ({count} actions, sequential)",
        columns=["measure", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
    )
    for name, values, stats in (
        ("POST /v1/actions sent → fake Slack received chat.postMessage", latencies, to_slack),
        ("POST /v1/actions sent → fake Bot Framework received the card", to_teams_s, to_teams),
        ("POST /v1/actions round trip (202 answer)", answered, to_answer),
    ):
        section.rows.append(
            [
                name,
                str(len(values)),
                fmt(stats["p50"]),
                fmt(stats["p90"]),
                fmt(stats["p99"]),
                fmt(stats["max"]),
            ]
        )
    section.goal("Slack p50 < 150 ms", f"{to_slack['p50']:.1f} ms", to_slack["p50"] < GOAL_P50_MS)
    section.goal(
        "Teams p50 < 150 ms",
        f"{to_teams['p50']:.1f} ms",
        to_teams["p50"] < GOAL_P50_MS if to_teams_s else None,
    )
    if failures:
        section.notes.append(f"{failures} failed or not seen in Slack: {first_failure}")
    if teams_failures:
        section.notes.append(f"{teams_failures} not seen in Teams: {first_teams_failure}")
    section.notes.append(
        "The fake Slack runs in the load generator's process; the worker's real slack-sdk client "
        "posts to it over loopback HTTP (SIGNOFF_SLACK_API_URL)."
    )
    section.notes.append(
        "The fake Microsoft (tests/fake_teams.py) runs there too: the worker's real TeamsNotifier "
        "gets its token from the fake's TLS authority (SIGNOFF_TEAMS_AUTHORITY_HOST; msal caches "
        "it, fetched during warm-up) and posts each card over loopback HTTP to the serviceUrl "
        f"the gateway stored when told of the bot's installation ({service_url})."
    )
    return section


if __name__ == "__main__":
    from bench.run_all import standalone

    standalone("b7")
