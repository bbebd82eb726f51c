"""The variables a policy's `when` expression sees: named once, here.

The policy loader refuses an expression naming anything else (a typo is an error, not a
silently false rule), and the engine fills exactly these for each request.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from policies.sql import facts_of as sql_facts
from signoff.models import ActionRequest, Principal


class CelVariables(BaseModel):
    """One field per CEL variable; the values are passed through as they are, not coerced."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    action: Any = Field(description="the action type, e.g. sql.execute")
    target: Any = Field(description="the target's name")
    params: Any = Field(description="params as the executor's params model normalised them")
    sql: Any = Field(description="facts of the params' SQL (kind, kinds, tables, functions...)")
    justification: Any = Field(description="the requester's justification")
    risk: Any = Field(description="the risk the requester declared")
    on_behalf_of: Any = Field(description="whom the action is for, if not the requester")
    requester: Any = Field(description="the requester's id")
    principal: Any = Field(description="the requester's directory entry: id, kind, groups, owner")


CEL_VARIABLES = frozenset(CelVariables.model_fields)


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
    return dict(variables)
