"""The executor interface: what runs an approved action, and the registry of action types.

An executor is an async function that performs one approved action. Register your own:

    from signoff import ExecutionContext, ExecutorRegistry

    registry = ExecutorRegistry()

    @registry.executor("ticket.create", idempotent=True, timeout="2m", params_model=Ticket)
    async def create_ticket(ctx: ExecutionContext[Ticket]) -> JsonValue:
        ...

`idempotent` decides retries: the workflow retries an idempotent action on transient errors
and runs any other action at most once. Raise `ExecutorError` for failures retrying cannot fix.

`revert` declares how to undo the action: an async function of the same context, with the
action's original request and params, and `ctx.result` what the action returned. A revert
must be idempotent: the workflow retries it until it succeeds, and it may run again after a
worker dies mid-way. An action with a revert may be granted for a `duration` (the revert runs
when it ends, or when someone revokes it) and undone within the policy's undo window.
The server's worker runs registered executors; `@gated` runs them in the agent's own process.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, JsonValue, ValidationError

from signoff.models import (
    ACTION_PATTERN,
    ActionRequest,
    ExecutorSpec,
    parse_duration,
    validation_problems,
)

P = TypeVar("P")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class ExecutorError(Exception):
    """The action cannot run as asked (bad params, not allowed, wrong target); do not retry."""


def _timeout(value: str | timedelta, action: str) -> timedelta:
    """An executor's timeout as a duration; a clear error naming the action otherwise."""
    duration = parse_duration(value)
    if not isinstance(duration, timedelta):
        raise ValueError(f"invalid timeout {value!r} for {action}")
    return duration


@runtime_checkable
class ConfiguredTarget(Protocol):
    """A `kind: generic` target as a custom executor sees it: free-form config, named secrets.

    The worker reads the targets file; an executor module needs only this interface, never the
    server's own target classes.
    """

    kind: str
    config: dict[str, JsonValue]

    def secret(self, name: str, key: str) -> str:
        """One named secret of the target `name`, read now (in the worker, never sent on)."""
        ...


@dataclass
class ExecutionContext(Generic[P]):
    """What an executor gets: the request, its validated params, the target and the key."""

    request: ActionRequest
    params: P
    target: Any
    idempotency_key: str
    # The server's worker passes Temporal's activity heartbeat; elsewhere heartbeats go nowhere.
    on_heartbeat: Callable[..., None] | None = None
    # A revert's context: what the action returned when it ran (None when running the action).
    result: JsonValue = None
    reverting: bool = False

    @property
    def target_name(self) -> str:
        """The target's name as the request gave it."""
        return self.request.target

    def heartbeat(self, *details: Any) -> None:
        """Tell Temporal the executor is alive; a no-op outside the worker."""
        if self.on_heartbeat is not None:
            self.on_heartbeat(*details)


ExecutorFn = Callable[[ExecutionContext[Any]], Awaitable[JsonValue]]


@dataclass(frozen=True)
class Executor:
    """One registered action type."""

    action: str
    fn: ExecutorFn
    idempotent: bool
    timeout: timedelta = timedelta(minutes=5)
    params_model: type[BaseModel] | None = None
    target_kind: str | None = None
    description: str = ""
    # The action that undoes this one (idempotent; retried until it succeeds).
    revert: ExecutorFn | None = None

    @classmethod
    def define(
        cls,
        fn: ExecutorFn,
        action: str,
        *,
        idempotent: bool,
        timeout: str | timedelta = timedelta(minutes=5),
        params_model: type[BaseModel] | None = None,
        target_kind: str | None = None,
        revert: ExecutorFn | None = None,
    ) -> Executor:
        """The executor `fn` for `action`, described by the first line of its docstring.

        `revert`: the function that undoes it, given the same context plus `ctx.result`.
        """
        doc = (inspect.getdoc(fn) or "").splitlines()
        return cls(
            action=action,
            fn=fn,
            idempotent=idempotent,
            timeout=_timeout(timeout, action),
            params_model=params_model,
            target_kind=target_kind,
            description=doc[0] if doc else "",
            revert=revert,
        )

    def spec(self, heartbeat_timeout: timedelta | None = None) -> ExecutorSpec:
        """The retry and timeout contract the workflow runs this action with."""
        spec = ExecutorSpec(action=self.action, idempotent=self.idempotent, timeout=self.timeout)
        if self.revert is not None:
            spec = spec.model_copy(update={"revertible": True})
        if heartbeat_timeout is not None:
            spec = spec.model_copy(update={"heartbeat_timeout": heartbeat_timeout})
        return spec

    def parse_params(self, params: dict[str, JsonValue]) -> Any:
        """Validate params against the declared model; errors name the field, not the value."""
        if self.params_model is None:
            return params
        try:
            return self.params_model.model_validate(params)
        except ValidationError as exc:
            problems = validation_problems(exc, "params")
            raise ExecutorError(f"invalid params for {self.action}: {problems}") from None

    def check_target(self, name: str, target: Any) -> None:
        """Refuse a missing target or one of the wrong kind."""
        if self.target_kind is None:
            return
        if target is None:
            raise ExecutorError(f"unknown target {name!r}: not in the targets file")
        if target.kind != self.target_kind:
            raise ExecutorError(
                f"{self.action} needs a {self.target_kind} target; {name!r} is {target.kind}"
            )

    async def run(
        self,
        request: ActionRequest,
        target: Any,
        idempotency_key: str,
        on_heartbeat: Callable[..., None] | None = None,
    ) -> JsonValue:
        """Validate, build the context and call the executor function."""
        self.check_target(request.target, target)
        params = self.parse_params(request.params)
        ctx: ExecutionContext[Any] = ExecutionContext(
            request=request,
            params=params,
            target=target,
            idempotency_key=idempotency_key,
            on_heartbeat=on_heartbeat,
        )
        return await self.fn(ctx)

    async def run_revert(
        self,
        request: ActionRequest,
        target: Any,
        idempotency_key: str,
        result: JsonValue,
        on_heartbeat: Callable[..., None] | None = None,
    ) -> JsonValue:
        """Undo the action `request` ran (it returned `result`) with the declared revert."""
        if self.revert is None:
            raise ExecutorError(f"{self.action} declares no revert")
        self.check_target(request.target, target)
        ctx: ExecutionContext[Any] = ExecutionContext(
            request=request,
            params=self.parse_params(request.params),
            target=target,
            idempotency_key=idempotency_key,
            on_heartbeat=on_heartbeat,
            result=result,
            reverting=True,
        )
        return await self.revert(ctx)


@dataclass
class ExecutorRegistry:
    """Action type -> executor. Registering an action twice is an error."""

    _executors: dict[str, Executor] = field(default_factory=dict)

    def register(self, executor: Executor) -> Executor:
        """Add an executor; refuses a second one for the same action."""
        if not re.match(ACTION_PATTERN, executor.action):
            raise ValueError(f"invalid action name {executor.action!r}: e.g. ticket.create")
        if executor.action in self._executors:
            raise ValueError(f"an executor for {executor.action!r} is already registered")
        self._executors[executor.action] = executor
        return executor

    def executor(
        self,
        action: str,
        *,
        idempotent: bool,
        timeout: str | timedelta = timedelta(minutes=5),
        params_model: type[BaseModel] | None = None,
        target_kind: str | None = None,
        revert: ExecutorFn | None = None,
    ) -> Callable[[F], F]:
        """Decorator registering an async function as the executor for `action`.

        `revert`: an async function of the same context that undoes the action.
        """
        # Checked now, not when decorating: a bad timeout fails the line that declares it.
        _timeout(timeout, action)

        def decorate(fn: F) -> F:
            self.register(
                Executor.define(
                    fn,
                    action,
                    idempotent=idempotent,
                    timeout=timeout,
                    params_model=params_model,
                    target_kind=target_kind,
                    revert=revert,
                )
            )
            return fn

        return decorate

    def get(self, action: str) -> Executor | None:
        """The executor for `action`, if registered."""
        return self._executors.get(action)

    def revert_spec(
        self, action: str, heartbeat_timeout: timedelta | None = None
    ) -> ExecutorSpec | None:
        """How a revert of `action` runs (always idempotent), or None when it declares none."""
        executor = self.get(action)
        if executor is None or executor.revert is None:
            return None
        return ExecutorSpec(
            action=revert_action(action),
            idempotent=True,
            timeout=executor.timeout,
            heartbeat_timeout=heartbeat_timeout or timedelta(seconds=30),
        )

    def spec(self, action: str, heartbeat_timeout: timedelta | None = None) -> ExecutorSpec | None:
        """The executor spec for `action`, or None when no executor is registered."""
        executor = self.get(action)
        return executor.spec(heartbeat_timeout) if executor else None

    def parsed_params(self, action: str, params: dict[str, JsonValue]) -> BaseModel | None:
        """Params as the action's model validates and normalises them; None without a model.

        Policies are evaluated on these, so a rule sees what would run. Raises ExecutorError
        naming the field when the params are invalid.
        """
        executor = self.get(action)
        if executor is None or executor.params_model is None:
            return None
        parsed: BaseModel = executor.parse_params(params)
        return parsed

    def actions(self) -> list[str]:
        """All registered action types, sorted."""
        return sorted(self._executors)

    def params_schema(self, action: str) -> dict[str, Any] | None:
        """JSON schema of the action's params, or None when it declares no model."""
        executor = self.get(action)
        if executor is None or executor.params_model is None:
            return None
        return executor.params_model.model_json_schema()

    def load_modules(self, names: list[str]) -> None:
        """Import modules that register executors as a side effect of being imported."""
        for name in names:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ImportError(f"executor module {name!r} cannot be imported: {exc}") from exc


def revert_action(action: str) -> str:
    """The action type an undo of `action` is evaluated as by the policy: `<action>.revert`."""
    return f"{action}.revert"


# The registry the worker runs: executor modules (SIGNOFF_EXECUTOR_MODULES) and `@gated` register
# here, and the server adds its built-in executors with an explicit call at start-up.
registry = ExecutorRegistry()
