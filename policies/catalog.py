"""Build the action-type catalog from the policy and the executor registry.

The catalog's models are the public contract (`signoff.catalog`); this is how the server fills
them. Whether a type needs approval is found by inspecting the rules, not by evaluating a sample
request: the verdict depends on the target, the params and who asks (`when`), so any one sample
would be a guess.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from policies.engine import Policy
from policies.model import Outcome
from signoff.catalog import ActionType, ActionTypeRule, Approval
from signoff.executor import ExecutorRegistry
from signoff.models import Execution


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
        if action.endswith(".revert") and executors.revert_spec(action[: -len(".revert")]):
            continue  # asked for through an undo of the action, never directly
        rules = rules_for(policy, action)
        if all(r.effect == "deny" for r in rules):
            continue  # nobody can ever have it: listing it would only invite requests
        executor = executors.get(action)
        runs_in: list[Execution] = ["caller"]
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
