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
    Migration(
        4,
        "partitioned_ledger",
        """
-- Independent chains: each row belongs to a partition (chain) and its chain_seq counts within
-- it. Rows from before keep part 0, which continues the single global chain they formed.
-- ADD COLUMN with a constant default (or none) rewrites no row, so the trigger never fires.
ALTER TABLE audit_events ADD COLUMN part integer NOT NULL DEFAULT 0;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_part_check CHECK (part >= 0) NOT VALID;
-- SHA-256 of what a retry of the event must match (chain.identity_hash); NULL on older rows.
ALTER TABLE audit_events ADD COLUMN identity text;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_chain_seq_key;
ALTER TABLE audit_events
    ADD CONSTRAINT audit_events_part_chain_seq_key UNIQUE (part, chain_seq);

-- Append a batch of one partition's events in one statement: the partition's lock is held
-- only while Postgres runs this, never across a network round trip. The caller sends each
-- row's canonical JSON cut where chain_seq and prev_hash go (chain.hash_template), so the
-- hash is exactly chain.row_hash. Events already there are skipped when their identity
-- matches and refused (SQLSTATE SO001) when not; rows from before identities were stored
-- are returned unwritten for the caller to compare, then sent again with p_checked.
CREATE FUNCTION audit_append(
    p_part integer, p_checked boolean,
    p_action text[], p_run text[], p_seq integer[], p_kind text[], p_digest text[],
    p_actor text[], p_channel text[], p_at timestamptz[], p_payload jsonb[],
    p_identity text[], p_head text[], p_middle text[], p_tail text[],
    OUT written integer, OUT unchecked integer[]
) LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(cardinality(p_action), 0);
    skip boolean[] := array_fill(false, ARRAY[n]);
    found_identity text;
    found_seq bigint;
    found_kind text;
    head_seq bigint;
    head_hash text;
    new_hash text;
BEGIN
    written := 0;
    unchecked := '{}';
    IF p_part = 0 THEN
        -- The lock appenders of the single chain took, so none can run beside this one.
        PERFORM pg_advisory_xact_lock(1365250033);
    ELSE
        PERFORM pg_advisory_xact_lock(1365250033, p_part);
    END IF;
    FOR i IN 1 .. n LOOP
        SELECT e.identity, e.chain_seq, e.kind INTO found_identity, found_seq, found_kind
        FROM audit_events e
        WHERE e.action_id = p_action[i] AND e.run_id = p_run[i] AND e.seq = p_seq[i];
        IF FOUND THEN
            skip[i] := true;
            IF found_identity IS NULL THEN
                IF NOT p_checked THEN
                    unchecked := unchecked || i;
                END IF;
            ELSIF found_identity <> p_identity[i] THEN
                RAISE EXCEPTION 'ledger already holds a different event % for action % run % '
                    '(chain_seq %, %): refusing to overwrite it with %',
                    p_seq[i], p_action[i], CASE WHEN p_run[i] = '' THEN '(no run recorded)'
                    ELSE p_run[i] END, found_seq, found_kind, p_kind[i]
                    USING ERRCODE = 'SO001';
            END IF;
        END IF;
    END LOOP;
    IF cardinality(unchecked) > 0 THEN
        RETURN;
    END IF;
    SELECT e.chain_seq, e.hash INTO head_seq, head_hash FROM audit_events e
    WHERE e.part = p_part ORDER BY e.chain_seq DESC LIMIT 1;
    IF NOT FOUND THEN
        head_seq := -1;
        head_hash := repeat('0', 64);
    END IF;
    FOR i IN 1 .. n LOOP
        CONTINUE WHEN skip[i];
        head_seq := head_seq + 1;
        new_hash := encode(sha256(convert_to(
            p_head[i] || head_seq::text || p_middle[i] || head_hash || p_tail[i], 'UTF8')), 'hex');
        INSERT INTO audit_events
            (part, chain_seq, action_id, run_id, seq, kind, digest, actor, channel, at, payload,
             prev_hash, hash, identity)
        VALUES (p_part, head_seq, p_action[i], p_run[i], p_seq[i], p_kind[i], p_digest[i],
                p_actor[i], p_channel[i], p_at[i], p_payload[i], head_hash, new_hash,
                p_identity[i]);
        head_hash := new_hash;
        written := written + 1;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION audit_append FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_append TO signoff_worker;

-- Signed checkpoints over every partition's head, chained to each other like rows are: a
-- kept checkpoint hash proves every row and checkpoint before it, across all partitions.
CREATE TABLE ledger_checkpoints (
    seq         bigint      PRIMARY KEY CHECK (seq >= 0),
    at          timestamptz NOT NULL,
    heads       jsonb       NOT NULL,
    prev_hash   text        NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash        text        NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$'),
    kid         text        NOT NULL,
    sig         text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION ledger_checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_checkpoints is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER ledger_checkpoints_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger_checkpoints
    FOR EACH ROW EXECUTE FUNCTION ledger_checkpoints_append_only();
CREATE TRIGGER ledger_checkpoints_no_truncate
    BEFORE TRUNCATE ON ledger_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_checkpoints_append_only();
REVOKE ALL ON ledger_checkpoints FROM PUBLIC;
GRANT SELECT, INSERT ON ledger_checkpoints TO signoff_worker;
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
