"""A worker killed mid-run: non-idempotent actions are never re-run, idempotent ones are."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client

from activities.ledger.store import Ledger
from signoff.models import Status
from tests.conftest import DATA, Gate, running_worker, spawn_worker
from workers.settings import Settings
from workflows.action import OUTCOME_UNKNOWN, ActionWorkflow

pytestmark = pytest.mark.slow


@pytest.fixture
def shell_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Settings whose shell target allows only the test's recording command."""
    targets = tmp_path / "targets.yaml"
    allowed = [[sys.executable, str(DATA / "record_run.py")]]
    targets.write_text(
        yaml.safe_dump({"targets": {"ops-shell": {"kind": "shell", "allowed": allowed}}})
    )
    return settings.model_copy(update={"targets": targets})


async def wait_for_lines(path: Path, count: int) -> list[str]:
    """Wait (bounded) until the file has `count` lines."""
    for _ in range(300):
        if path.exists() and len(lines := path.read_text().splitlines()) >= count:
            return lines
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never reached {count} lines")


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and everything it started, as a crashed host would."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


async def test_non_idempotent_action_whose_worker_dies_fails_and_never_reruns(
    client: Client, shell_settings: Settings, ledger: Ledger, postgres_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    gate = Gate(client, shell_settings)
    worker = spawn_worker(client, shell_settings, postgres_url)
    try:
        handle = await gate.submit(
            "ops-shell",
            {"argv": [sys.executable, str(DATA / "record_run.py"), str(runs), "30"]},
            action="shell.run",
        )
        await wait_for_lines(runs, 1)
        assert (await handle.query(ActionWorkflow.status)).status is Status.EXECUTING
    finally:
        kill_group(worker)
    async with running_worker(client, shell_settings, ledger):
        outcome = await handle.result()
    assert outcome.status is Status.FAILED
    assert outcome.error == OUTCOME_UNKNOWN
    assert len(runs.read_text().splitlines()) == 1, "a non-idempotent action ran twice"


async def test_idempotent_action_whose_worker_dies_is_retried_on_another(
    client: Client, settings: Settings, ledger: Ledger, postgres_url: str
) -> None:
    gate = Gate(client, settings)
    worker = spawn_worker(client, settings, postgres_url)
    try:
        handle = await gate.submit("sandbox-1", {"sleep_seconds": 20})
        await gate.wait_for(handle, "executing")
        await asyncio.sleep(1)
    finally:
        kill_group(worker)
    async with running_worker(client, settings, ledger):
        # The retry sleeps again; bounded by the 20 s sleep plus the 3 s heartbeat timeout.
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
    assert outcome.status is Status.SUCCEEDED
    assert outcome.result == {"echo": {"sleep_seconds": 20}}
