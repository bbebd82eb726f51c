"""Block Kit for signoff's Slack messages: the request, its updates, and the deny modal.

Everything an agent wrote (justification, params, target) is escaped before it reaches
mrkdwn, so a request can never @-mention a channel or fake a link.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from slack_sdk.models.attachments import BlockAttachment
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from channels.notifier import (
    RISK_COLOUR,
    RISK_EMOJI,
    compact_params,
    outcome_text,
    progress_text,
    requirement_text,
    truncate,
)
from signoff.models import ActionStatus, Status

APPROVE_ACTION = "signoff_approve"
DENY_ACTION = "signoff_deny"
ACTIONS_BLOCK = "signoff_decide"
DENY_CALLBACK = "signoff_deny_reason"
REASON_BLOCK = "reason"
REASON_INPUT = "reason"
REASON_MAX = 2000  # DecisionRequest.reason's limit

# Slack's own limits (characters); staying under them keeps chat.postMessage from failing.
HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
PARAMS_MAX = 1500

STATUS_EMOJI = {
    Status.EXECUTING: "⚙️",
    Status.SUCCEEDED: "✅",
    Status.FAILED: "💥",
    Status.DENIED: "⛔",
    Status.DENIED_BY_POLICY: "⛔",
    Status.EXPIRED: "⌛",
    Status.CANCELLED: "🚫",
    Status.REJECTED: "🛑",
}


def escape(text: str) -> str:
    """Escape the three characters mrkdwn treats as control: &, < and >."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: str) -> str:
    """Inline code that a backtick in `text` cannot break out of."""
    return "`" + escape(text).replace("`", "\u02cb") + "`"  # a look-alike that cannot close


def slack_date(when: datetime) -> str:
    """A date Slack renders in the reader's own time zone, with a UTC fallback."""
    fallback = f"{when:%Y-%m-%d %H:%M} UTC"
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def button_value(action_id: str, digest: str) -> str:
    """What an Approve or Deny button carries: the action and the digest the approver saw."""
    return json.dumps({"a": action_id, "d": digest}, separators=(",", ":"))


def parse_button_value(value: str | None) -> tuple[str, str] | None:
    """(action id, digest) from a button value or modal metadata; None when malformed."""
    try:
        data = json.loads(value or "")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    action_id, digest = data.get("a"), data.get("d")
    if not isinstance(action_id, str) or not isinstance(digest, str):
        return None
    if not action_id or len(action_id) > 200 or len(digest) != 64:
        return None
    return action_id, digest


def is_open(status: ActionStatus) -> bool:
    """Whether the action still takes decisions (pending, and its quorum not yet met)."""
    if status.status is not Status.PENDING_APPROVAL:
        return False
    return not (status.progress and all(p.met for p in status.progress))


def who(principal_id: str, mentions: Mapping[str, str]) -> str:
    """A principal as Slack shows them: an @-mention when we know their Slack id."""
    return mentions.get(principal_id) or escape(principal_id)


def title(status: ActionStatus) -> str:
    """The header line: what is asked, or what became of it."""
    request = status.request
    what = f"{request.action} on {request.target}"
    if status.status is Status.PENDING_APPROVAL and not is_open(status):
        return truncate(f"{STATUS_EMOJI[Status.EXECUTING]} Approved: {what}", HEADER_MAX)
    if status.status is Status.PENDING_APPROVAL:
        risk = status.verdict.risk if status.verdict else "medium"
        return truncate(f"{RISK_EMOJI.get(risk, '')} Approval needed: {what}", HEADER_MAX)
    emoji = STATUS_EMOJI.get(status.status, "")
    label = status.status.value.replace("_", " ").capitalize()
    return truncate(f"{emoji} {label}: {what}", HEADER_MAX)


def fallback_text(status: ActionStatus) -> str:
    """The plain text of the message: what notifications and screen readers show."""
    request = status.request
    head = title(status)
    if is_open(status):
        return truncate(f"{head} (by {request.requester}; needs {requirement_text(status)})", 300)
    return truncate(f"{head}: {outcome_text(status)}", 300)


def request_blocks(
    status: ActionStatus, ui_url: str | None, mentions: Mapping[str, str]
) -> list[Block]:
    """The request as blocks; buttons only while it is pending."""
    request = status.request
    verdict = status.verdict
    risk = verdict.risk if verdict else (request.risk or "medium")
    requester = who(request.requester, mentions)
    if request.on_behalf_of:
        requester += f" on behalf of {who(request.on_behalf_of, mentions)}"
    elif status.owner:
        requester += f" (owner {who(status.owner, mentions)})"
    fields = [
        f"*Action*\n{code(request.action)}",
        f"*Target*\n{code(request.target)}",
        f"*Risk*\n{RISK_EMOJI.get(risk, '')} {risk}",
        f"*Requester*\n{requester}",
        f"*Needs*\n{escape(requirement_text(status))}",
    ]
    if status.expires_at is not None:
        fields.append(f"*Expires*\n{slack_date(status.expires_at)}")
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=title(status), emoji=True)),
        SectionBlock(
            fields=[MarkdownTextObject(text=truncate(f, FIELD_MAX)) for f in fields],
        ),
        SectionBlock(
            text=MarkdownTextObject(
                text="*Justification*\n" + truncate(escape(request.justification), SECTION_MAX - 40)
            )
        ),
        SectionBlock(text=MarkdownTextObject(text=params_text(status))),
    ]
    context = []
    if verdict is not None:
        context.append(f"Policy {code(verdict.rule_id)}: {escape(truncate(verdict.reason, 500))}")
    context.append(f"Digest {code(status.digest[:12])}")
    if ui_url:
        context.append(f"<{ui_url}|Open in Temporal UI>")
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=" · ".join(context))]))

    decided = decisions_text(status, mentions)
    if decided:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=truncate(decided, SECTION_MAX))))
    if is_open(status):
        blocks.append(decision_buttons(status))
    else:
        outcome = f"{STATUS_EMOJI.get(status.status, '')} *{escape(outcome_text(status))}*"
        blocks.append(SectionBlock(text=MarkdownTextObject(text=truncate(outcome, SECTION_MAX))))
    return blocks


def params_text(status: ActionStatus) -> str:
    """The params in a code block, compact and cut to fit, unable to close the block early."""
    params = escape(compact_params(status, PARAMS_MAX)).replace("```", "`\u200b``")
    return f"*Params*\n```{params}```"


def decisions_text(status: ActionStatus, mentions: Mapping[str, str]) -> str:
    """Progress and each decision so far; empty before the first decision."""
    if not status.decisions:
        return ""
    lines = []
    if status.progress and is_open(status):
        lines.append(f"*Progress* {escape(progress_text(status))}")
    for d in status.decisions:
        mark = "✅ approved" if d.decision == "approve" else "⛔ denied"
        reason = f": {escape(truncate(d.reason, 300))}" if d.reason else ""
        lines.append(f"{mark} by {who(d.approver, mentions)}{reason}")
    return "\n".join(lines)


def decision_buttons(status: ActionStatus) -> ActionsBlock:
    """Approve (primary, confirmed) and Deny (opens the reason modal)."""
    value = button_value(status.id, status.digest)
    request = status.request
    return ActionsBlock(
        block_id=ACTIONS_BLOCK,
        elements=[
            ButtonElement(
                text=PlainTextObject(text="Approve"),
                action_id=APPROVE_ACTION,
                value=value,
                style="primary",
                confirm=ConfirmObject(
                    title="Approve this action?",
                    text=MarkdownTextObject(
                        text=truncate(
                            f"{code(request.action)} on {code(request.target)} "
                            f"(digest {code(status.digest[:12])}) will run as soon as "
                            "enough approvals are in.",
                            300,
                        )
                    ),
                    confirm="Approve",
                    deny="Cancel",
                ),
            ),
            ButtonElement(
                text=PlainTextObject(text="Deny"),
                action_id=DENY_ACTION,
                value=value,
                style="danger",
            ),
        ],
    )


def request_attachments(
    status: ActionStatus, ui_url: str | None, mentions: Mapping[str, str]
) -> list[BlockAttachment]:
    """The request blocks inside one attachment, so the risk colours the message's edge."""
    risk = status.verdict.risk if status.verdict else (status.request.risk or "medium")
    return [
        BlockAttachment(
            blocks=request_blocks(status, ui_url, mentions),
            color=RISK_COLOUR.get(risk),
            fallback=fallback_text(status),
        )
    ]


def deny_modal(status: ActionStatus, metadata: str) -> View:
    """The modal the Deny button opens: one required reason, sent back to the agent."""
    request = status.request
    return View(
        type="modal",
        callback_id=DENY_CALLBACK,
        private_metadata=metadata,
        title=PlainTextObject(text="Deny action"),
        submit=PlainTextObject(text="Deny"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(
                text=MarkdownTextObject(
                    text=truncate(
                        f"Deny {code(request.action)} on {code(request.target)} requested by "
                        f"{escape(request.requester)} (digest {code(status.digest[:12])})?",
                        SECTION_MAX,
                    )
                )
            ),
            InputBlock(
                block_id=REASON_BLOCK,
                label=PlainTextObject(text="Reason (the agent sees it)"),
                element=PlainTextInputElement(
                    action_id=REASON_INPUT,
                    multiline=True,
                    max_length=REASON_MAX,
                    placeholder=PlainTextObject(text="Why this must not run"),
                ),
            ),
        ],
    )


def modal_metadata(action_id: str, digest: str, channel: str | None) -> str:
    """The modal's private metadata: the action, its digest, and where to answer the clicker."""
    data = {"a": action_id, "d": digest, "c": channel or ""}
    return json.dumps(data, separators=(",", ":"))


def parse_modal_metadata(value: str | None) -> tuple[str, str, str | None] | None:
    """(action id, digest, channel) from the modal's metadata; None when malformed."""
    parsed = parse_button_value(value)
    if parsed is None:
        return None
    channel = json.loads(value or "{}").get("c")
    return parsed[0], parsed[1], channel if isinstance(channel, str) and channel else None


def group_mention(name: str, slack_channel: str | None, slack_mention: str | None) -> str:
    """How to @-mention a group: its user-group mention, else its channel, else its name."""
    if slack_mention:
        return slack_mention
    if slack_channel:
        return f"<#{slack_channel}>"
    return f"*{escape(name)}*"


def escalation_text(status: ActionStatus, mentions: list[str], stage: int) -> str:
    """The thread reply on escalation, naming the newly notified groups."""
    eligible = ", ".join(status.eligible_groups) or "nobody"
    return (
        f"🚨 Escalated (stage {stage}): {', '.join(mentions)}, please review. "
        f"Still needs {escape(requirement_text(status))}; may decide now: {escape(eligible)}."
    )


def outcome_reply(status: ActionStatus, recipient: str) -> str:
    """The thread reply telling the requester's owner what became of the action."""
    emoji = STATUS_EMOJI.get(status.status, "")
    return f"{recipient} {emoji} {escape(outcome_text(status))}"
