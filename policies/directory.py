"""Who is who: principals (people and agents), their tokens, and the groups they belong to.

`Directory` is the interface the gateway, workflow and channels use. `StaticDirectory` reads a
YAML file; a directory backed by Entra ID can implement the same Protocol and resolve group
membership when asked instead of up front. With an `oidc:` section, bearer tokens may also be
JWTs from trusted issuers: people by a claim (email or subject), agents by their workload
identity (issuer and subject), see `policies.oidc`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import timedelta
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator

from policies.model import FieldError
from policies.oidc import (
    OidcConfig,
    OidcIssuer,
    OidcVerifier,
    TokenRejected,
    VerifiedToken,
    Workload,
    policy_groups,
)
from signoff.models import Contract, Duration, Principal

_SHA256 = re.compile(r"[0-9a-f]{64}")

# Plaintext dev tokens (principal id -> token). Only valid against the example directory in
# policies/examples/directory.yaml, which stores just their SHA-256; never use them elsewhere.
DEV_TOKENS: dict[str, str] = {
    "alice@example.com": "dev-alice",
    "bob@example.com": "dev-bob",
    "carol@example.com": "dev-carol",
    "dave@example.com": "dev-dave",
    "erin@example.com": "dev-erin",
    "agent:etl-bot": "dev-etl-bot",
    "agent:audit": "dev-audit",
}


def hash_token(token: str) -> str:
    """SHA-256 hex of a bearer token, as stored in the directory."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Token(Contract):
    """A bearer token, stored only as its SHA-256."""

    sha256: str
    description: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SHA256.fullmatch(value):
            raise ValueError(
                "must be the 64 hex characters of the token's SHA-256 "
                "(e.g. printf %s TOKEN | sha256sum)"
            )
        return value


class DirectoryEntry(Principal):
    """A principal as the directory file writes it: the resolved identity plus its tokens."""

    tokens: list[Token] = Field(default_factory=list)
    workload: Workload | None = Field(
        default=None, description="an agent's workload identity: a token issuer and subject"
    )

    def principal(self) -> Principal:
        """The identity without its tokens."""
        return Principal.model_validate(self.model_dump(exclude={"tokens", "workload"}))


# A bare address: no display name, nothing a header could be split on.
EmailAddress = Annotated[
    str, Field(pattern=r"^[^@\s<>,;:\"()\[\]]+@[^@\s<>,;:\"()\[\]]+$", max_length=254)
]


class GroupTargets(Contract):
    """Where to reach a group: its Slack channel, Teams conversation and Slack mention."""

    slack_channel: str | None = None
    teams_conversation: str | None = None
    slack_mention: str | None = Field(default=None, description="e.g. <!subteam^S123>")
    email: list[EmailAddress] = Field(
        default_factory=list, max_length=100, description="addresses the email channel mails"
    )


class EntraConfig(Contract):
    """Resolve membership of some policy groups from Entra ID (Microsoft Graph) when asked.

    The app registration needs the Graph application permission GroupMember.Read.All (and
    User.Read.All to find people the file does not list, for Teams and Slack clicks); its
    secret is read from the environment variable named here, never from this file.
    """

    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret_env: str = Field(default="SIGNOFF_ENTRA_CLIENT_SECRET", min_length=1)
    authority_url: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com"
    cache_ttl: Duration = Field(default=timedelta(minutes=5))
    groups: dict[str, str] = Field(
        default_factory=dict, description="policy group -> Entra group object id"
    )


OKTA_SCOPES = ["okta.groups.read", "okta.users.read"]


class OktaConfig(Contract):
    """Resolve membership of some policy groups from Okta (the Groups API) when asked.

    Authenticate with an API token (`api_token_env`, sent as `SSWS`) or an API service app
    (`client_id` and a private key for private-key JWT, from `private_key_env` or
    `private_key_file`). Secrets come from the environment or that file, never from this one.
    """

    org_url: str = Field(min_length=1, description="e.g. https://example.okta.com")
    api_token_env: str | None = Field(default=None, min_length=1)
    client_id: str | None = Field(default=None, min_length=1)
    private_key_env: str | None = Field(default=None, min_length=1)
    private_key_file: str | None = Field(default=None, min_length=1)
    key_id: str | None = Field(default=None, min_length=1, description="the key's kid in Okta")
    scopes: list[str] = Field(default_factory=lambda: list(OKTA_SCOPES), min_length=1)
    membership_ttl: Duration = Field(default=timedelta(seconds=60))
    timeout: Duration = Field(default=timedelta(seconds=5))
    groups: dict[str, str] = Field(
        default_factory=dict, description="policy group -> Okta group id (00g...) or name"
    )

    @field_validator("org_url")
    @classmethod
    def _https_origin(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an https URL, e.g. https://example.okta.com")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must be the org's origin only, e.g. https://example.okta.com")
        if parts.path not in ("", "/"):
            raise ValueError("must be the org's origin only, without a path")
        return f"https://{parts.netloc}"

    @field_validator("membership_ttl")
    @classmethod
    def _ttl(cls, value: timedelta) -> timedelta:
        # A long TTL lets someone removed in Okta keep approving; cap it at a day.
        if value > timedelta(days=1):
            raise ValueError("at most 1d (removals in Okta take effect after this long)")
        return value

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> OktaConfig:
        keys = [k for k in (self.private_key_env, self.private_key_file) if k is not None]
        if self.api_token_env is not None:
            if self.client_id is not None or keys:
                raise FieldError(
                    "api_token_env",
                    "use either an API token or a service app (client_id), not both",
                )
            return self
        if self.client_id is None:
            raise FieldError(
                "api_token_env",
                "required: an API token's environment variable, or a service app's client_id",
            )
        if len(keys) != 1:
            raise FieldError(
                "private_key_env",
                "a service app needs exactly one of private_key_env or private_key_file",
            )
        return self


class DirectoryFile(Contract):
    """The directory YAML file: principals and groups."""

    principals: list[DirectoryEntry] = Field(default_factory=list)
    groups: dict[str, GroupTargets] = Field(default_factory=dict)
    entra: EntraConfig | None = None
    okta: OktaConfig | None = None
    oidc: OidcConfig | None = None

    @field_validator("groups", mode="before")
    @classmethod
    def _empty_groups(cls, value: Any) -> Any:
        # `auditors:` with nothing after it reads as null; it means "no targets".
        if isinstance(value, dict):
            return {name: {} if targets is None else targets for name, targets in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DirectoryFile:
        by_id = {}
        seen: dict[str, dict[str, int]] = {
            "email": {},
            "slack_user_id": {},
            "teams_aad_object_id": {},
        }
        hashes: dict[str, int] = {}
        for index, entry in enumerate(self.principals):
            if entry.id in by_id:
                raise FieldError(f"principals.{index}.id", "duplicate principal id")
            by_id[entry.id] = entry
            # Channels resolve approvers by these ids, so two principals must never share one.
            for field, values in seen.items():
                value = getattr(entry, field)
                if value is None:
                    continue
                key = value.lower() if field == "email" else value
                if key in values:
                    other = self.principals[values[key]].id
                    raise FieldError(f"principals.{index}.{field}", f"already used by {other!r}")
                values[key] = index
            for t, token in enumerate(entry.tokens):
                if token.sha256 in hashes:
                    other = self.principals[hashes[token.sha256]].id
                    raise FieldError(
                        f"principals.{index}.tokens.{t}.sha256", f"already used by {other!r}"
                    )
                hashes[token.sha256] = index
            for g, group in enumerate(entry.groups):
                if group not in self.groups:
                    raise FieldError(
                        f"principals.{index}.groups.{g}",
                        f"unknown group {group!r} (add it under 'groups')",
                    )
        for group in self.entra.groups if self.entra else {}:
            if group not in self.groups:
                raise FieldError(
                    f"entra.groups.{group}", f"unknown group {group!r} (add it under 'groups')"
                )
        for group in self.okta.groups if self.okta else {}:
            if group not in self.groups:
                raise FieldError(
                    f"okta.groups.{group}", f"unknown group {group!r} (add it under 'groups')"
                )
            if self.entra is not None and group in self.entra.groups:
                raise FieldError(
                    f"okta.groups.{group}",
                    f"group {group!r} is mapped under entra.groups too; "
                    "a policy group has one source of membership",
                )
        for index, entry in enumerate(self.principals):
            for a, other_id in enumerate(entry.acts_for):
                if other_id not in by_id:
                    raise FieldError(
                        f"principals.{index}.acts_for.{a}", f"unknown principal {other_id!r}"
                    )
                if by_id[other_id].kind == "agent":
                    # The self-approval rule knows the requester's owner, not a named agent's:
                    # acting for another agent would let that agent's owner approve.
                    raise FieldError(
                        f"principals.{index}.acts_for.{a}",
                        f"{other_id!r} is an agent; acts_for names only humans",
                    )
            if entry.kind == "human" and entry.owner is not None:
                raise FieldError(f"principals.{index}.owner", "only agents have an owner")
            if entry.kind == "agent":
                if entry.owner is None:
                    raise FieldError(
                        f"principals.{index}.owner", "required for agents (a human principal)"
                    )
                owner = by_id.get(entry.owner)
                if owner is None:
                    raise FieldError(
                        f"principals.{index}.owner", f"unknown principal {entry.owner!r}"
                    )
                if owner.kind != "human":
                    raise FieldError(
                        f"principals.{index}.owner", f"{entry.owner!r} is not a human principal"
                    )
        self._check_oidc()
        return self

    def _check_oidc(self) -> None:
        """Issuers are distinct, mapped groups exist, workloads name agents of workload issuers."""
        issuers = self.oidc.issuers if self.oidc else []
        seen: set[tuple[str, str]] = set()
        for index, issuer in enumerate(issuers):
            if (issuer.issuer, issuer.audience) in seen:
                raise FieldError(
                    f"oidc.issuers.{index}", "the same issuer and audience are listed twice"
                )
            seen.add((issuer.issuer, issuer.audience))
        for group in self.oidc.groups if self.oidc else {}:
            if group not in self.groups:
                raise FieldError(
                    f"oidc.groups.{group}", f"unknown group {group!r} (add it under 'groups')"
                )
        workload_issuers = {i.issuer for i in issuers if i.kind == "workload"}
        subjects: dict[tuple[str, str], str] = {}
        for index, entry in enumerate(self.principals):
            if entry.workload is None:
                continue
            where = f"principals.{index}.workload"
            if entry.kind != "agent":
                raise FieldError(where, "only agents have a workload identity")
            if entry.workload.issuer not in workload_issuers:
                raise FieldError(
                    f"{where}.issuer",
                    f"{entry.workload.issuer!r} is not an oidc issuer of kind workload",
                )
            key = (entry.workload.issuer, entry.workload.subject)
            if key in subjects:
                raise FieldError(f"{where}.subject", f"already used by {subjects[key]!r}")
            subjects[key] = entry.id

    @staticmethod
    def models() -> list[type[BaseModel]]:
        """The models of this file, for suggesting the right spelling of an unknown key."""
        return [
            DirectoryFile,
            DirectoryEntry,
            Token,
            GroupTargets,
            EntraConfig,
            OktaConfig,
            OidcConfig,
            OidcIssuer,
            Workload,
        ]


def may_act_for(principal: Principal) -> set[str]:
    """Whom the principal may name as `on_behalf_of`: itself, an agent's owner, its acts_for."""
    allowed = {principal.id, *principal.acts_for}
    if principal.owner is not None:
        allowed.add(principal.owner)
    return allowed


def on_behalf_problem(requester: Principal, on_behalf_of: str | None) -> str | None:
    """Why the requester may not ask on behalf of `on_behalf_of`; None when it may.

    The same answer whether or not `on_behalf_of` exists, so it is no directory oracle.
    """
    if on_behalf_of is None:
        return None
    allowed = may_act_for(requester)
    if on_behalf_of in allowed:
        return None
    others = sorted(allowed - {requester.id})
    return (
        f"on_behalf_of {on_behalf_of!r} is not a principal {requester.id} may act for "
        f"(allowed: {', '.join(others) or 'nobody else'}); declare it under the requester's "
        f"acts_for in the directory"
    )


async def vouched_groups(directory: Directory, principal: Principal) -> list[str] | None:
    """The groups the gateway signs into a decision: for a person the file does not list.

    Workers look approvers up in their own directory; for a person known only to an identity
    provider they find nobody, so the gateway vouches (in the signed decision) for the groups
    it verified. Anyone the file lists is judged by the file (and its group sources) alone.
    """
    if principal.kind != "human" or await directory.principal(principal.id) is not None:
        return None
    return list(principal.groups)


class Authenticated(Contract):
    """Who a bearer token belongs to, and how the gateway knows."""

    principal: Principal
    method: Literal["token", "oidc"] = Field(
        description="token: a static token from the directory; oidc: a JWT from an issuer"
    )
    issuer: str | None = None


class Directory(Protocol):
    """Look up principals and groups; lookups are async so a remote directory can back it."""

    async def principal(self, id: str) -> Principal | None:
        """The principal with this id."""
        ...

    async def by_token(self, token: str) -> Principal | None:
        """The principal holding this bearer token."""
        ...

    async def authenticate(self, token: str) -> Authenticated | None:
        """Whose bearer token this is (a static token or a trusted JWT); None for nobody's.

        Raises `policies.oidc.TokenRejected` for a JWT that does not verify, and
        `IdentityProviderUnavailable` when its issuer's keys cannot be fetched.
        """
        ...

    async def by_slack_user(self, slack_user_id: str) -> Principal | None:
        """The principal with this Slack user id."""
        ...

    async def by_email(self, email: str) -> Principal | None:
        """The principal with this email address (case-insensitive)."""
        ...

    async def by_aad_object_id(self, oid: str) -> Principal | None:
        """The principal with this Entra ID (AAD) object id."""
        ...

    async def person_by_email(self, email: str) -> Principal | None:
        """Who a chat user with this verified email is: the file's, else an IdP's person.

        Raises `IdentityProviderUnavailable` when an identity provider cannot say.
        """
        ...

    async def person_by_aad_object_id(self, oid: str) -> Principal | None:
        """Who the Teams user with this Entra object id is: the file's, else Entra's person."""
        ...

    async def members(self, group: str) -> list[Principal]:
        """Everyone in the group, agents included (they can never approve; callers check)."""
        ...

    def group(self, name: str) -> GroupTargets | None:
        """Where to reach the group, or None if there is no such group."""
        ...

    def groups(self) -> dict[str, GroupTargets]:
        """Every group by name."""
        ...


class StaticDirectory:
    """A directory read from a YAML file; see `policies.loader.load_directory`."""

    def __init__(self, document: DirectoryFile, source: str = "<directory>") -> None:
        self.source = source
        self._entries = list(document.principals)
        self._principals = {e.id: e.principal() for e in self._entries}
        self._groups = dict(document.groups)
        self._hashes = [(t.sha256, e.id) for e in self._entries for t in e.tokens]
        self.entra = document.entra
        self.oidc = document.oidc
        self.verifier = None if document.oidc is None else OidcVerifier(document.oidc)
        self._workloads = {
            (e.workload.issuer, e.workload.subject): e.id for e in self._entries if e.workload
        }

    def principals(self) -> list[Principal]:
        """Every principal, in file order."""
        return [self._principals[e.id].model_copy(deep=True) for e in self._entries]

    def _find(self, field: str, value: str) -> Principal | None:
        for entry in self._principals.values():
            if getattr(entry, field) == value:
                return entry.model_copy(deep=True)
        return None

    async def principal(self, id: str) -> Principal | None:
        """The principal with this id."""
        found = self._principals.get(id)
        return None if found is None else found.model_copy(deep=True)

    async def by_token(self, token: str) -> Principal | None:
        """The principal holding this bearer token."""
        digest = hash_token(token)
        match = None
        # Compare against every stored hash without stopping early, so timing says little.
        for stored, principal_id in self._hashes:
            if hmac.compare_digest(stored, digest):
                match = principal_id
        return None if match is None else await self.principal(match)

    async def authenticate(self, token: str) -> Authenticated | None:
        """Whose bearer token this is: a static token, else a JWT from a trusted issuer."""
        principal = await self.by_token(token)
        if principal is not None:
            return Authenticated(principal=principal, method="token")
        if self.verifier is None or not OidcVerifier.looks_like_jwt(token):
            return None
        verified = await self.verifier.verify(token)
        principal = await self._oidc_principal(verified)
        return Authenticated(principal=principal, method="oidc", issuer=verified.issuer.issuer)

    async def _oidc_principal(self, verified: VerifiedToken) -> Principal:
        """The principal a verified token names: a mapped agent, or a person."""
        entry = verified.issuer
        if entry.kind == "workload":
            agent = self._workloads.get((entry.issuer, verified.subject))
            found = None if agent is None else await self.principal(agent)
            if found is None:
                raise TokenRejected(
                    f"workload {verified.subject[:200]!r} of {entry.issuer} is not mapped to an "
                    "agent (add `workload: {issuer, subject}` to the agent in the directory)"
                )
            return found
        claim = verified.claims.get(entry.principal_claim)
        if not isinstance(claim, str) or not claim.strip():
            raise TokenRejected(f"token lacks the {entry.principal_claim!r} claim naming a person")
        if entry.principal_claim == "email" and verified.claims.get("email_verified") is False:
            raise TokenRejected("token's email is not verified by the identity provider")
        person_id = claim.strip().lower() if entry.principal_claim == "email" else claim.strip()
        listed = self._principals.get(person_id) or (
            await self.by_email(person_id) if entry.principal_claim == "email" else None
        )
        if listed is not None:
            if listed.kind != "human":
                # A person's token naming an agent would let it act as (or for) that agent.
                raise TokenRejected("a person's token cannot name an agent principal")
            resolved = await self.principal(listed.id)
            assert resolved is not None, "listed principals resolve"
            return resolved
        email = verified.claims.get("email")
        return Principal(
            id=person_id,
            kind="human",
            groups=policy_groups(
                verified.claims.get(entry.groups_claim),
                self._groups,
                self.oidc.groups if self.oidc else {},
            ),
            email=email if isinstance(email, str) else None,
        )

    async def by_slack_user(self, slack_user_id: str) -> Principal | None:
        """The principal with this Slack user id."""
        return self._find("slack_user_id", slack_user_id)

    async def by_email(self, email: str) -> Principal | None:
        """The principal with this email address (case-insensitive)."""
        wanted = email.lower()
        for entry in self._principals.values():
            if entry.email is not None and entry.email.lower() == wanted:
                return entry.model_copy(deep=True)
        return None

    async def by_aad_object_id(self, oid: str) -> Principal | None:
        """The principal with this Entra ID (AAD) object id."""
        return self._find("teams_aad_object_id", oid)

    async def person_by_email(self, email: str) -> Principal | None:
        """The file's principal with this email, or whose id it is (no IdP to ask here)."""
        wanted = email.strip().lower()
        return await self.by_email(wanted) or await self.principal(wanted)

    async def person_by_aad_object_id(self, oid: str) -> Principal | None:
        """The file's principal with this Entra object id (no IdP to ask here)."""
        return await self.by_aad_object_id(oid)

    async def members(self, group: str) -> list[Principal]:
        """Everyone in the group, agents included (they can never approve; callers check)."""
        return [p.model_copy(deep=True) for p in self._principals.values() if group in p.groups]

    def group(self, name: str) -> GroupTargets | None:
        """Where to reach the group, or None if there is no such group."""
        found = self._groups.get(name)
        return None if found is None else found.model_copy()

    def groups(self) -> dict[str, GroupTargets]:
        """Every group by name."""
        return {name: targets.model_copy() for name, targets in self._groups.items()}
