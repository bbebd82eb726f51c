"""The data converter: one cache of pydantic type adapters for every workflow run."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.converter import ActivitySerializationContext, WorkflowSerializationContext

from signoff.models import ActionRequest
from workers.converter import ContractPayloadConverter, UndecodablePayload, data_converter


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
    activity = ActivitySerializationContext(
        namespace="default",
        workflow_id="act-1",
        workflow_type="SignoffAction",
        activity_type="notify",
        activity_id="1",
        activity_task_queue="q",
        is_local=False,
    )
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
