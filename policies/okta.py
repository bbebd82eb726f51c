"""Group membership from Okta (the Groups API), asked when needed.

For the policy groups mapped under `okta.groups`, membership is Okta's alone: a person's YAML
list for those groups is ignored, and which groups they are in is asked of
`GET /api/v1/users/{login}/groups` (following `Link: rel="next"` pages) at the moment a
decision is authorised, cached for `membership_ttl`. A person is looked up by their `email`
(or an id that is an email address), which must be their Okta login.

Okta is called as an API token (`Authorization: SSWS ...`) or as an API service app with
private-key JWT (an RS256 client assertion exchanged at `{org}/oauth2/v1/token` for a
`Bearer` token). A person the directory file does not list is looked up by email as their
login (`GET /api/v1/users/{login}`, for chat clicks). Secrets are read from the environment or
a file on first use and never appear in a message. Rate limits (429 with `X-Rate-Limit-Reset`)
are waited out briefly, then reported as a retryable `OktaError`; so is every other failure: a
decision waits, it never guesses.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from policies.directory import OKTA_SCOPES, OktaConfig
from policies.groups import GroupSourceError, IdpPerson, MembershipCache, TtlAnswers
from signoff.models import Principal

PAGE_LIMIT = 50  # pages of a user's groups: far beyond any real membership list, but bounded
RATE_LIMIT_WAIT = 3.0  # seconds one lookup may wait for a rate limit to reset, in all
RATE_LIMIT_TRIES = 3
TOKEN_MARGIN = 60.0  # seconds before expiry an access token is replaced
ASSERTION_LIFETIME = 300  # seconds; Okta accepts client assertions of at most an hour
LOOKUP_CONCURRENCY = 4  # parallel lookups when listing a group's members
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Okta group ids: `00g` and 17 more characters. Anything else in `groups:` is a group name.
GROUP_ID = re.compile(r"00g[0-9A-Za-z]{17}")
MAX_SUMMARY = 200  # characters of Okta's error summary quoted in a message
# Okta user statuses of someone who may act; STAGED, PROVISIONED (never activated), SUSPENDED
# and DEPROVISIONED are people who may not.
ACTIVE_STATUSES = frozenset({"ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY"})


class OktaError(GroupSourceError):
    """Okta could not answer; the caller retries (a decision waits rather than guesses)."""


class OktaRateLimited(OktaError):
    """Okta's rate limit held for longer than a lookup may wait; `retry_after` in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def okta_login(principal: Principal) -> str | None:
    """The Okta login a principal is looked up by: its email, or an id that is one."""
    for candidate in (principal.email, principal.id):
        if candidate and "@" in candidate:
            return candidate
    return None


def _summary(response: httpx.Response) -> str:
    """Okta's error code and summary from an error body, shortened; empty when there is none."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    code = body.get("errorCode") or body.get("error")
    text = body.get("errorSummary") or body.get("error_description")
    parts = [str(p)[:MAX_SUMMARY] for p in (code, text) if p]
    return ": ".join(parts)


class OktaGroups:
    """The `GroupSource` for the policy groups mapped under `okta.groups`, through Okta's API."""

    name = "okta"

    def __init__(
        self,
        config: OktaConfig,
        source: str = "<directory>",
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        verify: ssl.SSLContext | bool = True,
        rate_limit_wait: float = RATE_LIMIT_WAIT,
    ) -> None:
        self.config = config
        self.source = source
        self._mapped = dict(config.groups)
        self._org = config.org_url.rstrip("/")
        self._wall = wall_clock
        self._sleep = sleep
        self._verify = verify
        self._rate_limit_wait = rate_limit_wait
        self._timeout = config.timeout.total_seconds()
        self._member_of = MembershipCache(config.membership_ttl.total_seconds(), clock=clock)
        self._people: TtlAnswers[IdpPerson | None] = TtlAnswers(
            config.membership_ttl.total_seconds(), clock=clock
        )
        self._secret: str | None = None  # the API token, once read
        self._key: tuple[RSAPrivateKey, str | None] | None = None  # the app's key and its kid
        self._access: tuple[str, float] | None = None  # a Bearer token and when it expires
        self._token_lock = asyncio.Lock()

    @property
    def groups(self) -> Mapping[str, str]:
        """Policy group -> Okta group id or name."""
        return self._mapped

    @property
    def token_url(self) -> str:
        """The org authorization server's token endpoint, for the service app."""
        return f"{self._org}/oauth2/v1/token"

    # --- secrets --------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.source}: okta"

    def _api_token(self) -> str:
        if self._secret is None:
            env = self.config.api_token_env
            assert env is not None
            value = os.environ.get(env, "").strip()
            if not value:
                raise OktaError(
                    f"{self._where()}: the API token is not set (environment variable {env})"
                )
            self._secret = value
        return self._secret

    def _private_key(self) -> tuple[RSAPrivateKey, str | None]:
        if self._key is not None:
            return self._key
        if self.config.private_key_env is not None:
            origin = f"environment variable {self.config.private_key_env}"
            text = os.environ.get(self.config.private_key_env, "").strip()
        else:
            assert self.config.private_key_file is not None
            origin = f"file {self.config.private_key_file}"
            try:
                text = Path(self.config.private_key_file).read_text(encoding="utf-8").strip()
            except OSError as err:
                raise OktaError(
                    f"{self._where()}: cannot read the private key ({origin}): "
                    f"{err.strerror or type(err).__name__}"
                ) from None
        if not text:
            raise OktaError(f"{self._where()}: the private key is not set ({origin})")
        kid = self.config.key_id
        try:
            if text.startswith("{"):
                # Okta's console hands out the key as a JWK; its kid is the one Okta knows.
                jwk = jwt.PyJWK(json.loads(text), algorithm="RS256")
                key = jwk.key
                kid = kid or jwk.key_id
            else:
                key = serialization.load_pem_private_key(text.encode(), password=None)
        except Exception:
            # The parser's message may quote the key: say only where it was and what it must be.
            raise OktaError(
                f"{self._where()}: the private key ({origin}) is not an unencrypted RSA private "
                "key in PEM or JWK form"
            ) from None
        if not isinstance(key, RSAPrivateKey):
            raise OktaError(f"{self._where()}: the private key ({origin}) is not an RSA key")
        self._key = (key, kid)
        return self._key

    def _scrub(self, text: str) -> str:
        """`text` with any secret we hold blanked out, in case a server echoes it back."""
        for secret in (self._secret, self._access[0] if self._access else None):
            if secret:
                text = text.replace(secret, "***")
        return text

    # --- HTTP -----------------------------------------------------------------------------

    async def _send(
        self,
        http: httpx.AsyncClient,
        what: str,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        data: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request, waiting out rate limits briefly; connection failures are OktaErrors."""
        waited = 0.0
        for attempt in range(1, RATE_LIMIT_TRIES + 1):
            try:
                response = await http.request(method, url, headers=headers, data=data)
            except httpx.HTTPError as err:
                raise OktaError(
                    f"{self._where()}: {what}: Okta unreachable ({type(err).__name__})"
                ) from None
            if response.status_code != 429:
                return response
            wait = self._reset_in(response)
            if attempt == RATE_LIMIT_TRIES or waited + wait > self._rate_limit_wait:
                break
            waited += wait
            await self._sleep(wait)
        raise OktaRateLimited(
            f"{self._where()}: {what}: Okta's rate limit is reached; it resets in "
            f"{wait:.0f}s, retry then",
            retry_after=max(wait, 1.0),
        )

    def _reset_in(self, response: httpx.Response) -> float:
        """Seconds until the rate limit resets, from `X-Rate-Limit-Reset` (epoch seconds)."""
        try:
            reset = float(response.headers.get("X-Rate-Limit-Reset", ""))
        except ValueError:
            return 1.0
        return max(0.0, reset - self._wall())

    async def _authorization(self, http: httpx.AsyncClient) -> str:
        """The Authorization header value for Okta's API."""
        if self.config.api_token_env is not None:
            return f"SSWS {self._api_token()}"
        async with self._token_lock:
            if self._access is None or self._access[1] - TOKEN_MARGIN <= self._wall():
                self._access = await self._fetch_access_token(http)
            return f"Bearer {self._access[0]}"

    async def _fetch_access_token(self, http: httpx.AsyncClient) -> tuple[str, float]:
        """Exchange a signed client assertion for an access token (private-key JWT)."""
        key, kid = self._private_key()
        client_id = self.config.client_id
        assert client_id is not None
        now = int(self._wall())
        assertion = jwt.encode(
            {
                "iss": client_id,
                "sub": client_id,
                "aud": self.token_url,
                "iat": now,
                "exp": now + ASSERTION_LIFETIME,
                "jti": uuid.uuid4().hex,
            },
            key,
            algorithm="RS256",
            headers={"kid": kid} if kid else None,
        )
        form = {
            "grant_type": "client_credentials",
            "scope": " ".join(self.config.scopes),
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        what = f"token for service app {client_id}"
        response = await self._send(
            http, what, "POST", self.token_url, headers={"Accept": "application/json"}, data=form
        )
        if response.status_code != 200:
            detail = self._scrub(_summary(response)) or "no detail"
            hint = ""
            if "dpop" in detail.lower():
                hint = "; turn off 'Require DPoP' for the service app in Okta"
            raise OktaError(
                f"{self._where()}: {what}: Okta refused it (HTTP {response.status_code} "
                f"{detail}){hint}"
            )
        try:
            body = response.json()
            token = str(body["access_token"])
            expires_in = float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise OktaError(f"{self._where()}: {what}: unreadable token response") from None
        return token, self._wall() + expires_in

    def _refusal(self, response: httpx.Response, what: str) -> OktaError:
        """A clear, secret-free error for a non-200 answer from the API."""
        detail = self._scrub(_summary(response))
        status = f"HTTP {response.status_code}{' ' + detail if detail else ''}"
        if response.status_code == 401:
            if self.config.api_token_env is not None:
                fix = f"check the API token in {self.config.api_token_env}"
            else:
                fix = f"check the service app {self.config.client_id}"
            return OktaError(
                f"{self._where()}: {what}: Okta refused our credentials ({status}); {fix}"
            )
        if response.status_code == 403:
            return OktaError(
                f"{self._where()}: {what}: not allowed ({status}); grant "
                f"{' and '.join(OKTA_SCOPES)} (service app) or a read-only admin role "
                "(API token)"
            )
        return OktaError(f"{self._where()}: {what}: {status}")

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, verify=self._verify)

    async def _get(self, http: httpx.AsyncClient, url: str, what: str) -> httpx.Response | None:
        """One authorised GET of the org's API: the 200 answer, None on 404, else OktaError."""
        # Links come from answers: our credentials only ever go to the org.
        if not url.startswith(self._org + "/"):
            raise OktaError(f"{self._where()}: {what}: paged to another host")
        for retried in (False, True):
            authorization = await self._authorization(http)
            response = await self._send(
                http,
                what,
                "GET",
                url,
                headers={"Authorization": authorization, "Accept": "application/json"},
            )
            if response.status_code == 401 and self.config.api_token_env is None and not retried:
                # The access token may have been revoked or expired early: get a new one.
                self._access = None
                continue
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise self._refusal(response, what)
            return response
        raise self._refusal(response, what)

    async def _user_groups(self, login: str) -> frozenset[str]:
        """The user's groups as `id:<id>` and `name:<name>` (Okta groups only); none on 404."""
        what = f"groups of {login}"
        url: str | None = f"{self._org}/api/v1/users/{quote(login, safe='')}/groups"
        found: set[str] = set()
        async with self._client() as http:
            pages = 0
            while url is not None:
                if pages >= PAGE_LIMIT:
                    raise OktaError(f"{self._where()}: {what}: more than {PAGE_LIMIT} pages")
                response = await self._get(http, url, what)
                if response is None:
                    return frozenset()  # no such user in Okta: in no Okta group
                try:
                    items = response.json()
                except ValueError:
                    raise OktaError(f"{self._where()}: {what}: unreadable answer") from None
                if not isinstance(items, list):
                    raise OktaError(f"{self._where()}: {what}: unexpected answer")
                for item in items:
                    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                        continue
                    found.add(f"id:{item['id']}")
                    profile = item.get("profile")
                    name = profile.get("name") if isinstance(profile, dict) else None
                    # By name only Okta's own groups: an app could push a group of any name.
                    if isinstance(name, str) and item.get("type") == "OKTA_GROUP":
                        found.add(f"name:{name}")
                url = response.links.get("next", {}).get("url")
                pages += 1
        return frozenset(found)

    async def _user(self, login: str) -> IdpPerson | None:
        """The Okta user whose login this is (`GET /api/v1/users/{login}`); None when none."""
        what = f"user {login}"
        async with self._client() as http:
            response = await self._get(
                http, f"{self._org}/api/v1/users/{quote(login, safe='')}", what
            )
        if response is None:
            return None
        try:
            user = response.json()
        except ValueError:
            raise OktaError(f"{self._where()}: {what}: unreadable answer") from None
        profile = user.get("profile") if isinstance(user, dict) else None
        if not isinstance(profile, dict):
            raise OktaError(f"{self._where()}: {what}: unexpected answer")
        # The path also takes a user id or a login's short name: only an exact login is them.
        found = profile.get("login")
        if not isinstance(found, str) or found.lower() != login.lower():
            return None
        email = profile.get("email")
        return IdpPerson(
            source=self.name,
            email=email.lower() if isinstance(email, str) else login.lower(),
            active=user.get("status") in ACTIVE_STATUSES,
        )

    async def okta_groups(self, login: str) -> frozenset[str]:
        """The user's Okta groups as `id:<id>` and `name:<name>` entries (cached)."""
        return await self._member_of.get(login.lower(), lambda: self._user_groups(login))

    @property
    def resolves_object_ids(self) -> bool:
        """Okta knows no Entra object ids."""
        return False

    async def person_by_email(self, email: str) -> IdpPerson | None:
        """The Okta user whose login is this email, and whether they may act (cached)."""
        return await self._people.get(email.lower(), lambda: self._user(email))

    async def person_by_object_id(self, oid: str) -> IdpPerson | None:
        """Okta knows no Entra object ids: nobody."""
        return None

    # --- GroupSource ----------------------------------------------------------------------

    @staticmethod
    def _entry(reference: str) -> str:
        return f"id:{reference}" if GROUP_ID.fullmatch(reference) else f"name:{reference}"

    async def groups_of(self, principal: Principal) -> frozenset[str]:
        """The mapped policy groups Okta lists the principal in now."""
        login = okta_login(principal)
        # Agents never approve, and people without an Okta login cannot be looked up.
        if principal.kind != "human" or login is None:
            return frozenset()
        okta = await self.okta_groups(login)
        return frozenset(g for g, ref in self._mapped.items() if self._entry(ref) in okta)

    async def members(self, group: str, candidates: Sequence[Principal]) -> list[Principal]:
        """The candidates Okta lists in the mapped group now, each asked about by login."""
        limit = asyncio.Semaphore(LOOKUP_CONCURRENCY)

        async def member(principal: Principal) -> bool:
            async with limit:
                return group in await self.groups_of(principal)

        found = await asyncio.gather(*(member(p) for p in candidates))
        return [p for p, yes in zip(candidates, found, strict=True) if yes]

    def clear_cache(self) -> None:
        """Forget cached memberships and people, e.g. after an access review."""
        self._member_of.clear()
        self._people.clear()
