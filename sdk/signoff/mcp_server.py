"""The MCP server: signoff's gate as tools an agent (Claude, and others) can discover and call.

A pure client of the gateway: it authenticates as the agent with SIGNOFF_TOKEN at
SIGNOFF_GATEWAY and never touches Temporal, the policy file or any credentials. Requests run
in the worker (`execution="worker"`), so the agent only ever sees results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import JsonValue

from signoff.client import MAX_WAIT, ActionDenied, SignoffClient, SignoffError
from signoff.models import ActionStatus, Status

DEFAULT_WAIT = 30.0

INSTRUCTIONS = """\
Privileged actions (database writes, exports, deploys, ...) go through signoff: a policy
decides whether each request runs at once, is denied, or waits for named humans to approve.
Call list_action_types first to see what you may ask for and what needs approval. Approval
can take minutes or hours: when a request is pending, tell the user who it waits for and
poll get_action_status with its id. When a request is denied, read the reason and change
your plan; asking again for the same thing will be denied again."""

REQUEST_DESCRIPTION = """\
Ask for a privileged action on a named target. A policy decides: it runs at once, is denied
(the reason says why), or waits for human approval.

Waits up to {wait:g} seconds for the outcome, then returns the current status anyway. The
answer always has the action `id` and `status`:
- succeeded: `result` holds what the action returned;
- pending_approval / evaluating / executing: not finished; `waiting_for` says who must
  approve. Approval by humans can take minutes to hours. Call get_action_status with the
  `id` to keep waiting; never submit the same request again to "retry";
- denied / denied_by_policy: `reason` says why (and `denied_by` who): adjust your plan;
- failed / expired / cancelled: `error` says what happened.
If an approver changed your params, the answer is the new action that replaced your request:
`amended_from` names yours, `params` what will run; use its `id` from then on.

`params` must match the action type's params_schema from list_action_types. The
justification is shown to the approvers: say what you are doing and why."""

STATUS_DESCRIPTION = """\
The current status of an action you requested, by its `id`. While it is unfinished this
waits up to {wait:g} seconds for it to finish before answering, so calling it repeatedly is
the way to wait for an approval (which can take minutes to hours). Same fields as
request_privileged_action."""

TYPES_DESCRIPTION = """\
The action types you may request, as `action_types`. For each: `params_schema` (the JSON
schema of `params`); `approval` ("never": runs or is denied at once, "always": a human must
approve, "depends": see `rules`); and `rules`, the policy rules in order (first match wins)
with the target globs and conditions each covers and which group must approve."""


def summarise(status: ActionStatus) -> dict[str, JsonValue]:
    """What the model needs of a status: outcome, reason, who it waits for, what to do next."""
    summary: dict[str, JsonValue] = {
        "id": status.id,
        "action": status.request.action,
        "target": status.request.target,
        "status": status.status.value,
        "digest": status.digest,
    }
    if status.request.amended_from is not None:
        summary["amended_from"] = status.request.amended_from
        summary["amended_by"] = status.request.amended_by
        summary["params"] = status.request.params
        summary["note"] = (
            f"{status.request.amended_by} changed the params of your request "
            f"{status.request.amended_from}; this action (id {status.id!r}) replaces it, with "
            "the params shown. Use this id from now on."
        )
    match status.status:
        case Status.SUCCEEDED:
            summary["result"] = status.result
        case Status.DENIED | Status.DENIED_BY_POLICY:
            denied = ActionDenied(status)
            summary["reason"] = denied.reason
            summary["denied_by"] = denied.denied_by or "policy"
            summary["rule"] = denied.rule
            summary["message"] = str(denied)
            summary["next"] = "Do not ask again for the same action: change your plan."
        case Status.FAILED | Status.EXPIRED | Status.CANCELLED:
            summary["error"] = status.error
        case Status.SUPERSEDED:
            summary["superseded_by"] = status.superseded_by
            summary["next"] = (
                f"Call get_action_status with id {status.superseded_by!r}: an approver "
                "changed the params and that action replaces this one."
            )
        case Status.PENDING_APPROVAL:
            summary["waiting_for"] = [
                f"{p.min} of group {p.group} ({len(p.approved_by)} approved so far)"
                for p in status.progress
                if not p.met
            ]
            summary["approved_by"] = [d.approver for d in status.decisions]
            if status.expires_at is not None:
                summary["expires_at"] = status.expires_at.isoformat()
            summary["next"] = (
                f"Waiting for human approval, which can take minutes to hours. Call "
                f"get_action_status with id {status.id!r} to keep waiting."
            )
        case _:
            summary["next"] = f"Call get_action_status with id {status.id!r} for the outcome."
    return summary


def _tool_error(err: SignoffError) -> ToolError:
    # The gateway's message names the bad field or the rule: the model can correct itself.
    return ToolError(f"{err.code}: {err.message}")


def build_server(
    connect: Callable[[], SignoffClient], *, max_wait: float = DEFAULT_WAIT
) -> MCPServer[Any]:
    """The MCP server, talking to the gateway through clients made by `connect`."""
    wait = max(0.0, min(max_wait, MAX_WAIT))
    server: MCPServer[Any] = MCPServer(
        "signoff",
        title="signoff: human approval for privileged actions",
        instructions=INSTRUCTIONS,
    )

    async def request_privileged_action(
        action: str, target: str, params: dict[str, JsonValue], justification: str
    ) -> dict[str, JsonValue]:
        """Ask for a privileged action and wait a bounded time for its outcome."""
        try:
            async with connect() as client:
                status = await client.request(action, target, params, justification, wait=wait)
                # An approver changed the params: the successor is the request now.
                status = await client.successor(status, wait=wait)
        except SignoffError as err:
            raise _tool_error(err) from None
        return summarise(status)

    async def get_action_status(id: str) -> dict[str, JsonValue]:
        """The status of an action, waiting a bounded time for it to finish."""
        try:
            async with connect() as client:
                status = await client.status(id, wait=wait, follow=True)
        except SignoffError as err:
            raise _tool_error(err) from None
        return summarise(status)

    async def list_action_types() -> dict[str, JsonValue]:
        """The action types the agent may request, with params schema and approval needs."""
        try:
            async with connect() as client:
                types = await client.action_types()
        except SignoffError as err:
            raise _tool_error(err) from None
        # This server asks for worker execution only: caller-run types are not for it.
        listed: list[JsonValue] = [
            t.model_dump(mode="json", exclude={"runs_in"}) for t in types if "worker" in t.runs_in
        ]
        # One object, not a bare list: clients then get it as one JSON text block.
        return {"action_types": listed}

    server.add_tool(request_privileged_action, description=REQUEST_DESCRIPTION.format(wait=wait))
    server.add_tool(get_action_status, description=STATUS_DESCRIPTION.format(wait=wait))
    server.add_tool(list_action_types, description=TYPES_DESCRIPTION)
    return server


def client_factory(gateway: str, token: str) -> Callable[[], SignoffClient]:
    """Make a fresh gateway client per tool call (each call may run on its own task)."""

    def connect() -> SignoffClient:
        return SignoffClient(gateway, token, timeout=30.0)

    return connect
