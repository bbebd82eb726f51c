"""B7 submit to the approval message reaching Slack: `POST /v1/actions` → chat.postMessage.

The bench runs tests/fake_slack.py (a local server speaking Slack's Web API, the one the tests
drive the real slack-sdk client against) in this process, and points the stack's worker at it
with SIGNOFF_SLACK_API_URL and the fake's bot token before the stack starts (`prepare`). N
`bench.mark` actions are submitted one after the other through the real gateway; each needs one
SRE, so the worker's notify activity posts to the sre group's channel. The clock starts just
before the HTTP submit and stops at the fake's receipt of the chat.postMessage that names the
action (the fake stamps each call with time.monotonic, the same clock as this process's).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

from bench.common import AGENT_TOKEN, Section, Stack, console, fmt, summary_ms
from tests.fake_slack import Call, FakeSlack

GOAL_P50_MS = 150.0
SRE_CHANNEL = "C0000000SRE"  # policies/examples/directory.yaml
_FAKE: dict[str, FakeSlack] = {}


def add_options(parser: argparse.ArgumentParser) -> None:
    """B7's options."""
    group = parser.add_argument_group("B7 submit to the approval message in Slack")
    group.add_argument("--b7-actions", type=int, default=200, metavar="N")


async def prepare(args: argparse.Namespace) -> None:
    """Start the fake Slack and set the environment the stack's worker inherits."""
    fake = FakeSlack()
    await fake.start()
    _FAKE["slack"] = fake
    os.environ["SIGNOFF_SLACK_BOT_TOKEN"] = fake.bot_token
    os.environ["SIGNOFF_SLACK_API_URL"] = fake.url


async def finish() -> None:
    """Stop the fake Slack."""
    fake = _FAKE.pop("slack", None)
    if fake is not None:
        await fake.stop()


def _names(call: Call, action_id: str) -> bool:
    return action_id in repr(call.args)


async def run(stack: Stack, args: argparse.Namespace) -> Section:
    """Submit N actions one by one and time each to its chat.postMessage at the fake."""
    fake = _FAKE["slack"]
    count = 30 if args.quick else args.b7_actions
    target = f"b7-{uuid.uuid4().hex[:8]}"
    console.print(f"[bold]B7[/bold] submitting {count} actions, timing each to Slack ...")
    latencies: list[float] = []
    answered: list[float] = []
    failures = 0
    first_failure = ""
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
                continue
            if i >= 3:
                latencies.append(calls[0].at - began)
                answered.append(done - began)
    to_slack = summary_ms(latencies)
    to_answer = summary_ms(answered)
    section = Section(
        title=f"B7 submit to the approval message in Slack ({len(latencies)} actions, sequential)",
        columns=["measure", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
    )
    for name, values, stats in (
        ("POST /v1/actions sent → fake Slack received chat.postMessage", latencies, to_slack),
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
    section.goal("Teams p50 < 150 ms", "not measured (see RESULTS.md)", None)
    if failures:
        section.notes.append(f"{failures} failed or not seen in Slack: {first_failure}")
    section.notes.append(
        "The fake Slack runs in the load generator's process; the worker's real slack-sdk client "
        "posts to it over loopback HTTP (SIGNOFF_SLACK_API_URL)."
    )
    return section


if __name__ == "__main__":
    from bench.run_all import standalone

    standalone("b7")
