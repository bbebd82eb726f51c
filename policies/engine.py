"""Evaluate a request against a loaded policy: the first matching rule wins, else the default.

A rule matches when its action and target globs match and its `when` expression (if any)
returns true. The policy fails closed: a `when` that cannot be evaluated (a missing key, a
type mismatch, a bad regex) or returns anything but a bool never makes the request's outcome
more permissive than it would be had the condition held or not held, whichever is stricter:

- a `deny` rule whose condition errors matches (nothing is stricter than deny);
- a `require_approval` rule whose condition errors matches, unless evaluating the later rules
  as if it did not match ends in a deny, which then wins;
- an `allow` rule whose condition errors does not match.

Every such error is recorded in the verdict (`condition_errors`), so it reaches workflow
history and the audit ledger, and `signoff policy explain` shows it. A malformed request can
never crash the worker or leave a request without a verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, Field, JsonValue

from policies.model import Outcome, Rule, compile_scope
from policies.variables import cel_context
from signoff.models import (
    RISK_ORDER,
    ActionRequest,
    ConditionError,
    Principal,
    Risk,
    Verdict,
    WindowOffer,
    canonical_json,
)

DEFAULT_RISK: Risk = "medium"
# Error texts go to history, the ledger and approval views; a CEL message can be long.
MAX_ERROR_CHARS = 500


class RuleTrace(BaseModel):
    """How one rule fared against a request."""

    rule_id: str
    action_matched: bool
    target_matched: bool
    when: str | None = None
    when_result: JsonValue = None
    when_error: str | None = None
    matched: bool = Field(description="Counts as a match (an erroring deny or approval rule does)")


class Explanation(BaseModel):
    """Every rule's result for one request, the winner and the verdict."""

    rules: list[RuleTrace] = Field(default_factory=list)
    winner: str
    verdict: Verdict


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
        # Anything the expression can raise on a hostile request (RecursionError included).
        return _failed(trace, rule, f"{type(exc).__name__}: {exc}")
    if not isinstance(result, bool):
        trace.when_result = result if isinstance(result, int | float | str) else repr(result)
        return _failed(trace, rule, f"condition returned {type(result).__name__}, not a bool")
    trace.when_result = result
    trace.matched = result
    return trace


def condition_error(
    rule: Rule,
    request: ActionRequest,
    principal: Principal | None,
    params: BaseModel | None = None,
) -> str | None:
    """The error a rule's `when` gives on a request whose action and target it matches."""
    return _trace(rule, request, cel_context(request, principal, params)).when_error


def _failed(trace: RuleTrace, rule: Rule, error: str) -> RuleTrace:
    """Fail closed: an unevaluable condition matches unless the rule would allow."""
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 1] + "…"
    trace.when_error = error
    trace.matched = rule.effect != "allow"
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
        self._by_id: dict[str, Outcome] = {rule.id: rule for rule in rules}

    def evaluate(
        self,
        request: ActionRequest,
        principal: Principal | None,
        params: BaseModel | None = None,
    ) -> Verdict:
        """The verdict of the first matching rule (failing closed on errors), or the default's.

        `params`: the executor's parsed params (see `cel_context`).
        """
        winner, errors = self._decide(self._traces(request, principal, params))
        return self._verdict(winner, request, errors)

    def explain(
        self,
        request: ActionRequest,
        principal: Principal | None,
        params: BaseModel | None = None,
    ) -> Explanation:
        """Trace every rule against the request and say which one wins."""
        traces = list(self._traces(request, principal, params))
        winner, errors = self._decide(traces)
        return Explanation(
            rules=traces, winner=winner, verdict=self._verdict(winner, request, errors)
        )

    def _traces(
        self, request: ActionRequest, principal: Principal | None, params: BaseModel | None
    ) -> Iterator[RuleTrace]:
        """Each rule's trace, lazily: `evaluate` stops at the winner."""
        context = cel_context(request, principal, params)
        return (_trace(rule, request, context) for rule in self.rules)

    def _decide(self, traces: Iterable[RuleTrace]) -> tuple[str, list[ConditionError]]:
        """The winning rule id and the condition errors met on the way (see module docstring)."""
        errors: list[ConditionError] = []
        # An erroring require_approval rule: it wins unless a later rule denies.
        pending: str | None = None
        for trace in traces:
            if trace.when_error is not None:
                errors.append(
                    ConditionError(
                        rule_id=trace.rule_id,
                        error=trace.when_error,
                        treated_as="match" if trace.matched else "no_match",
                    )
                )
            if not trace.matched:
                continue
            effect = self._by_id[trace.rule_id].effect
            if effect == "deny":
                return trace.rule_id, errors
            if effect == "require_approval" and trace.when_error is not None:
                # Had it not matched, a later rule might deny: keep looking for one.
                pending = pending or trace.rule_id
                continue
            return pending or trace.rule_id, errors
        if pending is not None and self.default.effect != "deny":
            return pending, errors
        return "default", errors

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

    def _verdict(
        self, rule_id: str, request: ActionRequest, errors: list[ConditionError]
    ) -> Verdict:
        outcome = self._by_id.get(rule_id, self.default)
        risk = max(outcome.risk or DEFAULT_RISK, request.risk or "low", key=RISK_ORDER.__getitem__)
        reason = outcome.reason or outcome.description or _generated_reason(rule_id, outcome)
        if any(e.rule_id == rule_id for e in errors):
            reason += " (its condition could not be evaluated, so the policy failed closed)"
        return Verdict(
            effect=outcome.effect,
            rule_id=rule_id,
            reason=reason,
            risk=risk,
            approvals=[a.model_copy() for a in outcome.approvals],
            escalation=[s.model_copy(deep=True) for s in outcome.escalation],
            expires_after=outcome.expires_after,
            policy_digest=self.digest,
            condition_errors=errors,
            step_up=outcome.step_up,
            remind=outcome.remind.model_copy() if outcome.remind else None,
            break_glass=outcome.break_glass.model_copy(deep=True) if outcome.break_glass else None,
            window=None
            if outcome.window is None
            else WindowOffer.model_validate(outcome.window.model_dump()),
            max_duration=outcome.max_duration,
            undo_within=outcome.undo.within if outcome.undo else None,
            revoke_groups=list(outcome.revoke_groups),
        )

    def rule(self, rule_id: str) -> Rule | None:
        """The rule with this id, if the policy has one."""
        found = self._by_id.get(rule_id)
        return found if isinstance(found, Rule) else None


def scope_allows(
    scope: str, request: ActionRequest, principal: Principal | None, params: BaseModel | None
) -> bool:
    """Whether a window's scope holds for a request; anything but a clean `true` is no."""
    try:
        result = compile_scope(scope).execute(cel_context(request, principal, params))
    except Exception:
        # Fail closed: a scope that cannot be evaluated never allows (normal rules apply).
        return False
    return result is True


def scope_error(
    scope: str, request: ActionRequest, principal: Principal | None, params: BaseModel | None
) -> str | None:
    """The error a window's scope gives on a request (for `policy check`); None when clean."""
    try:
        result = compile_scope(scope).execute(cel_context(request, principal, params))
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"
    if not isinstance(result, bool):
        return f"scope returned {type(result).__name__}, not a bool"
    return None


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
