"""The variables a policy's `when` expression sees: named once, here.

The policy loader refuses an expression naming anything else (a typo is an error, not a
silently false rule), and the engine fills exactly these for each request.
"""

from __future__ import annotations

from typing import Any, TypedDict

from pydantic import BaseModel

from policies.sql import facts_of as sql_facts
from signoff.models import ActionRequest, Principal


class CelVariables(TypedDict):
    """One key per CEL variable: a plain dict, built for every evaluation, never validated."""

    action: str  # the action type, e.g. sql.execute
    target: str  # the target's name
    params: dict[str, Any]  # as the executor's params model normalised them
    sql: dict[str, Any]  # facts of the params' SQL: kind, kinds, tables, functions...
    justification: str | None
    risk: str | None  # the risk the requester declared
    on_behalf_of: str | None  # whom the action is for, if not the requester
    requester: str  # the requester's id
    principal: dict[str, Any] | None  # the requester's directory entry: id, kind, groups, owner


CEL_VARIABLES = frozenset(CelVariables.__annotations__)


def cel_context(
    request: ActionRequest, principal: Principal | None, params: BaseModel | None = None
) -> dict[str, Any]:
    """The variables a `when` expression sees.

    `params`: the request's params as the executor's params model validated and normalised
    them (e.g. `method: "delete"` became "DELETE"), so a rule sees what would run; None (no
    model, or none given) leaves the raw params. `sql` holds the parsed SQL's facts when the
    params carry SQL, else empty facts (kind "", no kinds or tables, statement_count 0).
    """
    variables = CelVariables(
        action=request.action,
        target=request.target,
        params=request.params if params is None else params.model_dump(mode="json", by_alias=True),
        sql=sql_facts(params).model_dump(mode="json"),
        justification=request.justification,
        risk=request.risk,
        on_behalf_of=request.on_behalf_of,
        requester=request.requester,
        principal=None
        if principal is None
        else {
            "id": principal.id,
            "kind": principal.kind,
            "groups": list(principal.groups),
            "owner": principal.owner,
        },
    )
    # cel takes a plain dict; the TypedDict only makes the names checked and listed once.
    return dict(variables)
