"""signoff.client: ask the gateway for privileged actions and learn their outcome.

    async with SignoffClient("http://127.0.0.1:8080", token) as signoff:
        rows = await signoff.run("sql.query", "prod-db", {"sql": "select 1"}, "health check")

`SignoffSyncClient` offers the same methods for code that is not async. Errors are typed:
`SignoffError` carries the API's `{error: {code, message}}`; an action that did not succeed
raises `ActionDenied`, `ActionExpired`, `ActionFailed` or `ActionCancelled` from `run`.
"""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, JsonValue, ValidationError

from signoff.catalog import ActionType
from signoff.models import (
    ActionStatus,
    ActionSubmission,
    AmendBody,
    ApprovalWindow,
    BreakGlassClaim,
    CancelBody,
    Decision,
    DecisionBody,
    DecisionKind,
    Execution,
    ReviewBody,
    ReviewOutcome,
    RevokeBody,
    Risk,
    Status,
    UndoBody,
    WindowRevokeBody,
    format_duration,
    validation_problems,
)

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
MAX_WAIT = 60.0  # the gateway's longest long-poll
RETRY_STATUSES = frozenset({502, 503, 504})
AWAITING_DECISION = frozenset({Status.EVALUATING, Status.PENDING_APPROVAL})
# Approve with changes: how many successors in a row the SDK follows before it stops.
MAX_SUCCESSORS = 20
# The request never left: safe to retry anything.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The gateway may have acted: retry only what is idempotent.
MAYBE_SENT = (
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
)


# --- errors ---------------------------------------------------------------------------------


class SignoffError(Exception):
    """An error from signoff: `code` is stable for programs, `message` is for people."""

    def __init__(self, message: str, *, code: str = "error", status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code


class GatewayUnavailable(SignoffError):
    """The gateway could not be reached, or stayed unavailable through every retry."""


class AuthenticationError(SignoffError):
    """401: the token is missing, wrong or revoked."""


class PermissionDenied(SignoffError):
    """403: not allowed, e.g. deciding your own action or cancelling someone else's."""


class NotFound(SignoffError):
    """404: no such action, or not one you may see."""


class Conflict(SignoffError):
    """409: the action is no longer pending, or an idempotency key was reused."""


class InvalidRequest(SignoffError):
    """400, 413 or 422: the request itself is wrong; the message names the field."""


class ActionNotFinished(SignoffError):
    """The action was still going when the wait ended; `status` is where it was."""

    def __init__(self, status: ActionStatus) -> None:
        super().__init__(
            f"action {status.id} is still {status.status.value}", code=status.status.value
        )
        self.status = status


class ActionUnsuccessful(SignoffError):
    """The action finished without a result; `status` is its final state."""

    def __init__(self, status: ActionStatus, message: str | None = None) -> None:
        super().__init__(
            message or status.error or f"action {status.id} {status.status.value}",
            code=status.status.value,
        )
        self.status = status


class ActionDenied(ActionUnsuccessful):
    """A human or the policy said no; `reason` says why, so an agent can change its plan."""

    def __init__(self, status: ActionStatus) -> None:
        verdict = status.verdict
        denial = next((d for d in status.decisions if d.decision == "deny"), None)
        self.by_policy = status.status is Status.DENIED_BY_POLICY
        self.rule: str | None = verdict.rule_id if verdict else None
        self.decisions: list[Decision] = list(status.decisions)
        self.denied_by: str | None = denial.approver if denial else None
        if denial is not None:
            self.reason = denial.reason
            message = f"Denied by {denial.approver}: {denial.reason}"
        elif status.status is Status.REJECTED:
            self.reason = status.error or "rejected"
            message = f"Rejected before evaluation: {self.reason}"
        else:
            self.reason = (verdict.reason if verdict else None) or status.error or "denied"
            message = f"Denied by policy rule {self.rule}: {self.reason}"
        super().__init__(status, message)


class ActionExpired(ActionUnsuccessful):
    """Nobody decided before the policy's deadline."""


class ActionFailed(ActionUnsuccessful):
    """The action was allowed but its execution failed; `message` is the executor's error."""


class ActionCancelled(ActionUnsuccessful):
    """The requester cancelled the action."""


ERRORS_BY_STATUS: dict[int, type[SignoffError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    502: GatewayUnavailable,
    503: GatewayUnavailable,
    504: GatewayUnavailable,
}


def error_from_response(response: httpx.Response) -> SignoffError:
    """The typed error for a non-2xx answer, from its `{error: {code, message}}` body."""
    code, message = f"http_{response.status_code}", response.text[:500] or response.reason_phrase
    try:
        body = response.json()
        code, message = str(body["error"]["code"]), str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        pass  # not our error shape (a proxy's page, say): keep the raw text
    kind = ERRORS_BY_STATUS.get(response.status_code, SignoffError)
    return kind(message, code=code, status_code=response.status_code)


def outcome(status: ActionStatus) -> JsonValue:
    """The result of a finished action, or the exception that says why there is none."""
    match status.status:
        case Status.SUCCEEDED | Status.ACTIVE | Status.REVERTING | Status.REVERTED:
            # It ran: a grant in force, or one already taken back, returns what it returned.
            return status.result
        case Status.DENIED | Status.DENIED_BY_POLICY | Status.REJECTED:
            # Rejected: the worker could not verify the gateway's signature on the request.
            raise ActionDenied(status)
        case Status.EXPIRED:
            raise ActionExpired(status)
        case Status.CANCELLED:
            raise ActionCancelled(status)
        case Status.FAILED:
            raise ActionFailed(status)
        case Status.SUPERSEDED:
            raise ActionUnsuccessful(
                status, f"action {status.id} was superseded by {status.superseded_by}"
            )
    raise ActionNotFinished(status)


def submission(
    action: str,
    target: str,
    params: dict[str, Any] | None,
    justification: str,
    *,
    risk: Risk | None = None,
    on_behalf_of: str | None = None,
    idempotency_key: str | None = None,
    execution: Execution = "worker",
    break_glass: str | None = None,
) -> ActionSubmission:
    """Validate a request locally, with a fresh idempotency key unless one is given.

    `break_glass`: the reason a person forces the action through now (see the README).
    """
    try:
        return ActionSubmission(
            action=action,
            target=target,
            params=params or {},
            justification=justification,
            risk=risk,
            on_behalf_of=on_behalf_of,
            # Chosen once per request, before any retry: a retry finds the same action.
            idempotency_key=idempotency_key or f"sdk-{uuid.uuid4()}",
            execution=execution,
            break_glass=BreakGlassClaim(reason=break_glass) if break_glass is not None else None,
        )
    except ValidationError as exc:
        raise InvalidRequest(validation_problems(exc), code="invalid_request") from None


# --- the async client -----------------------------------------------------------------------


class SignoffClient:
    """An async client of the signoff gateway, authenticated as one principal."""

    def __init__(
        self,
        gateway: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.gateway = gateway.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.AsyncClient(
            base_url=self.gateway,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"SignoffClient({self.gateway!r})"  # never the token

    async def __aenter__(self) -> SignoffClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _send(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        idempotent: bool,
        json: Any = None,
        params: dict[str, Any] | None = None,
        wait: float = 0.0,
    ) -> Any:
        """Send one API call, retrying transient failures when it is safe, and parse it."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    method, path, json=json, params=params, timeout=self.timeout + wait
                )
            except NOT_SENT + MAYBE_SENT as exc:
                retry = isinstance(exc, NOT_SENT) or idempotent
                if not retry or attempt >= self.retries:
                    raise GatewayUnavailable(
                        f"cannot reach the gateway at {self.gateway}: {exc!r}",
                        code="gateway_unavailable",
                    ) from exc
            except httpx.HTTPError as exc:
                raise SignoffError(f"{method} {path}: {exc!r}", code="http_error") from exc
            else:
                transient = response.status_code in RETRY_STATUSES and idempotent
                if not transient or attempt >= self.retries:
                    if response.is_success:
                        return response.json()
                    raise error_from_response(response)
            # Exponential backoff with jitter, so many agents do not retry in lockstep.
            delay = self.backoff * 2**attempt * (0.5 + random.random() / 2)  # noqa: S311
            await asyncio.sleep(delay)
            attempt += 1

    async def request(
        self,
        action: str,
        target: str,
        params: dict[str, Any] | None,
        justification: str,
        *,
        risk: Risk | None = None,
        on_behalf_of: str | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
        execution: Execution = "worker",
        break_glass: str | None = None,
    ) -> ActionStatus:
        """Ask for an action; `wait` long-polls up to that many seconds (at most 60).

        `execution="caller"` asks to run it yourself once approved: see `wait_for_approval`
        and `report`. `break_glass`: a person's reason to force it through now.
        """
        body = submission(
            action,
            target,
            params,
            justification,
            risk=risk,
            on_behalf_of=on_behalf_of,
            idempotency_key=idempotency_key,
            execution=execution,
            break_glass=break_glass,
        )
        seconds = min(wait or 0.0, MAX_WAIT)
        data = await self._send(
            "POST",
            "/v1/actions",
            idempotent=True,  # the idempotency key makes a repeat find the same action
            json=body.model_dump(mode="json", exclude_none=True),
            params={"wait": seconds} if seconds else None,
            wait=seconds,
        )
        return ActionStatus.model_validate(data)

    async def successor(self, status: ActionStatus, *, wait: float | None = None) -> ActionStatus:
        """The action that replaced `status` with an approver's changed params, if any (its
        successor's successor too): what an agent waits on once a request was amended."""
        for _ in range(MAX_SUCCESSORS):
            if status.status is not Status.SUPERSEDED or not status.superseded_by:
                break
            status = await self.status(status.superseded_by, wait=wait)
        return status

    async def status(
        self, action_id: str, *, wait: float | None = None, follow: bool = False
    ) -> ActionStatus:
        """The action's current status; `wait` long-polls up to that many seconds (max 60).

        `follow`: for an action an approver amended, the successor's status instead.
        """
        if follow:
            return await self.successor(await self.status(action_id, wait=wait), wait=wait)
        seconds = min(wait or 0.0, MAX_WAIT)
        data = await self._send(
            "GET",
            f"/v1/actions/{quote(action_id, safe='')}",
            idempotent=True,
            params={"wait": seconds} if seconds else None,
            wait=seconds,
        )
        return ActionStatus.model_validate(data)

    async def wait(
        self,
        action_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - bounds a series of long polls
    ) -> ActionStatus:
        """Long-poll until the action finishes or `timeout` seconds pass (None: no limit)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = MAX_WAIT if deadline is None else deadline - loop.time()
            status = await self.status(
                action_id, wait=max(0.0, min(remaining, MAX_WAIT)), follow=True
            )
            # An amended action: wait on for its successor, under the same deadline.
            action_id = status.id
            if status.settled or (deadline is not None and loop.time() >= deadline):
                return status

    async def run(
        self,
        action: str,
        target: str,
        params: dict[str, Any] | None,
        justification: str,
        *,
        risk: Risk | None = None,
        on_behalf_of: str | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - bounds the wait, as in `wait`
    ) -> JsonValue:
        """Request and wait: the result, or ActionDenied/Expired/Failed/Cancelled.

        Raises ActionNotFinished if `timeout` seconds pass first; the action keeps going.
        """
        status = await self.request(
            action,
            target,
            params,
            justification,
            risk=risk,
            on_behalf_of=on_behalf_of,
            idempotency_key=idempotency_key,
        )
        status = await self.successor(status)
        if not status.settled:
            status = await self.wait(status.id, timeout)
        return outcome(status)

    async def decide(
        self,
        action_id: str,
        decision: DecisionKind,
        *,
        reason: str = "",
        digest: str | None = None,
        window: timedelta | str | None = None,
    ) -> ActionStatus:
        """Approve or deny; without `digest`, the action's current digest is fetched first.

        `window` (approve only, e.g. "1h"): also grant the requester an approval window of
        this length, where the action's rule offers one (at most its max_duration).
        """
        if digest is None:
            digest = (await self.status(action_id)).digest
        body = DecisionBody.model_validate(
            {"decision": decision, "digest": digest, "reason": reason, "window": window}
        )
        data = await self._send(
            "POST",
            f"/v1/actions/{quote(action_id, safe='')}/decisions",
            # Never repeated once sent: a second attempt would be recorded as a duplicate.
            idempotent=False,
            json=body.model_dump(mode="json"),
        )
        return ActionStatus.model_validate(data)

    async def approve(
        self,
        action_id: str,
        *,
        reason: str = "",
        digest: str | None = None,
        window: timedelta | str | None = None,
    ) -> ActionStatus:
        """Approve the action (as the token's principal); `window`: see `decide`."""
        return await self.decide(action_id, "approve", reason=reason, digest=digest, window=window)

    async def windows(self, *, all: bool = False, limit: int = 50) -> list[ApprovalWindow]:
        """Approval windows you hold, approved, may revoke or audit; live ones unless `all`."""
        data = await self._send(
            "GET", "/v1/windows", idempotent=True, params={"all": all, "limit": limit}
        )
        return [ApprovalWindow.model_validate(item) for item in data]

    async def window(self, window_id: str) -> ApprovalWindow:
        """One approval window: scope, holder, approvers, expiry and its uses."""
        data = await self._send("GET", f"/v1/windows/{quote(window_id, safe='')}", idempotent=True)
        return ApprovalWindow.model_validate(data)

    async def revoke_window(self, window_id: str, *, reason: str = "") -> ApprovalWindow:
        """End an approval window now (its approvers or its rule's revoking groups)."""
        data = await self._send(
            "POST",
            f"/v1/windows/{quote(window_id, safe='')}/revoke",
            idempotent=False,
            json=WindowRevokeBody(reason=reason).model_dump(mode="json"),
        )
        return ApprovalWindow.model_validate(data)

    async def reviews(self, *, limit: int = 50) -> list[ActionStatus]:
        """Break-glass actions waiting for a review you may give now, overdue first."""
        data = await self._send("GET", "/v1/reviews", idempotent=True, params={"limit": limit})
        return [ActionStatus.model_validate(item) for item in data]

    async def review(
        self,
        action_id: str,
        reason: str,
        *,
        outcome: ReviewOutcome = "accepted",
        digest: str | None = None,
    ) -> ActionStatus:
        """Review a break-glass action after the fact; without `digest`, it is fetched first."""
        if digest is None:
            digest = (await self.status(action_id)).digest
        try:
            body = ReviewBody(digest=digest, reason=reason, outcome=outcome)
        except ValidationError as exc:
            raise InvalidRequest(validation_problems(exc), code="invalid_request") from None
        return await self._act(action_id, "review", body)

    async def deny(self, action_id: str, reason: str, *, digest: str | None = None) -> ActionStatus:
        """Deny the action; the reason reaches the agent."""
        return await self.decide(action_id, "deny", reason=reason, digest=digest)

    async def amend(
        self,
        action_id: str,
        params: dict[str, Any],
        *,
        reason: str = "",
        digest: str | None = None,
    ) -> ActionStatus:
        """Approve with changes: the action ends superseded by a successor with `params`,
        which needs someone else's approval. Returns the superseded action (`superseded_by`)."""
        if digest is None:
            digest = (await self.status(action_id)).digest
        try:
            body = AmendBody(params=params, digest=digest, reason=reason)
        except ValidationError as exc:
            raise InvalidRequest(validation_problems(exc), code="invalid_request") from None
        return await self._act(action_id, "amend", body)

    async def _act(self, action_id: str, verb: str, body: BaseModel) -> ActionStatus:
        """POST one of an action's verbs (never retried: it changes the action) and parse it."""
        data = await self._send(
            "POST",
            f"/v1/actions/{quote(action_id, safe='')}/{verb}",
            idempotent=False,
            json=body.model_dump(mode="json"),
        )
        return ActionStatus.model_validate(data)

    async def cancel(self, action_id: str, *, reason: str = "") -> ActionStatus:
        """Cancel your own pending action."""
        return await self._act(action_id, "cancel", CancelBody(reason=reason))

    async def revoke(self, action_id: str, *, reason: str = "") -> ActionStatus:
        """End an active grant now (requester, approvers or the policy's revoke groups)."""
        return await self._act(action_id, "revoke", RevokeBody(reason=reason))

    async def undo(self, action_id: str, *, reason: str = "") -> ActionStatus:
        """Ask for the action's revert within its undo window; `undo_action` is the revert."""
        return await self._act(action_id, "undo", UndoBody(reason=reason))

    async def pending(
        self, *, limit: int = 50, older_than: str | timedelta | None = None
    ) -> list[ActionStatus]:
        """Your inbox: pending actions you may decide now, newest first; with `older_than`
        ('7d' or a timedelta), only those requested at least that long ago."""
        params: dict[str, str | int] = {"limit": limit}
        if older_than is not None:
            params["older_than"] = (
                format_duration(older_than) if isinstance(older_than, timedelta) else older_than
            )
        data = await self._send("GET", "/v1/approvals", idempotent=True, params=params)
        return [ActionStatus.model_validate(item) for item in data]

    async def wait_for_approval(
        self,
        action_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - bounds a series of polls
    ) -> ActionStatus:
        """Poll until the action is past approval (executing or finished) or `timeout` passes.

        For caller mode, where `executing` means "approved: run it now and report". The
        gateway's long poll ends only at a terminal status, so this polls, backing off to 2s.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay = 0.1
        while True:
            status = await self.status(action_id, follow=True)
            action_id = status.id  # an amended action: its successor from now on
            if status.status not in AWAITING_DECISION:
                return status
            if deadline is not None and loop.time() >= deadline:
                return status
            pause = delay if deadline is None else min(delay, max(0.0, deadline - loop.time()))
            await asyncio.sleep(pause)
            delay = min(delay * 2, 2.0)

    async def report(
        self, action_id: str, *, result: JsonValue = None, error: str | None = None
    ) -> ActionStatus:
        """Caller mode: report how running the approved action went; returns the final status.

        Only the requester may report, once, while the action is `executing`. A retry after
        a lost answer that finds our own report already recorded returns that outcome.
        """
        path = f"/v1/actions/{quote(action_id, safe='')}/report"
        try:
            data = await self._send(
                "POST", path, idempotent=True, json={"result": result, "error": error}
            )
        except Conflict:
            # The workflow takes one report: a 409 after a retry may mean our first one landed.
            status = await self.status(action_id)
            landed = (
                status.status is Status.FAILED and error is not None and status.error == error
            ) or (status.status is Status.SUCCEEDED and error is None and status.result == result)
            if landed:
                return status
            raise
        return ActionStatus.model_validate(data)

    async def action_types(self) -> list[ActionType]:
        """The action types you can ask for: params schema, where they run, whether approval
        is needed and the policy rules that decide it."""
        data = await self._send("GET", "/v1/action-types", idempotent=True)
        return [ActionType.model_validate(item) for item in data]

    async def me(self) -> dict[str, Any]:
        """Who the gateway thinks you are: id, kind, groups, owner and how you signed in."""
        data: dict[str, Any] = await self._send("GET", "/v1/me", idempotent=True)
        return data


# --- the sync facade ------------------------------------------------------------------------


class SignoffSyncClient:
    """The same client for code that is not async: it runs `SignoffClient` on a private loop.

    The loop lives in its own thread, so this works even where another loop is running
    (a notebook, a sync callback inside an async framework).
    """

    def __init__(
        self,
        gateway: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="signoff-client", daemon=True
        )
        self._thread.start()
        self.client = SignoffClient(
            gateway, token, timeout=timeout, retries=retries, backoff=backoff, transport=transport
        )

    def __repr__(self) -> str:
        return f"SignoffSyncClient({self.client.gateway!r})"

    def __enter__(self) -> SignoffSyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        """Close the connections and stop the private loop."""
        if self._loop.is_closed():
            return
        self._call(self.client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def request(
        self,
        action: str,
        target: str,
        params: dict[str, Any] | None,
        justification: str,
        *,
        risk: Risk | None = None,
        on_behalf_of: str | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
        execution: Execution = "worker",
        break_glass: str | None = None,
    ) -> ActionStatus:
        """Ask for an action; `wait` long-polls up to that many seconds (at most 60)."""
        return self._call(
            self.client.request(
                action,
                target,
                params,
                justification,
                risk=risk,
                on_behalf_of=on_behalf_of,
                idempotency_key=idempotency_key,
                wait=wait,
                execution=execution,
                break_glass=break_glass,
            )
        )

    def status(
        self, action_id: str, *, wait: float | None = None, follow: bool = False
    ) -> ActionStatus:
        """The action's current status; `wait` long-polls up to that many seconds (max 60)."""
        return self._call(self.client.status(action_id, wait=wait, follow=follow))

    def wait(self, action_id: str, timeout: float | None = None) -> ActionStatus:
        """Long-poll until the action finishes or `timeout` seconds pass (None: no limit)."""
        return self._call(self.client.wait(action_id, timeout))

    def run(
        self,
        action: str,
        target: str,
        params: dict[str, Any] | None,
        justification: str,
        *,
        risk: Risk | None = None,
        on_behalf_of: str | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> JsonValue:
        """Request and wait: the result, or ActionDenied/Expired/Failed/Cancelled."""
        return self._call(
            self.client.run(
                action,
                target,
                params,
                justification,
                risk=risk,
                on_behalf_of=on_behalf_of,
                idempotency_key=idempotency_key,
                timeout=timeout,
            )
        )

    def decide(
        self,
        action_id: str,
        decision: DecisionKind,
        *,
        reason: str = "",
        digest: str | None = None,
        window: timedelta | str | None = None,
    ) -> ActionStatus:
        """Approve or deny; without `digest`, the action's current digest is fetched first."""
        return self._call(
            self.client.decide(action_id, decision, reason=reason, digest=digest, window=window)
        )

    def approve(
        self,
        action_id: str,
        *,
        reason: str = "",
        digest: str | None = None,
        window: timedelta | str | None = None,
    ) -> ActionStatus:
        """Approve the action (as the token's principal); `window`: see `decide`."""
        return self._call(
            self.client.approve(action_id, reason=reason, digest=digest, window=window)
        )

    def windows(self, *, all: bool = False, limit: int = 50) -> list[ApprovalWindow]:
        """Approval windows you hold, approved, may revoke or audit; live ones unless `all`."""
        return self._call(self.client.windows(all=all, limit=limit))

    def window(self, window_id: str) -> ApprovalWindow:
        """One approval window: scope, holder, approvers, expiry and its uses."""
        return self._call(self.client.window(window_id))

    def revoke_window(self, window_id: str, *, reason: str = "") -> ApprovalWindow:
        """End an approval window now (its approvers or its rule's revoking groups)."""
        return self._call(self.client.revoke_window(window_id, reason=reason))

    def deny(self, action_id: str, reason: str, *, digest: str | None = None) -> ActionStatus:
        """Deny the action; the reason reaches the agent."""
        return self._call(self.client.deny(action_id, reason, digest=digest))

    def reviews(self, *, limit: int = 50) -> list[ActionStatus]:
        """Break-glass actions waiting for a review you may give now, overdue first."""
        return self._call(self.client.reviews(limit=limit))

    def review(
        self,
        action_id: str,
        reason: str,
        *,
        outcome: ReviewOutcome = "accepted",
        digest: str | None = None,
    ) -> ActionStatus:
        """Review a break-glass action after the fact."""
        return self._call(self.client.review(action_id, reason, outcome=outcome, digest=digest))

    def cancel(self, action_id: str, *, reason: str = "") -> ActionStatus:
        """Cancel your own pending action."""
        return self._call(self.client.cancel(action_id, reason=reason))

    def amend(
        self,
        action_id: str,
        params: dict[str, Any],
        *,
        reason: str = "",
        digest: str | None = None,
    ) -> ActionStatus:
        """Approve with changes: supersede the action by a successor with `params`."""
        return self._call(self.client.amend(action_id, params, reason=reason, digest=digest))

    def pending(
        self, *, limit: int = 50, older_than: str | timedelta | None = None
    ) -> list[ActionStatus]:
        """Your inbox: pending actions you may decide now, newest first (stale ones only with
        `older_than`)."""
        return self._call(self.client.pending(limit=limit, older_than=older_than))

    def revoke(self, action_id: str, *, reason: str = "") -> ActionStatus:
        """End an active grant now (requester, approvers or the policy's revoke groups)."""
        return self._call(self.client.revoke(action_id, reason=reason))

    def undo(self, action_id: str, *, reason: str = "") -> ActionStatus:
        """Ask for the action's revert within its undo window; `undo_action` is the revert."""
        return self._call(self.client.undo(action_id, reason=reason))

    def wait_for_approval(self, action_id: str, timeout: float | None = None) -> ActionStatus:
        """Poll until the action is past approval (executing or finished) or `timeout` passes."""
        return self._call(self.client.wait_for_approval(action_id, timeout))

    def report(
        self, action_id: str, *, result: JsonValue = None, error: str | None = None
    ) -> ActionStatus:
        """Caller mode: report how running the approved action went; returns the final status."""
        return self._call(self.client.report(action_id, result=result, error=error))

    def action_types(self) -> list[ActionType]:
        """The action types you can ask for, with params schema and approval needs."""
        return self._call(self.client.action_types())

    def me(self) -> dict[str, Any]:
        """Who the gateway thinks you are: id, kind, groups, owner and how you signed in."""
        return self._call(self.client.me())
