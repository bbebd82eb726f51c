"""The contract: pydantic models shared by agent, gateway, workflow, channels and audit.

Every edge validates against these definitions; nothing else defines the same shapes.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

Effect = Literal["allow", "deny", "require_approval"]
Risk = Literal["low", "medium", "high", "critical"]
DecisionKind = Literal["approve", "deny"]
StepUpMethod = Literal["webauthn"]
PrincipalKind = Literal["human", "agent"]
MessageKind = Literal[
    "request",
    "decision",
    "cancel",
    "report",
    "amend",
    "break_glass",
    "review",
    "window_revoke",
    "revoke",
    "undo",
]
# Where an approved action runs: a worker's registered executor, or the requester itself.
Execution = Literal["worker", "caller"]

RISK_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}

_DURATION_PART = re.compile(r"(\d+)([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """Parse '90s', '30m', '4h', '2d' or '1h30m' into a timedelta; pass other forms to pydantic."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text and _DURATION_PART.sub("", text) == "":
            seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
            try:
                return timedelta(seconds=seconds)
            except OverflowError:
                # A bad value, like any other: never an unhandled error (an API 500).
                raise ValueError(f"invalid duration {value!r}: too long") from None
        if not text.startswith("p"):
            raise ValueError(
                f"invalid duration {value!r}: use a number with s, m, h or d (e.g. 30m)"
            )
    return value


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way policy files write it ('1h30m')."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


class Contract(BaseModel):
    """Base for contract models: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


def validation_problems(exc: ValidationError, root: str = "") -> str:
    """A validation error as `field.path: message; ...`: names fields, never echoes values."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or root}: {e['msg']}" for e in exc.errors()
    )


# --- the digest -----------------------------------------------------------------------------


def _normalise(value: Any) -> Any:
    # NFC so that the same visible text always hashes the same, whatever the sender's keyboard.
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, dict):
        normalised = {unicodedata.normalize("NFC", str(k)): _normalise(v) for k, v in value.items()}
        if len(normalised) != len(value):
            # Two spellings of one key would merge, and two different actions share a digest.
            raise ValueError("object keys must differ after Unicode NFC normalisation")
        return normalised
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def no_nul(value: Any) -> Any:
    """Refuse NUL anywhere in a value: Postgres text and jsonb cannot hold it, so a message
    carrying one could never be recorded and its handler would retry the ledger forever."""
    if _has_nul(value):
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


def canonical_json(value: Any) -> str:
    """Canonical JSON: NFC strings, sorted keys, no whitespace, UTF-8 (not ASCII-escaped)."""
    return json.dumps(
        _normalise(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def action_digest(action: str, target: str, params: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of (action, target, params): what an approver signs."""
    body = canonical_json({"action": action, "target": target, "params": params})
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


# --- signatures -----------------------------------------------------------------------------


class Signature(Contract):
    """The gateway's Ed25519 signature over canonical-JSON claims about one message."""

    kid: str = Field(min_length=1, max_length=100, description="Id of the signing key")
    payload: str = Field(max_length=8000, description="The signed claims, canonical JSON")
    sig: str = Field(max_length=200, description="Ed25519 signature of payload, base64url")

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)


# --- requests -------------------------------------------------------------------------------

ACTION_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]*$"

# Bounds on params, enforced wherever the contract is validated (gateway, SDK, workflow input):
# a request that fits them can always be stored, hashed, shown, decoded and evaluated.
# Deeper JSON than pydantic's parser accepts (about 200 levels) would poison the workflow.
MAX_PARAMS_DEPTH = 32
MAX_PARAMS_NODES = 10_000
MAX_PARAMS_STRING = 100_000  # characters in one string value (a long SQL migration fits)
MAX_PARAMS_KEY = 200  # characters in one object key


def check_params_bounds(value: Any, name: str = "params") -> None:
    """Raise ValueError naming the limit when JSON (params) nests, branches or runs on too far.

    Iterative, so a hostile depth cannot exhaust the Python stack while being measured.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_PARAMS_NODES:
            raise ValueError(
                f"{name} holds more than {MAX_PARAMS_NODES} values; the limit "
                f"(MAX_PARAMS_NODES) is {MAX_PARAMS_NODES}"
            )
        if isinstance(node, dict | list | tuple) and depth > MAX_PARAMS_DEPTH:
            raise ValueError(
                f"{name} nests deeper than {MAX_PARAMS_DEPTH} levels; the depth limit "
                f"(MAX_PARAMS_DEPTH) is {MAX_PARAMS_DEPTH}"
            )
        if isinstance(node, dict):
            for key, child in node.items():
                if isinstance(key, str) and len(key) > MAX_PARAMS_KEY:
                    raise ValueError(
                        f"a {name} key is {len(key)} characters long; the limit "
                        f"(MAX_PARAMS_KEY) is {MAX_PARAMS_KEY}"
                    )
                stack.append((child, depth + 1))
        elif isinstance(node, list | tuple):
            stack.extend((child, depth + 1) for child in node)
        elif isinstance(node, str) and len(node) > MAX_PARAMS_STRING:
            raise ValueError(
                f"a {name} string is {len(node)} characters long; the limit "
                f"(MAX_PARAMS_STRING) is {MAX_PARAMS_STRING}"
            )


class BreakGlassClaim(Contract):
    """A person's claim to force an action through now: why it cannot wait."""

    reason: str = Field(min_length=1, max_length=2000)

    @field_validator("reason")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        return no_nul(value)


class ActionSubmission(Contract):
    """What an agent asks for. The gateway adds the authenticated requester."""

    action: str = Field(
        pattern=ACTION_PATTERN, max_length=100, description="Action type, e.g. sql.execute"
    )
    target: str = Field(
        pattern=NAME_PATTERN, max_length=100, description="A named system, e.g. prod-db"
    )
    params: dict[str, JsonValue] = Field(default_factory=dict)
    justification: str = Field(min_length=1, max_length=4000)
    risk: Risk | None = Field(
        default=None, description="Risk the agent claims; policy may raise it"
    )
    on_behalf_of: str | None = Field(default=None, max_length=200)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    execution: Execution = Field(
        default="worker",
        description=(
            "worker: the worker runs the action with credentials the agent never holds; "
            "caller: after approval the requester runs it and reports the result"
        ),
    )
    break_glass: BreakGlassClaim | None = Field(
        default=None,
        description=(
            "A person in a group the matching rule names forces the action through now; "
            "it is flagged everywhere and reviewed after the fact. Agents never may"
        ),
    )

    @field_validator("params", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        # Before JSON-value validation, which recurses once per level of nesting.
        check_params_bounds(value)
        return value

    @field_validator("justification")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("justification must not be blank")
        return value

    @field_validator("params", "justification", "on_behalf_of", "idempotency_key")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # NUL cannot be stored in Postgres text or jsonb, so the audit could never record it.
        if _has_nul(value):
            raise ValueError("must not contain NUL (\\u0000) characters")
        return value

    @field_validator("params")
    @classmethod
    def _hashable(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        # The digest must be computable, or nobody could ever sign the action: JSON parsers
        # accept NaN and lone surrogates in escapes, canonical JSON and UTF-8 do not.
        try:
            canonical_json(value).encode("utf-8")
        except ValueError:
            raise ValueError(
                "params must hold finite numbers and valid Unicode text (no NaN, Infinity or "
                "lone surrogates, no keys that are the same text once NFC-normalised)"
            ) from None
        return value

    @property
    def digest(self) -> str:
        """The action digest of this request."""
        return action_digest(self.action, self.target, self.params)


class ActionRequest(ActionSubmission):
    """A submission bound to the principal the gateway authenticated."""

    requester: str = Field(min_length=1, max_length=200)
    signature: Signature | None = Field(
        default=None, description="The gateway's signature; workers refuse unsigned requests"
    )
    # Approve with changes (issue 17): set by the gateway on a successor it starts on the
    # requester's behalf; signed with the request. Absent (None) on every other request.
    amended_from: str | None = Field(
        default=None, max_length=200, description="The action this one supersedes"
    )
    amended_by: str | None = Field(
        default=None, max_length=200, description="Who proposed the changed params"
    )
    reverts: RevertOf | None = Field(
        default=None,
        description=(
            "Set only by the gateway for an undo: the action this request reverts, with the "
            "request and result its executor's revert needs"
        ),
    )

    @field_validator("requester")
    @classmethod
    def _no_nul_requester(cls, value: str) -> str:
        return no_nul(value)


class RevertOf(Contract):
    """The action an undo reverts: its id, its request and what its executor returned."""

    action_id: str = Field(min_length=1, max_length=200)
    request: ActionRequest
    result: JsonValue = None


# ActionRequest names RevertOf, defined after it (an undo's request nests the one it reverts).
ActionRequest.model_rebuild()


# --- identity -------------------------------------------------------------------------------


class Principal(Contract):
    """A person or agent as resolved from the directory at the time it is needed."""

    id: str
    kind: PrincipalKind
    groups: list[str] = Field(default_factory=list)
    owner: str | None = None
    email: str | None = None
    slack_user_id: str | None = None
    teams_aad_object_id: str | None = None
    acts_for: list[str] = Field(
        default_factory=list,
        description="whom it may name as on_behalf_of besides itself (an agent: also its owner)",
    )


# --- policy ---------------------------------------------------------------------------------


class WindowOffer(Contract):
    """A rule's offer: approvers may let the requester run requests in `scope` for a while."""

    max_duration: Duration = Field(description="The longest window an approver may grant")
    scope: str = Field(
        min_length=1, max_length=4000, description="CEL over action, target, params (and sql)"
    )
    revokers: list[str] = Field(
        default_factory=list,
        description="Groups that may revoke a window besides the approvers who granted it",
    )


class ApprovalRequirement(Contract):
    """N-of-M: at least `min` distinct approvers from `group`."""

    group: str
    min: int = Field(default=1, ge=1)


class EscalationStage(Contract):
    """After `after` (from the request), notify more groups and widen who may approve."""

    after: Duration
    notify: list[str] = Field(default_factory=list)
    add_groups: list[str] = Field(default_factory=list)


class Reminders(Contract):
    """Re-notify the eligible groups every `every` until decided, escalated or expired, at most
    `max` times (issue 17)."""

    every: Duration
    max: int = Field(default=3, ge=1, le=100)


class BreakGlassPolicy(Contract):
    """Who may force a rule's action through now, and who must review it afterwards, by when.

    `escalation` stages count from the break and widen (`add_groups`) or page (`notify`) the
    reviewers until somebody who is not the breaker reviews it.
    """

    groups: list[str] = Field(min_length=1, description="Human groups whose members may break")
    reason_min_length: int = Field(default=20, ge=1, le=2000)
    reviewers: list[str] = Field(min_length=1, description="Groups that review it afterwards")
    review_within: Duration
    escalation: list[EscalationStage] = Field(default_factory=list)


class ConditionError(Contract):
    """A rule's `when` that could not be evaluated, and how the policy counted it."""

    rule_id: str
    error: str = Field(max_length=1000)
    # deny and require_approval rules fail closed (count as a match); allow rules do not match.
    treated_as: Literal["match", "no_match"]


class Verdict(Contract):
    """The policy's answer for one request; lands in workflow history as evaluated."""

    effect: Effect
    rule_id: str
    reason: str
    risk: Risk
    approvals: list[ApprovalRequirement] = Field(default_factory=list)
    escalation: list[EscalationStage] = Field(default_factory=list)
    expires_after: Duration | None = None
    policy_digest: str
    condition_errors: list[ConditionError] = Field(
        default_factory=list,
        description="Rules whose condition errored on this request; recorded, never hidden",
    )
    step_up: StepUpMethod | None = Field(
        default=None,
        description="webauthn: a decision counts only with a fresh security-key assertion",
    )
    remind: Reminders | None = Field(
        default=None, description="Reminders while the action waits for approval"
    )
    break_glass: BreakGlassPolicy | None = Field(
        default=None, description="Whether and how the winning rule lets people break glass"
    )
    window: WindowOffer | None = Field(
        default=None,
        description="The approval window the rule lets approvers grant (scope and maximum)",
    )
    window_id: str | None = Field(
        default=None, description="The live approval window that allowed this request, if one did"
    )
    # Reversible actions (issue 15): the longest `duration` a grant may ask for, how long an
    # undo may be asked for after it ran, and groups who may revoke or undo it besides the
    # requester and its approvers.
    max_duration: Duration | None = None
    undo_within: Duration | None = None
    revoke_groups: list[str] = Field(default_factory=list)


class ExecutorSpec(Contract):
    """How the workflow must run an action type: retries only when it is idempotent."""

    action: str
    idempotent: bool
    timeout: Duration = timedelta(minutes=5)
    heartbeat_timeout: Duration = timedelta(seconds=30)
    # The executor declares a revert: the action can be in force for a duration, and undone.
    revertible: bool = False


# --- decisions ------------------------------------------------------------------------------


class DecisionBody(Contract):
    """A decision as an approver sends it to the API; the gateway adds who and through what."""

    decision: DecisionKind
    digest: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="The digest of the action the approver was shown"
    )
    reason: str = Field(default="", max_length=2000, description="Required to deny")
    window: Duration | None = Field(
        default=None,
        description=(
            "Approve only: also let the requester run requests in the rule's window scope for "
            "this long (at most the rule's window max_duration)"
        ),
    )

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)

    @model_validator(mode="after")
    def _window_on_approve(self) -> DecisionBody:
        if self.window is not None:
            if self.decision != "approve":
                raise ValueError("window: only an approval can grant a window")
            if self.window <= timedelta(0):
                raise ValueError("window: must be longer than 0s")
        return self


class StepUp(Contract):
    """Proof the approver stepped up for this decision: which method and which credential."""

    method: StepUpMethod
    credential_id: str = Field(
        min_length=1, max_length=1400, description="base64url id of the WebAuthn credential"
    )


class DecisionRequest(DecisionBody):
    """A decision as submitted through a channel; `approver` is the authenticated principal."""

    approver: str = Field(min_length=1, max_length=200)
    channel: str = Field(default="api", max_length=40)
    approver_groups: list[str] | None = Field(
        default=None,
        max_length=200,
        description=(
            "Set only by the gateway, from a verified identity-provider token, for a person the "
            "directory file does not list; signed with the decision"
        ),
    )
    step_up: StepUp | None = Field(
        default=None,
        description=(
            "Set only by the gateway's approval page after it verified a WebAuthn assertion "
            "bound to this action's digest; signed with the decision"
        ),
    )
    signature: Signature | None = None


class Decision(DecisionRequest):
    """An accepted decision, with the workflow time it was taken."""

    at: datetime


class RefusalCode(StrEnum):
    """Why a decision (or a cancel, report or the request itself) was refused."""

    UNKNOWN_PRINCIPAL = "unknown_principal"
    AGENT_APPROVER = "agent_approver"
    SELF_APPROVAL = "self_approval"
    NOT_ELIGIBLE = "not_eligible"
    DIGEST_MISMATCH = "digest_mismatch"
    DUPLICATE = "duplicate"
    NOT_PENDING = "not_pending"
    MISSING_REASON = "missing_reason"
    # The message itself is not the gateway's word (signoff.signing).
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    SIGNATURE_MISMATCH = "signature_mismatch"
    STALE_SIGNATURE = "stale_signature"
    REPLAYED = "replayed"
    # Another run of the same workflow id (a reset, a re-run) already started executing it.
    ALREADY_EXECUTED = "already_executed"
    # The rule needs a security-key step-up (the approval page) and the decision has none.
    STEP_UP_REQUIRED = "step_up_required"
    # Who proposed an action's changed params never approves the result (issue 17).
    AMENDER = "amender"
    # Break-glass: agents never break glass; only the rule's groups may; nobody reviews their own.
    AGENT_BREAK_GLASS = "agent_break_glass"
    BREAK_GLASS_NOT_ALLOWED = "break_glass_not_allowed"
    SELF_REVIEW = "self_review"
    # Approval windows: the rule offers none, or the approver asked for more than its maximum.
    WINDOW_NOT_OFFERED = "window_not_offered"
    WINDOW_TOO_LONG = "window_too_long"
    # A window revoke by someone who neither approved it nor is in a revoking group.
    NOT_REVOKER = "not_revoker"


class RefusedAttempt(Contract):
    """A message the workflow refused; kept so security can see who tried what.

    `approver` is whoever the message claims sent it (for a cancel, report or request too).
    """

    approver: str
    decision: DecisionKind | None = None
    kind: MessageKind = "decision"
    channel: str
    digest: str
    code: RefusalCode
    message: str
    at: datetime


class DecisionRefused(Contract):
    """The structured details of a refused decision, carried by the update's failure."""

    code: RefusalCode
    message: str


class CancelBody(Contract):
    """A cancellation as the requester sends it to the API."""

    reason: str = Field(default="", max_length=2000)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)


class CancelRequest(CancelBody):
    """A request to cancel a pending action; only the requester may."""

    by: str
    signature: Signature | None = None


# --- break-glass reviews -----------------------------------------------------------------------

ReviewOutcome = Literal["accepted", "disputed"]


class ReviewBody(Contract):
    """An after-the-fact review of a break-glass action, as a reviewer sends it to the API."""

    digest: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="The digest of the action the reviewer was shown"
    )
    reason: str = Field(min_length=1, max_length=2000, description="What the reviewer found")
    outcome: ReviewOutcome = Field(
        default="accepted",
        description="accepted: the break was justified; disputed: it was not (a finding)",
    )

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a review needs a reason")
        return value


class ReviewRequest(ReviewBody):
    """A review bound to the authenticated reviewer and the door it came through."""

    reviewer: str = Field(min_length=1, max_length=200)
    channel: str = Field(default="api", max_length=40)
    signature: Signature | None = None


class Review(ReviewRequest):
    """An accepted review, with the workflow time it was taken."""

    at: datetime


BreakGlassReview = Literal["pending", "overdue", "reviewed"]


class BreakGlassStatus(Contract):
    """A break-glass action: who forced it and why, and where its mandatory review stands."""

    by: str
    reason: str
    at: datetime
    review_due_at: datetime
    review: BreakGlassReview = "pending"
    reviewer_groups: list[str] = Field(default_factory=list)
    review_level: int = 0
    reviewed: Review | None = None


class RevokeBody(Contract):
    """Ending a reversible action's window early, as a person sends it to the API."""

    reason: str = Field(default="", max_length=2000)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)


class RevokeRequest(RevokeBody):
    """End an active grant now: the requester, its approvers or the policy's revoke groups."""

    by: str
    signature: Signature | None = None


class UndoBody(RevokeBody):
    """Asking for an executed action to be reverted (within the policy's undo window)."""


class UndoRequest(UndoBody):
    """An undo: the revert request (gateway-signed, evaluated like any action) it starts."""

    by: str
    revert: ActionRequest
    revert_id: str
    signature: Signature | None = None


# --- status ---------------------------------------------------------------------------------


class Status(StrEnum):
    """Lifecycle of an action."""

    EVALUATING = "evaluating"
    PENDING_APPROVAL = "pending_approval"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DENIED = "denied"
    DENIED_BY_POLICY = "denied_by_policy"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    # The request did not carry a valid gateway signature: never evaluated, never run.
    REJECTED = "rejected"
    # An approver changed the params: a successor action (`superseded_by`) replaced it.
    SUPERSEDED = "superseded"
    # A reversible action in force until its window ends or it is revoked (issue 15).
    ACTIVE = "active"
    # Its revert runs (and is retried until it succeeds).
    REVERTING = "reverting"
    # It ran, and its revert undid it.
    REVERTED = "reverted"

    @property
    def terminal(self) -> bool:
        """Whether nothing more can happen to the action."""
        return self not in _OPEN


_OPEN = frozenset(
    {Status.EVALUATING, Status.PENDING_APPROVAL, Status.EXECUTING, Status.ACTIVE, Status.REVERTING}
)


class RequirementProgress(Contract):
    """How far one approval requirement is: '1 of 2 from security'."""

    group: str
    min: int
    approved_by: list[str] = Field(default_factory=list)

    @property
    def met(self) -> bool:
        """Whether enough approvers have counted toward this requirement."""
        return len(self.approved_by) >= self.min


class NotificationRef(Contract):
    """Where a request was posted, so the message can be found and updated again."""

    channel: str
    destination: str
    ref: dict[str, str] = Field(default_factory=dict)
    error: str | None = None
    stage: int = 0
    # Reminders (issue 17): the how-manyth reminder this message was; 0 for the request.
    reminder: int = 0


class ActionStatus(Contract):
    """The state of one action, as the workflow's `status` query and the API return it."""

    id: str
    digest: str
    request: ActionRequest
    status: Status
    verdict: Verdict | None = None
    decisions: list[Decision] = Field(default_factory=list)
    refused: list[RefusedAttempt] = Field(default_factory=list)
    progress: list[RequirementProgress] = Field(default_factory=list)
    eligible_groups: list[str] = Field(default_factory=list)
    escalation_level: int = 0
    created_at: datetime
    expires_at: datetime | None = None
    decided_at: datetime | None = None
    notifications: list[NotificationRef] = Field(default_factory=list)
    result: JsonValue = None
    error: str | None = None
    owner: str | None = None
    superseded_by: str | None = Field(
        default=None, description="The successor that replaced this action with changed params"
    )
    break_glass: BreakGlassStatus | None = None
    opened_window: str | None = Field(
        default=None, description="The approval window this action's approval opened, if any"
    )
    window: GrantWindow | None = Field(
        default=None, description="A reversible action's time in force, and how it ended"
    )
    revert: RevertProgress | None = None
    undo_until: datetime | None = Field(
        default=None, description="Until when the requester or approvers may ask for an undo"
    )
    undo_action: str | None = Field(default=None, description="The action that reverts this one")

    @property
    def terminal(self) -> bool:
        """Whether the action has finished."""
        return self.status.terminal

    @property
    def settled(self) -> bool:
        """Whether a waiting agent can stop: it finished, or it ran and is in force (a grant)."""
        return self.status.terminal or self.status in (Status.ACTIVE, Status.REVERTING)

    @property
    def notification_failures(self) -> list[NotificationRef]:
        """Notifications that could not be delivered."""
        return [n for n in self.notifications if n.error]


class GrantWindow(Contract):
    """While a reversible action is in force: from its execution until its revert ran."""

    start: datetime
    end: datetime | None = Field(default=None, description="When the granted duration ends")
    ended_at: datetime | None = None
    # "timer" when the duration ran out; else who revoked or undid it.
    ended_by: str | None = None
    how: Literal["expired", "revoked", "undone"] | None = None
    reason: str = ""


class RevertProgress(Contract):
    """The revert: retried until it succeeds; failures show here, in metrics and alerts."""

    started_at: datetime
    failures: int = 0
    last_error: str | None = None
    done_at: datetime | None = None
    result: JsonValue = None


ActionStatus.model_rebuild()

Outcome: TypeAlias = ActionStatus
"""The workflow's result: the final `ActionStatus`."""


# --- notifications --------------------------------------------------------------------------


# --- execution ------------------------------------------------------------------------------


class AmendBody(Contract):
    """Approve with changes: the params an approver proposes instead of approving (issue 17).

    The original ends `superseded`; a successor with these params is requested on the
    requester's behalf and needs its own approvals (never the amender's).
    """

    params: dict[str, JsonValue]
    digest: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="The digest of the action the amender was shown"
    )
    reason: str = Field(default="", max_length=2000, description="What was changed and why")

    @field_validator("params", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        check_params_bounds(value)
        return value

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)


class AmendRequest(Contract):
    """An amendment as the gateway sends it: who, what they saw, and the signed successor."""

    by: str = Field(min_length=1, max_length=200)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    reason: str = Field(default="", max_length=2000)
    channel: str = Field(default="api", max_length=40)
    successor_id: str = Field(min_length=1, max_length=200)
    successor: ActionRequest
    amender_groups: list[str] | None = Field(
        default=None,
        max_length=200,
        description=(
            "Set only by the gateway, from a verified identity-provider token, for a person the "
            "directory file does not list; signed with the amendment"
        ),
    )
    signature: Signature | None = None


class ReportBody(Contract):
    """Caller mode: how running the approved action went; `error` set means it failed."""

    result: JsonValue = None
    error: str | None = Field(default=None, max_length=4000)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)

    @field_validator("result", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        # The agent's report becomes workflow state: the same bounds as params.
        check_params_bounds(value, "result")
        return value


class ExecutionReport(ReportBody):
    """What a caller-mode requester reports, bound to who they are."""

    by: str
    signature: Signature | None = None


# --- audit ----------------------------------------------------------------------------------


# --- approval windows -----------------------------------------------------------------------

WindowState = Literal["active", "expired", "revoked"]


class WindowUse(Contract):
    """One request an approval window allowed."""

    action_id: str
    action: str
    target: str
    digest: str
    at: datetime


class ApprovalWindow(Contract):
    """A scoped approval (grant): its holder may run requests in scope until it ends."""

    id: str
    status: WindowState
    action_id: str = Field(description="The approved action whose approval opened it")
    rule_id: str
    scope: str = Field(description="CEL over action, target, params that every use must meet")
    holder: str = Field(description="The requester it is for; nobody else can use it")
    on_behalf_of: str | None = None
    approvers: list[str] = Field(default_factory=list)
    revokers: list[str] = Field(default_factory=list, description="Groups that may revoke it")
    created_at: datetime
    expires_at: datetime
    duration: Duration
    uses: list[WindowUse] = Field(default_factory=list)
    ended_at: datetime | None = None
    revoked_by: str | None = None
    reason: str | None = None
    refused: list[RefusedAttempt] = Field(default_factory=list)

    @property
    def live(self) -> bool:
        """Whether it may still allow requests."""
        return self.status == "active"


class WindowRevokeBody(Contract):
    """Ending a window early, as an approver or revoker sends it to the API."""

    reason: str = Field(default="", max_length=2000)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)


class WindowRevokeRequest(WindowRevokeBody):
    """A revoke bound to who sent it; signed by the gateway."""

    by: str = Field(min_length=1, max_length=200)
    channel: str = Field(default="api", max_length=40)
    signature: Signature | None = None
