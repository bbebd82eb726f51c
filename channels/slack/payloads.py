"""What Slack sends us: the form body of an interaction, and the payloads we act on."""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field

from channels.slack.reply import Rejected

SLACK_ID = r"^[A-Za-z0-9_-]{1,40}$"  # U…, W…, C…, G…, D…: nothing that could forge a log line


class SlackModel(BaseModel):
    """Slack sends many fields we do not use; they are ignored, the ones we use are checked."""

    model_config = ConfigDict(extra="ignore")


class SlackUser(SlackModel):
    """Who clicked, and the workspace they belong to."""

    id: str = Field(pattern=SLACK_ID)
    team_id: str | None = None


class SlackRef(SlackModel):
    """A workspace or an Enterprise Grid organisation named in a payload."""

    id: str | None = None
    enterprise_id: str | None = None


class SlackChannel(SlackModel):
    """Where the clicked message is."""

    id: str = Field(pattern=SLACK_ID)


class SlackAction(SlackModel):
    """One clicked element."""

    action_id: str = Field(max_length=255)
    block_id: str | None = None
    value: str | None = Field(default=None, max_length=2000)


class BlockActions(SlackModel):
    """A `block_actions` payload: a button was clicked."""

    type: Literal["block_actions"]
    user: SlackUser
    team: SlackRef | None = None
    enterprise: SlackRef | None = None
    actions: list[SlackAction] = Field(min_length=1)
    trigger_id: str | None = None
    channel: SlackChannel | None = None
    response_url: str | None = None


class ViewState(SlackModel):
    """The values of a modal's inputs, by block id and action id."""

    values: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)


class SlackView(SlackModel):
    """A submitted modal."""

    callback_id: str = ""
    private_metadata: str = Field(default="", max_length=3000)
    state: ViewState = Field(default_factory=ViewState)


class ViewSubmission(SlackModel):
    """A `view_submission` payload: the deny modal was submitted."""

    type: Literal["view_submission"]
    user: SlackUser
    team: SlackRef | None = None
    enterprise: SlackRef | None = None
    view: SlackView


def form_payload(body: bytes) -> dict[str, Any]:
    """The JSON in the `payload` form field of an interaction request."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise Rejected(400, "body is not a url-encoded form") from None
    values = form.get("payload")
    if not values or len(values) != 1:
        raise Rejected(400, "no payload field in the form")
    try:
        payload = json.loads(values[0])
    except ValueError:
        raise Rejected(400, "payload is not JSON") from None
    if not isinstance(payload, dict):
        raise Rejected(400, "payload is not a JSON object")
    return payload
