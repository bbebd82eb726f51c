"""`/v1/me`: who the gateway thinks the caller is, and how it knows."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from policies.directory import Authenticated
from signoff.models import PrincipalKind
from workers.gateway.auth import current_identity
from workers.gateway.errors import documented


class Me(BaseModel):
    """The caller as the gateway sees it: identity, groups, owner, and how it signed in."""

    id: str
    kind: PrincipalKind
    groups: list[str]
    owner: str | None = None
    email: str | None = None
    acts_for: list[str] = Field(default_factory=list)
    authenticated_by: Literal["token", "oidc"] = Field(
        description="token: a static token from the directory; oidc: a JWT from `issuer`"
    )
    issuer: str | None = None


router = APIRouter(prefix="/v1", tags=["identity"])


@router.get("/me", response_model=Me, responses=documented(401, 503))
async def me(identity: Authenticated = Depends(current_identity)) -> Me:
    """Who you are to the gateway: principal id, kind, groups, owner and how you signed in."""
    principal = identity.principal
    return Me(
        id=principal.id,
        kind=principal.kind,
        groups=list(principal.groups),
        owner=principal.owner,
        email=principal.email,
        acts_for=list(principal.acts_for),
        authenticated_by=identity.method,
        issuer=identity.issuer,
    )
