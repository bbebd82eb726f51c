"""Where the bot can reach each Teams conversation, kept in Postgres.

The gateway learns conversation references (the bot is installed somewhere) and the worker
needs them (to post a card there); the two run as separate processes (pods) that share the
ledger's database but no file system, so the references live in its `teams_conversations`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
from pydantic import BaseModel


class ConversationReference(BaseModel):
    """Where the bot can reach one conversation: its id and the serviceUrl Teams gave for it."""

    conversation_id: str
    service_url: str
    tenant_id: str | None = None
    conversation_type: str | None = None
    name: str | None = None
    team_id: str | None = None
    bot_id: str | None = None
    updated_at: datetime | None = None


class ConversationStore:
    """Conversation references in Postgres; a pool it opens itself is opened on first use."""

    def __init__(
        self,
        pool: asyncpg.Pool | None = None,
        *,
        connect: Callable[[], Awaitable[asyncpg.Pool]] | None = None,
    ) -> None:
        if pool is None and connect is None:
            raise ValueError("give a pool or a way to open one")
        self._pool = pool
        self._connect = connect
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        """The connection pool, opened on first use."""
        async with self._lock:
            if self._pool is None:
                assert self._connect is not None
                self._pool = await self._connect()
            return self._pool

    async def save(self, ref: ConversationReference) -> None:
        """Insert or refresh one conversation reference."""
        pool = await self.pool()
        await pool.execute(
            """
            INSERT INTO teams_conversations
                (conversation_id, service_url, tenant_id, conversation_type, name, team_id,
                 bot_id, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, now())
            ON CONFLICT (conversation_id) DO UPDATE SET
                service_url = excluded.service_url,
                tenant_id = coalesce(excluded.tenant_id, teams_conversations.tenant_id),
                conversation_type = coalesce(
                    excluded.conversation_type, teams_conversations.conversation_type),
                name = coalesce(excluded.name, teams_conversations.name),
                team_id = coalesce(excluded.team_id, teams_conversations.team_id),
                bot_id = coalesce(excluded.bot_id, teams_conversations.bot_id),
                updated_at = now()
            """,
            ref.conversation_id,
            ref.service_url,
            ref.tenant_id,
            ref.conversation_type,
            ref.name,
            ref.team_id,
            ref.bot_id,
        )

    async def get(self, conversation_id: str) -> ConversationReference | None:
        """The stored reference of a conversation, if the bot was installed there."""
        pool = await self.pool()
        row = await pool.fetchrow(
            "SELECT * FROM teams_conversations WHERE conversation_id = $1", conversation_id
        )
        return None if row is None else ConversationReference(**dict(row))

    async def remove(self, conversation_id: str) -> None:
        """Forget a conversation the bot was removed from."""
        pool = await self.pool()
        await pool.execute(
            "DELETE FROM teams_conversations WHERE conversation_id = $1", conversation_id
        )

    async def all(self) -> list[ConversationReference]:
        """Every stored reference, for `signoff` operators binding groups to conversations."""
        pool = await self.pool()
        rows = await pool.fetch("SELECT * FROM teams_conversations ORDER BY conversation_id")
        return [ConversationReference(**dict(r)) for r in rows]

    async def close(self) -> None:
        """Close the pool if this store opened it."""
        if self._pool is not None and self._connect is not None:
            await self._pool.close()
            self._pool = None
