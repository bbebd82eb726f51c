"""The narrow door channels decide through: read an action, decide it. Nothing else.

Slack and Teams depend on this protocol, never on the gateway's service behind it, and they
catch only the neutral errors in `workflows.errors` (`ActionNotFound`, `ActionNotPending`,
`DecisionRefusedError`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from signoff.models import (
    ActionStatus,
    ApprovalWindow,
    DecisionRequest,
    ReviewRequest,
    RevokeRequest,
    WindowRevokeRequest,
)


class Reviews(Protocol):
    """What a chat channel needs to show an action and record a human's decision on it."""

    async def status(self, action_id: str) -> ActionStatus:
        """The action as it is now; raises `ActionNotFound`."""
        ...

    async def decide(self, action_id: str, decision: DecisionRequest) -> ActionStatus:
        """Record a human's decision; raises `DecisionRefusedError`, `ActionNotPending`."""
        ...

    async def revoke(self, action_id: str, request: RevokeRequest) -> ActionStatus:
        """End an active grant now; raises `MessageRefusedError` (not allowed, recorded),
        `ActionNotPending` (not active)."""
        ...

    async def review(self, action_id: str, review: ReviewRequest) -> ActionStatus:
        """Review a break-glass action after the fact; raises `DecisionRefusedError` (not
        allowed, recorded), `ActionNotPending` (nothing to review, or already reviewed)."""
        ...


@runtime_checkable
class WindowReviews(Protocol):
    """What a chat channel needs to end an approval window early from its thread."""

    async def revoke_window(self, window_id: str, request: WindowRevokeRequest) -> ApprovalWindow:
        """Revoke, signed; raises `MessageRefusedError` (recorded), `ActionNotPending`."""
        ...
