"""Group membership from Entra ID (Microsoft Graph), asked when needed.

Principals, their tokens and how to reach groups still come from the directory file. For the
policy groups mapped under `entra.groups`, membership is Entra's alone: a person's YAML list
for those groups is ignored, and whether they are in one is asked of Graph
(`/users/{id}/transitiveMemberOf`, so nested groups count) with an msal app token, at the
moment a decision is authorised. Answers are cached for `cache_ttl`, so removing someone from
a group in Entra takes effect within that time.

People the file does not list are looked up in Graph for chat clicks: a Teams user by their
object id (`/users/{id}`), a Slack user by the email Slack verified
(`/users?$filter=mail eq '...' or userPrincipalName eq '...'`); `accountEnabled: false` is a
person who may not act. This needs the application permission User.Read.All as well.

`EntraGroups` is the `GroupSource`; `EntraDirectory` is the directory with Entra as its only
source.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from policies.directory import DirectoryFile, EntraConfig
from policies.groups import (
    GroupSourceError,
    IdpPerson,
    MembershipCache,
    SourcedDirectory,
    TtlAnswers,
)
from policies.microsoft import AppTokens, TokenError
from signoff.models import Principal

log = logging.getLogger("signoff.entra")

GRAPH_SCOPE_SUFFIX = "/.default"
PAGE_LIMIT = 100  # 100 pages of 999: far beyond any real membership list, but bounded
USER_FIELDS = "id,mail,userPrincipalName,accountEnabled"


class EntraError(GroupSourceError):
    """Graph could not answer; the caller retries (a decision waits rather than guesses)."""


class EntraGroups:
    """The `GroupSource` for the policy groups mapped under `entra.groups`, through Graph."""

    name = "entra"

    def __init__(
        self,
        config: EntraConfig,
        source: str = "<directory>",
        *,
        msal_http_client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 10.0,
    ) -> None:
        self.config = config
        self.source = source
        self._mapped = dict(config.groups)
        self._timeout = timeout
        self._msal_http_client = msal_http_client
        self._tokens: AppTokens | None = None
        ttl = config.cache_ttl.total_seconds()
        self._member_of = MembershipCache(ttl, clock=clock)
        self._members = MembershipCache(ttl, clock=clock)
        self._people: TtlAnswers[IdpPerson | None] = TtlAnswers(ttl, clock=clock)
        self._graph = config.graph_url.rstrip("/")

    @property
    def groups(self) -> Mapping[str, str]:
        """Policy group -> Entra group object id."""
        return self._mapped

    # --- Graph ----------------------------------------------------------------------------

    def tokens(self) -> AppTokens:
        """The msal app-token source for Graph; the secret is read on first use."""
        if self._tokens is None:
            secret = os.environ.get(self.config.client_secret_env)
            if not secret:
                raise EntraError(
                    f"{self.source}: entra: the client secret is not set "
                    f"(environment variable {self.config.client_secret_env})"
                )
            graph = urlsplit(self.config.graph_url)
            self._tokens = AppTokens(
                self.config.client_id,
                secret,
                authority=f"{self.config.authority_url.rstrip('/')}/{self.config.tenant_id}",
                scopes=[f"{graph.scheme}://{graph.netloc}{GRAPH_SCOPE_SUFFIX}"],
                http_client=self._msal_http_client,
            )
        return self._tokens

    async def _ids(self, path: str) -> frozenset[str]:
        """Every object id a Graph collection lists, following its pages; none on 404."""
        try:
            token = await self.tokens().token()
        except TokenError as err:
            raise EntraError(str(err)) from err
        url: str | None = f"{self._graph}/v1.0/{path}"
        params: dict[str, str] | None = {"$select": "id", "$top": "999"}
        ids: set[str] = set()
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as http:
            for _ in range(PAGE_LIMIT):
                if url is None:
                    return frozenset(ids)
                # nextLink comes from the answer: our token only ever goes to the Graph host.
                if not url.startswith(self._graph + "/"):
                    raise EntraError(f"Graph paged to an unexpected host: {url}")
                try:
                    response = await http.get(
                        url, params=params, headers={"Authorization": f"Bearer {token}"}
                    )
                except httpx.HTTPError as err:
                    raise EntraError(f"Graph {path}: {err!r}") from err
                if response.status_code == 404:
                    return frozenset()
                if response.status_code != 200:
                    raise EntraError(f"Graph {path}: HTTP {response.status_code}")
                page = response.json()
                ids.update(
                    str(item["id"])
                    for item in page.get("value", [])
                    if isinstance(item, dict) and "id" in item
                )
                next_link = page.get("@odata.nextLink")
                url = next_link if isinstance(next_link, str) else None
                params = None  # the next link already carries them
        raise EntraError(f"Graph {path}: more than {PAGE_LIMIT} pages")

    async def _get(self, path: str, params: dict[str, str]) -> dict[str, Any] | None:
        """One Graph object (JSON); None on 404, EntraError on anything else but 200."""
        try:
            token = await self.tokens().token()
        except TokenError as err:
            raise EntraError(str(err)) from err
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as http:
            try:
                response = await http.get(
                    f"{self._graph}/v1.0/{path}",
                    params=params,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.HTTPError as err:
                raise EntraError(f"Graph {path}: {type(err).__name__}") from err
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise EntraError(f"Graph {path}: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise EntraError(f"Graph {path}: unreadable answer") from None
        if not isinstance(body, dict):
            raise EntraError(f"Graph {path}: unexpected answer")
        return body

    def _person(self, user: dict[str, Any]) -> IdpPerson | None:
        """A Graph user object as an IdpPerson, named by mail (else their UPN)."""
        oid = user.get("id")
        if not isinstance(oid, str) or not oid:
            return None
        email = next(
            (v for v in (user.get("mail"), user.get("userPrincipalName")) if isinstance(v, str)),
            None,
        )
        return IdpPerson(
            source=self.name,
            email=email.lower() if email else None,
            aad_object_id=oid,
            # Only an explicit false disables: the field is absent without User.Read.All.
            active=user.get("accountEnabled") is not False,
        )

    async def _user_by_id(self, oid: str) -> IdpPerson | None:
        user = await self._get(f"users/{quote(oid, safe='')}", {"$select": USER_FIELDS})
        return None if user is None else self._person(user)

    async def _user_by_email(self, email: str) -> IdpPerson | None:
        literal = email.replace("'", "''")  # OData quotes a quote by doubling it
        found = await self._get(
            "users",
            {
                "$filter": f"mail eq '{literal}' or userPrincipalName eq '{literal}'",
                "$select": USER_FIELDS,
            },
        )
        users = [u for u in (found or {}).get("value", []) if isinstance(u, dict)]
        if len(users) > 1:
            # Two accounts with one address: neither is named by it with any certainty.
            log.warning(
                "Graph: %d users have the address %s; nobody is named by it", len(users), email
            )
            return None
        return self._person(users[0]) if users else None

    @property
    def resolves_object_ids(self) -> bool:
        """Entra object ids are Entra's own."""
        return True

    async def person_by_email(self, email: str) -> IdpPerson | None:
        """The Entra user with this mail or UPN (cached)."""
        return await self._people.get(f"mail:{email.lower()}", lambda: self._user_by_email(email))

    async def person_by_object_id(self, oid: str) -> IdpPerson | None:
        """The Entra user with this object id (cached)."""
        return await self._people.get(f"oid:{oid}", lambda: self._user_by_id(oid))

    async def entra_groups(self, oid: str) -> frozenset[str]:
        """The Entra group ids a user is in, directly or through nested groups (cached)."""
        path = f"users/{quote(oid, safe='')}/transitiveMemberOf/microsoft.graph.group"
        return await self._member_of.get(oid, lambda: self._ids(path))

    # --- GroupSource ----------------------------------------------------------------------

    async def groups_of(self, principal: Principal) -> frozenset[str]:
        """The mapped policy groups Entra lists the principal in now."""
        # Agents never approve, and people without an Entra id cannot be looked up.
        if principal.kind != "human" or not principal.teams_aad_object_id:
            return frozenset()
        member_of = await self.entra_groups(principal.teams_aad_object_id)
        return frozenset(g for g, gid in self._mapped.items() if gid in member_of)

    async def members(self, group: str, candidates: Sequence[Principal]) -> list[Principal]:
        """The candidates Graph lists among the mapped group's (transitive) members."""
        path = (
            f"groups/{quote(self._mapped[group], safe='')}/transitiveMembers/microsoft.graph.user"
        )
        member_ids = await self._members.get(group, lambda: self._ids(path))
        return [p for p in candidates if p.teams_aad_object_id in member_ids]

    def clear_cache(self) -> None:
        """Forget cached memberships, e.g. after an access review."""
        self._member_of.clear()
        self._members.clear()
        self._people.clear()


class EntraDirectory(SourcedDirectory):
    """The file's directory, with membership of mapped groups resolved through Graph."""

    def __init__(
        self,
        document: DirectoryFile,
        source: str = "<directory>",
        *,
        msal_http_client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 10.0,
    ) -> None:
        assert document.entra is not None, "EntraDirectory needs an `entra:` section"
        self.graph = EntraGroups(
            document.entra,
            source,
            msal_http_client=msal_http_client,
            clock=clock,
            timeout=timeout,
        )
        super().__init__(document, source, sources=[self.graph])
        self.config: EntraConfig = document.entra

    def tokens(self) -> AppTokens:
        """The msal app-token source for Graph; the secret is read on first use."""
        return self.graph.tokens()

    async def entra_groups(self, oid: str) -> frozenset[str]:
        """The Entra group ids a user is in, directly or through nested groups (cached)."""
        return await self.graph.entra_groups(oid)
