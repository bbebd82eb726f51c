"""Gateway and worker in ONE process, for B1's eager-start experiment.

Eager workflow start hands the first workflow task back in the start call's response, so it
only works when the starting client and a worker for the task queue share one process (and one
Client). signoff deploys the gateway and the worker as separate processes, so the benchmark
compares this combined process with and without `request_eager_start`, never with the split
deployment. Settings come from the environment, as for `signoff gateway` and `signoff worker`.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from temporalio.client import Interceptor, OutboundInterceptor, StartWorkflowInput

from activities.executors import register_builtins
from activities.ledger.store import Ledger
from activities.targets import load_targets
from policies.loader import load_policy_and_directory
from signoff.executor import registry
from workers import event_loop
from workers.database import resolve_database_url
from workers.gateway.app import create_app
from workers.gateway.server import serve
from workers.gateway.service import ActionService
from workers.settings import Settings
from workers.temporal import connect
from workers.wiring.channels import notifiers_for
from workers.worker import WorkerParts, build_worker


class EagerStart(Interceptor):
    """Ask for eager start on every workflow the client starts."""

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        """Wrap the client's outbound calls."""
        return _EagerOutbound(next)


class _EagerOutbound(OutboundInterceptor):
    async def start_workflow(self, input: StartWorkflowInput) -> Any:
        input.request_eager_start = True
        return await super().start_workflow(input)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--eager", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    policy, directory = load_policy_and_directory(settings.policy, settings.directory)
    register_builtins(registry)
    registry.load_modules(settings.executor_modules)
    ledger = await Ledger.connect(resolve_database_url(settings=settings, create=True))
    client = await connect(settings, interceptors=[EagerStart()] if args.eager else [])
    parts = WorkerParts(
        policy=policy,
        directory=directory,
        ledger=ledger,
        targets=load_targets(settings.targets),
        notifiers=notifiers_for(settings, directory),
    )
    service = ActionService(client, settings, policy, directory, registry)
    app = create_app(service, directory, settings)
    try:
        async with build_worker(client, settings, parts):
            await serve(app, "127.0.0.1", args.port)
    finally:
        await ledger.close()


if __name__ == "__main__":
    event_loop.run(main(), Settings().event_loop)
