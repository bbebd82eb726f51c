"""Find `when` conditions that error on valid requests, before a request finds them.

An erroring condition fails closed at run time (see policies.engine), so it is safe, but it is
still a bug: a deny rule that errors also denies the requests it was not meant for, and an
allow rule that errors never allows anything. CEL has no static types for `params`, so the
honest check is to run each condition against sample params that the executor's own params
model accepts: every property filled, only the required ones (optional keys missing), each
optional key missing in turn, and each alternative of a union (a nullable field set to null).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ValidationError

from policies.engine import Policy, condition_error, scope_error
from signoff.executor import ExecutorRegistry
from signoff.models import ActionRequest, Principal

# Per condition and action type: enough to cover each key's absence and each union branch.
MAX_SAMPLES = 64
_SCALARS: dict[str, list[Any]] = {
    "string": ["x"],
    "integer": [1],
    "number": [1.5],
    "boolean": [True],
    "null": [None],
}
# Both kinds of requester: a human has no owner, an agent has no groups.
SAMPLE_PRINCIPALS = (
    Principal(id="agent:sample", kind="agent", owner="owner@example.com"),
    Principal(id="person@example.com", kind="human", groups=["sample"]),
)


@dataclass(frozen=True)
class ConditionWarning:
    """A rule whose condition errors on params its action's executor accepts."""

    rule_id: str
    action: str
    params: dict[str, Any]
    error: str
    fails_closed: bool
    # `window.scope`: an approval window's scope, which then allows nothing (fails closed).
    field: str = "when"

    def message(self, source: str) -> str:
        """One line naming the file, rule, action, the params and what happens at run time."""
        consequence = (
            "the rule then applies (fails closed)"
            if self.fails_closed
            else "the allow rule then does not match"
        )
        if self.field != "when":
            consequence = "an approval window then allows nothing (fails closed)"
        return (
            f"{source}: rule {self.rule_id!r}: field {self.field!r}: errors on valid "
            f"{self.action} params {self.params}: {self.error}; {consequence}"
        )


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: dict[str, Any] = root.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
        return {**resolved, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def samples(
    schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0
) -> list[Any]:
    """Values that fit a JSON schema, the first being the fullest; bounded in number."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if depth > 4:
        return [None]
    if "enum" in schema:
        return list(schema["enum"])[:MAX_SAMPLES]
    if "const" in schema:
        return [schema["const"]]
    if schema.get("examples"):
        # A model's own examples fit constraints a type alone cannot (e.g. one SQL statement).
        return list(schema["examples"])[:MAX_SAMPLES]
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        found = [v for b in branches for v in samples(b, root, depth + 1)[:1]]
        return found[:MAX_SAMPLES]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return _objects(schema, root, depth)
    if kind == "array":
        item = samples(schema.get("items", {}), root, depth + 1)[:1]
        return [item, []] if item else [[]]
    if isinstance(kind, str) and kind in _SCALARS:
        if kind in ("integer", "number") and "minimum" in schema:
            return [schema["minimum"]]
        return list(_SCALARS[kind])
    # Any JSON value at all (JsonValue): a string, and null, which it may also be.
    return ["x", None]


def _objects(schema: dict[str, Any], root: dict[str, Any], depth: int) -> list[Any]:
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    options = {key: samples(sub, root, depth + 1) for key, sub in properties.items()}
    full = {key: values[0] for key, values in options.items() if values}
    found = [full, {k: v for k, v in full.items() if k in required}]
    found += [{k: v for k, v in full.items() if k != key} for key in full if key not in required]
    for key, values in options.items():
        found += [{**full, key: value} for value in values[1:]]
    unique: list[Any] = []
    for sample in found:
        if sample not in unique:
            unique.append(sample)
    return unique[:MAX_SAMPLES]


def _valid(model: type[BaseModel] | None, params: Any) -> bool:
    if not isinstance(params, dict):
        return False
    if model is None:
        return True
    try:
        model.model_validate(params)
    except ValidationError:
        return False
    return True


def _target_for(globs: list[str]) -> str:
    # Any name the globs match; the condition only runs on matching targets.
    for glob in globs:
        name = glob.replace("*", "x").replace("?", "x")
        if fnmatchcase(name, glob) and "[" not in glob:
            return name
    return "sample-target"


def _requests(action: str, target: str, params: dict[str, Any]) -> Iterator[ActionRequest]:
    # Optional request fields both absent and present: `on_behalf_of` may be null.
    yield ActionRequest(
        action=action, target=target, params=params, justification="x", requester="agent:sample"
    )
    yield ActionRequest(
        action=action,
        target=target,
        params=params,
        justification="x",
        requester="agent:sample",
        risk="medium",
        on_behalf_of="someone@example.com",
    )


def condition_warnings(policy: Policy, executors: ExecutorRegistry) -> list[ConditionWarning]:
    """Each (rule, action type) whose condition errors on some valid params; first error only.

    Approval window scopes (`window.scope`) are checked the same way.
    """
    warnings: list[ConditionWarning] = []
    for rule in policy.rules:
        if rule.when is None:
            continue
        target = _target_for(rule.match.target)
        for action in executors.actions():
            if not any(fnmatchcase(action, glob) for glob in rule.match.action):
                continue
            executor = executors.get(action)
            assert executor is not None
            model = executor.params_model
            schema = model.model_json_schema() if model is not None else {"type": "object"}
            candidates = [p for p in samples(schema) if _valid(model, p)]
            for params, request, principal in (
                (p, r, who)
                for p in candidates
                for r in _requests(action, target, p)
                for who in SAMPLE_PRINCIPALS
            ):
                parsed = model.model_validate(params) if model is not None else None
                error = condition_error(rule, request, principal, parsed)
                if error is not None:
                    warnings.append(
                        ConditionWarning(
                            rule_id=rule.id,
                            action=action,
                            params=params,
                            error=error,
                            fails_closed=rule.effect != "allow",
                        )
                    )
                    break
    return warnings + scope_warnings(policy, executors)


def scope_warnings(policy: Policy, executors: ExecutorRegistry) -> list[ConditionWarning]:
    """Each (rule, action type) whose window scope errors on some valid params; first only."""
    warnings: list[ConditionWarning] = []
    for rule in policy.rules:
        if rule.window is None:
            continue
        target = _target_for(rule.match.target)
        for action in executors.actions():
            if not any(fnmatchcase(action, glob) for glob in rule.match.action):
                continue
            executor = executors.get(action)
            assert executor is not None
            model = executor.params_model
            schema = model.model_json_schema() if model is not None else {"type": "object"}
            for params in (p for p in samples(schema) if _valid(model, p)):
                parsed = model.model_validate(params) if model is not None else None
                request = next(_requests(action, target, params))
                error = scope_error(rule.window.scope, request, SAMPLE_PRINCIPALS[0], parsed)
                if error is not None:
                    warnings.append(
                        ConditionWarning(
                            rule_id=rule.id,
                            action=action,
                            params=params,
                            error=error,
                            fails_closed=True,
                            field="window.scope",
                        )
                    )
                    break
    return warnings
