"""Adaptive Cards (schema 1.5) for approval requests in Microsoft Teams.

One card shows the same facts as the Slack message. While the action is pending it carries
Approve and Deny as `Action.Execute` (Universal Actions, answered inline by our bot), each with
an `Action.Submit` fallback for clients without Universal Actions; once decided, no buttons.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from channels.notifier import RISK_EMOJI, compact_params, progress_text, requirement_text
from signoff.models import ActionStatus, Status

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
VERBS = ("approve", "deny")
JUSTIFICATION_LIMIT = 1000
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
}


def card_time(at: datetime) -> str:
    """A timestamp Teams renders in each reader's own time zone and locale."""
    iso = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{{{{DATE({iso}, SHORT)}}}} {{{{TIME({iso})}}}}"


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _facts(status: ActionStatus, risk: str) -> list[dict[str, str]]:
    request = status.request
    requester = request.requester + (f" (owner: {status.owner})" if status.owner else "")
    facts = [
        ("Action", request.action),
        ("Target", request.target),
        ("Risk", f"{RISK_EMOJI.get(risk, '')} {risk}".strip()),
        ("Requested by", requester),
    ]
    if request.on_behalf_of:
        facts.append(("On behalf of", request.on_behalf_of))
    if status.verdict is not None:
        facts.append(("Rule", status.verdict.rule_id))
        facts.append(("Reason", status.verdict.reason))
    facts.append(("Required", requirement_text(status)))
    if progress := progress_text(status):
        facts.append(("Progress", progress))
    if status.escalation_level:
        facts.append(("Escalated", f"level {status.escalation_level}"))
    if status.expires_at is not None and status.status is Status.PENDING_APPROVAL:
        facts.append(("Expires", card_time(status.expires_at)))
    facts.append(("Digest", status.digest[:12]))
    return [{"title": title, "value": value} for title, value in facts]


def _decisions(status: ActionStatus) -> list[dict[str, Any]]:
    lines = []
    for d in status.decisions:
        mark = "✅" if d.decision == "approve" else "❌"
        reason = f": {d.reason}" if d.reason else ""
        lines.append(f"{mark} {d.approver} ({d.channel}){reason}")
    return [_text("\n\n".join(lines), spacing="Medium")] if lines else []


def decision_data(status: ActionStatus, verb: str) -> dict[str, str]:
    """What a button sends back: which action, and the digest the approver was shown."""
    return {"action_id": status.id, "digest": status.digest, "verb": verb}


def _button(status: ActionStatus, verb: str) -> dict[str, Any]:
    title = "Approve" if verb == "approve" else "Deny"
    style = "positive" if verb == "approve" else "destructive"
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


def approval_card(
    status: ActionStatus, ui_url: str | None = None, *, notice: str | None = None
) -> dict[str, Any]:
    """The card for an action in its current state; buttons only while a decision is possible."""
    request = status.request
    risk = status.verdict.risk if status.verdict else (request.risk or "unknown")
    pending = status.status is Status.PENDING_APPROVAL
    headline = HEADLINE.get(status.status, status.status.value)
    body: list[dict[str, Any]] = [
        {
            "type": "Container",
            "style": RISK_STYLE.get(risk, "default"),
            "bleed": True,
            "items": [
                _text(
                    f"{RISK_EMOJI.get(risk, '')} {headline}: {request.action} on {request.target}",
                    weight="Bolder",
                    size="Medium",
                )
            ],
        },
        {"type": "FactSet", "facts": _facts(status, risk)},
        _text("Justification", weight="Bolder", spacing="Medium"),
        _text(_cut(request.justification, JUSTIFICATION_LIMIT)),
        _text("Params", weight="Bolder", spacing="Medium"),
        _text(compact_params(status), fontType="Monospace", size="Small"),
        *_decisions(status),
    ]
    if status.error and not pending:
        body.append(_text(status.error, color="Attention", spacing="Medium"))
    if notice:
        body.append(_text(notice, color="Attention", weight="Bolder", spacing="Medium"))
    actions: list[dict[str, Any]] = []
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
        actions += [_button(status, "approve"), _button(status, "deny")]
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


def card_activity(status: ActionStatus, ui_url: str | None = None) -> dict[str, Any]:
    """A message activity carrying the card, for posting or replacing in a conversation."""
    request = status.request
    headline = HEADLINE.get(status.status, status.status.value)
    return {
        "type": "message",
        # The summary is what notifications and the chat list show instead of the card.
        "summary": f"{headline}: {request.action} on {request.target}",
        "attachments": [{"contentType": ADAPTIVE_CARD, "content": approval_card(status, ui_url)}],
    }
