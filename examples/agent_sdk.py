"""A short agent using the signoff SDK: one action that runs at once, one that needs a human.

Against `signoff dev` (example policy and directory), as the example agent agent:etl-bot:

    SIGNOFF_TOKEN=dev-etl-bot python examples/agent_sdk.py

The second request waits for one SRE. agent:etl-bot belongs to bob, who therefore may not
approve it; dave can, from another terminal: `SIGNOFF_TOKEN=dev-dave signoff approve <id>`
(or deny it with `signoff deny <id> --reason ...` and watch the agent learn why).
"""

from __future__ import annotations

import asyncio
import os

from signoff.client import ActionDenied, ActionExpired, ActionFailed, SignoffClient


async def main() -> None:
    """Ask for two no-op actions and report what happened to each."""
    gateway = os.environ.get("SIGNOFF_GATEWAY", "http://127.0.0.1:8080")
    async with SignoffClient(gateway, os.environ.get("SIGNOFF_TOKEN", "dev-etl-bot")) as signoff:
        # The example policy allows no-ops on sandboxes: this returns the result right away.
        result = await signoff.run("noop", "sandbox", {"step": 1}, "smoke test of the pipeline")
        print("sandbox:", result)

        # Anywhere else a no-op needs one SRE. Submit, tell the humans, then wait.
        status = await signoff.request(
            "noop", "staging-db", {"step": 2}, "rehearse tonight's migration on staging"
        )
        print(f"staging: {status.status.value}; approve with: signoff approve {status.id}")
        try:
            final = await signoff.wait(status.id, timeout=600)
            print("staging:", final.status.value, final.result)
        except (ActionDenied, ActionExpired, ActionFailed) as err:
            print("staging:", err)  # e.g. "Denied by dave@example.com: not tonight"


if __name__ == "__main__":
    asyncio.run(main())
