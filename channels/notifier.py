"""The notifier interface every approval channel implements, and what they share."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from signoff.models import ActionStatus, NotificationRef
from workflows.messages import NotifyInput, NotifyUpdateInput, WindowNoteInput

RISK_EMOJI = {"low": "🟢", "medium": "🟡", "high": "🟠", "critical": "🔴"}
RISK_COLOUR = {"low": "#2eb67d", "medium": "#ecb22e", "high": "#e8912d", "critical": "#e01e5a"}


class NotifierError(Exception):
    """A permanent channel failure (bad token, unknown channel): retrying will not help."""


class Notifier(Protocol):
    """Posts approval requests to one channel and keeps the posted messages current."""

    channel: str

    async def post(self, request: NotifyInput) -> list[NotificationRef]:
        """Post the request to each group's destination; return where it landed."""
        ...

    async def update(self, request: NotifyUpdateInput) -> None:
        """Update posted messages in place: progress, final status, buttons gone."""
        ...


@runtime_checkable
class WindowNotifier(Protocol):
    """A channel that can tell an approval's thread what its approval window did."""

    channel: str

    async def window_note(self, request: WindowNoteInput) -> None:
        """Reply where the approval was posted: the window opened, was used, ended."""
        ...


def requirement_text(status: ActionStatus) -> str:
    """Who must approve, as people read it: '2 of security, 1 of dba'."""
    if status.progress:
        return ", ".join(f"{p.min} of {p.group}" for p in status.progress)
    return ", ".join(status.eligible_groups) or "nobody"


def progress_text(status: ActionStatus) -> str:
    """How far approval is: '1 of 2 from security (carol)'."""
    parts = []
    for p in status.progress:
        who = f" ({', '.join(p.approved_by)})" if p.approved_by else ""
        parts.append(f"{len(p.approved_by)} of {p.min} from {p.group}{who}")
    return "; ".join(parts)


# --- shared wording for chat channels (Slack, Teams) ---------------------------------------


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marked with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + "…"


def requester_text(status: ActionStatus) -> str:
    """Who asked, and for whom: 'agent:bot (owner dave@example.com)'."""
    request = status.request
    if request.on_behalf_of:
        return f"{request.requester} on behalf of {request.on_behalf_of}"
    if status.owner:
        return f"{request.requester} (owner {status.owner})"
    return request.requester


def page_link_text(status: ActionStatus) -> str:
    """How every channel names the link to the action's approval page."""
    if status.verdict is not None and status.verdict.step_up and not status.terminal:
        return "Decide on the approval page (security key required)"
    return "Open the approval page"


# What a chat click on a step-up rule answers instead of deciding (then the page's link).
STEP_UP_TEXT = (
    "This rule needs a security-key step-up, which a chat click cannot prove. Nothing was "
    "decided here; decide on the approval page"
)


def outcome_recipient(status: ActionStatus) -> str:
    """Who is told the outcome: the requesting agent's owner, else whom it was for or by."""
    return status.owner or status.request.on_behalf_of or status.request.requester


def outcome_text(status: ActionStatus) -> str:
    """The final word on an action: 'succeeded (approved by bob, carol)', 'denied by …'."""
    approvers = [d.approver for d in status.decisions if d.decision == "approve"]
    by = f" (approved by {', '.join(approvers)})" if approvers else ""
    value = status.status.value.replace("_", " ")
    if status.status.value == "pending_approval" and status.progress:
        if all(p.met for p in status.progress):
            return f"approved{by}, about to run"
        return f"pending approval: {progress_text(status)}"
    if status.status.value in ("succeeded", "executing"):
        return f"{value}{by}"
    if status.status.value == "failed":
        return f"failed{by}: {status.error or 'unknown error'}"
    if status.status.value == "denied" and status.error:
        return status.error[:1].lower() + status.error[1:]  # "denied by alice: reason"
    return f"{value}: {status.error}" if status.error else value


# --- break-glass: the one wording every channel shows ----------------------------------------

BREAK_GLASS_MARK = "🚨 BREAK-GLASS"


def break_glass_title(title: str, status: ActionStatus) -> str:
    """A message's headline, marked when the action was forced through without approval."""
    return f"{BREAK_GLASS_MARK} {title}" if status.break_glass is not None else title


def break_glass_text(status: ActionStatus) -> str | None:
    """What every channel says about a break-glass action and its review; None for others.

    Plain text holding a person's words (the reason): each channel neutralises it as a whole.
    """
    glass = status.break_glass
    if glass is None:
        return None
    head = (
        f"{BREAK_GLASS_MARK}: forced through by {glass.by} without approval. Reason: {glass.reason}"
    )
    done = glass.reviewed
    if done is not None:
        return f"{head}. Reviewed ({done.outcome}) by {done.reviewer}: {done.reason}"
    groups = ", ".join(glass.reviewer_groups) or "the reviewers"
    if glass.review == "overdue":
        return (
            f"{head}. Review OVERDUE since {glass.review_due_at:%Y-%m-%d %H:%M} UTC: needed "
            f"from {groups} (signoff review {status.id} --reason ...)"
        )
    return (
        f"{head}. Review needed from {groups} by {glass.review_due_at:%Y-%m-%d %H:%M} UTC "
        f"(signoff review {status.id} --reason ...)"
    )


# --- break-glass review from chat: the same words in Slack and Teams ---------------------------

REVIEW_LABEL = "Review"
REVIEW_OUTCOMES = {
    "accepted": "Accepted: the break was justified",
    "disputed": "Disputed: it was not (a finding)",
}
REVIEW_REASON_LABEL = "What you found (recorded with your review)"
REVIEW_REASON_MISSING = "Say what you found: a review needs a reason"


def reviewable(status: ActionStatus) -> bool:
    """Whether a break-glass action's review is open: it has run and nobody has reviewed it."""
    glass = status.break_glass
    return glass is not None and glass.reviewed is None and bool(glass.reviewer_groups)


def review_refused_text(reason: str) -> str:
    """What a chat review that may not be recorded answers."""
    return f"Your review was refused: {reason}"


# --- reversible actions (issue 15): the same words in every channel ---------------------------

REVOKE_LABEL = "Revoke now"
REVOKE_CONFIRM = "End this grant now? Its revert runs at once."


def window_text(status: ActionStatus) -> str:
    """A reversible action's time in force: 'Active until 14:30 UTC', 'Revoked by bob …'."""
    window = status.window
    if window is None:
        return ""
    since = f"{window.start:%Y-%m-%d %H:%M} UTC"
    if window.how is None and window.end is None:
        # Ran, and open to an undo only (no duration).
        text = f"Ran at {since}"
    elif window.how is None:
        text = f"Active since {since} until {window.end:%Y-%m-%d %H:%M} UTC"
    else:
        ended = f"{window.ended_at:%Y-%m-%d %H:%M} UTC" if window.ended_at else "now"
        how = {"expired": "its time ran out", "revoked": "revoked", "undone": "undone"}
        by = "" if window.ended_by == "timer" else f" by {window.ended_by}"
        text = f"In force {since} to {ended}; {how[window.how]}{by}"
    revert = status.revert
    if revert is not None and revert.done_at is None and revert.failures:
        text += (
            f". Revert FAILING ({revert.failures} attempts, retried until it succeeds): "
            f"{revert.last_error}"
        )
    if status.undo_until is not None and status.window is not None and window.how is None:
        text += f". Undo possible until {status.undo_until:%Y-%m-%d %H:%M} UTC"
    return text


def revocable(status: ActionStatus) -> bool:
    """Whether a chat message offers "Revoke now": only while the action is active."""
    return status.status.value == "active"


def revoke_refused_text(reason: str) -> str:
    """What a chat click that may not revoke answers."""
    return f"Your revoke was refused: {reason}"
