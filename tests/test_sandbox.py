"""The worker's sandbox: contexts read directly, the same as the SDK's, and still a sandbox."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import (
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.worker import Replayer, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import _runner as _sdk_runner

from tests.sandboxed_clock import ReadsTheClock
from tests.test_replay import HISTORIES, _history
from workers.converter import data_converter
from workers.sandbox import SANDBOX
from workflows.action import ActionWorkflow
from workflows.window import WindowWorkflow


class RecordingCodec(PayloadCodec, WithSerializationContext):
    """Changes no payload; records the context each payload was encoded or decoded in."""

    def __init__(self, seen: list[tuple[str, SerializationContext | None]], context: Any = None):
        self.seen = seen
        self.context = context

    def with_context(self, context: SerializationContext) -> RecordingCodec:
        """A codec that records `context`."""
        return RecordingCodec(self.seen, context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Record, then pass through."""
        self.seen.extend(("encode", self.context) for _ in payloads)
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Record, then pass through."""
        self.seen.extend(("decode", self.context) for _ in payloads)
        return list(payloads)


async def contexts_while_replaying(runner: WorkflowRunner) -> list[Any]:
    """Every (direction, context) the codec sees while `runner` replays every history."""
    seen: list[tuple[str, SerializationContext | None]] = []
    replayer = Replayer(
        workflows=[ActionWorkflow, WindowWorkflow],
        data_converter=dataclasses.replace(data_converter, payload_codec=RecordingCodec(seen)),
        workflow_runner=runner,
    )

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for path in HISTORIES:
            yield _history(path.stem, path.read_text())

    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            assert result.replay_failure is None, result.replay_failure
    return seen


async def test_payloads_get_the_same_contexts_as_in_the_sdks_sandbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Answering directly changes no payload's context: the same list, in the same order,
    and not one trip into the sandbox to get it."""
    assert SANDBOX.direct_contexts, "this SDK's sandbox changed: contexts go through it again"
    trips: list[str] = []
    run_code = _sdk_runner._Instance._run_code

    def counted(self: Any, code: str, **extra: Any) -> None:
        if "_context(" in code:
            trips.append(code)
        run_code(self, code, **extra)

    monkeypatch.setattr(_sdk_runner._Instance, "_run_code", counted)
    ours = await contexts_while_replaying(SANDBOX)
    assert trips == []
    sdk = SandboxedWorkflowRunner(restrictions=SANDBOX.restrictions)
    expected = await contexts_while_replaying(sdk)
    assert len(trips) >= len(expected)  # the SDK's runner enters the sandbox for each payload
    assert ours == expected
    # Activities' payloads carry their own context, not the workflow's.
    kinds = {type(context).__name__ for _, context in ours}
    assert {"WorkflowSerializationContext", "ActivitySerializationContext"} <= kinds
    assert len(HISTORIES) > 50


async def test_workflow_code_still_runs_under_the_sandboxs_restrictions(client: Client) -> None:
    """A workflow that reads the wall clock is stopped, as in the SDK's own sandbox."""
    queue = f"sandbox-{uuid.uuid4().hex}"
    async with Worker(client, task_queue=queue, workflows=[ReadsTheClock], workflow_runner=SANDBOX):
        result = await client.execute_workflow(
            ReadsTheClock.run, id=f"clock-{uuid.uuid4().hex}", task_queue=queue
        )
    assert result == "refused"


@pytest.mark.parametrize("name", ["allowed", "pending_one_of_two"])
async def test_a_replay_through_the_worker_sandbox_replays_cleanly(name: str) -> None:
    """The runner the worker uses replays recorded actions without a nondeterminism error."""
    path = Path(__file__).parent / "histories" / f"{name}.json"
    replayer = Replayer(
        workflows=[ActionWorkflow, WindowWorkflow],
        data_converter=data_converter,
        workflow_runner=SANDBOX,
    )
    result = await replayer.replay_workflow(
        _history(path.stem, path.read_text()), raise_on_replay_failure=False
    )
    assert result.replay_failure is None
