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
    Option,
    PlainTextInputElement,
    PlainTextObject,
    RadioButtonsElement,
    SectionBlock,
)
from slack_sdk.models.views import View

from channels.notifier import (
    REVIEW_LABEL,
    REVIEW_OUTCOMES,
    REVIEW_REASON_LABEL,
    REVOKE_CONFIRM,
    REVOKE_LABEL,
    RISK_COLOUR,
    RISK_EMOJI,
    break_glass_text,
    break_glass_title,
    outcome_text,
    page_link_text,
    progress_text,
    requirement_text,
    reviewable,
    revocable,
    truncate,
    window_text,
)
from signoff import neutralise
from signoff.models import ActionStatus, ApprovalWindow, Status, format_duration

APPROVE_ACTION = "signoff_approve"
DENY_ACTION = "signoff_deny"
SHOW_FULL_ACTION = "signoff_show_full"
# Approval windows: approve and grant the rule's window; end a window from its thread.
APPROVE_WINDOW_ACTION = "signoff_approve_window"
REVOKE_WINDOW_ACTION = "signoff_revoke_window"
WINDOW_BLOCK = "signoff_window"
REVOKE_ACTION = "signoff_revoke"
FULL_CALLBACK = "signoff_full_request"
ACTIONS_BLOCK = "signoff_decide"
DENY_CALLBACK = "signoff_deny_reason"
REASON_BLOCK = "reason"
REASON_INPUT = "reason"
REASON_MAX = 2000  # DecisionRequest.reason's limit
# Break-glass review: a button while the review is open, and its modal.
REVIEW_ACTION = "signoff_review"
REVIEW_BLOCK = "signoff_review"
REVIEW_CALLBACK = "signoff_review_reason"
OUTCOME_BLOCK = "outcome"
OUTCOME_INPUT = "outcome"

# Slack's own limits (characters); staying under them keeps chat.postMessage from failing.
HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
PARAMS_MAX = 1500
JUSTIFICATION_MAX = SECTION_MAX - 40
MODAL_BLOCKS_MAX = 100
CHUNK = 2900  # characters per plain_text section of the full-request modal

STATUS_EMOJI = {
    Status.EXECUTING: "⚙️",
    Status.SUCCEEDED: "✅",
    Status.FAILED: "💥",
    Status.DENIED: "⛔",
    Status.DENIED_BY_POLICY: "⛔",
    Status.EXPIRED: "⌛",
    Status.CANCELLED: "🚫",
    Status.REJECTED: "🛑",
    Status.SUPERSEDED: "✏️",
    Status.ACTIVE: "🔓",
    Status.REVERTING: "↩️",
    Status.REVERTED: "🔒",
}


def escape(text: str) -> str:
    """Agent text for mrkdwn: no mention, link or formatting can form, nothing hidden."""
    return neutralise.mrkdwn(text)


def code(text: str) -> str:
    """Inline code that a backtick in `text` cannot break out of, with nothing hidden."""
    return "`" + neutralise.mrkdwn_code(text) + "`"


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
    what = neutralise.slack_plain(f"{request.action} on {request.target}", multiline=False)
    if status.status is Status.PENDING_APPROVAL and not is_open(status):
        return truncate(f"{STATUS_EMOJI[Status.EXECUTING]} Approved: {what}", HEADER_MAX)
    if status.status is Status.PENDING_APPROVAL:
        risk = status.verdict.risk if status.verdict else "medium"
        return truncate(f"{RISK_EMOJI.get(risk, '')} Approval needed: {what}", HEADER_MAX)
    emoji = STATUS_EMOJI.get(status.status, "")
    label = status.status.value.replace("_", " ").capitalize()
    return truncate(break_glass_title(f"{emoji} {label}: {what}", status), HEADER_MAX)


def fallback_text(status: ActionStatus) -> str:
    """The plain text of the message: what notifications and screen readers show."""
    request = status.request
    head = title(status)
    if is_open(status):
        by = neutralise.slack_plain(request.requester, multiline=False)
        return truncate(f"{head} (by {by}; needs {requirement_text(status)})", 300)
    return truncate(f"{head}: {neutralise.slack_plain(outcome_text(status))}", 300)


def request_blocks(
    status: ActionStatus,
    ui_url: str | None,
    mentions: Mapping[str, str],
    *,
    page_url: str | None = None,
) -> list[Block]:
    """The request as blocks; buttons only while it is pending."""
    request = status.request
    verdict = status.verdict
    risk = verdict.risk if verdict else (request.risk or "medium")
    requester = who(request.requester, mentions)
    if request.on_behalf_of:
        requester += f" on behalf of {who(request.on_behalf_of, mentions)}"
    # The agent's owner is always shown: who answers for this agent.
    requester += f"\n*Agent owner* {who(status.owner, mentions) if status.owner else 'none'}"
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
        *_break_glass_blocks(status),
        SectionBlock(
            fields=[MarkdownTextObject(text=truncate(f, FIELD_MAX)) for f in fields],
        ),
        SectionBlock(
            text=MarkdownTextObject(text="*Justification*\n" + justification_shown(status))
        ),
        SectionBlock(text=MarkdownTextObject(text=params_text(status))),
    ]
    hidden = hidden_text(status)
    if hidden:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=hidden)]))
    context = []
    if verdict is not None:
        context.append(f"Policy {code(verdict.rule_id)}: {escape(verdict.reason)}")
    context.append(f"Digest {code(status.digest[:12])}")
    if page_url:
        context.append(f"<{page_url}|{page_link_text(status)}>")
    if ui_url:
        context.append(f"<{ui_url}|Open in Temporal UI>")
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=" · ".join(context))]))

    decided = decisions_text(status, mentions)
    if decided:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=truncate(decided, SECTION_MAX))))
    if is_open(status):
        offer = verdict.window if verdict is not None else None
        if offer is not None and verdict is not None:
            # What "Approve for ..." would also allow, in the message itself.
            span = format_duration(offer.max_duration)
            text = (
                f"*Window offer* · approvers may also let {who(request.requester, mentions)} run "
                f"requests matching {code(offer.scope)} for up to {span} "
                f"(rule {code(verdict.rule_id)})"
            )
            blocks.append(SectionBlock(text=MarkdownTextObject(text=truncate(text, SECTION_MAX))))
        blocks.append(decision_buttons(status))
    else:
        outcome = f"{STATUS_EMOJI.get(status.status, '')} *{escape(outcome_text(status))}*"
        blocks.append(SectionBlock(text=MarkdownTextObject(text=truncate(outcome, SECTION_MAX))))
        blocks.extend(window_blocks(status))
        if is_cut(status) and full_reachable(status):
            # Decided, but what was decided stays readable in full.
            blocks.append(ActionsBlock(block_id=ACTIONS_BLOCK, elements=[show_full_button(status)]))
    if reviewable(status):
        blocks.append(ActionsBlock(block_id=REVIEW_BLOCK, elements=[review_button(status)]))
    return blocks


def review_button(status: ActionStatus) -> ButtonElement:
    """The break-glass "Review" button: it opens the review modal; the workflow judges who."""
    return ButtonElement(
        text=PlainTextObject(text=REVIEW_LABEL),
        action_id=REVIEW_ACTION,
        value=button_value(status.id, status.digest),
    )


def review_modal(status: ActionStatus, metadata: str) -> View:
    """The modal the Review button opens: a required reason, and accepted or disputed."""
    request = status.request
    options = [
        Option(value=value, text=PlainTextObject(text=label))
        for value, label in REVIEW_OUTCOMES.items()
    ]
    shown = neutralise.mrkdwn(break_glass_text(status) or "", multiline=True)
    return View(
        type="modal",
        callback_id=REVIEW_CALLBACK,
        private_metadata=metadata,
        title=PlainTextObject(text="Review break-glass"),
        submit=PlainTextObject(text=REVIEW_LABEL),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(
                text=MarkdownTextObject(
                    text=truncate(
                        f"{code(request.action)} on {code(request.target)} "
                        f"(digest {code(status.digest[:12])})\n{shown}",
                        SECTION_MAX,
                    )
                )
            ),
            InputBlock(
                block_id=OUTCOME_BLOCK,
                label=PlainTextObject(text="Outcome"),
                element=RadioButtonsElement(
                    action_id=OUTCOME_INPUT, options=options, initial_option=options[0]
                ),
            ),
            InputBlock(
                block_id=REASON_BLOCK,
                label=PlainTextObject(text=REVIEW_REASON_LABEL),
                element=PlainTextInputElement(
                    action_id=REASON_INPUT, multiline=True, max_length=REASON_MAX
                ),
            ),
        ],
    )


def _break_glass_blocks(status: ActionStatus) -> list[Block]:
    """The break-glass notice, first under the header, in the words every channel uses."""
    text = break_glass_text(status)
    if text is None:
        return []
    shown = neutralise.mrkdwn(text, multiline=True)
    return [SectionBlock(text=MarkdownTextObject(text=truncate(f"*{shown}*", SECTION_MAX)))]


def params_shown(status: ActionStatus) -> tuple[str, int]:
    """The params as shown in the message (neutralised JSON), and how many characters are cut."""
    full = neutralise.visible_json(status.request.params)
    if len(full) <= PARAMS_MAX:
        return full, 0
    return full[: PARAMS_MAX - 1] + "…", len(full) - (PARAMS_MAX - 1)


def _justification(status: ActionStatus) -> str:
    return neutralise.mrkdwn(status.request.justification, multiline=True)


def justification_shown(status: ActionStatus) -> str:
    """The justification as the message shows it: inert mrkdwn, cut to fit a section."""
    return _cut_entities(_justification(status), JUSTIFICATION_MAX)


def _cut_entities(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis, never inside an `&…;` entity."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def hidden_text(status: ActionStatus) -> str:
    """Says how much of the request the message does not show, and where to read it all."""
    _, params_cut = params_shown(status)
    justification = _justification(status)
    justification_cut = len(justification) - len(justification_shown(status)) + 1
    justification_cut = justification_cut if len(justification) > JUSTIFICATION_MAX else 0
    if not params_cut and not justification_cut:
        return ""
    parts = []
    if params_cut:
        parts.append(f"{params_cut:,} characters of params")
    if justification_cut:
        parts.append(f"{justification_cut:,} characters of justification")
    action_id = neutralise.mrkdwn_code(status.id)
    where = (
        "press *Show full request* to read it all"
        if full_reachable(status)
        else (
            f"too large for Slack: read it with `signoff status {action_id}` or "
            f"`GET /v1/actions/{action_id}`, and decide there"
        )
    )
    return f"⚠️ *Not all shown:* {' and '.join(parts)} hidden; {where}."


def params_text(status: ActionStatus) -> str:
    """The params in a code block, cut to fit, unable to close the block early."""
    shown, _ = params_shown(status)
    return f"*Params*\n```{_code_body(shown)}```"


def _code_body(shown: str) -> str:
    # `shown` is already visible text; only Slack's entities and the fence need escaping.
    body = shown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return body.replace("`", "\u02cb")


def is_cut(status: ActionStatus) -> bool:
    """Whether the message leaves part of the request out."""
    return bool(hidden_text(status))


def full_request_chunks(status: ActionStatus) -> list[str]:
    """The whole request as inert mrkdwn code blocks, split into modal-sized sections."""
    request = status.request
    head = "\n".join(
        [
            f"Action: {request.action}",
            f"Target: {request.target}",
            f"Requester: {request.requester}",
            f"On behalf of: {request.on_behalf_of or '-'}",
            f"Agent owner: {status.owner or '-'}",
            f"Digest: {status.digest}",
        ]
    )
    text = (
        neutralise.visible(head, multiline=True)
        + "\n\nJustification:\n"
        + neutralise.visible(request.justification, multiline=True)
        + "\n\nParams:\n"
        + neutralise.visible_json(request.params, indent=2)
    )
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for char in text:
        piece = _code_body(char)  # escaped per character, so no entity is ever split
        if size + len(piece) > CHUNK:
            chunks.append("```" + "".join(current) + "```")
            current, size = [], 0
        current.append(piece)
        size += len(piece)
    chunks.append("```" + "".join(current) + "```")
    return chunks


def full_reachable(status: ActionStatus) -> bool:
    """Whether the whole request fits the full-request modal (else Slack cannot show it)."""
    return len(full_request_chunks(status)) <= MODAL_BLOCKS_MAX


def full_request_modal(status: ActionStatus) -> View:
    """The modal 'Show full request' opens: every character of the request, nothing decided."""
    return View(
        type="modal",
        callback_id=FULL_CALLBACK,
        title=PlainTextObject(text="Full request"),
        close=PlainTextObject(text="Close"),
        blocks=[
            SectionBlock(text=MarkdownTextObject(text=chunk))
            for chunk in full_request_chunks(status)
        ],
    )


def decisions_text(status: ActionStatus, mentions: Mapping[str, str]) -> str:
    """Progress and each decision so far; empty before the first decision."""
    if not status.decisions:
        return ""
    lines = []
    if status.progress and is_open(status):
        lines.append(f"*Progress* {escape(progress_text(status))}")
    for d in status.decisions:
        mark = "✅ approved" if d.decision == "approve" else "⛔ denied"
        reason = f": {escape(d.reason)}" if d.reason else ""
        lines.append(f"{mark} by {who(d.approver, mentions)}{reason}")
    return "\n".join(lines)


def show_full_button(status: ActionStatus) -> ButtonElement:
    """The button that opens the whole request in a modal; it decides nothing."""
    return ButtonElement(
        text=PlainTextObject(text="Show full request"),
        action_id=SHOW_FULL_ACTION,
        value=button_value(status.id, status.digest),
    )


def decision_buttons(status: ActionStatus) -> ActionsBlock:
    """Approve (only when the whole request is reachable), Deny, and Show full request if cut."""
    value = button_value(status.id, status.digest)
    request = status.request
    elements: list[ButtonElement] = []
    if is_cut(status) and full_reachable(status):
        elements.append(show_full_button(status))
    if full_reachable(status):
        elements.append(
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
            )
        )
    offer = status.verdict.window if status.verdict else None
    if full_reachable(status) and offer is not None:
        elements.append(window_button(status, value))
    elements.append(
        ButtonElement(
            text=PlainTextObject(text="Deny"), action_id=DENY_ACTION, value=value, style="danger"
        )
    )
    return ActionsBlock(block_id=ACTIONS_BLOCK, elements=elements)


def window_button(status: ActionStatus, value: str) -> ButtonElement:
    """The "Approve for 1h" button: approve, and let the requester run what the scope matches."""
    offer = status.verdict.window if status.verdict else None
    assert offer is not None, "only for an action whose rule offers a window"
    span = format_duration(offer.max_duration)
    return ButtonElement(
        text=PlainTextObject(text=f"Approve for {span}"),
        action_id=APPROVE_WINDOW_ACTION,
        value=value,
        confirm=ConfirmObject(
            title=f"Approve and open a {span} window?",
            text=MarkdownTextObject(
                text=truncate(
                    f"Approves {code(status.request.action)} on {code(status.request.target)} "
                    f"(digest {code(status.digest[:12])}), and for {span} lets "
                    f"{code(status.request.requester)} run, without asking, anything matching "
                    f"{code(offer.scope)}",
                    300,
                )
            ),
            confirm=f"Approve for {span}",
            deny="Cancel",
        ),
    )


def window_value(window_id: str) -> str:
    """What a Revoke window button carries: the window's id."""
    return json.dumps({"w": window_id}, separators=(",", ":"))


def parse_window_value(value: str | None) -> str | None:
    """The window id of a Revoke window button, or None when the value is not ours."""
    try:
        data = json.loads(value or "")
    except ValueError:
        return None
    window_id = data.get("w") if isinstance(data, dict) else None
    if not isinstance(window_id, str) or not window_id.startswith("win-") or len(window_id) > 200:
        return None
    return window_id


def window_note_blocks(window: ApprovalWindow, text: str) -> list[Block]:
    """A note in the approval's thread; while the window is live, with a Revoke button."""
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=truncate(escape(text), 2900)))]
    if window.live:
        blocks.append(
            ActionsBlock(
                block_id=WINDOW_BLOCK,
                elements=[
                    ButtonElement(
                        text=PlainTextObject(text="Revoke window"),
                        action_id=REVOKE_WINDOW_ACTION,
                        value=window_value(window.id),
                        style="danger",
                        confirm=ConfirmObject(
                            title="Revoke this window?",
                            text=PlainTextObject(text="Its holder's next requests need approval."),
                            confirm="Revoke",
                            deny="Cancel",
                        ),
                    )
                ],
            )
        )
    return blocks


def request_attachments(
    status: ActionStatus,
    ui_url: str | None,
    mentions: Mapping[str, str],
    *,
    page_url: str | None = None,
) -> list[BlockAttachment]:
    """The request blocks inside one attachment, so the risk colours the message's edge."""
    risk = status.verdict.risk if status.verdict else (status.request.risk or "medium")
    return [
        BlockAttachment(
            blocks=request_blocks(status, ui_url, mentions, page_url=page_url),
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


def reminder_text(status: ActionStatus, mentions: list[str], count: int) -> str:
    """The thread reply of a reminder, naming the groups still asked (issue 17)."""
    eligible = ", ".join(status.eligible_groups) or "nobody"
    return (
        f"⏰ Reminder {count}: {', '.join(mentions)}, this still waits for a decision. "
        f"Needs {escape(requirement_text(status))}; may decide: {escape(eligible)}."
    )


def outcome_reply(status: ActionStatus, recipient: str) -> str:
    """The thread reply telling the requester's owner what became of the action."""
    emoji = STATUS_EMOJI.get(status.status, "")
    return f"{recipient} {emoji} {escape(outcome_text(status))}"


def window_blocks(status: ActionStatus) -> list[Block]:
    """A reversible action's window, and "Revoke now" while it is active."""
    text = window_text(status)
    if not text:
        return []
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=truncate(escape(text), SECTION_MAX)))
    ]
    if revocable(status):
        blocks.append(
            ActionsBlock(
                block_id=REVOKE_BLOCK,
                elements=[
                    ButtonElement(
                        text=PlainTextObject(text=REVOKE_LABEL),
                        action_id=REVOKE_ACTION,
                        value=button_value(status.id, status.digest),
                        style="danger",
                        confirm=ConfirmObject(
                            title=REVOKE_LABEL + "?",
                            text=MarkdownTextObject(text=REVOKE_CONFIRM),
                            confirm=REVOKE_LABEL,
                            deny="Keep it",
                        ),
                    )
                ],
            )
        )
    return blocks


REVOKE_BLOCK = "signoff_revoke"
