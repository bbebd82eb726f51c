"""Group sources: identity providers that say who is in some policy groups, asked when needed.

The directory file can hand membership of some policy groups to an identity provider (Entra
ID, Okta). Each provider is a `GroupSource` that owns the policy groups mapped to it, and no
group has two sources. `SourcedDirectory` is the file's directory with those groups'
membership replaced by what their source says now. Sources cache answers for a short time in a
`MembershipCache` (bounded), so someone removed from a group in the IdP loses it within that
time. A source that cannot answer raises `GroupSourceError`: the caller retries (a decision
waits), it never guesses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from policies.cache import BoundedCache
from policies.directory import DirectoryFile, StaticDirectory
from policies.unavailable import IdentityProviderUnavailable
from signoff.models import Principal

MAX_CACHED = 10_000  # memberships remembered per source: beyond any directory file's people


class GroupSourceError(IdentityProviderUnavailable):
    """An identity provider could not say who is in a group; retry later, never guess."""


class GroupSource(Protocol):
    """An identity provider that owns the membership of some policy groups."""

    @property
    def name(self) -> str:
        """The directory file's section for this source, e.g. `okta`, for messages."""
        ...

    @property
    def groups(self) -> Mapping[str, str]:
        """The policy groups this source owns, each with the IdP group it maps to."""
        ...

    async def groups_of(self, principal: Principal) -> frozenset[str]:
        """The policy groups this source owns that the principal is in now."""
        ...

    async def members(self, group: str, candidates: Sequence[Principal]) -> list[Principal]:
        """The candidates the IdP lists in this (owned) policy group now."""
        ...

    def clear_cache(self) -> None:
        """Forget cached answers, e.g. after an access review."""
        ...


class MembershipCache:
    """IdP answers (a key -> a set of ids) trusted for `ttl` seconds; at most `maxsize` kept.

    Failures are never cached: the next lookup asks again.
    """

    def __init__(
        self,
        ttl: float,
        *,
        maxsize: int = MAX_CACHED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._answers: BoundedCache[str, frozenset[str]] = BoundedCache(
            maxsize, ttl=ttl, clock=clock
        )

    async def get(self, key: str, fetch: Callable[[], Awaitable[frozenset[str]]]) -> frozenset[str]:
        """The cached answer for `key` while it is fresh, else `fetch()`'s, then cached."""
        found, value = self._answers.lookup(key)
        if found and value is not None:
            return value
        answer = await fetch()
        # The expiry counts from the answer, so a slow IdP does not shorten the TTL to nothing.
        self._answers.put(key, answer)
        return answer

    def clear(self) -> None:
        """Forget every answer."""
        self._answers.clear()

    def __len__(self) -> int:
        return len(self._answers)


def owners(sources: Sequence[GroupSource], where: str = "<directory>") -> dict[str, GroupSource]:
    """Each owned policy group's source; a group mapped by two sources is an error naming it."""
    owned: dict[str, GroupSource] = {}
    for source in sources:
        for group in source.groups:
            other = owned.get(group)
            if other is not None:
                raise ValueError(
                    f"{where}: group {group!r} is mapped under both {other.name}.groups and "
                    f"{source.name}.groups; a policy group has one source of membership"
                )
            owned[group] = source
    return owned


class SourcedDirectory(StaticDirectory):
    """The file's directory, with membership of mapped groups asked of their group source."""

    def __init__(
        self,
        document: DirectoryFile,
        source: str = "<directory>",
        *,
        sources: Sequence[GroupSource],
    ) -> None:
        super().__init__(document, source)
        self.sources = list(sources)
        self._owners = owners(self.sources, source)

    async def _resolve(self, principal: Principal | None) -> Principal | None:
        """The principal with source-owned groups replaced by what the sources say now."""
        if principal is None:
            return None
        groups = [g for g in principal.groups if g not in self._owners]
        answers = await asyncio.gather(*(s.groups_of(principal) for s in self.sources))
        now_in = frozenset().union(*answers)
        groups += [g for g in self._owners if g in now_in]
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
        """Everyone in the group; for a mapped group, the file's people its source lists."""
        owner = self._owners.get(group)
        if owner is None:
            resolved = [await self._resolve(p) for p in self.principals()]
            return [p for p in resolved if p is not None and group in p.groups]
        listed = await owner.members(group, self.principals())
        found = await asyncio.gather(*(self._resolve(p) for p in listed))
        return [p for p in found if p is not None]

    def clear_cache(self) -> None:
        """Forget every source's cached memberships, e.g. after an access review."""
        for source in self.sources:
            source.clear_cache()
