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

-- Append several batches ("items", each one caller's events) in one statement: the partitions
-- they touch are locked (in order, so two statements never wait on each other in a cycle) only
-- while Postgres runs this, never across a network round trip. The caller sends each row's
-- canonical JSON cut where chain_seq and prev_hash go (chain.hash_template), so the hash is
-- exactly chain.row_hash. Per item: events already there are skipped when their identity
-- matches; an item with an event whose identity differs is refused whole (its conflict
-- message returned, nothing of it written); an item meeting rows from before identities were
-- stored is returned unwritten with those events, for the caller to compare and send again
-- with p_checked. Other items are written whatever happens to these.
CREATE FUNCTION audit_append(
    p_item integer[], p_part integer[], p_checked boolean[],
    p_action text[], p_run text[], p_seq integer[], p_kind text[], p_digest text[],
    p_actor text[], p_channel text[], p_at timestamptz[], p_payload jsonb[],
    p_identity text[], p_head text[], p_middle text[], p_tail text[]
) RETURNS TABLE (item integer, written integer, unchecked integer[], conflict text)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(cardinality(p_action), 0);
    items integer := 0;
    skip boolean[] := array_fill(false, ARRAY[greatest(n, 1)]);
    refused text[];
    blocked integer[];
    counts integer[];
    heads_part integer[] := '{}';
    heads_seq bigint[] := '{}';
    heads_hash text[] := '{}';
    part_lock integer;
    found_identity text;
    found_seq bigint;
    found_kind text;
    k integer;
    j integer;
    new_hash text;
BEGIN
    FOR i IN 1 .. n LOOP
        items := greatest(items, p_item[i]);
    END LOOP;
    refused := array_fill(NULL::text, ARRAY[greatest(items, 1)]);
    blocked := '{}';
    counts := array_fill(0, ARRAY[greatest(items, 1)]);
    FOR part_lock IN SELECT DISTINCT u FROM unnest(p_part) AS u ORDER BY u LOOP
        IF part_lock = 0 THEN
            -- The lock appenders of the single chain took, so none can run beside this one.
            PERFORM pg_advisory_xact_lock(1365250033);
        ELSE
            PERFORM pg_advisory_xact_lock(1365250033, part_lock);
        END IF;
    END LOOP;
    FOR i IN 1 .. n LOOP
        SELECT e.identity, e.chain_seq, e.kind INTO found_identity, found_seq, found_kind
        FROM audit_events e
        WHERE e.action_id = p_action[i] AND e.run_id = p_run[i] AND e.seq = p_seq[i];
        IF FOUND THEN
            skip[i] := true;
            IF found_identity IS NULL THEN
                IF NOT p_checked[i] THEN
                    blocked := blocked || i;
                END IF;
            ELSIF found_identity <> p_identity[i] AND refused[p_item[i]] IS NULL THEN
                refused[p_item[i]] := format(
                    'ledger already holds a different event %s for action %s run %s '
                    '(chain_seq %s, %s): refusing to overwrite it with %s',
                    p_seq[i], p_action[i],
                    CASE WHEN p_run[i] = '' THEN '(no run recorded)' ELSE p_run[i] END,
                    found_seq, found_kind, p_kind[i]);
            END IF;
        END IF;
    END LOOP;
    FOR i IN 1 .. n LOOP
        CONTINUE WHEN skip[i] OR refused[p_item[i]] IS NOT NULL;
        CONTINUE WHEN EXISTS (SELECT 1 FROM unnest(blocked) AS b WHERE p_item[b] = p_item[i]);
        k := array_position(heads_part, p_part[i]);
        IF k IS NULL THEN
            heads_part := heads_part || p_part[i];
            SELECT e.chain_seq, e.hash INTO found_seq, new_hash FROM audit_events e
            WHERE e.part = p_part[i] ORDER BY e.chain_seq DESC LIMIT 1;
            IF NOT FOUND THEN
                found_seq := -1;
                new_hash := repeat('0', 64);
            END IF;
            heads_seq := heads_seq || found_seq;
            heads_hash := heads_hash || new_hash;
            k := cardinality(heads_part);
        END IF;
        heads_seq[k] := heads_seq[k] + 1;
        new_hash := encode(sha256(convert_to(
            p_head[i] || heads_seq[k]::text || p_middle[i] || heads_hash[k] || p_tail[i],
            'UTF8')), 'hex');
        INSERT INTO audit_events
            (part, chain_seq, action_id, run_id, seq, kind, digest, actor, channel, at, payload,
             prev_hash, hash, identity)
        VALUES (p_part[i], heads_seq[k], p_action[i], p_run[i], p_seq[i], p_kind[i],
                p_digest[i], p_actor[i], p_channel[i], p_at[i], p_payload[i], heads_hash[k],
                new_hash, p_identity[i]);
        heads_hash[k] := new_hash;
        counts[p_item[i]] := counts[p_item[i]] + 1;
    END LOOP;
    FOR j IN 1 .. items LOOP
        item := j;
        written := counts[j];
        conflict := refused[j];
        unchecked := ARRAY(SELECT b FROM unnest(blocked) AS b WHERE p_item[b] = j ORDER BY b);
        IF conflict IS NOT NULL OR cardinality(unchecked) > 0 THEN
            written := 0;
        END IF;
        RETURN NEXT;
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
    Migration(
        5,
        "one_statement_claim",
        """
-- The execution claim in one statement (one round trip) instead of a five-step transaction.
-- Each statement of a volatile PL/pgSQL function sees what committed before it started, so
-- after ON CONFLICT DO NOTHING waited for a concurrent claimer, the SELECT sees its row.
CREATE FUNCTION execution_claim(p_action text, p_run text, p_digest text)
RETURNS TABLE (holder text, held_digest text, held_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- Runs from before claims existed left only their result row (run_id '').
    RETURN QUERY
        SELECT e.run_id, p_digest, e.at FROM audit_events e
        WHERE e.action_id = p_action AND e.run_id <> p_run AND e.kind = 'execution_result'
        ORDER BY e.id LIMIT 1;
    IF FOUND THEN
        RETURN;
    END IF;
    INSERT INTO executions AS x (action_id, run_id, digest)
        VALUES (p_action, p_run, p_digest) ON CONFLICT (action_id) DO NOTHING;
    RETURN QUERY
        SELECT x.run_id, x.digest, x.claimed_at FROM executions x WHERE x.action_id = p_action;
END
$$;
REVOKE ALL ON FUNCTION execution_claim FROM PUBLIC;
GRANT EXECUTE ON FUNCTION execution_claim TO signoff_worker;
""",
    ),
    Migration(
        6,
        "claim_with_its_write",
        """
-- One round trip (and one commit) fewer at each step of an execution (issue 16).
--
-- The workflow's write-ahead rows and its execution claim in one statement: audit_append,
-- then, for each item that asks for one and whose rows are all in (none refused, none left to
-- compare), execution_claim. The claim commits with the rows it follows, never before them.
-- audit_append stays as it was, for workers from before this migration.
CREATE FUNCTION audit_append_claim(
    p_item integer[], p_part integer[], p_checked boolean[],
    p_action text[], p_run text[], p_seq integer[], p_kind text[], p_digest text[],
    p_actor text[], p_channel text[], p_at timestamptz[], p_payload jsonb[],
    p_identity text[], p_head text[], p_middle text[], p_tail text[],
    p_claim_action text[], p_claim_run text[], p_claim_digest text[]
) RETURNS TABLE (
    item integer, written integer, unchecked integer[], conflict text,
    holder text, held_digest text, held_at timestamptz
) LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM audit_append(
        p_item, p_part, p_checked, p_action, p_run, p_seq, p_kind, p_digest, p_actor,
        p_channel, p_at, p_payload, p_identity, p_head, p_middle, p_tail)
    LOOP
        item := r.item;
        written := r.written;
        unchecked := r.unchecked;
        conflict := r.conflict;
        holder := NULL;
        held_digest := NULL;
        held_at := NULL;
        IF p_claim_action[r.item] IS NOT NULL AND r.conflict IS NULL
                AND cardinality(r.unchecked) = 0 THEN
            SELECT c.holder, c.held_digest, c.held_at INTO holder, held_digest, held_at
            FROM execution_claim(p_claim_action[r.item], p_claim_run[r.item],
                                 p_claim_digest[r.item]) AS c;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION audit_append_claim FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_append_claim TO signoff_worker;

-- The executor's two checks in one statement: the run's write-ahead rows (each one's digest
-- and the first place it kept for the outcome's rows), then, only when a row for the digest
-- is there, the execution claim. Rows of runs from before runs were recorded (run id '')
-- count for any run, as they did when these were two statements.
CREATE FUNCTION execution_start(p_action text, p_run text, p_digest text)
RETURNS TABLE (
    digests text[], kept jsonb[], holder text, held_digest text, held_at timestamptz
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    SELECT coalesce(array_agg(e.digest ORDER BY e.id), '{}'),
           coalesce(array_agg(e.payload -> 'outcome_seq' ORDER BY e.id), '{}')
    INTO digests, kept
    FROM audit_events e
    WHERE e.action_id = p_action AND e.run_id IN (p_run, '') AND e.kind = 'execution_started';
    IF p_digest = ANY (digests) THEN
        SELECT c.holder, c.held_digest, c.held_at INTO holder, held_digest, held_at
        FROM execution_claim(p_action, p_run, p_digest) AS c;
    END IF;
    RETURN NEXT;
END
$$;
REVOKE ALL ON FUNCTION execution_start FROM PUBLIC;
GRANT EXECUTE ON FUNCTION execution_start TO signoff_worker;
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
