"""Adaptive Cards (schema 1.5) for approval requests in Microsoft Teams.

One card shows the same facts as the Slack message. While the action is pending it carries
Approve and Deny as `Action.Execute` (Universal Actions, answered inline by our bot), each with
an `Action.Submit` fallback for clients without Universal Actions; once decided, no buttons.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from channels.notifier import (
    REVIEW_LABEL,
    REVIEW_OUTCOMES,
    REVIEW_REASON_LABEL,
    REVIEW_REASON_MISSING,
    REVOKE_CONFIRM,
    REVOKE_LABEL,
    RISK_EMOJI,
    break_glass_text,
    break_glass_title,
    page_link_text,
    progress_text,
    requirement_text,
    reviewable,
    revocable,
    window_text,
)
from signoff import neutralise
from signoff.models import ActionStatus, ApprovalWindow, Status, format_duration

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
# Approval windows: approve and grant the rule's window; end a window from its conversation.
WINDOW_VERB = "approve_window"
REVOKE_WINDOW_VERB = "revoke_window"
VERBS = ("approve", "deny", WINDOW_VERB)
JUSTIFICATION_LIMIT = 1000
PARAMS_LIMIT = 600
# Teams refuses a message over about 28 KB; the full request must fit beside the card itself.
FULL_REQUEST_LIMIT = 18_000
REASON_INPUT = "reason"

# Adaptive Cards have no free colours; these container styles are the nearest to RISK_COLOUR.
RISK_STYLE = {"low": "good", "medium": "warning", "high": "attention", "critical": "attention"}

HEADLINE = {
    Status.EVALUATING: "⏳ Evaluating",
    Status.PENDING_APPROVAL: "Approval needed",
    Status.EXECUTING: "✅ Approved, executing",
    Status.SUCCEEDED: "✅ Approved and executed",
    Status.FAILED: "⚠️ Approved, but execution failed",
    Status.DENIED: "❌ Denied",
    Status.DENIED_BY_POLICY: "⛔ Denied by policy",
    Status.EXPIRED: "⌛ Expired without a decision",
    Status.CANCELLED: "🚫 Cancelled by the requester",
    Status.REJECTED: "🛑 Rejected: not signed by the gateway",
    Status.SUPERSEDED: "✏️ Changed by an approver: superseded",
    Status.ACTIVE: "🔓 Approved and active",
    Status.REVERTING: "↩️ Reverting",
    Status.REVERTED: "🔒 Reverted",
}
REVOKE_VERB = "revoke"
# Break-glass review: the reason goes in the same input as a deny's (never both on one card).
REVIEW_VERB = "review"
OUTCOME_INPUT = "outcome"


def card_time(at: datetime) -> str:
    """A timestamp Teams renders in each reader's own time zone and locale."""
    iso = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{{{{DATE({iso}, SHORT)}}}} {{{{TIME({iso})}}}}"


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _md(text: str) -> str:
    """Agent text for a TextBlock or fact: literal (no Markdown), nothing hidden."""
    return neutralise.markdown(text)


def _cut(text: str, limit: int) -> tuple[str, int]:
    """`text` cut to `limit` characters, and how many were cut."""
    if len(text) <= limit:
        return text, 0
    return text[: limit - 1] + "…", len(text) - (limit - 1)


def full_request_text(status: ActionStatus) -> str:
    """The whole request, made visible (before Markdown escaping)."""
    request = status.request
    return (
        neutralise.visible(request.justification, multiline=True)
        + "\n"
        + neutralise.visible_json(request.params, indent=2)
    )


def full_reachable(status: ActionStatus) -> bool:
    """Whether the whole request fits on the card (else Teams cannot show it, so no Approve)."""
    return len(neutralise.escape_markdown(full_request_text(status))) <= FULL_REQUEST_LIMIT


def _facts(status: ActionStatus, risk: str) -> list[dict[str, str]]:
    request = status.request
    facts = [
        ("Action", _md(request.action)),
        ("Target", _md(request.target)),
        ("Risk", f"{RISK_EMOJI.get(risk, '')} {risk}".strip()),
        ("Requested by", _md(request.requester)),
        ("On behalf of", _md(request.on_behalf_of or "-")),
        ("Agent owner", _md(status.owner or "-")),
    ]
    if status.verdict is not None:
        facts.append(("Rule", _md(status.verdict.rule_id)))
        facts.append(("Reason", _md(status.verdict.reason)))
    facts.append(("Required", _md(requirement_text(status))))
    if progress := progress_text(status):
        facts.append(("Progress", _md(progress)))
    if status.escalation_level:
        facts.append(("Escalated", f"level {status.escalation_level}"))
    if status.expires_at is not None and status.status is Status.PENDING_APPROVAL:
        facts.append(("Expires", card_time(status.expires_at)))
    offer = status.verdict.window if status.verdict else None
    if offer is not None and status.status is Status.PENDING_APPROVAL:
        # What "Approve for ..." would also allow: the approver reads it before pressing.
        span = format_duration(offer.max_duration)
        facts.append(("Window offer", _md(f"up to {span} for requests matching {offer.scope}")))
    facts.append(("Digest", status.digest[:12]))
    return [{"title": title, "value": value} for title, value in facts]


def _decisions(status: ActionStatus) -> list[dict[str, Any]]:
    lines = []
    for d in status.decisions:
        mark = "✅" if d.decision == "approve" else "❌"
        reason = f": {d.reason}" if d.reason else ""
        lines.append(mark + " " + _md(f"{d.approver} ({d.channel}){reason}"))
    return [_text("\n\n".join(lines), spacing="Medium")] if lines else []


def decision_data(status: ActionStatus, verb: str) -> dict[str, str]:
    """What a button sends back: which action, and the digest the approver was shown."""
    return {"action_id": status.id, "digest": status.digest, "verb": verb}


def _button(status: ActionStatus, verb: str) -> dict[str, Any]:
    title = "Approve" if verb == "approve" else "Deny"
    style = "positive" if verb == "approve" else "destructive"
    offer = status.verdict.window if status.verdict else None
    if verb == WINDOW_VERB and offer is not None:
        title, style = f"Approve for {format_duration(offer.max_duration)}", "positive"
    data = decision_data(status, verb)
    return {
        "type": "Action.Execute",
        "title": title,
        "verb": verb,
        "data": data,
        "associatedInputs": "auto",
        "style": style,
        # Older clients without Universal Actions send this instead, as a message activity.
        "fallback": {"type": "Action.Submit", "title": title, "data": data, "style": style},
    }


def show_full_action(status: ActionStatus) -> dict[str, Any]:
    """An Action.ShowCard that unfolds the whole request, literal and visible, on the card."""
    request = status.request
    return {
        "type": "Action.ShowCard",
        "title": "Show full request",
        "card": {
            "type": "AdaptiveCard",
            "body": [
                _text("Justification", weight="Bolder"),
                _text(_md(request.justification)),
                _text("Params", weight="Bolder", spacing="Medium"),
                _text(
                    neutralise.escape_markdown(neutralise.visible_json(request.params, indent=2)),
                    fontType="Monospace",
                    size="Small",
                ),
                _text(f"Digest {status.digest}", size="Small", spacing="Medium"),
            ],
        },
    }


def approval_card(
    status: ActionStatus,
    ui_url: str | None = None,
    *,
    notice: str | None = None,
    page_url: str | None = None,
) -> dict[str, Any]:
    """The card for an action in its current state; buttons only while a decision is possible."""
    request = status.request
    risk = status.verdict.risk if status.verdict else (request.risk or "unknown")
    pending = status.status is Status.PENDING_APPROVAL
    reachable = full_reachable(status)
    headline = _headline(status)
    justification, justification_cut = _cut(
        neutralise.visible(request.justification, multiline=True), JUSTIFICATION_LIMIT
    )
    params, params_cut = _cut(neutralise.visible_json(request.params), PARAMS_LIMIT)
    body: list[dict[str, Any]] = [
        {
            "type": "Container",
            "style": RISK_STYLE.get(risk, "default"),
            "bleed": True,
            "items": [
                _text(
                    break_glass_title(f"{RISK_EMOJI.get(risk, '')} {headline}: ", status)
                    + _md(f"{request.action} on {request.target}"),
                    weight="Bolder",
                    size="Medium",
                )
            ],
        },
        *_break_glass_items(status),
        {"type": "FactSet", "facts": _facts(status, risk)},
        _text("Justification", weight="Bolder", spacing="Medium"),
        _text(neutralise.escape_markdown(justification)),
        _text("Params", weight="Bolder", spacing="Medium"),
        _text(neutralise.escape_markdown(params), fontType="Monospace", size="Small"),
    ]
    cut = [
        f"{n:,} characters of {what}"
        for n, what in ((params_cut, "params"), (justification_cut, "justification"))
        if n
    ]
    if cut:
        where = (
            "open **Show full request** before deciding"
            if reachable
            else "too large for Teams: read it with signoff status "
            + _md(status.id)
            + " or GET /v1/actions/"
            + _md(status.id)
            + ", and decide there"
        )
        body.append(
            _text(f"⚠️ Not all shown: {' and '.join(cut)} hidden; {where}.", color="Warning")
        )
    body += _decisions(status)
    if status.error and not pending:
        body.append(_text(_md(status.error), color="Attention", spacing="Medium"))
    if window := window_text(status):
        body.append(_text(_md(window), weight="Bolder", spacing="Medium"))
    if notice:
        body.append(_text(_md(notice), color="Attention", weight="Bolder", spacing="Medium"))
    actions: list[dict[str, Any]] = []
    if revocable(status):
        actions.append(revoke_button(status))
    if reviewable(status) and not pending:
        body += review_inputs()
        actions.append(review_button(status))
    if cut and reachable:
        actions.append(show_full_action(status))
    if pending:
        body.append(
            {
                "type": "Input.Text",
                "id": REASON_INPUT,
                "label": "Reason (required to deny)",
                "placeholder": "Why? The agent is told.",
                "isMultiline": True,
                "maxLength": 2000,
            }
        )
        # Approve only where every character of the request can be read on this card.
        actions += [_button(status, "approve")] if reachable else []
        if reachable and status.verdict is not None and status.verdict.window is not None:
            actions.append(_button(status, WINDOW_VERB))
        actions.append(_button(status, "deny"))
    if page_url:
        actions.append({"type": "Action.OpenUrl", "title": page_link_text(status), "url": page_url})
    if ui_url:
        actions.append({"type": "Action.OpenUrl", "title": "Open in Temporal", "url": ui_url})
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": SCHEMA,
        "version": "1.5",
        "msteams": {"width": "Full"},
        "body": body,
    }
    if actions:
        card["actions"] = actions
    return card


def _headline(status: ActionStatus) -> str:
    """The headline of the card; a break-glass action was never approved, so it never says so."""
    if status.break_glass is not None:
        return status.status.value.replace("_", " ").capitalize()
    return HEADLINE.get(status.status, status.status.value)


def _break_glass_items(status: ActionStatus) -> list[dict[str, Any]]:
    """The break-glass notice, first under the headline, in the words every channel uses."""
    text = break_glass_text(status)
    if text is None:
        return []
    return [_text(_md(text), color="Attention", weight="Bolder", spacing="Medium")]


def card_activity(
    status: ActionStatus, ui_url: str | None = None, *, page_url: str | None = None
) -> dict[str, Any]:
    """A message activity carrying the card, for posting or replacing in a conversation."""
    request = status.request
    headline = _headline(status)
    return {
        "type": "message",
        # The summary is what notifications and the chat list show instead of the card.
        "summary": break_glass_title(f"{headline}: ", status)
        + neutralise.visible(f"{request.action} on {request.target}"),
        "attachments": [
            {
                "contentType": ADAPTIVE_CARD,
                "content": approval_card(status, ui_url, page_url=page_url),
            }
        ],
    }


def reminder_activity(status: ActionStatus, count: int) -> dict[str, Any]:
    """A reply in the card's thread: this still waits, and for whom (issue 17)."""
    what = neutralise.markdown(f"{status.request.action} on {status.request.target}")
    eligible = ", ".join(status.eligible_groups) or "nobody"
    return {
        "type": "message",
        "textFormat": "markdown",
        "text": (
            f"⏰ Reminder {count}: {what} still waits for a decision. "
            f"Needs {neutralise.markdown(requirement_text(status))}; "
            f"may decide: {neutralise.markdown(eligible)}."
        ),
    }


def window_note_activity(window: ApprovalWindow, text: str) -> dict[str, Any]:
    """A note for the approval's conversation; while the window is live, with Revoke."""
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": SCHEMA,
        "version": "1.5",
        "body": [_text(_md(text))],
    }
    if window.live:
        data = {"window_id": window.id, "verb": REVOKE_WINDOW_VERB}
        card["actions"] = [
            {
                "type": "Action.Execute",
                "title": "Revoke window",
                "verb": REVOKE_WINDOW_VERB,
                "data": data,
                "style": "destructive",
                "fallback": {"type": "Action.Submit", "title": "Revoke window", "data": data},
            }
        ]
    return {
        "type": "message",
        "summary": neutralise.visible(text)[:200],
        "attachments": [{"contentType": ADAPTIVE_CARD, "content": card}],
    }


def revoke_button(status: ActionStatus) -> dict[str, Any]:
    """ "Revoke now" while the action is active: the workflow decides who may."""
    data = decision_data(status, REVOKE_VERB)
    return {
        "type": "Action.Execute",
        "title": REVOKE_LABEL,
        "verb": REVOKE_VERB,
        "data": data,
        "style": "destructive",
        "tooltip": REVOKE_CONFIRM,
        "fallback": {
            "type": "Action.Submit",
            "title": REVOKE_LABEL,
            "data": data,
            "style": "destructive",
        },
    }


def review_inputs() -> list[dict[str, Any]]:
    """A break-glass review's required reason and its outcome, accepted or disputed."""
    return [
        {
            "type": "Input.Text",
            "id": REASON_INPUT,
            "label": REVIEW_REASON_LABEL,
            "isMultiline": True,
            "maxLength": 2000,
            "isRequired": True,
            "errorMessage": REVIEW_REASON_MISSING,
        },
        {
            "type": "Input.ChoiceSet",
            "id": OUTCOME_INPUT,
            "label": "Outcome",
            "style": "expanded",
            "value": "accepted",
            "isRequired": True,
            "choices": [{"title": text, "value": value} for value, text in REVIEW_OUTCOMES.items()],
        },
    ]


def review_button(status: ActionStatus) -> dict[str, Any]:
    """ "Review" while a break-glass review is open: the workflow decides who may."""
    data = decision_data(status, REVIEW_VERB)
    return {
        "type": "Action.Execute",
        "title": REVIEW_LABEL,
        "verb": REVIEW_VERB,
        "data": data,
        "associatedInputs": "auto",
        "fallback": {"type": "Action.Submit", "title": REVIEW_LABEL, "data": data},
    }
