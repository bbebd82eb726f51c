"""Replay: workflow code must still replay every recorded history, or pending approvals break."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, WorkflowRunner

from activities.ledger.store import Ledger
from tests.histories.record import record_all, record_issue17
from tests.test_timers import skipping_env  # noqa: F401 - fixture
from workers.sandbox import SANDBOX
from workers.settings import Settings
from workflows.action import ActionWorkflow
from workflows.messages import WINDOW_ID_PREFIX
from workflows.window import WindowWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


# A worker runs workflows in Temporal's sandbox unless SIGNOFF_WORKFLOW_SANDBOX=false.
RUNNERS: dict[str, WorkflowRunner] = {
    "sandboxed": SANDBOX,
    "unsandboxed": UnsandboxedWorkflowRunner(),
}


def replayer(runner: WorkflowRunner = SANDBOX) -> Replayer:
    """A replayer configured exactly like the worker (sandboxed unless told otherwise)."""
    return Replayer(
        workflows=[ActionWorkflow, WindowWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=runner,
    )


def _history(name: str, text: str) -> WorkflowHistory:
    """The history under its recorded workflow id where the workflow derives ids from it.

    An action that opened an approval window started the child `win-<its id>`; replayed
    under another id, it would command a different child id. A window checks its own id
    against its parent's.
    """
    history = WorkflowHistory.from_json(name, text)
    started = history.events[0].workflow_execution_started_event_attributes
    if started.HasField("parent_workflow_execution"):
        # A window: its id is derived from the action (its parent) that opened it.
        parent = started.parent_workflow_execution.workflow_id
        return WorkflowHistory(WINDOW_ID_PREFIX + parent, history.events)
    for event in history.events:
        if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
            child = event.start_child_workflow_execution_initiated_event_attributes.workflow_id
            if child.startswith(WINDOW_ID_PREFIX):
                return WorkflowHistory(child.removeprefix(WINDOW_ID_PREFIX), history.events)
    return history


PATHS = {
    "allowed",
    "denied_by_policy",
    "failed",
    "approved_after_refusal",
    "denied",
    "cancelled",
    "escalated_expired",
}


IN_FLIGHT = {"pending_one_of_two", "executing"}
# Shapes added by issues 15 and 17 (patches break-glass, approval-windows, step-up, reminders,
# amendments, revertible-actions, inbox-memo), in flight where an action waits.
NEW_SHAPES = {
    "break_glass_reviewed",
    "break_glass_refused",
    "break_glass_awaiting_review",
    "approved_with_window",
    "allowed_by_window",
    "window_revoked",
    "step_up",
    "reminded",
    "superseded",
    "amended_successor",
    "grant_active",
    "grant_revoked",
}


def test_every_lifecycle_path_has_a_recorded_history() -> None:
    # v1_*: before the ordered-message-updates and write-ahead-with-decision patches;
    # v2_*: before owner-at-decision, signed-messages and run-ledger (with in-flight snapshots);
    # v3_*: before identity, step-up, reminders, amendments, break-glass, approval windows,
    # revertible actions and the inbox memo;
    # v4_*: every patch with its own marker, before the one-marker shape (shape-v5: issue 16);
    # v5_*: the one-marker shape, before the one-step admission (shape-v6: issue 16);
    # v6_*: the one-step admission, before decisions timed on arrival (shape-v7);
    # v7_*: decisions timed on arrival, before one publish where one does (shape-v8);
    # v8_*: one publish where one does, before the admission writes the first rows (shape-v9);
    # v9_*: the admission writes the first rows, before the executor writes its success's
    # (shape-v10);
    # v10_*: the executor writes its success's rows, before a refusal waits for a running
    # admission (shape-v11);
    # v11_window_revoked: a window before it answers a revoke that came in during its last
    # notes (patch window-late-revokes);
    # refused_by_who, amend_refused_by_who: refusals for who sent a message that another
    # decision overtook while it was checked (patch who-before-when, only in such runs);
    # unprefixed: the current shape, with in-flight snapshots, which is what pending approvals
    # look like to a newly deployed worker.
    names = {p.stem for p in HISTORIES}
    assert names >= PATHS | IN_FLIGHT | {"rejected"} | NEW_SHAPES
    assert {"v11_window_revoked", "refused_by_who", "amend_refused_by_who"} <= names
    assert {f"v10_{path}" for path in PATHS | IN_FLIGHT | {"rejected"} | NEW_SHAPES} <= names
    assert {f"v9_{path}" for path in PATHS | IN_FLIGHT | {"rejected"} | NEW_SHAPES} <= names
    assert {f"v8_{path}" for path in PATHS | IN_FLIGHT | {"rejected"} | NEW_SHAPES} <= names
    assert {f"v7_{path}" for path in PATHS | IN_FLIGHT | {"rejected"} | NEW_SHAPES} <= names
    assert {f"v6_{path}" for path in PATHS | IN_FLIGHT | {"rejected"} | NEW_SHAPES} <= names
    assert {f"v5_{path}" for path in PATHS | IN_FLIGHT | {"rejected"} | NEW_SHAPES} <= names
    assert {f"v4_{path}" for path in PATHS | IN_FLIGHT | {"rejected"} | NEW_SHAPES} <= names
    assert {f"v3_{path}" for path in PATHS | IN_FLIGHT | {"rejected"}} <= names
    assert {f"v1_{path}" for path in PATHS} <= names
    assert {f"v2_{path}" for path in PATHS | IN_FLIGHT} <= names


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path, runner: str) -> None:
    history = _history(path.stem, path.read_text())
    result = await replayer(RUNNERS[runner]).replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"


async def test_fresh_histories_replay(client: Client, settings: Settings, ledger: Ledger) -> None:
    recorded = await record_all(client, settings, ledger)
    for name, text in recorded.items():
        result = await replayer().replay_workflow(
            _history(name, text), raise_on_replay_failure=False
        )
        assert result.replay_failure is None, f"{name}: {result.replay_failure}"


async def test_an_unsandboxed_worker_records_what_the_sandbox_replays(
    client: Client, settings: Settings, ledger: Ledger
) -> None:
    # Every lifecycle path run without the sandbox replays inside it: the same commands, and
    # no call the sandbox forbids (clock, randomness, I/O) made by the workflow on the way.
    unsandboxed = settings.model_copy(update={"workflow_sandbox": False})
    recorded = await record_all(client, unsandboxed, ledger)
    assert set(recorded) >= PATHS
    for name, text in recorded.items():
        result = await replayer(SANDBOX).replay_workflow(
            _history(name, text), raise_on_replay_failure=False
        )
        assert result.replay_failure is None, f"{name}: {result.replay_failure}"


# --- issue 17: reminders and approve-with-changes ------------------------------------------


async def test_fresh_issue17_histories_replay(
    client: Client,
    skipping_env: WorkflowEnvironment,  # noqa: F811
    settings: Settings,
    ledger: Ledger,
) -> None:
    recorded = await record_issue17(client, skipping_env, settings, ledger)
    assert set(recorded) == {"reminded", "superseded", "amended_successor"}
    for name, text in recorded.items():
        result = await replayer().replay_workflow(
            WorkflowHistory.from_json(name, text), raise_on_replay_failure=False
        )
        assert result.replay_failure is None, f"{name}: {result.replay_failure}"
