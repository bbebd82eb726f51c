"""Versioned schema migrations of the audit ledger, applied in order and recorded once each.

A migration is never edited once released: add a new one instead, because the versions
recorded in `schema_migrations` say which SQL a database has already run.
"""

from __future__ import annotations

from typing import NamedTuple

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn = asyncpg.Connection | PoolConnectionProxy

WORKER_ROLE = "signoff_worker"  # created by migration 1

# Any fixed number: it only has to differ from other advisory locks taken on the same database.
MIGRATION_LOCK = 0x5160_0FF0


class Migration(NamedTuple):
    """One schema change: its version, a short name and the SQL that applies it."""

    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "ledger",
        """
CREATE TABLE audit_events (
    id          bigserial PRIMARY KEY,
    chain_seq   bigint      NOT NULL UNIQUE CHECK (chain_seq >= 0),
    action_id   text        NOT NULL,
    seq         integer     NOT NULL CHECK (seq >= 0),
    kind        text        NOT NULL,
    digest      text        NOT NULL,
    actor       text,
    channel     text,
    at          timestamptz NOT NULL,
    payload     jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    prev_hash   text        NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash        text        NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$'),
    UNIQUE (action_id, seq)
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_kind_at ON audit_events (kind, at);

-- Grants keep the worker role out; the trigger also stops owners and superusers, so that
-- changing history takes a deliberate, visible ALTER TABLE ... DISABLE TRIGGER first.
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'signoff_worker') THEN
        CREATE ROLE signoff_worker NOLOGIN;
    END IF;
END
$$;
REVOKE ALL ON audit_events FROM PUBLIC;
GRANT SELECT, INSERT ON audit_events TO signoff_worker;
GRANT USAGE ON SEQUENCE audit_events_id_seq TO signoff_worker;
GRANT SELECT ON schema_migrations TO signoff_worker;
""",
    ),
    Migration(
        2,
        "teams_conversations",
        """
-- Where the Teams bot was installed: the gateway writes a row when Teams tells it, the worker
-- reads the serviceUrl to post a proactive message. Both run as signoff_worker.
CREATE TABLE teams_conversations (
    conversation_id   text        PRIMARY KEY,
    service_url       text        NOT NULL,
    tenant_id         text,
    conversation_type text,
    name              text,
    team_id           text,
    bot_id            text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON teams_conversations FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON teams_conversations TO signoff_worker;
""",
    ),
    Migration(
        3,
        "run_ledger",
        """
-- Each run of an action is recorded as that run's: a second run under the same workflow id
-- (a reset, or an idempotency key reused after retention) gets rows of its own. Rows from
-- before keep run_id '' and their hashes (the hash covers run_id only when it is set).
-- ADD COLUMN with a constant default rewrites no row, so the append-only trigger never fires.
ALTER TABLE audit_events ADD COLUMN run_id text NOT NULL DEFAULT '';
ALTER TABLE audit_events DROP CONSTRAINT audit_events_action_id_seq_key;
ALTER TABLE audit_events
    ADD CONSTRAINT audit_events_action_run_seq_key UNIQUE (action_id, run_id, seq);

-- The durable record that an action's executor ran: one row per action, ever. A reset or a
-- second run finds the first run's claim and refuses instead of executing again.
CREATE TABLE executions (
    action_id  text        PRIMARY KEY,
    run_id     text        NOT NULL,
    digest     text        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION executions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'executions is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER executions_no_update_delete
    BEFORE UPDATE OR DELETE ON executions
    FOR EACH ROW EXECUTE FUNCTION executions_append_only();
REVOKE ALL ON executions FROM PUBLIC;
GRANT SELECT, INSERT ON executions TO signoff_worker;
""",
    ),
)


async def migrate(conn: Conn) -> list[int]:
    """Apply the migrations this database has not run yet; return the versions applied."""
    applied: list[int] = []
    async with conn.transaction():
        # Two processes starting together (worker and `signoff dev`) must not both migrate.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.version)
    return applied


async def current_version(conn: Conn) -> int:
    """The highest migration version recorded, or 0 for a database never migrated."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))
