"""Group sources: identity providers that say who is in some policy groups, asked when needed.

The directory file can hand membership of some policy groups to an identity provider (Entra
ID, Okta). Each provider is a `GroupSource` that owns the policy groups mapped to it, and no
group has two sources. `SourcedDirectory` is the file's directory with those groups'
membership replaced by what their source says now. Sources cache answers for a short time in a
`MembershipCache` (bounded), so someone removed from a group in the IdP loses it within that
time. A source that cannot answer raises `GroupSourceError`: the caller retries (a decision
waits), it never guesses.

Sources also know people the file does not list: a chat click by a Slack user (found by the
email Slack verified) or a Teams user (by Entra object id) becomes the IdP's person, named by
their email (the id an OIDC token with `principal_claim: email` gives them), with the policy
groups the sources say they are in now (`SourcedDirectory.person_by_email`,
`person_by_aad_object_id`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from policies.cache import BoundedCache
from policies.directory import DirectoryFile, StaticDirectory
from policies.oidc import VerifiedToken
from policies.unavailable import IdentityProviderUnavailable
from signoff.models import Principal

log = logging.getLogger("signoff.groups")

# What a person is named by: an email address as IdPs and Slack store it, nothing stranger.
EMAIL = re.compile(r"[a-z0-9._%+'-]{1,64}@[a-z0-9.-]{1,189}\.[a-z]{2,63}")
MAX_CACHED = 10_000  # memberships remembered per source: beyond any directory file's people
V = TypeVar("V")


class GroupSourceError(IdentityProviderUnavailable):
    """An identity provider could not say who is in a group; retry later, never guess."""


@dataclass(frozen=True)
class IdpPerson:
    """A person as an identity provider knows them: their email, Entra object id, and state."""

    source: str
    email: str | None
    aad_object_id: str | None = None
    active: bool = True  # False: the IdP has them, but disabled (suspended, deprovisioned)


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

    @property
    def resolves_object_ids(self) -> bool:
        """Whether `person_by_object_id` can answer (Entra object ids are Entra's alone)."""
        ...

    async def person_by_email(self, email: str) -> IdpPerson | None:
        """The IdP's person with this email (their login); None when it has nobody."""
        ...

    async def person_by_object_id(self, oid: str) -> IdpPerson | None:
        """The IdP's person with this Entra object id; None when it has nobody."""
        ...


class TtlAnswers(Generic[V]):
    """IdP answers (a key -> a value, None too) trusted for `ttl` seconds; at most `maxsize` kept.

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
        self._answers: BoundedCache[str, V] = BoundedCache(maxsize, ttl=ttl, clock=clock)

    async def get(self, key: str, fetch: Callable[[], Awaitable[V]]) -> V:
        """The cached answer for `key` while it is fresh, else `fetch()`'s, then cached."""
        found, value = self._answers.lookup(key)
        if found:
            return value  # type: ignore[return-value]  # stored by put(), so a V
        answer = await fetch()
        self._answers.put(key, answer)
        return answer

    def clear(self) -> None:
        """Forget every answer."""
        self._answers.clear()


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


async def _every(lookups: Iterable[Awaitable[IdpPerson | None]]) -> list[IdpPerson | None]:
    """Every source's answer; all finish before the first failure is raised (none left behind)."""
    answers = await asyncio.gather(*lookups, return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return [a for a in answers if not isinstance(a, BaseException)]


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
        people = [i for i in (document.oidc.issuers if document.oidc else []) if i.kind == "human"]
        # A chat click names an IdP person by email; a token naming them by another claim
        # would make one person two approvers (or let them approve their own request).
        self._people_by_email = all(i.principal_claim == "email" for i in people)
        unnamed = [
            e.id
            for e in document.principals
            if e.kind == "human" and not e.email and not EMAIL.fullmatch(e.id.lower())
        ]
        if self.sources and unnamed:
            # Signed in through the IdP (or clicking in chat) they would be a second person.
            log.warning(
                "%s: %s have no email; the identity provider names people by email, so give "
                "them one (or they are someone else when they sign in there)",
                source,
                ", ".join(unnamed[:10]),
            )
        if self.sources and not self._people_by_email:
            log.warning(
                "%s: chat clicks by people the file does not list are not counted: an oidc "
                "issuer names people by another claim than email (set principal_claim: email)",
                source,
            )

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

    # --- people the file does not list ----------------------------------------------------

    async def _oidc_principal(self, verified: VerifiedToken) -> Principal:
        """A token's person; one the file does not list gets source-owned groups from the source.

        Their token's groups claim still grants the other policy groups, but a group mapped to
        Okta or Entra is that source's alone, asked now (so removal counts after the TTL, not
        when the token expires). They are looked up by the email the token names them by.
        """
        principal = await super()._oidc_principal(verified)
        if principal.kind != "human" or not self._owners or principal.id in self._principals:
            return principal
        email = principal.id if verified.issuer.principal_claim == "email" else None
        groups = [g for g in principal.groups if g not in self._owners]
        if email is None or not EMAIL.fullmatch(email):
            # Named by another claim: no verified email to ask the sources by, so none of theirs.
            return principal.model_copy(update={"groups": groups})
        entra = [s for s in self.sources if s.resolves_object_ids]
        found = await _every(s.person_by_email(email) for s in entra)
        if any(p is not None and not p.active for p in found):
            return principal.model_copy(update={"groups": groups})
        oid = next((p.aad_object_id for p in found if p is not None and p.aad_object_id), None)
        resolved = await self._resolve(
            principal.model_copy(update={"email": email, "teams_aad_object_id": oid})
        )
        assert resolved is not None, "a principal resolves to a principal"
        return resolved

    async def person_by_email(self, email: str) -> Principal | None:
        """The person a verified email names: the file's, else the identity providers' (now)."""
        listed = await super().person_by_email(email)
        if listed is not None or not self.sources or not self._people_by_email:
            return listed
        wanted = email.strip().lower()
        if not EMAIL.fullmatch(wanted):
            return None
        answers = await _every(s.person_by_email(wanted) for s in self.sources)
        return await self._idp_person(wanted, answers, None)

    async def person_by_aad_object_id(self, oid: str) -> Principal | None:
        """The person with this Entra object id: the file's, else Entra's (named by email)."""
        listed = await super().person_by_aad_object_id(oid)
        if listed is not None or not self._people_by_email:
            return listed
        resolvers = [s for s in self.sources if s.resolves_object_ids]
        if not resolvers:
            return None
        found = [await s.person_by_object_id(oid) for s in resolvers]
        if any(p is not None and not p.active for p in found):
            # A disabled account names nobody, not even a person the file lists by its email.
            log.info("Entra user %s is disabled: not counted", oid[:80])
            return None
        email = next((p.email for p in found if p is not None and p.email), None)
        if email is None or not EMAIL.fullmatch(email.strip().lower()):
            if any(p is not None for p in found):
                log.info("Entra user %s has no usable email address to name them by", oid[:80])
            return None
        wanted = email.strip().lower()
        listed = await super().person_by_email(wanted)
        if listed is not None:
            # The file links this email to another Teams account: which one is right is the
            # file's call, and it did not name this one.
            if listed.teams_aad_object_id not in (None, oid):
                log.warning(
                    "Entra user %s has the email of %s, listed with another object id",
                    oid[:80],
                    listed.id,
                )
                return None
            return listed
        others = [s for s in self.sources if not s.resolves_object_ids]
        more = await _every(s.person_by_email(wanted) for s in others)
        return await self._idp_person(wanted, [*found, *more], oid)

    async def _idp_person(
        self, email: str, answers: list[IdpPerson | None], oid: str | None
    ) -> Principal | None:
        """A person only the IdPs know, with the groups the sources give them now; or nobody."""
        known = [a for a in answers if a is not None]
        if not known:
            return None
        disabled = sorted(a.source for a in known if not a.active)
        if disabled:
            # Disabled anywhere is nobody: offboarding in one IdP must be enough.
            log.info("%s is disabled in %s: not counted", email, ", ".join(disabled))
            return None
        oid = oid or next((a.aad_object_id for a in known if a.aad_object_id), None)
        if oid is not None and await super().by_aad_object_id(oid) is not None:
            log.warning(
                "%s: Entra object id %s is listed in the file as someone else", email, oid[:80]
            )
            return None
        person = Principal(id=email, kind="human", email=email, teams_aad_object_id=oid)
        return await self._resolve(person)
