"""Errors that cross a seam, each defined once.

The `ApplicationError` types the workflow raises and the gateway matches are constants here,
and so are the typed errors the gateway's service raises. The HTTP routes, Slack and Teams map
these neutral types to their own answers without knowing the service behind them.
"""

from __future__ import annotations

from signoff.models import RefusedAttempt

# ApplicationError types raised by the workflow's updates (their `details[0]` is a RefusedAttempt
# for the two *_REFUSED types).
DECISION_REFUSED = "DecisionRefused"
NOT_PENDING = "NotPending"
NOT_REQUESTER = "NotRequester"
NOT_AWAITING_REPORT = "NotAwaitingReport"
MESSAGE_REFUSED = "MessageRefused"
# An approval window refused a use (ended, or not the holder's): the request takes the normal rules.
WINDOW_REFUSED = "WindowRefused"
# ApplicationError types raised by activities, which the workflow's retry policies never retry.
NOTIFIER_ERROR = "NotifierError"
EXECUTOR_ERROR = "ExecutorError"


class ActionError(Exception):
    """Base of the service's errors; `code` is stable for APIs and channels."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ActionNotFound(ActionError):
    """No such action, or the caller may not see it (the two look the same on purpose)."""

    code = "not_found"


class ActionNotPending(ActionError):
    """The action can no longer be decided or cancelled."""

    code = "not_pending"


class UnknownAction(ActionError):
    """The action type has no executor."""

    code = "unknown_action"


class InvalidParams(ActionError):
    """The params do not fit the action's params model (e.g. two SQL statements)."""

    code = "invalid_params"


class InvalidOnBehalfOf(ActionError):
    """`on_behalf_of` names nobody the requester may act for (see `acts_for`)."""

    code = "invalid_on_behalf_of"


class IdempotencyConflict(ActionError):
    """The idempotency key was used before for a different action."""

    code = "idempotency_conflict"


class WorkerUnavailable(ActionError):
    """No worker answered the action's status query in time; the action itself is safe."""

    code = "worker_unavailable"


class ActionUnreadable(ActionError):
    """The action's workflow exists but cannot tell its status; `requester` when known."""

    code = "action_unreadable"

    def __init__(self, message: str, *, action_id: str, requester: str | None) -> None:
        super().__init__(message)
        self.action_id = action_id
        self.requester = requester


class ActionBroken(ActionUnreadable):
    """The workflow closed without an outcome (failed, terminated, timed out); final."""

    code = "action_failed"


class ActionStalled(ActionUnreadable):
    """The workflow's task keeps failing, so no worker can answer for it; retry later."""

    code = "action_stalled"


class NotRequester(ActionError):
    """Only the requester may cancel."""

    code = "not_requester"


class DecisionRefusedError(ActionError):
    """The workflow refused the decision; the attempt is recorded in history and ledger."""

    def __init__(self, attempt: RefusedAttempt) -> None:
        super().__init__(attempt.message)
        self.attempt = attempt
        self.code = attempt.code.value


class BreakGlassRefused(DecisionRefusedError):
    """The workflow refused to break glass (an agent, a person outside the groups, no reason).

    The attempt is recorded in history and ledger; nothing ran.
    """


class MessageRefusedError(ActionError):
    """The workflow refused a cancel or report it could not verify; the attempt is recorded."""

    def __init__(self, attempt: RefusedAttempt) -> None:
        super().__init__(attempt.message)
        self.attempt = attempt
        self.code = attempt.code.value


class WindowNotFound(ActionError):
    """No such approval window, or the caller may not see it (the two look the same)."""

    code = "not_found"


class DurationRefused(ActionError):
    """A revertible action asks for a longer `duration` than its rule's `max_duration`."""

    code = "duration_refused"
