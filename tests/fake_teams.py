"""Microsoft's side of Teams, on 127.0.0.1: token endpoint, Bot Framework keys, connector, Graph.

One aiohttp server plays every Microsoft service the Teams channel and EntraDirectory talk to.
msal reaches it through `MsalRoute`, an `http_client` that sends requests for the real
authority host (https://login.microsoftonline.com) here and refuses every other host, so the
real msal runs its real discovery and token flow without touching the network. Started with
TLS (`start(tls=...)`, a certificate from `self_signed_certificate`), it also answers as an
authority of its own at `authority_url`, for a process msal cannot be rerouted in (the bench's
worker, pointed there by SIGNOFF_TEAMS_AUTHORITY_HOST and trusting the certificate).
"""

from __future__ import annotations

import base64
import itertools
import re
import ssl
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from tests import certs

AUTHORITY_HOST = "login.microsoftonline.com"
BOT_SCOPE = "https://api.botframework.com/.default"
GRAPH_SCOPE_SUFFIX = "/.default"
# The properties Graph returns for a user without $select (v1.0).
USER_DEFAULT_FIELDS = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class SigningKey:
    """A locally generated RSA key and the JWK the fake publishes for it."""

    kid: str
    endorsements: list[str]
    private: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def jwk(self) -> dict[str, Any]:
        """The public key as the Bot Framework's JWKS lists it, endorsements included."""
        numbers = self.private.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "n": _b64(numbers.n),
            "e": _b64(numbers.e),
            "endorsements": self.endorsements,
        }


@dataclass
class Recorded:
    """One request the connector or Graph received, and when (time.monotonic)."""

    method: str
    path: str
    body: Any
    authorization: str | None
    at: float = field(default_factory=time.monotonic)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, its own CA, and its key: (cert, key) PEMs."""
    return certs.self_signed_certificate(directory, name="fake microsoft", stem="fake-microsoft")


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context for the fake's authority."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class FakeMicrosoft:
    """The fake services, with what they received, for assertions."""

    def __init__(
        self, *, client_id: str, client_secret: str, graph_client_secret: str = ""
    ) -> None:
        self.client_id = client_id
        self.secrets = {client_secret, graph_client_secret} - {""}
        self.teams_key = SigningKey("teams-key", ["msteams", "skype"])
        self.skype_key = SigningKey("skype-only", ["skype"])
        self.ghost_key = SigningKey("ghost", ["msteams"])  # never published
        self.token_requests: list[dict[str, str]] = []
        self.discovery_requests = 0
        self.issued: dict[str, str] = {}  # access token -> scope
        self.connector: list[Recorded] = []
        self.graph: list[Recorded] = []
        self.memberships: dict[str, list[str]] = {}  # user oid -> Entra group ids
        self.group_members: dict[str, list[str]] = {}  # Entra group id -> user oids
        # Entra users by object id: mail, userPrincipalName, accountEnabled, displayName.
        self.users: dict[str, dict[str, Any]] = {}
        self.page_size = 2
        self.connector_failures: list[int] = []  # statuses to answer the next requests with
        self.graph_failures: list[int] = []
        # The host the discovery documents name, and the scope the connector accepts: a
        # sovereign cloud's differ from the public one's.
        self.authority_host = AUTHORITY_HOST
        self.bot_scope = BOT_SCOPE
        self.bot_issuer = "https://api.botframework.com"
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.authority_url = ""

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, *, tls: ssl.SSLContext | None = None) -> FakeMicrosoft:
        """Listen on a free port of 127.0.0.1; with TLS also on another, as the authority."""
        app = web.Application()
        app.router.add_get("/v1/.well-known/openidconfiguration", self._bf_metadata)
        app.router.add_get("/v1/.well-known/keys", self._bf_keys)
        app.router.add_get("/common/discovery/instance", self._instance_metadata)
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._discovery)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_route(
            "*", "/{prefix:[^/]+}/v3/conversations/{conversation}/activities", self._connector
        )
        app.router.add_route(
            "*",
            "/{prefix:[^/]+}/v3/conversations/{conversation}/activities/{activity}",
            self._connector,
        )
        app.router.add_get("/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group", self._mof)
        app.router.add_get(
            "/v1.0/groups/{gid}/transitiveMembers/microsoft.graph.user", self._members
        )
        app.router.add_get("/v1.0/users/{oid}", self._user)
        app.router.add_get("/v1.0/users", self._users)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        if tls is not None:
            # msal takes only https authorities; the connector may stay cleartext on loopback.
            secure = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
            await secure.start()
            tls_port = secure._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.authority_host = f"127.0.0.1:{tls_port}"
            self.authority_url = f"https://{self.authority_host}"
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def metadata_url(self) -> str:
        """The Bot Framework OpenID metadata document."""
        return f"{self.url}/v1/.well-known/openidconfiguration"

    def bot_token_requests(self) -> list[dict[str, str]]:
        """Token requests for the Bot Framework scope."""
        return [r for r in self.token_requests if r.get("scope") == self.bot_scope]

    def graph_token_requests(self) -> list[dict[str, str]]:
        """Token requests for Graph."""
        return [
            r
            for r in self.token_requests
            if r.get("scope", "").endswith(GRAPH_SCOPE_SUFFIX) and r.get("scope") != self.bot_scope
        ]

    # --- inbound tokens (what the Bot Framework would send us) -----------------------------

    def bot_jwt(
        self,
        *,
        service_url: str,
        audience: str | None = None,
        issuer: str | None = None,
        key: SigningKey | None = None,
        expires_in: float = 3600,
        algorithm: str = "RS256",
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A Bot Framework channel token, signed by one of our keys."""
        key = key or self.teams_key
        now = int(time.time())
        claims = {
            "iss": issuer or self.bot_issuer,
            "aud": audience or self.client_id,
            "iat": now - 10,
            "nbf": now - 10,
            "exp": now + int(expires_in),
            "serviceurl": service_url,
            **(extra or {}),
        }
        return jwt.encode(claims, key.private, algorithm=algorithm, headers={"kid": key.kid})

    # --- handlers --------------------------------------------------------------------------

    async def _bf_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.bot_issuer,
                "authorization_endpoint": "https://invalid.botframework.com",
                "jwks_uri": f"{self.url}/v1/.well-known/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        )

    async def _bf_keys(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.teams_key.jwk(), self.skype_key.jwk()]})

    async def _instance_metadata(self, request: web.Request) -> web.Response:
        # msal asks for the cloud's host aliases (e.g. when a token request fails).
        host = self.authority_host
        return web.json_response(
            {
                "tenant_discovery_endpoint": (
                    f"https://{host}/common/v2.0/.well-known/openid-configuration"
                ),
                "api-version": "1.1",
                "metadata": [
                    {
                        "preferred_network": host,
                        "preferred_cache": "login.windows.net",
                        "aliases": [host, "login.windows.net", "login.microsoft.com"],
                    }
                ],
            }
        )

    async def _discovery(self, request: web.Request) -> web.Response:
        self.discovery_requests += 1
        tenant = request.match_info["tenant"]
        base = f"https://{self.authority_host}/{tenant}"
        return web.json_response(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
            }
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        self.token_requests.append(form)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if form.get("client_id") != self.client_id or form.get("client_secret") not in self.secrets:
            return web.json_response(
                {"error": "invalid_client", "error_description": "AADSTS7000215: bad secret"},
                status=401,
            )
        token = f"token-{uuid.uuid4().hex}"
        self.issued[token] = form.get("scope", "")
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            }
        )

    def _scope_of(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        return (
            self.issued.get(header.removeprefix("Bearer "))
            if header.startswith("Bearer ")
            else None
        )

    async def _connector(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.connector.append(
            Recorded(request.method, request.path, body, request.headers.get("Authorization"))
        )
        if self._scope_of(request) != self.bot_scope:
            return web.json_response({"error": {"code": "Unauthorized"}}, status=401)
        if self.connector_failures:
            return web.json_response({}, status=self.connector_failures.pop(0))
        if request.method == "PUT":
            return web.json_response({"id": request.match_info["activity"]})
        return web.json_response({"id": f"1:{next(self._ids)}"}, status=201)

    def _graph_page(self, request: web.Request, ids: list[str] | None, kind: str) -> web.Response:
        self.graph.append(
            Recorded("GET", request.path_qs, None, request.headers.get("Authorization"))
        )
        scope = self._scope_of(request)
        if scope is None or scope == self.bot_scope:
            return web.json_response({"error": {"code": "InvalidAuthenticationToken"}}, status=401)
        if self.graph_failures:
            return web.json_response({}, status=self.graph_failures.pop(0))
        if ids is None:
            return web.json_response({"error": {"code": "Request_ResourceNotFound"}}, status=404)
        skip = int(request.query.get("$skiptoken", "0"))
        page = ids[skip : skip + self.page_size]
        answer: dict[str, Any] = {"value": [{"@odata.type": kind, "id": i} for i in page]}
        if skip + self.page_size < len(ids):
            answer["@odata.nextLink"] = (
                f"{self.url}{request.path}?$select=id&$skiptoken={skip + self.page_size}"
            )
        return web.json_response(answer)

    def _graph_refusal(self, request: web.Request) -> web.Response | None:
        """Record a Graph request; the error Graph would answer, if any."""
        self.graph.append(
            Recorded("GET", request.path_qs, None, request.headers.get("Authorization"))
        )
        scope = self._scope_of(request)
        if scope is None or scope == self.bot_scope:
            return web.json_response({"error": {"code": "InvalidAuthenticationToken"}}, status=401)
        if self.graph_failures:
            return web.json_response({}, status=self.graph_failures.pop(0))
        return None

    def _user_json(self, oid: str, select: str | None) -> dict[str, Any]:
        """A user object with the properties Graph returns: the $select list, else its default."""
        user = {"id": oid, "displayName": oid, **self.users[oid]}
        fields = select.split(",") if select else [*USER_DEFAULT_FIELDS]
        # accountEnabled is never in the default set: only an explicit $select returns it.
        return {f: user.get(f) for f in fields}

    async def _user(self, request: web.Request) -> web.Response:
        refused = self._graph_refusal(request)
        if refused is not None:
            return refused
        oid = request.match_info["oid"]
        if oid not in self.users:
            return web.json_response(
                {
                    "error": {
                        "code": "Request_ResourceNotFound",
                        "message": f"Resource '{oid}' does not exist or one of its queried "
                        "reference-property objects are not present.",
                    }
                },
                status=404,
            )
        body = self._user_json(oid, request.query.get("$select"))
        return web.json_response(
            {"@odata.context": f"{self.url}/v1.0/$metadata#users/$entity", **body}
        )

    async def _users(self, request: web.Request) -> web.Response:
        """`/users?$filter=prop eq 'x' or prop eq 'y'` as Graph reads it (eq, or, '' quoting)."""
        refused = self._graph_refusal(request)
        if refused is not None:
            return refused
        terms = request.query.get("$filter", "").split(" or ")
        wanted: list[tuple[str, str]] = []
        for term in terms:
            match = re.fullmatch(r"(\w+) eq '((?:[^']|'')*)'", term.strip())
            if match is None:
                return web.json_response(
                    {"error": {"code": "BadRequest", "message": f"Invalid filter clause: {term}"}},
                    status=400,
                )
            wanted.append((match.group(1), match.group(2).replace("''", "'")))
        found = [
            oid
            for oid, user in self.users.items()
            if any(str(user.get(f, "")).lower() == v.lower() for f, v in wanted)
        ]
        select = request.query.get("$select")
        return web.json_response(
            {
                "@odata.context": f"{self.url}/v1.0/$metadata#users",
                "value": [self._user_json(oid, select) for oid in found],
            }
        )

    async def _mof(self, request: web.Request) -> web.Response:
        ids = self.memberships.get(request.match_info["oid"])
        return self._graph_page(request, ids, "#microsoft.graph.group")

    async def _members(self, request: web.Request) -> web.Response:
        ids = self.group_members.get(request.match_info["gid"])
        return self._graph_page(request, ids, "#microsoft.graph.user")


class MsalRoute:
    """msal's `http_client`: the real authority host is answered by the fake, nothing else is."""

    def __init__(self, fake_url: str, *, host: str = AUTHORITY_HOST) -> None:
        self.fake_url = fake_url
        self.host = host
        self.http = httpx.Client(timeout=10)
        self.requests: list[str] = []

    def _route(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.netloc != self.host:
            raise httpx.ConnectError(f"no network in tests: {url}")
        self.requests.append(url)
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.fake_url}{parts.path}{query}"

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        """GET, as msal calls it."""
        return self.http.get(self._route(url), params=params, headers=headers)

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> Any:
        """POST, as msal calls it (form data as a dict or an already encoded string)."""
        if isinstance(data, str):
            data = {k: v[0] for k, v in parse_qs(data).items()}
        return self.http.post(self._route(url), params=params, data=data, headers=headers)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()
