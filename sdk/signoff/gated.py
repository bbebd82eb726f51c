"""`@gated`: put a function behind human approval; its arguments become the action's params.

    @gated("db.vacuum", target="prod-db", idempotent=True)
    async def vacuum(table: str, full: bool = False) -> dict:
        ...  # runs in the worker, with credentials this process never holds

    await vacuum("orders")  # asks, waits for approval, returns the worker's result

Two modes, chosen explicitly:

- `where="worker"` (default): decorating registers the body as the executor of the action
  type in `activities.executors.registry`. The worker (and the gateway) import the module
  through `SIGNOFF_EXECUTOR_MODULES`, so the body runs in the worker; calling it here only
  submits the action and waits. A parameter annotated `ExecutionContext` is not a param: the
  worker passes the context (request, target, idempotency key) there.
- `where="caller"`: after approval the body runs here, with the params the approvers saw
  (read back from the approved action, never from the local arguments), and its result or
  exception text is reported to the workflow so the audit is complete.

Denials raise `ActionDenied` (reason, rule, decisions), or with `return_denial_as_text=True`
return "Denied by bob@example.com: use the read replica instead" for an LLM tool loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast, get_origin, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import to_jsonable_python

from signoff.client import (
    ActionDenied,
    ActionNotFinished,
    Conflict,
    InvalidRequest,
    SignoffClient,
    SignoffSyncClient,
    outcome,
)
from signoff.executor import ExecutionContext, ExecutorFn, registry
from signoff.models import ActionStatus, Execution, Status, validation_problems
from signoff.settings import ClientSettings

P = ParamSpec("P")
R = TypeVar("R")
Where = Execution
Justification = str | Callable[..., str] | None
ClientOption = SignoffClient | SignoffSyncClient | None
GIVE_UP = "the caller stopped waiting for approval"


class _GatedParams(BaseModel):
    """Base of the params model built from a gated function's signature."""

    model_config = ConfigDict(extra="forbid")


def _is_context(annotation: Any) -> bool:
    return annotation is ExecutionContext or get_origin(annotation) is ExecutionContext


def _as_json(value: Any) -> Any:
    # Once the body has run, its outcome must reach the audit: what JSON cannot hold is repr'd.
    return to_jsonable_python(value, fallback=repr)


def params_model(fn: Callable[..., Any], action: str) -> tuple[type[BaseModel], str | None]:
    """The pydantic model of a function's params, and the name of its context parameter."""
    signature = inspect.signature(fn, eval_str=True)
    fields: dict[str, Any] = {}
    context: str | None = None
    for name, param in signature.parameters.items():
        if _is_context(param.annotation):
            context = name
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            # The params are a JSON object: every argument needs a name it can be passed by.
            raise TypeError(
                f"@gated {fn.__qualname__}: *args, **kwargs and positional-only "
                f"parameters cannot become params ({name})"
            )
        if name.startswith("_"):
            raise TypeError(f"@gated {fn.__qualname__}: parameter {name!r} starts with '_'")
        annotation = Any if param.annotation is param.empty else param.annotation
        default = ... if param.default is param.empty else param.default
        fields[name] = (annotation, default)
    model_name = "".join(part.title() for part in action.replace(".", "_").split("_")) + "Params"
    model = create_model(model_name, __base__=_GatedParams, __doc__=fn.__doc__, **fields)
    return model, context


class GatedFunction:
    """What `@gated` makes of a function: calling it asks for approval first."""

    def __init__(
        self,
        fn: Callable[..., Any],
        action: str,
        target: str,
        *,
        where: Where,
        justification: Justification,
        client: ClientOption,
        return_denial_as_text: bool,
        wait: float | None,
    ) -> None:
        self.fn = fn
        self.action = action
        self.target = target
        self.where = where
        self.justification = justification
        self.client = client
        self.return_denial_as_text = return_denial_as_text
        self.wait = wait
        self.is_async = inspect.iscoroutinefunction(fn)
        self.params_model, self.context_param = params_model(fn, action)
        if self.context_param is not None and where == "caller":
            raise TypeError(
                f"@gated {fn.__qualname__}: an ExecutionContext exists only in the "
                "worker; use where='worker' or drop that parameter"
            )
        if self.is_async and isinstance(client, SignoffSyncClient):
            raise TypeError(f"@gated async {fn.__qualname__} needs a SignoffClient, not a sync one")
        if not self.is_async and isinstance(client, SignoffClient):
            raise TypeError(f"@gated {fn.__qualname__} is not async: give it a SignoffSyncClient")
        signature = inspect.signature(fn)
        self.signature = signature.replace(
            parameters=[p for n, p in signature.parameters.items() if n != self.context_param]
        )

    # --- the agent's side -------------------------------------------------------------------

    def params(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The action's params for a call: its bound arguments, validated, as JSON."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.fn.__qualname__}(): {exc}") from None
        bound.apply_defaults()
        try:
            model = self.params_model.model_validate(bound.arguments)
        except ValidationError as exc:
            problems = validation_problems(exc, "params")
            raise InvalidRequest(problems, code="invalid_request") from None
        dumped: dict[str, Any] = model.model_dump(mode="json")
        return dumped

    def justify(self, *args: Any, **kwargs: Any) -> str:
        """The justification for a call: given, computed from the arguments, or the docstring."""
        if callable(self.justification):
            return self.justification(*args, **kwargs)
        if self.justification:
            return self.justification
        doc = (self.fn.__doc__ or "").strip().splitlines()
        return doc[0] if doc else f"{self.fn.__qualname__} called by an agent"

    def arguments(self, status: ActionStatus) -> dict[str, Any]:
        """The keyword arguments of the approved action, rebuilt from its recorded params."""
        model = self.params_model.model_validate(status.request.params)
        return {name: getattr(model, name) for name in type(model).model_fields}

    def denial_text(self, denied: ActionDenied) -> str:
        """What an LLM reads when it was told no."""
        return str(denied)

    async def call_async(self, client: SignoffClient, *args: Any, **kwargs: Any) -> Any:
        """Ask, wait, and return the outcome (running the body here in caller mode)."""
        params = self.params(*args, **kwargs)
        status = await client.request(
            self.action,
            self.target,
            params,
            self.justify(*args, **kwargs),
            execution=self.where,
        )
        try:
            if self.where == "worker":
                return outcome(await client.wait(status.id, self.wait))
            status = await client.wait_for_approval(status.id, self.wait)
            if status.status in (Status.EVALUATING, Status.PENDING_APPROVAL):
                status = await self._give_up_async(client, status)
            if status.status is not Status.EXECUTING:
                return outcome(status)
            try:
                result = self.fn(**self.arguments(status))
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                await client.report(status.id, error=_error_text(exc))
                exc.add_note(f"signoff: reported as the failure of action {status.id}")
                raise
            outcome(await client.report(status.id, result=_as_json(result)))
            return result
        except ActionDenied as denied:
            if self.return_denial_as_text:
                return self.denial_text(denied)
            raise

    async def _give_up_async(self, client: SignoffClient, status: ActionStatus) -> ActionStatus:
        # Nobody would run the body if it were approved after we stop waiting: withdraw it.
        try:
            await client.cancel(status.id, reason=GIVE_UP)
        except Conflict:
            status = await client.status(status.id)  # decided meanwhile: carry on from there
            if status.status is Status.EXECUTING or status.terminal:
                return status
        raise ActionNotFinished(status)

    def call_sync(self, client: SignoffSyncClient, *args: Any, **kwargs: Any) -> Any:
        """The same as `call_async` for a plain function; the body runs in this thread."""
        params = self.params(*args, **kwargs)
        status = client.request(
            self.action,
            self.target,
            params,
            self.justify(*args, **kwargs),
            execution=self.where,
        )
        try:
            if self.where == "worker":
                return outcome(client.wait(status.id, self.wait))
            status = client.wait_for_approval(status.id, self.wait)
            if status.status in (Status.EVALUATING, Status.PENDING_APPROVAL):
                status = self._give_up_sync(client, status)
            if status.status is not Status.EXECUTING:
                return outcome(status)
            try:
                result = self.fn(**self.arguments(status))
            except Exception as exc:
                client.report(status.id, error=_error_text(exc))
                exc.add_note(f"signoff: reported as the failure of action {status.id}")
                raise
            outcome(client.report(status.id, result=_as_json(result)))
            return result
        except ActionDenied as denied:
            if self.return_denial_as_text:
                return self.denial_text(denied)
            raise

    def _give_up_sync(self, client: SignoffSyncClient, status: ActionStatus) -> ActionStatus:
        try:
            client.cancel(status.id, reason=GIVE_UP)
        except Conflict:
            status = client.status(status.id)
            if status.status is Status.EXECUTING or status.terminal:
                return status
        raise ActionNotFinished(status)

    # --- the worker's side ------------------------------------------------------------------

    async def execute(self, ctx: ExecutionContext[Any]) -> Any:
        """The executor: run the body with the approved params (in the worker)."""
        kwargs = {name: getattr(ctx.params, name) for name in type(ctx.params).model_fields}
        if self.context_param is not None:
            kwargs[self.context_param] = ctx
        if self.is_async:
            result = await self.fn(**kwargs)
        else:
            # A blocking body must not stall the worker's event loop (heartbeats, other actions).
            result = await asyncio.to_thread(self.fn, **kwargs)
        return _as_json(result)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:4000]


# One sync client per (gateway, token), made on first use: it owns a thread and a loop.
_sync_clients: dict[tuple[str, str], SignoffSyncClient] = {}
_sync_lock = threading.Lock()


def _from_environment() -> tuple[str, str]:
    settings = ClientSettings.from_env()
    if settings.token is None:
        raise RuntimeError(
            "@gated needs a client, or SIGNOFF_TOKEN (and SIGNOFF_GATEWAY) in the environment"
        )
    return settings.gateway, settings.token.get_secret_value()


def _sync_client() -> SignoffSyncClient:
    key = _from_environment()
    with _sync_lock:
        if key not in _sync_clients:
            _sync_clients[key] = SignoffSyncClient(*key)
        return _sync_clients[key]


class _Decorator:
    """The decorator `gated(...)` returns; typed so async functions stay awaitable."""

    def __init__(
        self,
        options: dict[str, Any],
        idempotent: bool,
        timeout: str | timedelta,
        revert: ExecutorFn | None = None,
    ):
        self.options = options
        self.idempotent = idempotent
        self.timeout = timeout
        self.revert = revert

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, Any]]
    ) -> Callable[P, Coroutine[Any, Any, Any]]: ...

    @overload
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        gate = GatedFunction(fn, **self.options)
        if gate.where == "worker":
            registry.executor(
                gate.action,
                idempotent=self.idempotent,
                timeout=self.timeout,
                params_model=gate.params_model,
                revert=self.revert,
            )(_executor_fn(gate))

        wrapper: Callable[..., Any]
        if gate.is_async:

            async def call(*args: Any, **kwargs: Any) -> Any:
                if isinstance(gate.client, SignoffClient):
                    return await gate.call_async(gate.client, *args, **kwargs)
                # A client per call: an async HTTP pool belongs to the loop that made it.
                async with SignoffClient(*_from_environment()) as client:
                    return await gate.call_async(client, *args, **kwargs)

            wrapper = call
        else:

            def call_sync(*args: Any, **kwargs: Any) -> Any:
                client = gate.client
                if not isinstance(client, SignoffSyncClient):
                    client = _sync_client()
                return gate.call_sync(client, *args, **kwargs)

            wrapper = call_sync
        functools.update_wrapper(wrapper, fn)
        wrapper.__dict__["gate"] = gate  # for tools and tests: the action, target, params model
        return cast(Callable[P, Any], wrapper)


def _executor_fn(gate: GatedFunction) -> Callable[[ExecutionContext[Any]], Awaitable[Any]]:
    async def execute(ctx: ExecutionContext[Any]) -> Any:
        return await gate.execute(ctx)

    execute.__doc__ = gate.fn.__doc__  # the registry describes the type by its first line
    execute.__qualname__ = gate.fn.__qualname__
    return execute


def gated(
    action: str,
    *,
    target: str,
    where: Where = "worker",
    justification: Justification = None,
    client: ClientOption = None,
    return_denial_as_text: bool = False,
    wait: float | None = None,
    idempotent: bool = False,
    timeout: str | timedelta = "5m",
    revert: ExecutorFn | None = None,
) -> _Decorator:
    """Gate a function behind signoff: calling it asks for `action` on `target` and waits.

    `justification` is text, or a function of the call's arguments returning text (default:
    the docstring's first line). `wait` bounds the wait in seconds (None: until decided);
    when it runs out, `ActionNotFinished` is raised (in caller mode the request is withdrawn).
    `client` defaults to one built from SIGNOFF_GATEWAY and SIGNOFF_TOKEN. Worker mode only:
    `idempotent` lets the workflow retry the body on transient errors, `timeout` bounds a run.
    `revert` (worker mode) undoes it: an async function of an `ExecutionContext` whose
    `params` are the call's params and `result` what the body returned; it must be idempotent.
    """
    if revert is not None and where != "worker":
        raise ValueError("a revert runs in the worker: declare it with where='worker'")
    options = {
        "action": action,
        "target": target,
        "where": where,
        "justification": justification,
        "client": client,
        "return_denial_as_text": return_denial_as_text,
        "wait": wait,
    }
    return _Decorator(options, idempotent, timeout, revert)


__all__ = ["GatedFunction", "gated", "params_model"]
