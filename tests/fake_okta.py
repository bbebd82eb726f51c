"""Okta's side of the Groups API, on 127.0.0.1 over TLS, speaking Okta's real wire format.

What OktaGroups talks to: `GET /api/v1/users/{login}` (Okta's user object: `id`, `status`,
`profile.login` and `profile.email`; a login's short name finds the user too, as in Okta),
`GET /api/v1/users/{id}/groups` (JSON group objects with `id`,
`profile.name` and `type`, paginated with `Link: <...>; rel="next"`, rate-limit headers on
every answer and 429 with `X-Rate-Limit-Reset` when throttled, Okta's error objects for 401,
403 and 404) and the org authorization server's token endpoint, which checks a private-key
JWT client assertion against the service app's registered public key. The server's TLS
certificate is made here for 127.0.0.1; `client_tls` trusts it.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.certs import self_signed_certificate

RATE_LIMIT = 600  # requests per minute the fake advertises
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str
    authorization: str | None
    status: int


def error(status: int, code: str, summary: str) -> web.Response:
    """An Okta error object."""
    return web.json_response(
        {
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": f"oae{uuid.uuid4().hex[:20]}",
            "errorCauses": [],
        },
        status=status,
    )


class FakeOkta:
    """One Okta org: users, groups, API tokens, a service app, and what was asked."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, str]] = {}  # group id -> {name, type}
        self.memberships: dict[str, list[str]] = {}  # user login -> group ids
        # user login -> Okta status; a login with memberships and no entry here is ACTIVE.
        self.statuses: dict[str, str] = {}
        self.emails: dict[str, str] = {}  # user login -> profile.email, when not the login
        self.api_tokens: set[str] = set()
        self.apps: dict[str, rsa.RSAPublicKey] = {}  # service app client id -> public key
        self.app_scopes = {"okta.groups.read", "okta.users.read"}
        self.issued: dict[str, set[str]] = {}  # access token -> granted scopes
        self.used_jti: set[str] = set()
        self.token_requests: list[dict[str, str]] = []
        self.requests: list[Seen] = []
        self.page_size = 2
        self.next_host: str | None = None  # page to another origin (an attack)
        self.throttled: list[float] = []  # next API answers: 429, resetting in these seconds
        self.failures: list[int] = []  # next API answers: these statuses
        # ssl loads certificates from files only: the fake's throwaway pair, read back as PEM.
        folder = Path(tempfile.mkdtemp(prefix="fake-okta-"))
        try:
            cert, key = self_signed_certificate(folder, name="fake-okta.test", stem="okta")
            self._cert, self._key = cert.read_bytes(), key.read_bytes()
        finally:
            shutil.rmtree(folder)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0

    # --- lifecycle -------------------------------------------------------------------------

    def _server_tls(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # ssl loads certificates from files only; these are the fake's throwaway ones.
        folder = Path(tempfile.mkdtemp(prefix="fake-okta-"))
        try:
            (folder / "cert.pem").write_bytes(self._cert)
            (folder / "key.pem").write_bytes(self._key)
            context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
        finally:
            shutil.rmtree(folder)
        return context

    def client_tls(self) -> ssl.SSLContext:
        """A client context that trusts only this fake's certificate."""
        return ssl.create_default_context(cadata=self._cert.decode())

    async def start(self) -> FakeOkta:
        """Listen on a free port of 127.0.0.1 (HTTPS)."""
        app = web.Application()
        app.router.add_get("/api/v1/users/{user}/groups", self._user_groups)
        app.router.add_get("/api/v1/users/{user}", self._user)
        app.router.add_post("/oauth2/v1/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self.resume()
        return self

    async def pause(self) -> None:
        """Stop listening (connections are refused) but keep the org's state: an outage."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def resume(self) -> None:
        """Listen again, on the same port once one was chosen."""
        assert self._runner is not None
        self._site = web.TCPSite(
            self._runner, "127.0.0.1", self.port, ssl_context=self._server_tls()
        )
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Stop for good."""
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        """The org URL."""
        return f"https://127.0.0.1:{self.port}"

    # --- org set-up ------------------------------------------------------------------------

    def group(self, name: str, type: str = "OKTA_GROUP", gid: str | None = None) -> str:
        """Create a group; its id (00g + 17 characters, as Okta's), new unless given."""
        gid = gid or f"00g{next(self._ids):017d}"
        self.groups[gid] = {"name": name, "type": type}
        return gid

    def api_requests(self) -> list[Seen]:
        """Requests to the Groups API."""
        return [r for r in self.requests if r.path.startswith("/api/")]

    # --- handlers --------------------------------------------------------------------------

    def _rate_headers(self, reset_in: float = 60) -> dict[str, str]:
        return {
            "X-Rate-Limit-Limit": str(RATE_LIMIT),
            "X-Rate-Limit-Remaining": str(RATE_LIMIT - 1),
            "X-Rate-Limit-Reset": str(int(time.time() + reset_in)),
        }

    def _authorised(
        self, request: web.Request, scope: str = "okta.groups.read"
    ) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("SSWS ") and header.removeprefix("SSWS ") in self.api_tokens:
            return None
        if header.startswith("Bearer ") and header.removeprefix("Bearer ") in self.issued:
            scopes = self.issued[header.removeprefix("Bearer ")]
            if scope not in scopes:
                return error(
                    403, "E0000006", "You do not have permission to perform the requested action"
                )
            return None
        return error(401, "E0000011", "Invalid token provided")

    async def _user_groups(self, request: web.Request) -> web.Response:
        response = await self._answer(request)
        self.requests.append(
            Seen("GET", str(request.rel_url), request.headers.get("Authorization"), response.status)
        )
        return response

    async def _user(self, request: web.Request) -> web.Response:
        response = await self._answer(request, self._user_object)
        self.requests.append(
            Seen("GET", str(request.rel_url), request.headers.get("Authorization"), response.status)
        )
        return response

    def _login_of(self, wanted: str) -> str | None:
        """The login a path names: the login itself, or its short name (as Okta matches)."""
        logins = set(self.memberships) | set(self.statuses)
        if wanted in logins:
            return wanted
        short = [login for login in logins if login.split("@")[0] == wanted]
        return short[0] if len(short) == 1 else None

    def _user_object(self, request: web.Request) -> web.Response:
        login = self._login_of(request.match_info["user"].lower())
        if login is None:
            return error(
                404,
                "E0000007",
                f"Not found: Resource not found: {request.match_info['user']} (User)",
            )
        uid = f"00u{int(hashlib.sha256(login.encode()).hexdigest(), 16) % 10**17:017d}"
        stamp = "2024-01-01T00:00:00.000Z"
        body = {
            "id": uid,
            "status": self.statuses.get(login, "ACTIVE"),
            "created": stamp,
            "activated": stamp,
            "statusChanged": stamp,
            "lastLogin": stamp,
            "lastUpdated": stamp,
            "passwordChanged": stamp,
            "type": {"id": "oty1fakeusertype0001"},
            "profile": {
                "firstName": login.split("@")[0].title(),
                "lastName": "Example",
                "mobilePhone": None,
                "secondEmail": None,
                "login": login,
                "email": self.emails.get(login, login),
            },
            "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
            "_links": {"self": {"href": f"{self.url}/api/v1/users/{uid}"}},
        }
        return web.json_response(body, headers=self._rate_headers())

    async def _answer(
        self, request: web.Request, found: Callable[[web.Request], web.Response] | None = None
    ) -> web.Response:
        if self.throttled:
            reset_in = self.throttled.pop(0)
            answer = error(
                429, "E0000047", "API call exceeded rate limit due to too many requests."
            )
            answer.headers.update(self._rate_headers(reset_in))
            answer.headers["X-Rate-Limit-Remaining"] = "0"
            return answer
        refused = self._authorised(
            request, "okta.groups.read" if found is None else "okta.users.read"
        )
        if refused is not None:
            return refused
        if self.failures:
            return error(self.failures.pop(0), "E0000009", "Internal Server Error")
        if found is not None:
            return found(request)
        user = request.match_info["user"].lower()
        if user not in self.memberships:
            return error(404, "E0000007", f"Not found: Resource not found: {user} (User)")
        ids = self.memberships[user]
        after = int(request.query.get("after", "0"))
        limit = int(request.query.get("limit", str(self.page_size)))
        page = ids[after : after + limit]
        body = [self._group_object(gid) for gid in page]
        base = self.next_host or self.url
        path = request.rel_url.raw_path  # still URL-quoted, as Okta writes its links
        this = f"{self.url}{path}"
        links = [f'<{this}?limit={limit}>; rel="self"']
        if after + limit < len(ids):
            links.append(f'<{base}{path}?after={after + limit}&limit={limit}>; rel="next"')
        answer = web.json_response(body, headers=self._rate_headers())
        answer.headers["Link"] = ", ".join(links)
        return answer

    def _group_object(self, gid: str) -> dict[str, Any]:
        group = self.groups.get(gid, {"name": gid, "type": "OKTA_GROUP"})
        return {
            "id": gid,
            "created": "2024-01-01T00:00:00.000Z",
            "lastUpdated": "2024-01-01T00:00:00.000Z",
            "lastMembershipUpdated": "2024-01-01T00:00:00.000Z",
            "objectClass": ["okta:user_group"],
            "type": group["type"],
            "profile": {"name": group["name"], "description": None},
            "_links": {"users": {"href": f"{self.url}/api/v1/groups/{gid}/users"}},
        }

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        self.token_requests.append(form)
        self.requests.append(Seen("POST", request.path, None, 0))
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            return self._invalid_client("client_assertion_type is required")
        assertion = form.get("client_assertion", "")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            client_id = str(unverified.get("iss"))
            key = self.apps[client_id]
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS256"],
                audience=f"{self.url}/oauth2/v1/token",
                issuer=client_id,
                options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
            )
        except (jwt.PyJWTError, KeyError):
            return self._invalid_client("The client_assertion signature is invalid.")
        if claims["sub"] != client_id or claims["exp"] - claims["iat"] > 3600:
            return self._invalid_client("The client_assertion token is invalid.")
        if claims["jti"] in self.used_jti:
            return self._invalid_client("The client_assertion token has already been used.")
        self.used_jti.add(claims["jti"])
        scopes = set(form.get("scope", "").split())
        if not scopes or not scopes <= self.app_scopes:
            return web.json_response(
                {
                    "error": "invalid_scope",
                    "error_description": "The authorization server resource does not have any "
                    "configured default scopes, 'scope' must be provided.",
                },
                status=400,
            )
        token = f"eyJ.fake-okta-access.{uuid.uuid4().hex}"
        self.issued[token] = scopes
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": 3600,
                "access_token": token,
                "scope": " ".join(sorted(scopes)),
            }
        )

    def _invalid_client(self, description: str) -> web.Response:
        return web.json_response(
            {"error": "invalid_client", "error_description": description}, status=401
        )
