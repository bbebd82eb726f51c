"""Whose clicks may count by email: our workspace (or organisation), and where a clicker is from."""

from __future__ import annotations

from dataclasses import dataclass

from channels.slack.payloads import BlockActions, ViewSubmission


@dataclass(frozen=True)
class Workspace:
    """Our Slack workspace, and the Enterprise Grid organisation it is part of, if any."""

    team_id: str | None
    enterprise_id: str | None = None

    def includes(self, team_id: str | None, enterprise_id: str | None) -> bool:
        """Whether a user of this team (or organisation) is one of ours."""
        if self.team_id is not None and team_id == self.team_id:
            return True
        return self.enterprise_id is not None and enterprise_id == self.enterprise_id


@dataclass(frozen=True)
class Clicker:
    """Who clicked as the signed payload says: their user id and where they belong."""

    user_id: str
    team_id: str | None
    enterprise_id: str | None

    @classmethod
    def of(cls, payload: BlockActions | ViewSubmission) -> Clicker:
        """The clicker of a payload."""
        enterprise = payload.enterprise.id if payload.enterprise else None
        if enterprise is None and payload.team is not None:
            enterprise = payload.team.enterprise_id
        return cls(payload.user.id, payload.user.team_id, enterprise)
