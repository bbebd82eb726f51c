"""Custom search attributes: how SREs and the inbox find actions in Temporal visibility."""

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

STATUS = SearchAttributeKey.for_keyword("SignoffStatus")
ACTION = SearchAttributeKey.for_keyword("SignoffAction")
TARGET = SearchAttributeKey.for_keyword("SignoffTarget")
REQUESTER = SearchAttributeKey.for_keyword("SignoffRequester")
RISK = SearchAttributeKey.for_keyword("SignoffRisk")
ESCALATION = SearchAttributeKey.for_int("SignoffEscalation")
# Which groups may decide right now: lets the inbox be one visibility query.
GROUPS = SearchAttributeKey.for_keyword_list("SignoffGroups")
# Break-glass actions only: pending, overdue or reviewed (set by runs that broke glass).
BREAK_GLASS = SearchAttributeKey.for_keyword("SignoffBreakGlass")
# When a pending action expires unless decided: /metrics counts those expiring soon with one
# visibility count, however many wait.
EXPIRES = SearchAttributeKey.for_datetime("SignoffExpires")

# Approval windows: their own keys, so no window ever shows up in an action query.
WINDOW_STATUS = SearchAttributeKey.for_keyword("SignoffWindowStatus")
WINDOW_HOLDER = SearchAttributeKey.for_keyword("SignoffWindowHolder")
WINDOW_EXPIRES = SearchAttributeKey.for_datetime("SignoffWindowExpires")
# Until when a reversible action is in force (issue 15): finds the grants live at a moment.
ACTIVE_UNTIL = SearchAttributeKey.for_datetime("SignoffActiveUntil")

ALL: list[SearchAttributeKey] = [
    STATUS,
    ACTION,
    TARGET,
    REQUESTER,
    RISK,
    ESCALATION,
    GROUPS,
    BREAK_GLASS,
    EXPIRES,
    ACTIVE_UNTIL,
]
ALL += [WINDOW_STATUS, WINDOW_HOLDER, WINDOW_EXPIRES]


# The dev server's dynamic-config key that makes every read of a search attribute bypass the
# server's cache of them (the CLI sets it, so attributes created while it runs show at once).
CACHE_BYPASS = "system.forceSearchAttributesCacheRefreshOnRead"


def dev_server_flags() -> list[str]:
    """`temporal server start-dev` flags: every signoff search attribute, registered and cached."""
    kinds = {
        "KEYWORD": "Keyword",
        "INT": "Int",
        "KEYWORD_LIST": "KeywordList",
        "DATETIME": "Datetime",
    }
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}"]
    # These flags register the attributes before the server starts, so nothing needs the
    # cache bypassed. Bypassed, every read of an attribute reads the database, a sqlite file
    # that runs one statement at a time: ten reads for each approved action (issue 16). With
    # the cache on, the dev server reads them as any Temporal cluster does.
    return [*flags, "--dynamic-config-value", f"{CACHE_BYPASS}=false"]


async def register(client: Client, namespace: str) -> list[str]:
    """Register every signoff search attribute on a namespace; the names it had to add."""
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        known = set(existing.custom_attributes)
    except RPCError as err:
        # The time-skipping test server can add attributes but cannot list them.
        if err.status is not RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {
        key.name: IndexedValueType.ValueType(key.indexed_value_type)
        for key in ALL
        if key.name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)
