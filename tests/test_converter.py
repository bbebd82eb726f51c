"""The data converter: one cache of pydantic type adapters for every workflow run."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    ActivitySerializationContext,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)

from signoff.models import ActionRequest
from workers.converter import ContractPayloadConverter, UndecodablePayload, data_converter

# A context the SDK gives an activity's payloads (and a local activity's).
ACTIVITY = ActivitySerializationContext(
    namespace="default",
    workflow_id="act-1",
    workflow_type="SignoffAction",
    activity_type="notify",
    activity_id="1",
    activity_task_queue="q",
    is_local=False,
)


def json_converter(converter: Any) -> Any:
    """The JSON part of a composite payload converter."""
    return converter.converters[b"json/plain"]


def test_each_runs_converter_reuses_the_type_adapters() -> None:
    # The SDK builds a payload converter for every workflow run it holds (and may copy it);
    # each used to build its own pydantic adapters again: memory and CPU per run.
    request = ActionRequest(
        action="noop", target="sandbox-1", requester="agent:bot", justification="testing"
    )
    payload: Payload = data_converter.payload_converter.to_payloads([request])[0]
    runs = [ContractPayloadConverter() for _ in range(3)]
    runs.append(copy.deepcopy(runs[0]))
    context = WorkflowSerializationContext(namespace="default", workflow_id="act-1")
    runs.append(runs[0].with_context(context))
    caches = {id(json_converter(run)._type_adapter) for run in runs}
    assert len(caches) == 1
    cache = json_converter(runs[0])._type_adapter
    for run in runs:
        assert run.from_payloads([payload], [ActionRequest]) == [request]
    before = cache.cache_info()
    for run in runs:
        run.from_payloads([payload], [ActionRequest])
    after = cache.cache_info()
    assert after.misses == before.misses
    assert after.hits == before.hits + len(runs)


def test_a_converter_in_context_is_built_once_and_still_knows_its_context() -> None:
    # The SDK asks for a converter in context for every activation, activity and query:
    # building one each time cost a busy worker ~4% of its CPU. Two are shared instead, and
    # only the workflow's turns a payload the contract refuses into a typed failure.
    workflow = WorkflowSerializationContext(namespace="default", workflow_id="act-1")
    activity = ACTIVITY
    base = ContractPayloadConverter()
    in_workflow = base.with_context(workflow)
    assert in_workflow is not base
    assert ContractPayloadConverter().with_context(workflow) is in_workflow
    assert in_workflow.with_context(workflow) is in_workflow
    assert base.with_context(activity) is base
    in_activity = in_workflow.with_context(activity)
    assert in_activity.with_context(activity) is in_activity
    # The SDK wraps it; the wrapper asks it for its context.
    wrapped = data_converter.with_context(workflow).payload_converter
    assert wrapped._inner_payload_converter is in_workflow  # type: ignore[attr-defined]
    bad = data_converter.payload_converter.to_payloads([{"action": "noop"}])[0]
    with pytest.raises(UndecodablePayload, match="input does not fit ActionRequest"):
        in_workflow.from_payloads([bad], [ActionRequest])
    with pytest.raises(ValidationError):
        in_activity.from_payloads([bad], [ActionRequest])


def test_the_data_converter_in_context_is_made_once_per_kind_of_context() -> None:
    # The SDK asks for the data converter in a workflow's context twice per activation, and
    # cloning it ran its whole set-up each time. What ours makes depends only on whether the
    # context is a workflow's, so the same one comes back for every workflow and every activity.
    first = WorkflowSerializationContext(namespace="default", workflow_id="act-1")
    second = WorkflowSerializationContext(namespace="default", workflow_id="act-2")
    activity = ACTIVITY
    in_workflow = data_converter.with_context(first)
    assert in_workflow is not data_converter
    assert data_converter.with_context(second) is in_workflow
    assert data_converter.with_context(activity) is data_converter
    assert in_workflow.with_context(activity) is not in_workflow
    # It still knows its context: a payload the contract refuses is a typed failure only in
    # the workflow's, where a retry could never fix it.
    bad = data_converter.payload_converter.to_payloads([{"action": "noop"}])[0]
    with pytest.raises(UndecodablePayload):
        in_workflow.payload_converter.from_payloads([bad], [ActionRequest])
    with pytest.raises(ValidationError):
        in_workflow.with_context(activity).payload_converter.from_payloads([bad], [ActionRequest])


class _ContextCodec(PayloadCodec, WithSerializationContext):
    """A codec whose answer differs per workflow, as one keyed by workflow id would."""

    def __init__(self, workflow_id: str | None = None) -> None:
        self.workflow_id = workflow_id

    def with_context(self, context: SerializationContext) -> _ContextCodec:
        """This codec for `context`'s workflow."""
        return _ContextCodec(getattr(context, "workflow_id", None))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Pass through."""
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Pass through."""
        return list(payloads)


def test_a_codec_that_reads_the_context_gets_each_workflows_own() -> None:
    # Keeping one converter per kind of context would hand act-2's payloads a codec made for
    # act-1: with such a part, every context is made afresh.
    converter = dataclasses.replace(data_converter, payload_codec=_ContextCodec())
    one = converter.with_context(WorkflowSerializationContext("default", "act-1"))
    two = converter.with_context(WorkflowSerializationContext("default", "act-2"))
    assert isinstance(one.payload_codec, _ContextCodec)
    assert isinstance(two.payload_codec, _ContextCodec)
    assert (one.payload_codec.workflow_id, two.payload_codec.workflow_id) == ("act-1", "act-2")
