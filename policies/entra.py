"""A directory whose group membership comes from Entra ID (Microsoft Graph), asked when needed.

Principals, their tokens and how to reach groups still come from the directory file. For the
policy groups mapped under `entra.groups`, membership is Entra's alone: a person's YAML list
for those groups is ignored, and whether they are in one is asked of Graph
(`/users/{id}/transitiveMemberOf`, so nested groups count) with an msal app token, at the
moment a decision is authorised. Answers are cached for `cache_ttl`, so removing someone from
a group in Entra takes effect within that time.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from policies.directory import DirectoryFile, EntraConfig, StaticDirectory
from policies.microsoft import AppTokens, TokenError
from signoff.models import Principal

GRAPH_SCOPE_SUFFIX = "/.default"
PAGE_LIMIT = 100  # 100 pages of 999: far beyond any real membership list, but bounded


class EntraError(Exception):
    """Graph could not answer; the caller retries (a decision waits rather than guesses)."""


class EntraDirectory(StaticDirectory):
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
        super().__init__(document, source)
        assert document.entra is not None, "EntraDirectory needs an `entra:` section"
        self.config: EntraConfig = document.entra
        self._mapped = dict(self.config.groups)
        self._clock = clock
        self._timeout = timeout
        self._msal_http_client = msal_http_client
        self._tokens: AppTokens | None = None
        self._member_of: dict[str, tuple[float, frozenset[str]]] = {}
        self._members: dict[str, tuple[float, frozenset[str]]] = {}
        self._graph = self.config.graph_url.rstrip("/")

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

    async def _ids(self, path: str) -> frozenset[str] | None:
        """Every object id a Graph collection lists, following its pages; None on 404."""
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
                    return None
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

    async def _cached(
        self, cache: dict[str, tuple[float, frozenset[str]]], key: str, path: str
    ) -> frozenset[str]:
        hit = cache.get(key)
        now = self._clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        ids = await self._ids(path) or frozenset()
        cache[key] = (now + self.config.cache_ttl.total_seconds(), ids)
        return ids

    async def entra_groups(self, oid: str) -> frozenset[str]:
        """The Entra group ids a user is in, directly or through nested groups (cached)."""
        path = f"users/{quote(oid, safe='')}/transitiveMemberOf/microsoft.graph.group"
        return await self._cached(self._member_of, oid, path)

    # --- resolution -----------------------------------------------------------------------

    async def _resolve(self, principal: Principal | None) -> Principal | None:
        """The principal with mapped groups replaced by what Entra says now."""
        if principal is None:
            return None
        groups = [g for g in principal.groups if g not in self._mapped]
        # Agents never approve, and people without an Entra id cannot be looked up.
        if principal.kind == "human" and principal.teams_aad_object_id:
            member_of = await self.entra_groups(principal.teams_aad_object_id)
            groups += [g for g, gid in self._mapped.items() if gid in member_of]
        return principal.model_copy(update={"groups": groups})

    async def principal(self, id: str) -> Principal | None:
        """The principal with this id, its groups resolved now."""
        return await self._resolve(await super().principal(id))

    async def by_token(self, token: str) -> Principal | None:
        """The principal holding this bearer token, its groups resolved now."""
        return await self._resolve(await super().by_token(token))

    async def by_slack_user(self, slack_user_id: str) -> Principal | None:
        """The principal with this Slack user id, its groups resolved now."""
        return await self._resolve(await super().by_slack_user(slack_user_id))

    async def by_email(self, email: str) -> Principal | None:
        """The principal with this email address, its groups resolved now."""
        return await self._resolve(await super().by_email(email))

    async def by_aad_object_id(self, oid: str) -> Principal | None:
        """The principal with this Entra object id, its groups resolved now."""
        return await self._resolve(await super().by_aad_object_id(oid))

    async def members(self, group: str) -> list[Principal]:
        """Everyone in the group; for a mapped group, the file's people Entra lists in it."""
        if group not in self._mapped:
            resolved = [await self._resolve(p) for p in self.principals()]
            return [p for p in resolved if p is not None and group in p.groups]
        path = (
            f"groups/{quote(self._mapped[group], safe='')}/transitiveMembers/microsoft.graph.user"
        )
        member_ids = await self._cached(self._members, group, path)
        listed = [p for p in self.principals() if p.teams_aad_object_id in member_ids]
        resolved = await asyncio.gather(*(self._resolve(p) for p in listed))
        return [p for p in resolved if p is not None]

    def clear_cache(self) -> None:
        """Forget cached memberships, e.g. after an access review."""
        self._member_of.clear()
        self._members.clear()
