"""The Bot Framework payloads we read: activities, and what a card button sends back."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from channels.teams.cards import REASON_INPUT


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ChannelAccount(_Lenient):
    """A user or bot in an activity."""

    id: str = Field(min_length=1)
    name: str | None = None
    aad_object_id: str | None = Field(default=None, alias="aadObjectId")


class ConversationAccount(_Lenient):
    """The conversation an activity belongs to."""

    id: str = Field(min_length=1)
    conversation_type: str | None = Field(default=None, alias="conversationType")
    tenant_id: str | None = Field(default=None, alias="tenantId")
    name: str | None = None


class Activity(_Lenient):
    """The parts of a Bot Framework activity we read; anything else is ignored."""

    type: str = Field(min_length=1)
    id: str | None = None
    name: str | None = None
    channel_id: str = Field(alias="channelId", min_length=1)
    service_url: str = Field(alias="serviceUrl", min_length=1)
    from_: ChannelAccount = Field(alias="from")
    recipient: ChannelAccount | None = None
    conversation: ConversationAccount
    reply_to_id: str | None = Field(default=None, alias="replyToId")
    value: Any = None
    action: str | None = None
    members_added: list[ChannelAccount] = Field(default_factory=list, alias="membersAdded")
    members_removed: list[ChannelAccount] = Field(default_factory=list, alias="membersRemoved")
    channel_data: dict[str, Any] = Field(default_factory=dict, alias="channelData")

    @property
    def tenant_id(self) -> str | None:
        """The Entra tenant the activity comes from."""
        tenant = self.channel_data.get("tenant")
        if isinstance(tenant, dict) and isinstance(tenant.get("id"), str):
            return str(tenant["id"])
        return self.conversation.tenant_id

    @property
    def team_id(self) -> str | None:
        """The team's id when the conversation is a team channel."""
        team = self.channel_data.get("team")
        return str(team["id"]) if isinstance(team, dict) and "id" in team else None


class CardDecision(BaseModel):
    """What a card button sends back, after Teams merged in the reason input."""

    model_config = ConfigDict(extra="ignore")

    action_id: str = Field(min_length=1, max_length=200)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    reason: str = Field(default="", max_length=2000, alias=REASON_INPUT)
