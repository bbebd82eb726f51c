"""Approvers' WebAuthn credentials in Postgres: a table the gateway owns and creates itself.

One row per registered security key: whose it is, its public key (COSE) and its signature
counter. Only public material is stored; the private key never leaves the authenticator.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import asyncpg

# Any fixed number distinct from the ledger's migration lock.
SCHEMA_LOCK = 0x5160_0FF1
MAX_PER_PERSON = 20
SCHEMA = """
CREATE TABLE IF NOT EXISTS webauthn_credentials (
    credential_id text        PRIMARY KEY,
    principal     text        NOT NULL,
    public_key    bytea       NOT NULL,
    sign_count    bigint      NOT NULL DEFAULT 0 CHECK (sign_count >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);
CREATE INDEX IF NOT EXISTS webauthn_credentials_principal ON webauthn_credentials (principal);
"""


class TooManyCredentials(Exception):
    """The person already registered the most security keys allowed."""


@dataclass(frozen=True)
class Credential:
    """A registered security key."""

    credential_id: str  # base64url, as WebAuthn names it
    principal: str
    public_key: bytes
    sign_count: int
    created_at: datetime
    last_used_at: datetime | None


class CredentialStore:
    """WebAuthn credentials by person, in the gateway's database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._ready = False
        self._lock = asyncio.Lock()

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return
            async with self.pool.acquire() as conn, conn.transaction():
                # Two gateways starting together must not both create the table.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                await conn.execute(SCHEMA)
            self._ready = True

    async def of(self, principal: str) -> list[Credential]:
        """The person's credentials, oldest first."""
        await self._ensure()
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM webauthn_credentials WHERE principal = $1 ORDER BY created_at",
                principal,
            )
        return [Credential(**dict(row)) for row in rows]

    async def get(self, credential_id: str, principal: str) -> Credential | None:
        """The credential with this id, if it is this person's."""
        await self._ensure()
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM webauthn_credentials WHERE credential_id = $1 AND principal = $2",
                credential_id,
                principal,
            )
        return None if row is None else Credential(**dict(row))

    async def add(
        self, credential_id: str, principal: str, public_key: bytes, sign_count: int
    ) -> bool:
        """Register a credential; False when that credential id is already registered."""
        await self._ensure()
        async with self.pool.acquire() as conn, conn.transaction():
            count = await conn.fetchval(
                "SELECT count(*) FROM webauthn_credentials WHERE principal = $1", principal
            )
            if count >= MAX_PER_PERSON:
                raise TooManyCredentials(
                    f"{principal} already has {MAX_PER_PERSON} security keys registered"
                )
            status = await conn.execute(
                "INSERT INTO webauthn_credentials (credential_id, principal, public_key, "
                "sign_count) VALUES ($1, $2, $3, $4) ON CONFLICT (credential_id) DO NOTHING",
                credential_id,
                principal,
                public_key,
                sign_count,
            )
        return bool(status.endswith(" 1"))

    async def remove(self, credential_id: str, principal: str) -> bool:
        """Forget one of the person's credentials; False when they have none with that id."""
        await self._ensure()
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                "DELETE FROM webauthn_credentials WHERE credential_id = $1 AND principal = $2",
                credential_id,
                principal,
            )
        return bool(status.endswith(" 1"))

    async def used(self, credential_id: str, old_count: int, new_count: int) -> bool:
        """Record a use and its new counter; False if another use got there first."""
        await self._ensure()
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                "UPDATE webauthn_credentials SET sign_count = $3, last_used_at = now() "
                "WHERE credential_id = $1 AND sign_count = $2",
                credential_id,
                old_count,
                new_count,
            )
        return bool(status.endswith(" 1"))
