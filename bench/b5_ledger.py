"""B5 ledger: append throughput with 1, 4, 16 writers, Postgres 2 ms away; verify of 1M events.

Each writer appends approved actions' six events the way the workflow does (three batches of
two: requested+verdict, decision+execution_started, result+outcome) through `Ledger.append`,
back to back, for a fixed time, over its own connection through a TCP proxy that adds
`--b5-rtt-ms` of round trip (`bench.latency_proxy`). Writers run in several processes so the
client's own CPU is not the limit. Two designs side by side in the same run:

- **before**: today's append as it was until this change — one global chain, its advisory lock
  held across the round trips of check, read head and insert (reproduced here on the same
  schema, partition 0, so the same Postgres and proxy serve both);
- **after**: `Ledger.append` with `--b5-partitions` chains, one statement per append.

Then a ledger of `--b5-verify-events` events is filled (no proxy) and `signoff audit verify`
timed on it. Run alone: `python -m bench.b5_ledger [--quick]` starts only an embedded Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import psutil

from activities.ledger.chain import GENESIS_HASH, event_content, row_hash
from activities.ledger.store import CHAIN_LOCK, Ledger
from bench import latency_proxy
from bench.b4_audit import action_events, create_database, timed_cli
from bench.common import Section, console, fmt, free_port, percentile
from signoff.models import canonical_json
from workflows.messages import AuditEvent

START = datetime(2025, 1, 1, tzinfo=UTC)
# Actions planned per writer and second of a cell: more than one writer gets through here.
ACTIONS_PER_SECOND = 250


def add_options(parser: argparse.ArgumentParser) -> None:
    """B5's options."""
    group = parser.add_argument_group("B5 ledger")
    group.add_argument("--b5-writers", type=int, nargs="+", default=[1, 4, 16], metavar="N")
    group.add_argument("--b5-seconds", type=float, default=10.0, help="per cell")
    group.add_argument("--b5-rtt-ms", type=float, default=2.0, help="added round trip to Postgres")
    group.add_argument("--b5-partitions", type=int, default=16)
    group.add_argument(
        "--b5-designs", nargs="+", choices=["before", "after"], default=["before", "after"]
    )
    group.add_argument(
        "--b5-verify-events", type=int, default=1_000_000, metavar="N", help="0: no verify"
    )
    group.add_argument(
        "--b5-processes", type=int, default=2, help="writer processes (writers spread over them)"
    )


# --- the design this change replaced, for the side-by-side "before" ---------------------------


async def append_single_chain(conn: asyncpg.Connection, events: list[AuditEvent]) -> int:
    """The pre-partition append: normalise payloads, then lock, check, read head, insert."""
    stored = await conn.fetch(
        "SELECT p::text AS payload FROM unnest($1::jsonb[]) WITH ORDINALITY AS t(p, n) ORDER BY n",
        [canonical_json(e.payload) for e in events],
    )
    contents = [
        event_content(
            e.action_id, e.seq, e.kind, e.digest, e.actor, e.channel, e.at,
            json.loads(r["payload"]), run_id=e.run_id,
        )
        for e, r in zip(events, stored, strict=True)
    ]  # fmt: skip
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
        existing = await conn.fetch(
            "SELECT action_id, run_id, seq FROM audit_events WHERE (action_id, run_id, seq) IN "
            "(SELECT * FROM unnest($1::text[], $2::text[], $3::int[]))",
            [c["action_id"] for c in contents],
            [c.get("run_id", "") for c in contents],
            [c["seq"] for c in contents],
        )
        there = {(r["action_id"], r["run_id"], r["seq"]) for r in existing}
        fresh = [
            c for c in contents if (c["action_id"], c.get("run_id", ""), c["seq"]) not in there
        ]
        head = await conn.fetchrow(
            "SELECT chain_seq, hash FROM audit_events WHERE part = 0"
            " ORDER BY chain_seq DESC LIMIT 1"
        )
        chain_seq = -1 if head is None else head["chain_seq"]
        prev = GENESIS_HASH if head is None else head["hash"]
        rows = []
        for content in fresh:
            chain_seq += 1
            digest = row_hash(chain_seq, content, prev)
            rows.append((chain_seq, content, prev, digest))
            prev = digest
        await conn.execute(
            "INSERT INTO audit_events (chain_seq, action_id, seq, kind, digest, actor, channel,"
            " at, payload, prev_hash, hash, run_id) SELECT * FROM unnest($1::bigint[],"
            " $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[],"
            " $8::timestamptz[], $9::jsonb[], $10::text[], $11::text[], $12::text[])",
            [r[0] for r in rows],
            [r[1]["action_id"] for r in rows],
            [r[1]["seq"] for r in rows],
            [r[1]["kind"] for r in rows],
            [r[1]["digest"] for r in rows],
            [r[1]["actor"] for r in rows],
            [r[1]["channel"] for r in rows],
            [datetime.fromisoformat(r[1]["at"]) for r in rows],
            [canonical_json(r[1]["payload"]) for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
            [r[1].get("run_id", "") for r in rows],
        )
    return len(rows)


# --- writers ----------------------------------------------------------------------------------


def batches_of(events: list[AuditEvent], size: int) -> list[list[AuditEvent]]:
    """An action's events in the workflow's batch sizes."""
    return [events[i : i + size] for i in range(0, len(events), size)]


async def _writers(
    url: str,
    design: str,
    partitions: int,
    writers: int,
    tag: str,
    ready: threading.Barrier,
    seconds: float,
) -> tuple[int, list[float], float, float]:
    """`writers` concurrent appenders in this process, each over its own connection."""
    ledger = await Ledger.connect(url, max_size=writers, partitions=partitions)
    # Open every connection before the clock starts.
    conns = [await ledger.pool.acquire() for _ in range(writers)]
    for conn in conns:
        await ledger.pool.release(conn)
    latencies: list[float] = []
    written = 0
    # The events are made before the clock starts: building them is the bench's CPU, not the
    # ledger's.
    template = action_events(0, START)
    planned = [
        [
            [e.model_copy(update={"action_id": f"{tag}-{n}-{i}"}) for e in batch]
            for batch in batches_of(template, 2)
        ]
        for n in range(writers)
        for i in range(int(ACTIONS_PER_SECOND * seconds))
    ]
    per_writer = int(ACTIONS_PER_SECOND * seconds)
    # Every process has connected and made its events: all start together.
    await asyncio.to_thread(ready.wait)
    begin = finished = time.time()
    cpu_start = time.process_time()

    async def writer(n: int) -> None:
        nonlocal written, finished
        i = 0
        end = begin + seconds
        while time.time() < end and i < per_writer:
            for batch in planned[n * per_writer + i]:
                t0 = time.perf_counter()
                if design == "before":
                    async with ledger.pool.acquire() as conn:
                        added = await append_single_chain(conn, batch)
                else:
                    added = await ledger.append(batch)
                written += added  # after the await: `written += await ...` loses updates
                latencies.append(time.perf_counter() - t0)
            i += 1
        finished = max(finished, time.time())

    try:
        await asyncio.gather(*(writer(n) for n in range(writers)))
    finally:
        await ledger.close()
    return written, latencies, finished - begin, time.process_time() - cpu_start


def _writer_process(
    url: str,
    design: str,
    partitions: int,
    writers: int,
    tag: str,
    ready: threading.Barrier,
    seconds: float,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    try:
        out.put(asyncio.run(_writers(url, design, partitions, writers, tag, ready, seconds)))
    except BaseException as err:  # the parent waits for every child's answer
        out.put(f"{type(err).__name__}: {err}")
        raise


def run_cell(
    url: str, design: str, partitions: int, writers: int, seconds: float, processes: int
) -> tuple[int, list[float], float, float]:
    """All writers of one cell over processes: events, append latencies, seconds, their CPU s."""
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    procs = min(processes, writers)
    shares = [writers // procs + (1 if k < writers % procs else 0) for k in range(procs)]
    ready = context.Barrier(procs)
    tag = uuid.uuid4().hex[:8]
    children = [
        context.Process(
            target=_writer_process,
            args=(url, design, partitions, share, f"{tag}-{k}", ready, seconds, out),
        )
        for k, share in enumerate(shares)
    ]
    for child in children:
        child.start()
    results = [out.get() for _ in children]
    for child in children:
        child.join()
    failed = [r for r in results if isinstance(r, str)]
    if failed:
        raise RuntimeError(f"a writer process failed: {failed[0]}")
    took = max(r[2] for r in results)  # a writer that ran out of planned events stops early
    cpu = sum(r[3] for r in results)
    return sum(r[0] for r in results), [x for r in results for x in r[1]], took, cpu


def other_cpu(proxy: list[multiprocessing.Process], socket_dir: str) -> tuple[float, float]:
    """CPU seconds so far of the proxy's processes and of Postgres (the postmaster listening
    in socket_dir and its exited children, which is where finished backends are counted)."""
    proxy_cpu = 0.0
    for child in proxy:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(child.pid).cpu_times()
            proxy_cpu += times.user + times.system
    pg_cpu = 0.0
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = process.info["cmdline"] or []
            if cmdline and cmdline[0].endswith("bin/postgres") and socket_dir in cmdline:
                times = process.cpu_times()
                pg_cpu += times.user + times.system + times.children_user + times.children_system
    return proxy_cpu, pg_cpu


async def measured_rtt(url: str) -> float:
    """p50 of `SELECT 1` round trips, ms."""
    conn = await asyncpg.connect(url)
    try:
        times = []
        for _ in range(50):
            t0 = time.perf_counter()
            await conn.fetchval("SELECT 1")
            times.append(time.perf_counter() - t0)
    finally:
        await conn.close()
    return percentile(times, 50) * 1000


async def fill_fast(url: str, events: int, partitions: int, tasks: int = 4) -> float:
    """Append `events` events as fast as possible (no proxy); seconds taken."""
    ledger = await Ledger.connect(url, migrate=True, max_size=tasks, partitions=partitions)
    per_action = len(action_events(0, START))
    actions = (events + per_action - 1) // per_action
    began = time.perf_counter()

    template = action_events(0, START)

    async def task(k: int) -> None:
        for i in range(k, actions, tasks):
            batch = [
                e.model_copy(update={"action_id": f"act-{i}"})
                for e in template[: max(0, events - i * per_action)]
            ]
            await ledger.append(batch)

    try:
        await asyncio.gather(*(task(k) for k in range(tasks)))
    finally:
        await ledger.close()
    return time.perf_counter() - began


async def run_b5(database_url: str, args: argparse.Namespace) -> list[Section]:
    """Both designs at each writer count through the proxy, then verify of a large ledger."""
    seconds = 3.0 if args.quick else args.b5_seconds
    verify_events = 50_000 if args.quick else args.b5_verify_events
    url = await create_database(database_url)
    await (await Ledger.connect(url, migrate=True)).close()
    port = free_port()
    far_url, target = latency_proxy.proxied(url, port)
    socket_dir = target.rsplit("/", 1)[0]
    proxy = latency_proxy.start(f"127.0.0.1:{port}", target, args.b5_rtt_ms, 2)
    section = Section(
        title=f"B5 ledger append, Postgres {args.b5_rtt_ms:g} ms round trip away",
        columns=[
            "design",
            "writers",
            "events",
            "events/s",
            "x 1 writer",
            "append p50 ms",
            "p99 ms",
            "CPU ms per 1,000 events: writers / Postgres / proxy",
        ],
    )
    rates: dict[tuple[str, int], float] = {}
    try:
        await asyncio.sleep(0.5)
        rtt = await measured_rtt(far_url)
        for design in args.b5_designs:
            for writers in args.b5_writers:
                console.print(f"[bold]B5[/bold] {design}, {writers} writer(s), {seconds:g} s ...")
                before_cpu = other_cpu(proxy, socket_dir)
                # The writers' pools close at the end of a cell: their backends have exited
                # (and been counted) by the time this samples again.
                written, latencies, took, writer_cpu = await asyncio.to_thread(
                    run_cell, far_url, design, args.b5_partitions, writers, seconds,
                    args.b5_processes,
                )  # fmt: skip
                rate = written / took
                await asyncio.sleep(0.5)  # the backends' exit reaped, so counted
                proxy_cpu, pg_cpu = (
                    b - a for a, b in zip(before_cpu, other_cpu(proxy, socket_dir), strict=True)
                )
                per_k = 1000.0 * 1000.0 / max(written, 1)  # ms of CPU per 1,000 events
                rates[(design, writers)] = rate
                one = rates.get((design, args.b5_writers[0]), rate)
                section.rows.append(
                    [
                        "before: one chain, lock across round trips"
                        if design == "before"
                        else f"after: {args.b5_partitions} partitions, one statement",
                        str(writers),
                        f"{written:,}",
                        fmt(rate, 0),
                        fmt(rate / one, 1),
                        fmt(percentile(latencies, 50) * 1000, 2),
                        fmt(percentile(latencies, 99) * 1000, 2),
                        " / ".join(f"{c * per_k:.0f}" for c in (writer_cpu, pg_cpu, proxy_cpu)),
                    ]
                )
    finally:
        latency_proxy.stop(proxy)
    top, low = max(args.b5_writers), min(args.b5_writers)
    if ("after", top) in rates and ("after", low) in rates:
        ratio = rates[("after", top)] / rates[("after", low)]
        section.goal(f"{top} writers >= 6x {low}", f"{ratio:.1f}x", ratio >= 6)
        section.goal(
            f">= 5,000 events/s at {top}",
            f"{rates[('after', top)]:,.0f}/s",
            rates[("after", top)] >= 5000,
        )
    section.notes.append(
        f"measured round trip through the proxy (SELECT 1, p50): {rtt:.2f} ms; each writer "
        "appends back to back over its own connection, batches of 2 events (the workflow's)."
    )
    section.notes.append(
        f"writers spread over {args.b5_processes} processes; the proxy runs in 2 more; "
        "Postgres, the proxy and the writers share the machine's cores."
    )
    sections = [section]
    if verify_events > 0:
        sections.append(await verify_section(database_url, verify_events, args.b5_partitions))
    return sections


async def verify_section(database_url: str, events: int, partitions: int) -> Section:
    """Fill a ledger of `events` events, then time `signoff audit verify` on it."""
    url = await create_database(database_url)
    console.print(f"[bold]B5[/bold] filling a ledger of {events:,} events ...")
    fill_s = await fill_fast(url, events, partitions)
    section = Section(
        title=f"B5 verify of {events:,} events in {partitions} partitions",
        columns=["operation", "seconds", "events/s", "output"],
    )
    section.rows.append(["fill (Ledger.append, 4 tasks, no proxy)", fmt(fill_s, 1),
                         fmt(events / fill_s, 0), ""])  # fmt: skip
    for workers in sorted({1, os.cpu_count() or 1}):
        console.print(f"[bold]B5[/bold] signoff audit verify --workers {workers} ...")
        seconds, last = await timed_cli(
            ["audit", "verify", "--database-url", url, "--no-progress", "--workers", str(workers)]
        )
        section.rows.append(
            [f"signoff audit verify --workers {workers}", fmt(seconds, 1),
             fmt(events / seconds, 0), last[:70]]
        )  # fmt: skip
        if workers == (os.cpu_count() or 1):
            scaled = seconds * 1_000_000 / events
            section.goal(
                "audit verify of 1,000,000 events < 30 s",
                f"{seconds:.1f} s for {events:,}" + ("" if events == 1_000_000
                                                      else f" (~{scaled:.0f} s per million)"),
                scaled < 30,
            )  # fmt: skip
    section.notes.append("CLI times include interpreter start-up and connecting (~1 s).")
    return section


async def run(stack: object, args: argparse.Namespace) -> list[Section]:
    """B5 on the stack's Postgres."""
    return await run_b5(stack.database_url, args)  # type: ignore[attr-defined]


def main() -> None:
    """B5 alone, on an embedded Postgres of its own (no Temporal needed)."""
    import pgserver

    from bench.common import append_results, machine_info
    from bench.run_all import parser_for

    args = parser_for([__import__(__name__, fromlist=["run"])]).parse_args()
    info = machine_info()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="signoff-b5-") as tmp:
        server = pgserver.get_server(Path(tmp), cleanup_mode="stop")
        try:
            sections = asyncio.run(run_b5(server.get_uri(), args))
        finally:
            server.cleanup()
    for section in sections:
        section.print()
    info["wall time of the run"] = f"{time.monotonic() - started:.0f} s"
    append_results(sections, label="B5" + (" (quick)" if args.quick else ""), info=info)


if __name__ == "__main__":
    main()
