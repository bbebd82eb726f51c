"""The partitioned ledger: independent chains per partition of action ids, signed checkpoints
over their heads, old single-chain ledgers migrated forward, and tampering in each of them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from click.testing import Result
from typer.testing import CliRunner

from activities.ledger.chain import (
    GENESIS_HASH,
    checkpoint_body,
    checkpoint_hash,
    event_content,
    ledger_json,
    partition_of,
    row_hash,
)
from activities.ledger.migrations import MIGRATIONS
from activities.ledger.store import Ledger, LedgerConflict
from signoff.models import canonical_json
from tests.cli import app
from tests.pg import T0, action_batches, as_attacker, create_database, worker_login
from workers.audit.report import records
from workers.audit.verify import BreakReason, verify_chain, verify_ledger
from workers.gateway.server import write_checkpoints
from workflows.signing import KeySet, Signer, generate_key_pair

PARTS = 8
runner = CliRunner()


async def invoke(*args: str) -> Result:
    """Run the CLI in a thread: its commands call asyncio.run themselves."""
    return await asyncio.to_thread(runner.invoke, app, list(args))


def keys(tmp_path: Path, name: str = "gateway") -> tuple[Signer, KeySet, Path, Path]:
    """A fresh key pair: the signer, the key set, and both files."""
    private, public = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    generate_key_pair(private, public)
    return Signer.load(private), KeySet.load(public), private, public


async def fill(ledger: Ledger, actions: int = 24, prefix: str = "act") -> None:
    """Write several actions' full stories."""
    for n in range(actions):
        for batch in action_batches(f"{prefix}-{n}", self_attempts=n % 2):
            await ledger.append(batch.events)


@pytest.fixture
async def ledger(db: str) -> AsyncIterator[Ledger]:
    """A ledger spreading actions over PARTS chains, holding 24 actions."""
    ledger = await Ledger.connect(db, partitions=PARTS)
    await fill(ledger)
    yield ledger
    await ledger.close()


@asynccontextmanager
async def tampering(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser with every append-only trigger off, as a database admin could."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        await conn.execute("ALTER TABLE ledger_checkpoints DISABLE TRIGGER USER")
        yield conn
    finally:
        await conn.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
        await conn.execute("ALTER TABLE ledger_checkpoints ENABLE TRIGGER USER")
        await conn.close()


async def busiest(url: str) -> tuple[int, int]:
    """The partition (other than 0) with the most rows, and how many."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT part, count(*) AS n FROM audit_events WHERE part > 0"
            " GROUP BY part ORDER BY n DESC, part LIMIT 1"
        )
    finally:
        await conn.close()
    assert row is not None
    return row["part"], row["n"]


# --- structure ------------------------------------------------------------------------------


def test_ledger_json_is_canonical_json() -> None:
    rng = random.Random(7)
    words = ["plain", "caf\u00e9", "cafe\u0301", "\u212b", "emoji \U0001f600", 'quote"', "\\"]

    def value(depth: int) -> object:
        kind = rng.randrange(7 if depth < 3 else 5)
        if kind == 0:
            return rng.choice(words)
        if kind == 1:
            return rng.randrange(-(10**20), 10**20)
        if kind == 2:
            return rng.choice([1.5, 1e20, -0.0, 3.0, 1e-7])
        if kind == 3:
            return rng.choice([True, False, None])
        if kind == 4:
            return ""
        if kind == 5:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {rng.choice(words) + str(n): value(depth + 1) for n in range(rng.randrange(4))}

    for _ in range(2000):
        sample = value(0)
        assert ledger_json(sample) == canonical_json(sample)


async def test_unicode_and_float_payloads_verify_in_a_partition(db: str) -> None:
    ledger = await Ledger.connect(db, partitions=PARTS)
    try:
        batch = action_batches("act-unicode", params={"name": "Zoe\u0301", "n": 1e20, "k": 2})[0]
        assert await ledger.append(batch.events) == 2
        assert await ledger.append(batch.events) == 0
        report = await verify_chain(ledger)
        assert report.ok, report.broken
    finally:
        await ledger.close()


async def test_actions_spread_over_chains_each_linked_from_genesis(ledger: Ledger) -> None:
    rows = [r async for r in ledger.rows()]
    by_part: dict[int, list[int]] = {}
    for row in rows:
        assert row.part == partition_of(row.action_id, PARTS)
        assert row.computed_hash() == row.hash
        by_part.setdefault(row.part, []).append(row.chain_seq)
    assert len(by_part) > 3
    for part, seqs in by_part.items():
        assert seqs == list(range(len(seqs))), part
        first = next(r for r in rows if r.part == part and r.chain_seq == 0)
        assert first.prev_hash == GENESIS_HASH
    report = await verify_chain(ledger)
    assert report.ok, report.broken
    assert report.rows == len(rows)
    assert report.partitions == len(by_part)


async def test_parallel_verify_agrees_with_the_walk_in_one_process(ledger: Ledger, db: str) -> None:
    alone = await verify_chain(ledger)
    side_by_side = await asyncio.to_thread(verify_ledger, db, workers=3)
    assert side_by_side.ok, side_by_side.broken
    assert (side_by_side.rows, side_by_side.head_hash) == (alone.rows, alone.head_hash)


async def test_retries_and_conflicts_in_a_partition(ledger: Ledger) -> None:
    batch = action_batches("act-3")[0]
    assert await ledger.append(batch.events) == 0
    forged = batch.events[0].model_copy(update={"actor": "mallory"})
    with pytest.raises(LedgerConflict, match="different event 0 for action act-3"):
        await ledger.append([forged])
    forged_payload = batch.events[1].model_copy(update={"payload": {"rule": "other"}})
    with pytest.raises(LedgerConflict):
        await ledger.append([forged_payload])
    assert (await verify_chain(ledger)).ok


async def test_appends_sharing_a_statement_each_get_their_own_outcome(db: str) -> None:
    # Many appends at once go out together; a conflicting one and a doubled one among them
    # must fail (or write nothing) on their own, the others be written whole.
    ledger = await Ledger.connect(db, max_size=2, partitions=PARTS)
    try:
        first = action_batches("shared-0")[0]
        await ledger.append(first.events)
        conflicting = [first.events[0].model_copy(update={"actor": "mallory"})]
        fresh = [action_batches(f"shared-{n}")[0].events for n in range(1, 40)]
        outcomes = await asyncio.gather(
            *(ledger.append(events) for events in fresh),
            ledger.append(conflicting),
            ledger.append(fresh[0]),
            return_exceptions=True,
        )
        written = [o for n, o in enumerate(outcomes) if n != len(fresh)]
        assert all(isinstance(o, int) for o in written), written
        # The doubled batch is written once, by whichever of the two came first.
        assert sum(written) == 2 * len(fresh)  # type: ignore[arg-type]
        assert isinstance(outcomes[len(fresh)], LedgerConflict)
        report = await verify_chain(ledger)
        assert report.ok, report.broken
        assert report.rows == 2 * (len(fresh) + 1)
    finally:
        await ledger.close()


async def test_racing_retries_on_many_workers_make_intact_chains(db: str) -> None:
    ledgers = [await Ledger.connect(db, max_size=4, partitions=4) for _ in range(3)]
    try:
        actions = {f"race-{n}": action_batches(f"race-{n}") for n in range(30)}

        async def run(action_id: str) -> None:
            rng = random.Random(action_id)
            for batch in actions[action_id]:
                first, retry = rng.sample(ledgers, 2)
                await asyncio.gather(first.append(batch.events), retry.append(batch.events))

        await asyncio.gather(*(run(a) for a in actions))
        report = await verify_chain(ledgers[0])
        assert report.ok, report.broken
        assert report.rows == sum(len(b.events) for bs in actions.values() for b in bs)
    finally:
        for one in ledgers:
            await one.close()


async def test_worker_role_appends_and_checkpoints_but_changes_nothing(
    db: str, tmp_path: Path
) -> None:
    signer, trusted, _, _ = keys(tmp_path)
    worker = await Ledger.connect(await worker_login(db, "part_worker"), partitions=PARTS)
    try:
        await fill(worker, 4)
        await worker.checkpoint(signer)
        assert (await verify_chain(worker, keys=trusted)).ok
        async with worker.pool.acquire() as conn:
            for statement in (
                "UPDATE ledger_checkpoints SET heads = '{}'",
                "DELETE FROM ledger_checkpoints",
                "UPDATE audit_events SET part = 1",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    await conn.execute(statement)
    finally:
        await worker.close()
    superuser = await asyncpg.connect(db)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await superuser.execute("DELETE FROM ledger_checkpoints")
    finally:
        await superuser.close()


# --- migrating a single-chain ledger forward --------------------------------------------------


async def old_ledger(postgres_url: str) -> str:
    """A database as release 3 left it (one global chain), with rows that release wrote."""
    url = await create_database(postgres_url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in MIGRATIONS[:3]:
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
        prev = GENESIS_HASH
        events = [e for n in range(3) for b in action_batches(f"old-{n}") for e in b.events]
        # An action in flight at the upgrade: its first batch was written before it.
        events += action_batches("in-flight", start=T0)[0].events
        for chain_seq, e in enumerate(events):
            payload = json.loads(
                await conn.fetchval("SELECT $1::jsonb::text", json.dumps(e.payload))
            )
            content = event_content(
                e.action_id, e.seq, e.kind, e.digest, e.actor, e.channel, e.at, payload
            )
            digest = row_hash(chain_seq, content, prev)
            await conn.execute(
                "INSERT INTO audit_events (chain_seq, action_id, seq, kind, digest, actor,"
                " channel, at, payload, prev_hash, hash)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11)",
                chain_seq,
                e.action_id,
                e.seq,
                e.kind.value,
                e.digest,
                e.actor,
                e.channel,
                e.at,
                json.dumps(payload),
                prev,
                digest,
            )
            prev = digest
    finally:
        await conn.close()
    return url


async def test_an_old_ledger_migrates_forward_and_keeps_verifying(postgres_url: str) -> None:
    url = await old_ledger(postgres_url)
    conn = await asyncpg.connect(url)
    try:
        old_head = await conn.fetchval(
            "SELECT hash FROM audit_events ORDER BY chain_seq DESC LIMIT 1"
        )
    finally:
        await conn.close()
    ledger = await Ledger.connect(url, migrate=True, partitions=PARTS)
    try:
        old_rows = [r async for r in ledger.rows()]
        report = await verify_chain(ledger)
        assert report.ok, report.broken
        # The old chain is partition 0, its head hash what the single chain's was.
        assert report.head_hash == old_head
        flight = action_batches("in-flight", start=T0)
        # A retry of the batch written before the upgrade is compared with the old rows.
        assert await ledger.append(flight[0].events) == 0
        forged = flight[0].events[0].model_copy(update={"actor": "mallory"})
        with pytest.raises(LedgerConflict):
            await ledger.append([forged])
        for batch in flight[1:]:
            await ledger.append(batch.events)
        await fill(ledger, 6, prefix="new")
        rows = [r async for r in ledger.rows()]
        assert [r for r in rows if r.part == 0][: len(old_rows)] == old_rows
        assert {r.part for r in rows if r.action_id.startswith("new-")} != {0}
        report = await verify_chain(ledger)
        assert report.ok, report.broken
        assert report.rows == len(rows)
        # Export reads old and new rows alike: one record per action, the in-flight one whole.
        exported = [r async for r in records(ledger, None, None)]
        assert len(exported) == 3 + 1 + 6
        whole = next(r for r in exported if r.action_id == "in-flight")
        assert whole.status == "succeeded"
        # Tampering with an old row is still found, on the old chain.
        async with as_attacker(url) as conn:
            await conn.execute(
                "UPDATE audit_events SET actor = 'mallory' WHERE part = 0 AND chain_seq = 3"
            )
        broken = (await verify_chain(ledger)).broken
        assert broken is not None
        assert (broken.part, broken.chain_seq, broken.reason) == (0, 3, BreakReason.EDITED)
    finally:
        await ledger.close()


# --- tampering in a partition -----------------------------------------------------------------


async def test_an_edited_row_in_a_partition_is_found(ledger: Ledger, db: str) -> None:
    part, _ = await busiest(db)
    async with as_attacker(db) as conn:
        await conn.execute(
            "UPDATE audit_events SET payload = payload || '{\"x\": 1}'"
            " WHERE part = $1 AND chain_seq = 5",
            part,
        )
    broken = (await verify_chain(ledger)).broken
    assert broken is not None
    assert (broken.part, broken.chain_seq, broken.reason) == (part, 5, BreakReason.EDITED)


async def test_a_deleted_row_in_a_partition_is_found(ledger: Ledger, db: str) -> None:
    part, _ = await busiest(db)
    async with as_attacker(db) as conn:
        await conn.execute("DELETE FROM audit_events WHERE part = $1 AND chain_seq = 4", part)
    broken = (await verify_chain(ledger)).broken
    assert broken is not None
    assert (broken.part, broken.chain_seq, broken.reason) == (part, 4, BreakReason.DELETED)


async def test_a_row_inserted_into_a_partition_is_found(ledger: Ledger, db: str) -> None:
    part, _ = await busiest(db)
    async with as_attacker(db) as conn:
        await conn.execute(
            "UPDATE audit_events SET chain_seq = chain_seq + 1000000 WHERE part = $1"
            " AND chain_seq >= 6",
            part,
        )
        await conn.execute(
            "UPDATE audit_events SET chain_seq = chain_seq - 999999 WHERE part = $1"
            " AND chain_seq >= 1000000",
            part,
        )
        prev = await conn.fetchval(
            "SELECT hash FROM audit_events WHERE part = $1 AND chain_seq = 5", part
        )
        forged = action_batches("act-forged")[0].events[0]
        content = event_content(
            forged.action_id,
            0,
            "requested",
            forged.digest,
            forged.actor,
            None,
            forged.at,
            json.loads(canonical_json(forged.payload)),
            part=part,
        )
        await conn.execute(
            "INSERT INTO audit_events (part, chain_seq, action_id, seq, kind, digest, actor,"
            " channel, at, payload, prev_hash, hash) VALUES ($1, 6, $2, 0, 'requested', $3, $4,"
            " NULL, $5, $6::jsonb, $7, $8)",
            part,
            forged.action_id,
            forged.digest,
            forged.actor,
            forged.at,
            canonical_json(forged.payload),
            prev,
            row_hash(6, content, prev),
        )
    broken = (await verify_chain(ledger)).broken
    assert broken is not None
    assert (broken.part, broken.chain_seq, broken.reason) == (part, 7, BreakReason.INSERTED)
    assert "written at chain_seq 6" in broken.message


async def test_reordered_rows_in_a_partition_are_found(ledger: Ledger, db: str) -> None:
    part, _ = await busiest(db)
    async with as_attacker(db) as conn:
        for src, dst in ((8, 1000000), (9, 8), (1000000, 9)):
            await conn.execute(
                "UPDATE audit_events SET chain_seq = $2 WHERE part = $1 AND chain_seq = $3",
                part,
                dst,
                src,
            )
    broken = (await verify_chain(ledger)).broken
    assert broken is not None
    assert (broken.part, broken.chain_seq, broken.reason) == (part, 8, BreakReason.REORDERED)


async def test_a_row_moved_to_another_partition_is_found(ledger: Ledger, db: str) -> None:
    part, n = await busiest(db)
    async with as_attacker(db) as conn:
        # Move a partition's head row onto the end of another chain, relinked and rehashed
        # as if it had always been there: its content names the partition it was written in.
        row = await conn.fetchrow(
            "SELECT * FROM audit_events WHERE part = $1 AND chain_seq = $2", part, n - 1
        )
        other = next(p for p in range(1, PARTS) if p != part)
        head = await conn.fetchrow(
            "SELECT chain_seq, hash FROM audit_events WHERE part = $1"
            " ORDER BY chain_seq DESC LIMIT 1",
            other,
        )
        await conn.execute(
            "UPDATE audit_events SET part = $1, chain_seq = $2, prev_hash = $3 WHERE id = $4",
            other,
            head["chain_seq"] + 1,
            head["hash"],
            row["id"],
        )
    broken = (await verify_chain(ledger)).broken
    assert broken is not None
    assert (broken.part, broken.reason) == (other, BreakReason.EDITED)


# --- checkpoints and anchors --------------------------------------------------------------------


async def test_checkpoints_chain_and_verify(ledger: Ledger, tmp_path: Path) -> None:
    signer, trusted, _, _ = keys(tmp_path)
    first = await ledger.checkpoint(signer)
    assert first is not None
    assert await ledger.checkpoint(signer, if_changed=True) is None
    await fill(ledger, 4, prefix="later")
    second = await ledger.checkpoint(signer, if_changed=True)
    assert second is not None
    assert (second.seq, second.prev_hash) == (1, first.hash)
    report = await verify_chain(ledger, keys=trusted, anchor=first.hash)
    assert report.ok, report.broken
    assert (report.checkpoints, report.latest_checkpoint) == (2, second.hash)


async def test_a_checkpoint_signed_with_another_key_is_forged(
    ledger: Ledger, db: str, tmp_path: Path
) -> None:
    signer, trusted, _, _ = keys(tmp_path)
    mallory, _, _, _ = keys(tmp_path, "mallory")
    await ledger.checkpoint(signer)
    await ledger.checkpoint(mallory)
    assert (await verify_chain(ledger)).ok  # without keys only the hashes are checked
    broken = (await verify_chain(ledger, keys=trusted)).broken
    assert broken is not None
    assert (broken.checkpoint, broken.reason) == (1, BreakReason.FORGED)


async def test_an_edited_or_resigned_checkpoint_is_found(
    ledger: Ledger, db: str, tmp_path: Path
) -> None:
    signer, trusted, _, _ = keys(tmp_path)
    made = await ledger.checkpoint(signer)
    assert made is not None
    heads = {**made.heads, "1": [0, "f" * 64]}
    async with tampering(db) as conn:
        await conn.execute(
            "UPDATE ledger_checkpoints SET heads = $1::jsonb WHERE seq = 0", json.dumps(heads)
        )
    broken = (await verify_chain(ledger, keys=trusted)).broken
    assert broken is not None
    assert broken.reason == BreakReason.EDITED
    # Rehashed to match, the signature no longer does.
    rehashed = checkpoint_hash(checkpoint_body(0, made.at, heads, GENESIS_HASH))
    async with tampering(db) as conn:
        await conn.execute("UPDATE ledger_checkpoints SET hash = $1 WHERE seq = 0", rehashed)
    broken = (await verify_chain(ledger, keys=trusted)).broken
    assert broken is not None
    assert (broken.checkpoint, broken.reason) == (0, BreakReason.FORGED)


async def test_a_removed_checkpoint_is_found(ledger: Ledger, db: str, tmp_path: Path) -> None:
    signer, trusted, _, _ = keys(tmp_path)
    for n in range(3):
        await fill(ledger, 1, prefix=f"cp{n}")
        await ledger.checkpoint(signer)
    async with tampering(db) as conn:
        await conn.execute("DELETE FROM ledger_checkpoints WHERE seq = 1")
    broken = (await verify_chain(ledger, keys=trusted)).broken
    assert broken is not None
    assert (broken.checkpoint, broken.reason) == (2, BreakReason.DELETED)
    assert "#1 missing" in broken.message


async def test_a_rewritten_chain_does_not_match_its_signed_checkpoint(
    ledger: Ledger, db: str, tmp_path: Path
) -> None:
    signer, trusted, _, _ = keys(tmp_path)
    await ledger.checkpoint(signer)
    part, _ = await busiest(db)
    # The attacker edits a row and recomputes every hash after it: the chain is consistent
    # again, but its head is not the one the gateway signed.
    async with tampering(db) as conn:
        rows = await conn.fetch(
            "SELECT * FROM audit_events WHERE part = $1 ORDER BY chain_seq", part
        )
        prev = rows[2]["prev_hash"]
        for i, row in enumerate(rows[2:], start=2):
            actor = "mallory" if i == 2 else row["actor"]
            content = event_content(
                row["action_id"],
                row["seq"],
                row["kind"],
                row["digest"],
                actor,
                row["channel"],
                row["at"],
                json.loads(row["payload"]),
                run_id=row["run_id"],
                part=part,
            )
            digest = row_hash(i, content, prev)
            await conn.execute(
                "UPDATE audit_events SET actor = $1, prev_hash = $2, hash = $3 WHERE id = $4",
                actor,
                prev,
                digest,
                row["id"],
            )
            prev = digest
    report = await verify_chain(ledger, keys=trusted)
    assert report.broken is not None
    assert (report.broken.part, report.broken.reason) == (part, BreakReason.EDITED)
    assert "not the row the checkpoint signed" in report.broken.message


async def test_a_kept_anchor_proves_a_truncated_tail_was_there(
    ledger: Ledger, db: str, tmp_path: Path
) -> None:
    signer, trusted, _, _ = keys(tmp_path)
    kept = await ledger.checkpoint(signer)
    assert kept is not None
    part, n = await busiest(db)
    # Cutting a partition's tail under a checkpoint is found from the checkpoint alone...
    async with tampering(db) as conn:
        await conn.execute(
            "DELETE FROM audit_events WHERE part = $1 AND chain_seq >= $2", part, n - 2
        )
    broken = (await verify_chain(ledger, keys=trusted)).broken
    assert broken is not None
    assert (broken.part, broken.reason) == (part, BreakReason.DELETED)
    # ...and when the checkpoints are cut too, the hash the operator kept still finds it.
    async with tampering(db) as conn:
        await conn.execute("DELETE FROM ledger_checkpoints")
    assert (await verify_chain(ledger, keys=trusted)).ok
    broken = (await verify_chain(ledger, keys=trusted, anchor=kept.hash)).broken
    assert broken is not None
    assert broken.reason == BreakReason.DELETED
    assert kept.hash in broken.message


async def test_cli_checkpoint_then_verify_with_keys_and_anchor(
    ledger: Ledger, db: str, tmp_path: Path
) -> None:
    _, _, private, public = keys(tmp_path)
    written = await invoke("audit", "checkpoint", "--database-url", db, "--key", str(private))
    assert written.exit_code == 0, written.output
    anchor = written.output.strip().rsplit(" ", 1)[-1]
    result = await invoke(
        "audit",
        "verify",
        "--database-url",
        db,
        "--keys",
        str(public),
        "--anchor",
        anchor,
        "--workers",
        "2",
    )
    assert result.exit_code == 0, result.output
    assert f"in {(await verify_chain(ledger)).partitions} partitions" in result.output
    assert "signatures checked" in result.output
    assert f"anchor {anchor} found" in result.output
    part, _ = await busiest(db)
    async with as_attacker(db) as conn:
        await conn.execute("DELETE FROM audit_events WHERE part = $1 AND chain_seq = 2", part)
    result = await invoke("audit", "verify", "--database-url", db, "--workers", "2")
    assert result.exit_code == 1
    assert "BROKEN at chain_seq 2 (row id" in result.output
    assert f"partition {part}): deleted" in result.output
    bad = await invoke("audit", "verify", "--database-url", db, "--keys", str(tmp_path / "none"))
    assert bad.exit_code == 2
    assert "Traceback" not in bad.output


async def test_the_gateway_signs_checkpoints_while_rows_are_added(
    ledger: Ledger, tmp_path: Path
) -> None:
    signer, trusted, _, _ = keys(tmp_path)
    writer = asyncio.create_task(write_checkpoints(ledger, signer, 0.05))
    try:
        for n in range(3):
            await fill(ledger, 1, prefix=f"gw{n}")
            await asyncio.sleep(0.2)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    checkpoints = await ledger.checkpoints()
    # At least one per round in which rows were added, never one that repeats the last.
    assert len(checkpoints) >= 3
    for before, after in itertools.pairwise(checkpoints):
        assert before.heads != after.heads
    report = await verify_chain(ledger, keys=trusted, anchor=checkpoints[-1].hash)
    assert report.ok, report.broken


async def test_verify_of_a_ledger_not_yet_migrated_says_so(postgres_url: str) -> None:
    url = await old_ledger(postgres_url)
    result = await invoke("audit", "verify", "--database-url", url)
    assert result.exit_code == 2
    assert "signoff db migrate" in result.output
    assert "Traceback" not in result.output
