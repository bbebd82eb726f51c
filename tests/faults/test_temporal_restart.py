"""The Temporal dev server stopped (SIGTERM) and restarted on the same database file and port
while approvals are pending: nothing is lost, and decisions made after the restart go through.

This test runs its own `temporal server start-dev --db-filename`, as `signoff dev` does, so
the session's in-memory server is left alone.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.ledger.store import Ledger
from signoff.models import Status
from tests.conftest import Gate, running_worker
from tests.gateway_fixtures import count_workflows, free_port
from workers.dev.binaries import temporal_cli
from workers.dev.temporal import SQLITE_FLAGS
from workers.settings import Settings
from workflows.action import ActionWorkflow
from workflows.messages import AuditKind
from workflows.search_attributes import dev_server_flags

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ONE = 4  # wait for one DBA
TWO = 4  # wait for two from security; one approves before the restart


def dev_server(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start `temporal server start-dev` on a database file, as `signoff dev` does."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                str(temporal_cli()),
                "server",
                "start-dev",
                "--db-filename",
                str(db),
                *SQLITE_FLAGS,
                "--ip",
                "127.0.0.1",
                "--port",
                str(port),
                "--headless",
                *dev_server_flags(),
                "--log-level",
                "error",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a supervisor stops it; bounded, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def healthy(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait (bounded) until the server answers gRPC health checks."""
    for _ in range(240):
        assert process.poll() is None, log.read_text(errors="replace")
        try:
            probe = await asyncio.wait_for(Client.connect(address), 5)
            if await asyncio.wait_for(probe.service_client.check_health(), 5):
                return
        except (RuntimeError, TimeoutError, OSError):
            pass
        await asyncio.sleep(0.25)
    raise AssertionError(f"Temporal never became healthy on {address}")


@asynccontextmanager
async def connected(address: str) -> AsyncIterator[Client]:
    """A client with the pydantic converter, as worker and gateway use."""
    yield await Client.connect(address, data_converter=pydantic_data_converter)


async def test_dev_server_restart_keeps_pending_approvals(
    settings: Settings, ledger: Ledger, tmp_path: Path
) -> None:
    db, log, port = tmp_path / "temporal.db", tmp_path / "temporal.log", free_port()
    address = f"127.0.0.1:{port}"
    servers = [dev_server(db, port, log)]
    try:
        await healthy(address, servers[-1], log)
        async with connected(address) as client, running_worker(client, settings, ledger):
            gate = Gate(client, settings)
            ones = [await gate.submit(f"one-restart-{i}", {"i": i}) for i in range(ONE)]
            twos = [await gate.submit(f"two-restart-{i}", {"i": i}) for i in range(TWO)]
            for handle in [*ones, *twos]:
                await gate.wait_for(handle, "pending_approval")
            for handle in twos:
                await gate.decide(handle, "bob@example.com")

            stop(servers[-1])  # SIGTERM, and wait for it to exit
            assert servers[-1].returncode is not None
            servers.append(dev_server(db, port, log))
            await healthy(address, servers[-1], log)
            # The same client and worker carry on once the server is back.
            for handle in ones:
                await asyncio.wait_for(gate.decide(handle, "alice@example.com"), 60)
            for handle in twos:
                status = await asyncio.wait_for(handle.query(ActionWorkflow.status), 60)
                assert [d.approver for d in status.decisions] == ["bob@example.com"]
                await asyncio.wait_for(gate.decide(handle, "carol@example.com"), 60)
            after = await gate.submit("one-restart-after")
            await gate.wait_for(after, "pending_approval")
            await gate.decide(after, "alice@example.com")
            handles = [*ones, *twos, after]
            finals = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 90)
            total = await count_workflows(client, settings.task_queue, len(handles))
    finally:
        for server in servers:
            stop(server)

    assert total == len(handles)
    assert [f.status for f in finals] == [Status.SUCCEEDED] * len(handles)
    for final in finals[ONE : ONE + TWO]:
        assert [d.approver for d in final.decisions] == ["bob@example.com", "carol@example.com"]
    for handle in handles:
        kinds = [row.kind for row in await ledger.events(handle.id)]
        assert kinds[0] == AuditKind.REQUESTED
        assert kinds[-3:] == [
            AuditKind.EXECUTION_STARTED,
            AuditKind.EXECUTION_RESULT,
            AuditKind.OUTCOME,
        ]
