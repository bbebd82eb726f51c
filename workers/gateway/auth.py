"""Bearer authentication: the token decides who the caller is, never the request body.

A token is either a static one from the directory (looked up by its SHA-256) or a JWT from an
issuer the directory's `oidc:` section trusts; `Directory.authenticate` decides which. A token
is never logged or echoed: refusals say why, not what was sent.
"""

from __future__ import annotations

import logging

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from policies.directory import Authenticated, Directory
from policies.oidc import TokenRejected
from signoff.models import Principal

log = logging.getLogger("signoff.gateway.auth")

# auto_error=False: a missing header or another scheme must get our JSON 401, not FastAPI's.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from the directory (the gateway looks up its SHA-256), or a JWT "
    "from an OIDC issuer the directory trusts.",
)

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


def unauthorized(message: str) -> HTTPException:
    """A 401 in the API's error shape, with the challenge HTTP requires."""
    return HTTPException(
        status_code=401,
        detail={"code": "unauthorized", "message": message},
        headers=UNAUTHORIZED_HEADERS,
    )


async def authenticate(directory: Directory, authorization: str | None) -> Authenticated:
    """Who holds the bearer token in an Authorization header value, or a 401.

    An identity provider that cannot be reached raises `IdentityProviderUnavailable`, which
    the gateway answers with 503 and Retry-After (workers/gateway/errors.py): retry, never guess.
    """
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("send Authorization: Bearer <token>")
    try:
        authenticated = await directory.authenticate(token)
    except TokenRejected as err:
        log.info("bearer token refused: %s", err)
        raise unauthorized(str(err)) from None
    if authenticated is None:
        # Say nothing about the token itself: not its value, not how close it came.
        raise unauthorized("unknown or revoked token")
    return authenticated


async def current_identity(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Authenticated:
    """FastAPI dependency: who this request is from, and how that was established."""
    header = None
    if credentials is not None:
        header = f"{credentials.scheme} {credentials.credentials}"
    authenticated = await authenticate(request.app.state.directory, header)
    # Kept on the request for the access log, which records who, never which token.
    request.state.principal = authenticated.principal.id
    return authenticated


async def current_principal(identity: Authenticated = Depends(current_identity)) -> Principal:
    """FastAPI dependency: the authenticated principal of this request."""
    return identity.principal
