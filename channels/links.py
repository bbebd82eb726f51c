"""Links to the approval page, built in one place for every channel."""

from __future__ import annotations

from urllib.parse import quote


def approval_page_url(base: str, action_id: str) -> str:
    """The approval page of one action: `{gateway public url}/a/{action_id}`.

    The link carries no token: opening it decides nothing, the page asks the reader to sign in.
    """
    return f"{base.rstrip('/')}/a/{quote(action_id, safe='')}"
