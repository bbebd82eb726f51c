"""Pydantic models of the policy file, with the checks that need no other file.

Checks that name a field beyond the one pydantic is validating raise `FieldError`, so the
loader can point at the exact field (`escalation.1.after`) rather than at the whole rule.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

import cel
from pydantic import Field, PrivateAttr, field_validator, model_validator

from policies.variables import CEL_VARIABLES
from signoff.models import (
    NAME_PATTERN,
    ApprovalRequirement,
    BreakGlassPolicy,
    Contract,
    Duration,
    Effect,
    EscalationStage,
    Reminders,
    Risk,
    StepUpMethod,
    WindowOffer,
)

# `Program.variables()` also lists the loop variables of macros such as `xs.all(x, ...)`.
_MACRO_BINDING = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


class FieldError(ValueError):
    """A validation problem in a named field below the model being validated."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def compile_when(expression: str) -> cel.Program:
    """Compile a `when` expression and check it names only known variables."""
    try:
        program = cel.compile(expression)
    except ValueError as exc:
        # The library prefixes the whole expression; the position and caret are what help.
        text = str(exc)
        marker = text.find("ERROR: ")
        raise ValueError(f"invalid CEL: {text[marker:] if marker >= 0 else text}") from None
    bound = set(_MACRO_BINDING.findall(expression))
    unknown = sorted(set(program.variables()) - CEL_VARIABLES - bound)
    if unknown:
        names = ", ".join(repr(n) for n in unknown)
        allowed = ", ".join(sorted(CEL_VARIABLES))
        raise ValueError(f"unknown variable {names} in CEL expression; use one of: {allowed}")
    return program


class Match(Contract):
    """Globs (fnmatch, case-sensitive) on action type and target; a list means any of them."""

    action: list[str] = Field(default_factory=lambda: ["*"])
    target: list[str] = Field(default_factory=lambda: ["*"])

    @field_validator("action", "target", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        return value

    @field_validator("action", "target")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one glob")
        if any(not glob for glob in value):
            raise ValueError("globs must not be empty strings")
        return value


# A window's scope speaks of the request itself only: who asks is fixed by the window.
SCOPE_VARIABLES = frozenset({"action", "target", "params", "sql"})


def compile_scope(expression: str) -> cel.Program:
    """Compile a window's `scope`: like `when`, but over action, target, params and sql only."""
    if not expression.strip():
        raise ValueError("must not be blank")
    program = compile_when(expression)
    bound = set(_MACRO_BINDING.findall(expression))
    other = sorted(set(program.variables()) - SCOPE_VARIABLES - bound)
    if other:
        names = ", ".join(repr(n) for n in other)
        raise ValueError(
            f"a window scope may use only {', '.join(sorted(SCOPE_VARIABLES))}, not {names} "
            "(the window's holder is fixed: the requester it was granted to)"
        )
    return program


class Window(WindowOffer):
    """`window:` of a rule: approvers may grant the requester up to `max_duration` in `scope`."""

    @model_validator(mode="after")
    def _checked(self) -> Window:
        if self.max_duration.total_seconds() <= 0:
            raise FieldError("max_duration", "must be greater than 0")
        try:
            compile_scope(self.scope)
        except ValueError as exc:
            raise FieldError("scope", str(exc)) from None
        return self


class UndoWindow(Contract):
    """How long after a reversible action ran its requester or approvers may ask to undo it."""

    within: Duration

    @field_validator("within")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if value.total_seconds() <= 0:
            raise ValueError("must be greater than 0")
        return value


class Outcome(Contract):
    """What applies when a rule (or the default) is chosen."""

    description: str | None = None
    effect: Effect
    risk: Risk | None = None
    reason: str | None = None
    approvals: list[ApprovalRequirement] = Field(default_factory=list)
    escalation: list[EscalationStage] = Field(default_factory=list)
    expires_after: Duration | None = None
    # webauthn: each decision needs a fresh security-key assertion on the approval page.
    step_up: StepUpMethod | None = None
    remind: Reminders | None = None

    @model_validator(mode="after")
    def _reminders(self) -> Outcome:
        # Checked at load: a reminder loop with no gap, or on an action nobody approves, is a
        # mistake in the file, not something to discover when the first request waits.
        if self.remind is None:
            return self
        if self.effect != "require_approval":
            raise FieldError("remind", f"not allowed when effect is {self.effect!r}")
        if self.remind.every < timedelta(minutes=1):
            raise FieldError("remind.every", "must be at least 1m")
        if self.expires_after is not None and self.remind.every >= self.expires_after:
            raise FieldError("remind.every", "must be shorter than expires_after")
        return self

    # On the outcome, so the rule that matches an action decides whether it may be forced.
    break_glass: BreakGlassPolicy | None = None
    window: Window | None = None
    # Reversible actions (issue 15): the longest `duration` a request may ask for, the undo
    # window, and groups (admins) who may revoke or undo besides the requester and approvers.
    max_duration: Duration | None = None
    undo: UndoWindow | None = None
    revoke_groups: list[str] = Field(default_factory=list)

    @field_validator("max_duration")
    @classmethod
    def _positive_max_duration(cls, value: Any) -> Any:
        if value is not None and value.total_seconds() <= 0:
            raise ValueError("must be greater than 0")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Outcome:
        if self.effect != "require_approval":
            for name in ("approvals", "escalation", "expires_after", "step_up", "window"):
                if getattr(self, name):
                    raise FieldError(name, f"not allowed when effect is {self.effect!r}")
            return self
        if not self.approvals:
            raise FieldError("approvals", "required when effect is 'require_approval'")
        if self.expires_after is None:
            raise FieldError("expires_after", "required when effect is 'require_approval'")
        # Every offset counts from when the request was made, so stages must be in order.
        for index, stage in enumerate(self.escalation):
            if stage.after.total_seconds() <= 0:
                raise FieldError(f"escalation.{index}.after", "must be greater than 0")
            if index and stage.after <= self.escalation[index - 1].after:
                raise FieldError(
                    f"escalation.{index}.after",
                    f"must be later than escalation.{index - 1}.after (stages are offsets "
                    "from when the request was made, so they must increase)",
                )
            if not stage.notify and not stage.add_groups:
                raise FieldError(f"escalation.{index}", "needs notify or add_groups")
            if stage.after >= self.expires_after:
                raise FieldError("expires_after", f"must be later than escalation.{index}.after")
        if self.expires_after.total_seconds() <= 0:
            raise FieldError("expires_after", "must be greater than 0")
        return self

    @model_validator(mode="after")
    def _break_glass_consistent(self) -> Outcome:
        # Break-glass skips the wait for approval; it never overrides a deny, and an allow
        # has nothing to skip.
        spec = self.break_glass
        if spec is None:
            return self
        if self.effect != "require_approval":
            raise FieldError(
                "break_glass",
                f"only allowed when effect is 'require_approval' (this is {self.effect!r}): "
                "break-glass skips waiting for approval, it never overrides a deny",
            )
        if spec.review_within.total_seconds() <= 0:
            raise FieldError("break_glass.review_within", "must be greater than 0")
        for index, stage in enumerate(spec.escalation):
            where = f"break_glass.escalation.{index}"
            if stage.after.total_seconds() <= 0:
                raise FieldError(f"{where}.after", "must be greater than 0")
            if index and stage.after <= spec.escalation[index - 1].after:
                raise FieldError(
                    f"{where}.after",
                    f"must be later than break_glass.escalation.{index - 1}.after (stages are "
                    "offsets from the break, so they must increase)",
                )
            if not stage.notify and not stage.add_groups:
                raise FieldError(where, "needs notify or add_groups")
        return self

    def groups(self) -> list[tuple[str, str]]:
        """The (field path, group name) pairs this outcome refers to."""
        named = [(f"approvals.{i}.group", a.group) for i, a in enumerate(self.approvals)]
        for i, stage in enumerate(self.escalation):
            named += [(f"escalation.{i}.notify.{j}", g) for j, g in enumerate(stage.notify)]
            named += [(f"escalation.{i}.add_groups.{j}", g) for j, g in enumerate(stage.add_groups)]
        named += [(f"revoke_groups.{i}", g) for i, g in enumerate(self.revoke_groups)]
        if self.window is not None:
            named += [(f"window.revokers.{j}", g) for j, g in enumerate(self.window.revokers)]
        return named + self._break_glass_groups()

    def _break_glass_groups(self) -> list[tuple[str, str]]:
        """The groups `break_glass` names, so a typo in one is a load error."""
        spec = self.break_glass
        if spec is None:
            return []
        named = [(f"break_glass.groups.{i}", g) for i, g in enumerate(spec.groups)]
        named += [(f"break_glass.reviewers.{i}", g) for i, g in enumerate(spec.reviewers)]
        for i, stage in enumerate(spec.escalation):
            where = f"break_glass.escalation.{i}"
            named += [(f"{where}.notify.{j}", g) for j, g in enumerate(stage.notify)]
            named += [(f"{where}.add_groups.{j}", g) for j, g in enumerate(stage.add_groups)]
        return named


class Rule(Outcome):
    """A policy rule: chosen when its globs match and its `when` (if any) is true."""

    id: str = Field(pattern=NAME_PATTERN, max_length=100)
    match: Match = Field(default_factory=Match)
    when: str | None = None

    _program: cel.Program | None = PrivateAttr(default=None)

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == "default":
            raise ValueError("'default' is reserved for the policy's default")
        return value

    @model_validator(mode="after")
    def _compile_when(self) -> Rule:
        # Compiled once at load time, so a broken expression is a load error, not a surprise.
        if self.when is not None:
            if not self.when.strip():
                raise FieldError("when", "must not be blank; leave it out to always match")
            try:
                self._program = compile_when(self.when)
            except ValueError as exc:
                raise FieldError("when", str(exc)) from None
        return self

    @property
    def program(self) -> cel.Program | None:
        """The compiled `when` expression, if the rule has one."""
        return self._program


class PolicyFile(Contract):
    """One policy file: a default and/or rules. A single-file policy needs both."""

    version: Literal[1]
    default: Outcome | None = None
    rules: list[Rule] = Field(default_factory=list)
