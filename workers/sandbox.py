"""The workflow sandbox the worker runs in, without the SDK's per-payload trips into it.

Before it decodes an activation and after it encodes a completion, the SDK asks the workflow
instance which serialization context each payload belongs to (the workflow's, or an
activity's), once per payload and visitor pass. The sandboxed instance answers by compiling
and executing a line of code inside the sandbox each time, with its import hooks applied:
about 140 µs a payload, dozens of payloads per workflow task. The answer comes from the SDK's
own instance (its pending activities and children), never from workflow code, so asking that
instance directly gives the same answer without the trip. Workflow code itself still runs in
the sandbox, under every restriction.

If the SDK's sandbox internals are not as expected (another SDK version), the worker uses the
SDK's runner unchanged: slower, never different.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from temporalio.converter import SerializationContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.worker.workflow_sandbox import _runner as _sdk_runner

if TYPE_CHECKING:
    from temporalio.worker._command_aware_visitor import CommandInfo

# The SDK's sandboxed instance is internal: without it, the SDK's runner as it is.
_SdkInstance: Any = getattr(_sdk_runner, "_Instance", None)

# The name the SDK's sandbox gives the instance it creates inside (see _runner._Instance).
_IN_SANDBOX = "__temporal_in_sandbox"


if _SdkInstance is not None:

    class _DirectContextInstance(_SdkInstance):
        """A sandboxed instance that answers context questions without entering the sandbox."""

        def get_serialization_context(
            self, command_info: CommandInfo | None
        ) -> SerializationContext | None:
            """The payload's serialization context, from the SDK's instance directly."""
            inner = self._inner()
            if inner is None:
                return super().get_serialization_context(command_info)
            return inner.get_serialization_context(command_info)

        def get_external_store_context(self, command_info: CommandInfo | None) -> Any:
            """The payload's external-storage context, from the SDK's instance directly."""
            inner = self._inner()
            if inner is None:
                return super().get_external_store_context(command_info)
            return inner.get_external_store_context(command_info)

        def _inner(self) -> Any:
            return self.globals_and_locals.get(_IN_SANDBOX)


@dataclass(frozen=True)
class WorkflowSandbox(SandboxedWorkflowRunner):
    """Temporal's sandboxed runner; serialization contexts are read without a trip inside."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        """A sandboxed workflow instance (direct context answers when the SDK allows it)."""
        if _SdkInstance is None:  # pragma: no cover - only with an SDK that reorganised its sandbox
            return super().create_instance(det)
        return _DirectContextInstance(det, self.runner_class, self.restrictions)

    @property
    def direct_contexts(self) -> bool:
        """Whether this SDK lets contexts be answered without entering the sandbox."""
        return _SdkInstance is not None


# Our contract and pydantic are deterministic and side-effect free; re-importing them for every
# workflow run would only cost time and memory.
SANDBOX = WorkflowSandbox(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "pydantic",
        "pydantic_core",
        "annotated_types",
        "signoff",
        "workflows",
        # The data converter: otherwise the sandbox loads it afresh for every workflow run
        # (new classes and type adapters each time: ~80 KB and CPU per run, measured).
        "workers.converter",
        # Tracing: the workflow's spans must use the host's OpenTelemetry context and tracer.
        "opentelemetry",
    )
)

__all__ = ["SANDBOX", "WorkflowSandbox"]
