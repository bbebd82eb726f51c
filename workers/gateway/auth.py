"""Bearer authentication: the token decides who the caller is, never the request body."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from policies.directory import Directory
from signoff.models import Principal

# auto_error=False: a missing header or another scheme must get our JSON 401, not FastAPI's.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from the directory; the gateway looks up its SHA-256.",
)

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


def unauthorized(message: str) -> HTTPException:
    """A 401 in the API's error shape, with the challenge HTTP requires."""
    return HTTPException(
        status_code=401,
        detail={"code": "unauthorized", "message": message},
        headers=UNAUTHORIZED_HEADERS,
    )


async def authenticate(directory: Directory, authorization: str | None) -> Principal:
    """The principal holding the bearer token in an Authorization header value, or a 401."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("send Authorization: Bearer <token>")
    principal = await directory.by_token(token)
    if principal is None:
        # Say nothing about the token itself: not its value, not how close it came.
        raise unauthorized("unknown or revoked token")
    return principal


async def current_principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Principal:
    """FastAPI dependency: the authenticated principal of this request."""
    header = None
    if credentials is not None:
        header = f"{credentials.scheme} {credentials.credentials}"
    principal = await authenticate(request.app.state.directory, header)
    # Kept on the request for the access log, which records who, never which token.
    request.state.principal = principal.id
    return principal
