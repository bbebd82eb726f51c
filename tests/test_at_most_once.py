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
from temporalio.client import Client, WorkflowHandle

from activities.ledger.store import Ledger
from signoff.models import ActionStatus, Status
from tests.conftest import DATA, Gate, running_worker, spawn_worker
from tests.held_replies import held_replies
from tests.test_workflow import ALLOWED_ROWS, ledger_writes
from workers.settings import Settings
from workflows.action import OUTCOME_UNKNOWN, ActionWorkflow
from workflows.messages import AuditKind

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


async def submit_recorded_run(
    gate: Gate, runs: Path, *, seconds: float
) -> WorkflowHandle[ActionWorkflow, ActionStatus]:
    """A non-idempotent shell action that notes its run in `runs`, then takes `seconds`."""
    return await gate.submit(
        "ops-shell",
        {"argv": [sys.executable, str(DATA / "record_run.py"), str(runs), str(seconds)]},
        action="shell.run",
    )


async def test_non_idempotent_action_whose_worker_dies_fails_and_never_reruns(
    client: Client, shell_settings: Settings, ledger: Ledger, postgres_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    gate = Gate(client, shell_settings)
    worker = spawn_worker(client, shell_settings, postgres_url)
    try:
        handle = await submit_recorded_run(gate, runs, seconds=30)
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


async def test_a_success_written_before_its_completion_was_lost_is_the_outcome(
    client: Client, shell_settings: Settings, ledger: Ledger, postgres_url: str, tmp_path: Path
) -> None:
    # Shape v10: the executor's activity writes a success's rows, then reports. Here its row
    # lands in Postgres but the answer is held back, and the worker dies before reporting.
    # The run sees a lost, non-idempotent execution ("outcome unknown"); it must find the
    # success in the ledger and end succeeded, with the ledger's result, never run twice.
    runs = tmp_path / "runs.txt"
    gate = Gate(client, shell_settings)
    async with held_replies(postgres_url) as (url, replies):
        worker = spawn_worker(client, shell_settings, url)
        try:
            handle = await submit_recorded_run(gate, runs, seconds=1)
            await wait_for_lines(runs, 1)
            replies.clear()  # the worker's writes still land; their answers never come
            for _ in range(300):
                rows = await ledger.events(handle.id)
                if rows and rows[-1].kind == AuditKind.OUTCOME:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the executor's activity never wrote the outcome")
        finally:
            kill_group(worker)
    async with running_worker(client, shell_settings, ledger):
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert outcome.error is None
    assert len(runs.read_text().splitlines()) == 1, "a non-idempotent action ran twice"
    rows = await ledger.events(handle.id)
    assert [(r.seq, r.kind) for r in rows] == ALLOWED_ROWS
    assert rows[4].payload == {"status": "succeeded", "error": None}
    assert outcome.result == rows[3].payload["result"]
    assert outcome.result is not None
    # The run did give the execution up, and asked the ledger, which answered with the success.
    history = await handle.fetch_history()
    assert any(e.HasField("activity_task_timed_out_event_attributes") for e in history.events)
    assert await ledger_writes(handle) == ["audit execution_result, outcome"]
