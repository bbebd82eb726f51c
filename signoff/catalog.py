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

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from signoff.models import ApprovalRequirement, Contract, Effect, Risk

if TYPE_CHECKING:
    from activities.executors import ExecutorRegistry
    from policies.engine import Policy
    from policies.model import Outcome

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
    runs_in: list[Literal["worker", "caller"]] = Field(
        description="worker: a registered executor runs it; caller: the requester runs it"
    )
    approval: Approval
    rules: list[ActionTypeRule] = Field(
        description="the rules that can decide it, first match wins; 'default' when reachable"
    )


def _summary(rule: str, targets: list[str], when: str | None, outcome: Outcome) -> ActionTypeRule:
    return ActionTypeRule(
        rule=rule,
        targets=targets,
        when=when,
        effect=outcome.effect,
        risk=outcome.risk,
        approvals=[a.model_copy() for a in outcome.approvals],
        description=outcome.description or outcome.reason,
    )


def rules_for(policy: Policy, action: str) -> list[ActionTypeRule]:
    """The rules that can decide `action`, in order, ending with the default if reachable."""
    found: list[ActionTypeRule] = []
    for rule in policy.rules:
        if not any(fnmatchcase(action, glob) for glob in rule.match.action):
            continue
        found.append(_summary(rule.id, list(rule.match.target), rule.when, rule))
        if "*" in rule.match.target and rule.when is None:
            return found  # matches every request of this type: nothing after it is reached
    found.append(_summary("default", ["*"], None, policy.default))
    return found


def approval_of(rules: list[ActionTypeRule]) -> Approval:
    """Summarise the rules: does a request that is not denied outright need a human?"""
    effects = {r.effect for r in rules if r.effect != "deny"}
    if effects == {"require_approval"}:
        return "always"
    if "require_approval" not in effects:
        return "never"
    return "depends"


def catalog(policy: Policy, executors: ExecutorRegistry) -> list[ActionType]:
    """Every action type with an executor or named literally by a rule, unless always denied."""
    literal = {
        glob
        for rule in policy.rules
        for glob in rule.match.action
        if not any(ch in glob for ch in "*?[")
    }
    types = []
    for action in sorted(set(executors.actions()) | literal):
        rules = rules_for(policy, action)
        if all(r.effect == "deny" for r in rules):
            continue  # nobody can ever have it: listing it would only invite requests
        executor = executors.get(action)
        runs_in: list[Literal["worker", "caller"]] = ["caller"]
        if executor is not None:
            runs_in = ["worker", "caller"]
        types.append(
            ActionType(
                action=action,
                description=executor.description if executor is not None else "",
                params_schema=executors.params_schema(action),
                runs_in=runs_in,
                approval=approval_of(rules),
                rules=rules,
            )
        )
    return types
