"""The data converter: pydantic JSON, where a workflow's undecodable input is a typed error.

Temporal retries a workflow task that raises, forever, expecting a deploy to fix the code.
Input that the contract refuses (params nested past the parser's limit, a shape no model
accepts) is fixed by no deploy: it is in the history for good. So a decoding failure in a
workflow's own context (its input, an update's or query's argument) raises
`UndecodablePayload`, which `ActionWorkflow` declares a failure exception type: the run fails
at once, visibly, with the reason. Activity results keep the default (a failed workflow task,
retried): during a rolling deploy an older worker may not read a newer one's result yet.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, Self, cast

from pydantic import TypeAdapter, ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    EncodingPayloadConverter,
    JSONPlainPayloadConverter,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)

_JSON_ENCODING = b"json/plain"
# A reason has to fit a failure message and a log line; a deep error location does not.
MAX_REASON_CHARS = 500


class UndecodablePayload(ValueError):
    """A workflow-context payload does not fit the contract; retrying cannot change that."""


def _reason(type_hint: type | None, exc: ValidationError) -> str:
    name = getattr(type_hint, "__name__", "the expected type")
    parts = []
    for error in exc.errors()[:3]:
        loc = ".".join(str(p) for p in error.get("loc", ()))
        if len(loc) > 60:
            loc = loc[:60] + "…"
        parts.append(f"{loc or 'input'}: {error.get('msg', 'invalid')}")
    text = f"input does not fit {name}: " + "; ".join(parts)
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


# One cache of type adapters for the process: the SDK builds a payload converter for every
# workflow run it holds, and each built its own adapters again (memory and CPU per run).
_ADAPTERS = functools.lru_cache(maxsize=1024)(TypeAdapter)


class _ContractJSON(PydanticJSONPlainPayloadConverter, WithSerializationContext):
    """pydantic JSON that raises UndecodablePayload when decoding in a workflow's context."""

    def __init__(self, workflow_context: bool = False) -> None:
        super().__init__()
        self._type_adapter = _ADAPTERS
        self._workflow_context = workflow_context

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a copy (the SDK copies the converter for each workflow run) on the shared
        adapters; pydantic's own restore would start an empty cache for every run."""
        super().__setstate__(state)
        self._type_adapter = _ADAPTERS

    def with_context(self, context: SerializationContext) -> _ContractJSON:
        """A converter aware of whether it decodes for a workflow (not an activity)."""
        workflow_context = isinstance(context, WorkflowSerializationContext)
        if workflow_context == self._workflow_context:
            return self
        # Shares the type adapter cache: building adapters per workflow run would be costly.
        clone = object.__new__(_ContractJSON)
        clone.__dict__.update(self.__dict__)
        clone._workflow_context = workflow_context
        return clone

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        """Decode like pydantic; in a workflow's context, refusals become UndecodablePayload."""
        try:
            return super().from_payload(payload, type_hint)
        except ValidationError as exc:
            if self._workflow_context:
                raise UndecodablePayload(_reason(type_hint, exc)) from None
            raise


class ContractPayloadConverter(CompositePayloadConverter):
    """Temporal's default converters, with JSON through pydantic and the contract."""

    # The one built for a workflow's context and the one for any other, shared by the process:
    # the SDK asks for a converter in context for every activation, activity and query, and
    # building a composite each time was ~4% of a busy worker's CPU (bench/RESULTS.md).
    _shared: ClassVar[dict[bool, ContractPayloadConverter]] = {}

    # Their parts, shared too: the SDK builds a whole data converter (and so one of these) up
    # to four times per activation, and a pydantic part costs a serializer and a cache each.
    _parts: ClassVar[tuple[EncodingPayloadConverter, ...]] = ()

    def __init__(self) -> None:
        if not ContractPayloadConverter._parts:
            ContractPayloadConverter._parts = tuple(
                _ContractJSON() if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        super().__init__(*self._parts)

    def with_context(self, context: SerializationContext) -> Self:
        """This converter for `context`; only whether it is a workflow's changes anything."""
        workflow_context = isinstance(context, WorkflowSerializationContext)
        json = self.converters[_JSON_ENCODING]
        if isinstance(json, _ContractJSON) and json._workflow_context == workflow_context:
            return self
        shared = self._shared.get(workflow_context)
        if type(shared) is not type(self):
            shared = super().with_context(context)
            self._shared[workflow_context] = shared
        return cast(Self, shared)


@dataclasses.dataclass(frozen=True)
class ContractDataConverter(DataConverter):
    """The data converter, keeping the one it made for each kind of context.

    The SDK asks for this converter in a workflow's context twice per activation, and cloning
    it runs its whole set-up. What ours makes depends only on whether the context is a
    workflow's, so each answer is kept; not if another part (a codec, a failure converter,
    external storage) reads the context, since its answer could then differ per workflow.
    """

    _in_context: dict[bool, DataConverter] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        # Not an init field, so a clone (`dataclasses.replace`) starts with none of this one's.
        object.__setattr__(self, "_in_context", {})

    def with_context(self, context: SerializationContext) -> Self:
        """This converter in `context`: made once per kind of context, then the same one."""
        parts = (self.payload_codec, self.failure_converter, self.external_storage)
        if any(isinstance(part, WithSerializationContext) for part in parts):
            return super().with_context(context)
        workflow_context = isinstance(context, WorkflowSerializationContext)
        made = self._in_context.get(workflow_context)
        if made is None:
            made = self._in_context[workflow_context] = super().with_context(context)
        return cast(Self, made)


data_converter = ContractDataConverter(payload_converter_class=ContractPayloadConverter)
"""The data converter of every signoff client and worker."""
