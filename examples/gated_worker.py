"""`@gated` in worker mode: the agent calls a function whose body runs in the worker.

Start the stack with the executor module loaded (the worker also needs the target's secret):

    PYTHONPATH=. SIGNOFF_EXECUTOR_MODULES='["examples.gated_tools"]' \
        TICKETING_TOKEN=dev-ticketing-secret signoff dev

Then, as the example agent:

    PYTHONPATH=. SIGNOFF_TOKEN=dev-etl-bot python examples/gated_worker.py

The example policy's default asks one SRE: approve as dave with
`SIGNOFF_TOKEN=dev-dave signoff approve <id>` (`SIGNOFF_TOKEN=dev-dave signoff pending`
lists it). This process never sees TICKETING_TOKEN.
"""

from __future__ import annotations

import asyncio

from examples.gated_tools import create_ticket
from signoff.client import ActionDenied


async def main() -> None:
    """Open a ticket through signoff and print the worker's result, or why it was refused."""
    print("asking for ticket.create; approve it as an SRE (signoff pending / signoff approve)")
    try:
        ticket = await create_ticket(
            "Disk almost full on db-3", "92% used on /var/lib/postgresql", priority="high"
        )
    except ActionDenied as denied:
        print(f"not created: {denied}")  # the reason, so the agent can change its plan
        return
    print("created:", ticket)


if __name__ == "__main__":
    asyncio.run(main())
