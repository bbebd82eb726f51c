"""The data converter: one cache of pydantic type adapters for every workflow run."""

from __future__ import annotations

import copy
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.converter import WorkflowSerializationContext

from signoff.models import ActionRequest
from workers.converter import ContractPayloadConverter, data_converter


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
