"""Helpers for gateway, SDK and CLI tests: the real app in-process, or `signoff gateway` live."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI
from temporalio.client import Client

from activities.ledger.store import Ledger
from policies.loader import load_policy_and_directory
from signoff.executor import registry
from workers.gateway.app import create_app
from workers.gateway.service import ActionService
from workers.settings import Settings

DATA = Path(__file__).parent / "data"
BASE_URL = "http://gateway.test"


def token(name: str) -> str:
    """The test directory's token of a principal: t-alice, t-bot, ..."""
    return f"t-{name}"


def build_app(client: Client, settings: Settings, ledger: Ledger | None = None) -> FastAPI:
    """The gateway app over a real ActionService, as `run_gateway` builds it."""
    policy, directory = load_policy_and_directory(settings.policy, settings.directory)
    service = ActionService(client, settings, policy, directory, registry, ledger=ledger)
    return create_app(service, directory, settings)


def api(app: FastAPI, name: str | None = None) -> httpx.AsyncClient:
    """An HTTP client of the in-process app, authenticated as `name` when given."""
    headers = {"Authorization": f"Bearer {token(name)}"} if name else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE_URL, headers=headers, timeout=90
    )


async def count_workflows(client: Client, task_queue: str, expected_at_least: int = 1) -> int:
    """Workflows on a task queue, once visibility has caught up with `expected_at_least`."""
    query = f'TaskQueue = "{task_queue}"'
    count = 0
    for _ in range(100):
        count = (await client.count_workflows(query)).count
        if count >= expected_at_least:
            # Give a possible (wrong) extra workflow the same time to show up.
            await asyncio.sleep(0.5)
            return (await client.count_workflows(query)).count
        await asyncio.sleep(0.1)
    return count


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def live_settings(client: Client) -> Settings:
    """Settings for a live stack on its own task queue, with the test policy and directory."""
    return Settings(
        task_queue=f"test-{uuid.uuid4()}",
        temporal_address=client.service_client.config.target_host,
        policy=DATA / "policy.yaml",
        directory=DATA / "directory.yaml",
        targets=DATA / "targets.yaml",
        heartbeat_timeout=timedelta(seconds=3),
        ui_url="http://ui.test",
    )


class LiveGateway:
    """A `signoff gateway` child process and what it printed."""

    def __init__(self, url: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def output(self) -> str:
        """Everything the gateway logged so far."""
        return self.log.read_text(errors="replace")


@asynccontextmanager
async def gateway_process(
    settings: Settings, log: Path, *, port: int | None = None
) -> AsyncIterator[LiveGateway]:
    """Run `signoff gateway` on `port` (else a free one); on exit stop it with SIGTERM."""
    port = port or free_port()
    env = {
        **os.environ,
        "SIGNOFF_TEMPORAL_ADDRESS": settings.temporal_address,
        "SIGNOFF_TASK_QUEUE": settings.task_queue,
        "SIGNOFF_POLICY": str(settings.policy),
        "SIGNOFF_DIRECTORY": str(settings.directory),
        "SIGNOFF_TARGETS": str(settings.targets),
    }
    command = [sys.executable, "-c", "from signoff.cli import main; main()"]
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *command,
            "gateway",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            env=env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    live = LiveGateway(f"http://127.0.0.1:{port}", process, log)
    try:
        async with httpx.AsyncClient(base_url=live.url) as http:
            for _ in range(300):
                if process.returncode is not None:
                    raise AssertionError(f"gateway exited early:\n{live.output()}")
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"gateway never answered:\n{live.output()}")
        yield live
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
