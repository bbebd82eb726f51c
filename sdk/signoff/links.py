"""Where a person decides an action: the gateway's approval page, one per action.

Every message (Slack, Teams, email) and `signoff status` links to it through this one function,
so the link looks the same wherever it is shown. The link carries no power on its own: the page
asks its reader to sign in and decides nothing on GET.
"""

from __future__ import annotations

from urllib.parse import quote

PAGE_PREFIX = "/a/"


def approval_page_url(base: str, action_id: str) -> str:
    """The approval page of one action under the gateway's public base URL."""
    return f"{base.rstrip('/')}{PAGE_PREFIX}{quote(action_id, safe='')}"
