"""Evaluate a request against a loaded policy: the first matching rule wins, else the default.

A rule matches when its action and target globs match and its `when` expression (if any)
returns true. A `when` that fails at evaluation time (a missing key, a type mismatch, a bad
regex) or returns anything but a bool counts as "does not match": evaluation moves on to the
next rule and the explicit default still applies, so a request is never left without a
verdict and a malformed request cannot crash the worker. The flip side: a `deny` rule whose
`when` errors is skipped, so put deny rules first and keep `allow` rules narrow.
"""

from __future__ import annotations

import hashlib
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, Field, JsonValue

from policies.model import Outcome, Rule
from signoff.models import (
    RISK_ORDER,
    ActionRequest,
    Principal,
    Risk,
    Verdict,
    canonical_json,
)

DEFAULT_RISK: Risk = "medium"


class RuleTrace(BaseModel):
    """How one rule fared against a request."""

    rule_id: str
    action_matched: bool
    target_matched: bool
    when: str | None = None
    when_result: JsonValue = None
    when_error: str | None = None
    matched: bool


class Explanation(BaseModel):
    """Every rule's result for one request, the winner and the verdict."""

    rules: list[RuleTrace] = Field(default_factory=list)
    winner: str
    verdict: Verdict


def cel_context(request: ActionRequest, principal: Principal | None) -> dict[str, Any]:
    """The variables a `when` expression sees."""
    return {
        "action": request.action,
        "target": request.target,
        "params": request.params,
        "justification": request.justification,
        "risk": request.risk,
        "on_behalf_of": request.on_behalf_of,
        "requester": request.requester,
        "principal": None
        if principal is None
        else {
            "id": principal.id,
            "kind": principal.kind,
            "groups": list(principal.groups),
            "owner": principal.owner,
        },
    }


def _trace(rule: Rule, request: ActionRequest, context: dict[str, Any]) -> RuleTrace:
    action_matched = any(fnmatchcase(request.action, g) for g in rule.match.action)
    target_matched = any(fnmatchcase(request.target, g) for g in rule.match.target)
    trace = RuleTrace(
        rule_id=rule.id,
        action_matched=action_matched,
        target_matched=target_matched,
        when=rule.when,
        matched=False,
    )
    if not (action_matched and target_matched):
        return trace
    if rule.program is None:
        trace.matched = True
        return trace
    try:
        result = rule.program.execute(context)
    except Exception as exc:
        # Any evaluation failure means "no match"; see the module docstring for why.
        trace.when_error = f"{type(exc).__name__}: {exc}"
        return trace
    trace.when_result = result if isinstance(result, bool | int | float | str) else repr(result)
    trace.matched = result is True
    return trace


class Policy:
    """A loaded, validated policy: rules in order plus the default."""

    def __init__(self, rules: list[Rule], default: Outcome, sources: dict[str, str]) -> None:
        self.rules = rules
        self.default = default
        # Which file each rule id (and "default") came from, for error messages.
        self.sources = sources
        document = {
            "version": 1,
            "default": default.model_dump(mode="json", exclude_defaults=True),
            "rules": [r.model_dump(mode="json", exclude_defaults=True) for r in rules],
        }
        # Digest of the parsed document: formatting and comments don't change it; meaning does.
        self.digest = hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()

    def evaluate(self, request: ActionRequest, principal: Principal | None) -> Verdict:
        """The verdict of the first matching rule, or of the default."""
        context = cel_context(request, principal)
        for rule in self.rules:
            if _trace(rule, request, context).matched:
                return self._verdict(rule.id, rule, request)
        return self._verdict("default", self.default, request)

    def explain(self, request: ActionRequest, principal: Principal | None) -> Explanation:
        """Trace every rule against the request and say which one wins."""
        context = cel_context(request, principal)
        traces = [_trace(rule, request, context) for rule in self.rules]
        winner = next((t.rule_id for t in traces if t.matched), "default")
        outcome = next((r for r in self.rules if r.id == winner), self.default)
        return Explanation(
            rules=traces, winner=winner, verdict=self._verdict(winner, outcome, request)
        )

    def action_types(self) -> list[str]:
        """The action globs the rules name, in order, without the catch-all '*'."""
        seen: dict[str, None] = {}
        for rule in self.rules:
            for glob in rule.match.action:
                if glob != "*":
                    seen.setdefault(glob, None)
        return list(seen)

    def group_references(self) -> list[tuple[str, str, str]]:
        """Every (rule id, field path, group) the policy names; the default's id is 'default'."""
        named = [("default", field, group) for field, group in self.default.groups()]
        for rule in self.rules:
            named += [(rule.id, field, group) for field, group in rule.groups()]
        return named

    def _verdict(self, rule_id: str, outcome: Outcome, request: ActionRequest) -> Verdict:
        risk = max(outcome.risk or DEFAULT_RISK, request.risk or "low", key=RISK_ORDER.__getitem__)
        return Verdict(
            effect=outcome.effect,
            rule_id=rule_id,
            reason=outcome.reason or outcome.description or _generated_reason(rule_id, outcome),
            risk=risk,
            approvals=[a.model_copy() for a in outcome.approvals],
            escalation=[s.model_copy(deep=True) for s in outcome.escalation],
            expires_after=outcome.expires_after,
            policy_digest=self.digest,
        )


def _generated_reason(rule_id: str, outcome: Outcome) -> str:
    needs = ", ".join(f"{a.min} from {a.group}" for a in outcome.approvals)
    if rule_id == "default":
        return {
            "allow": "No rule matched; the default allows it",
            "deny": "No rule matched; the default denies it",
            "require_approval": f"No rule matched; the default requires approval ({needs})",
        }[outcome.effect]
    return {
        "allow": f"Allowed by rule {rule_id!r}",
        "deny": f"Denied by rule {rule_id!r}",
        "require_approval": f"Rule {rule_id!r} requires approval ({needs})",
    }[outcome.effect]
