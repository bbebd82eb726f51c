"""Custom search attributes: how SREs and the inbox find actions in Temporal visibility."""

from temporalio.common import SearchAttributeKey

STATUS = SearchAttributeKey.for_keyword("SignoffStatus")
ACTION = SearchAttributeKey.for_keyword("SignoffAction")
TARGET = SearchAttributeKey.for_keyword("SignoffTarget")
REQUESTER = SearchAttributeKey.for_keyword("SignoffRequester")
RISK = SearchAttributeKey.for_keyword("SignoffRisk")
ESCALATION = SearchAttributeKey.for_int("SignoffEscalation")
# Which groups may decide right now: lets the inbox be one visibility query.
GROUPS = SearchAttributeKey.for_keyword_list("SignoffGroups")

ALL: list[SearchAttributeKey] = [STATUS, ACTION, TARGET, REQUESTER, RISK, ESCALATION, GROUPS]


def dev_server_flags() -> list[str]:
    """`temporal server start-dev` flags that register every signoff search attribute."""
    kinds = {
        "KEYWORD": "Keyword",
        "INT": "Int",
        "KEYWORD_LIST": "KeywordList",
    }
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}"]
    return flags
