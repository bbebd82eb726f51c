"""The approval email: the request as every channel words it, in plain text and HTML.

Everything the agent wrote goes through `signoff.neutralise`: visible on one line in the
subject, visible in the text part, visible and entity-escaped in the HTML part.
"""

from __future__ import annotations

import html
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from channels.notifier import outcome_text, requester_text, requirement_text, truncate
from signoff import neutralise
from signoff.models import ActionStatus, Status

SUBJECT_MAX = 200
NO_POWER = (
    "The link alone decides nothing: the page asks you to sign in, shows the request again, "
    "and only then lets you approve or deny. It stops working when the action ends."
)


def subject(status: ActionStatus, *, reminder: int = 0) -> str:
    """The subject line: what is asked, one line, agent text made visible."""
    what = neutralise.one_line(f"{status.request.action} on {status.request.target}")
    if status.status is not Status.PENDING_APPROVAL:
        head = f"{status.status.value.replace('_', ' ').capitalize()}: {what}"
    elif reminder:
        head = f"Reminder {reminder}: approval still needed: {what}"
    else:
        head = f"Approval needed: {what}"
    return truncate(head, SUBJECT_MAX)


def facts(status: ActionStatus) -> list[tuple[str, str]]:
    """(label, raw text) pairs of the request, in the order every channel shows them."""
    request = status.request
    verdict = status.verdict
    rows = [
        ("Action", request.action),
        ("Target", request.target),
        ("Requested by", requester_text(status)),
        ("Risk", verdict.risk if verdict else request.risk or "unknown"),
        ("Needs", requirement_text(status)),
    ]
    if verdict is not None:
        rows.append(("Policy", f"{verdict.rule_id}: {verdict.reason}"))
    if status.expires_at is not None:
        rows.append(("Expires", f"{status.expires_at:%Y-%m-%d %H:%M} UTC"))
    rows.append(("Status", outcome_text(status)))
    rows.append(("Digest", status.digest))
    return rows


def text_body(status: ActionStatus, link: str | None, *, reminder: int = 0) -> str:
    """The plain-text part: hidden characters shown as escapes, nothing else changed."""
    lines = []
    if reminder:
        lines += [f"Reminder {reminder}: this request is still waiting for a decision.", ""]
    width = max(len(label) for label, _ in facts(status))
    for label, value in facts(status):
        lines.append(f"{label + ':':<{width + 1}} {neutralise.one_line(value)}")
    lines += [
        "",
        "Justification (written by the agent):",
        neutralise.visible(status.request.justification, multiline=True),
        "",
        "Params (written by the agent):",
        neutralise.visible_json(status.request.params, indent=2, sort_keys=True),
        "",
    ]
    if link:
        lines += [f"Review and decide: {link}", NO_POWER]
    else:
        lines.append(f"Decide with: signoff approve {neutralise.one_line(status.id)}")
    return "\n".join(lines) + "\n"


def html_body(status: ActionStatus, link: str | None, *, reminder: int = 0) -> str:
    """The HTML part: no external assets, every value entity-escaped after being made visible."""
    rows = "".join(
        f"<tr><th scope='row' style='text-align:left;padding-right:1em'>{neutralise.html(label)}"
        f"</th><td>{neutralise.html(value, multiline=False)}</td></tr>"
        for label, value in facts(status)
    )
    # visible_json already shows every hidden character; only the entities remain to escape.
    params = html.escape(neutralise.visible_json(status.request.params, indent=2, sort_keys=True))
    parts = ["<!doctype html><html><body style='font-family:sans-serif;color:#111'>"]
    if reminder:
        parts.append(
            f"<p><strong>Reminder {reminder}:</strong> this request is still waiting "
            "for a decision.</p>"
        )
    parts += [
        f"<h1 style='font-size:1.2em'>{neutralise.html(subject(status))}</h1>",
        f"<table>{rows}</table>",
        "<h2 style='font-size:1em'>Justification (written by the agent)</h2>",
        f"<pre style='white-space:pre-wrap'>{neutralise.html(status.request.justification)}</pre>",
        "<h2 style='font-size:1em'>Params (written by the agent)</h2>",
        f"<pre style='white-space:pre-wrap'>{params}</pre>",
    ]
    if link:
        parts += [
            f'<p><a href="{neutralise.html(link)}">Review and decide</a></p>',
            f"<p style='font-size:0.9em'>{neutralise.html(NO_POWER)}</p>",
        ]
    parts.append("</body></html>")
    return "".join(parts)


def compose(
    status: ActionStatus,
    *,
    sender: str,
    to: list[str],
    link: str | None,
    reminder: int = 0,
    in_reply_to: str | None = None,
) -> EmailMessage:
    """One approval email (text and HTML alternatives) from `sender` to `to`."""
    message = EmailMessage()
    message["Subject"] = subject(status, reminder=reminder)
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = format_datetime(status.created_at)
    domain = sender.rpartition("@")[2].strip(">") or None
    message["Message-ID"] = make_msgid("signoff", domain=domain)
    if in_reply_to:
        # Mail clients thread reminders under the request they are about.
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text_body(status, link, reminder=reminder))
    message.add_alternative(html_body(status, link, reminder=reminder), subtype="html")
    return message
