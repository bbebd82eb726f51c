"""The action-type catalog: what an agent may ask for, and what the policy says about it.

Served by the gateway at `GET /v1/action-types` and read by the SDK and the MCP server, so
agents discover action types without ever reading the policy file.

Whether a type needs approval is found by inspecting the rules, not by evaluating a sample
request: the verdict depends on the target, the params and who asks (`when`), so any one
sample would be a guess. Instead each type lists, in order, the rules that can match it and
the default when it is reachable, and `approval` summarises them: `never`, `always`, or
`depends` (read `rules` to see on which targets or conditions).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from signoff.models import ApprovalRequirement, Contract, Effect, Execution, Risk

Approval = Literal["never", "always", "depends"]


class ActionTypeRule(Contract):
    """One policy rule (or the default) that can decide requests of an action type."""

    rule: str
    targets: list[str] = Field(description="target globs the rule matches")
    when: str | None = Field(default=None, description="CEL condition, if any")
    effect: Effect
    risk: Risk | None = None
    approvals: list[ApprovalRequirement] = Field(default_factory=list)
    description: str | None = None


class ActionType(Contract):
    """An action type an agent may ask for."""

    action: str
    description: str = ""
    params_schema: dict[str, Any] | None = Field(
        default=None, description="JSON schema of params; None when the executor declares none"
    )
    runs_in: list[Execution] = Field(
        description="worker: a registered executor runs it; caller: the requester runs it"
    )
    approval: Approval
    rules: list[ActionTypeRule] = Field(
        description="the rules that can decide it, first match wins; 'default' when reachable"
    )
