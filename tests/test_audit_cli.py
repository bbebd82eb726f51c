"""`signoff audit` and `signoff db` against a real Postgres: tampering, exports, the report."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import asyncpg
import pgserver
import pytest
from click.testing import Result
from typer.testing import CliRunner

from activities.ledger.chain import row_hash
from activities.ledger.migrations import MIGRATIONS
from activities.ledger.store import Ledger
from signoff.models import canonical_json
from tests.cli import app
from tests.pg import T0, action_batches, as_attacker, create_database, stop

runner = CliRunner()


async def invoke(*args: str) -> Result:
    """Run the CLI in a thread: its commands call asyncio.run themselves."""
    return await asyncio.to_thread(runner.invoke, app, list(args))


@pytest.fixture
async def db(postgres_url: str) -> str:
    """A fresh database, migrated by `signoff db migrate`, holding eight actions."""
    url = await create_database(postgres_url)
    result = await invoke("db", "migrate", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert f"applied migrations {', '.join(str(m.version) for m in MIGRATIONS)}" in result.output
    ledger = await Ledger.connect(url)
    try:
        for n in range(8):
            for batch in action_batches(f"act-{n}", start=T0 + timedelta(hours=n)):
                await ledger.append(batch.events)
    finally:
        await ledger.close()
    return url


async def verify(url: str) -> Result:
    """`signoff audit verify` on a database."""
    return await invoke("audit", "verify", "--database-url", url)


async def test_migrate_again_is_a_no_op(db: str) -> None:
    result = await invoke("db", "migrate", "--database-url", db)
    assert result.exit_code == 0
    assert f"schema up to date at {MIGRATIONS[-1].version}" in result.output
    status = await invoke("db", "status", "--database-url", db)
    assert status.exit_code == 0, status.output


async def test_intact_chain_exits_zero(db: str) -> None:
    result = await verify(db)
    assert result.exit_code == 0, result.output
    assert "ledger intact: 56 rows" in result.output


async def test_verify_catches_an_edited_row(db: str) -> None:
    async with as_attacker(db) as conn:
        await conn.execute(
            "UPDATE audit_events SET payload = jsonb_set(payload, '{approver}', '\"mallory\"')"
            " WHERE chain_seq = 17"
        )
    result = await verify(db)
    assert result.exit_code == 1
    assert "BROKEN at chain_seq 17" in result.output
    assert ": edited" in result.output


async def test_verify_catches_an_edited_and_rehashed_row(db: str) -> None:
    # A careful attacker recomputes the edited row's hash; the next row still names the old one.
    async with as_attacker(db) as conn:
        row = await conn.fetchrow("SELECT * FROM audit_events WHERE chain_seq = 17")
        content = {
            "action_id": row["action_id"],
            "seq": row["seq"],
            "kind": row["kind"],
            "digest": row["digest"],
            "actor": "mallory",
            "channel": row["channel"],
            "at": row["at"].isoformat(timespec="microseconds"),
            "payload": json.loads(row["payload"]),
        }
        await conn.execute(
            "UPDATE audit_events SET actor = 'mallory', hash = $1 WHERE chain_seq = 17",
            row_hash(17, content, row["prev_hash"]),
        )
    result = await verify(db)
    assert result.exit_code == 1
    assert "BROKEN at chain_seq 17" in result.output
    assert ": inserted" in result.output  # row 17 is not the row that row 18 was chained to


async def test_verify_catches_a_deleted_row(db: str) -> None:
    async with as_attacker(db) as conn:
        await conn.execute("DELETE FROM audit_events WHERE chain_seq = 20")
    result = await verify(db)
    assert result.exit_code == 1
    assert "BROKEN at chain_seq 20" in result.output
    assert ": deleted" in result.output
    assert "chain_seq 20 missing" in result.output


async def test_verify_catches_a_deleted_row_with_renumbering(db: str) -> None:
    async with as_attacker(db) as conn:
        await conn.execute("DELETE FROM audit_events WHERE chain_seq = 20")
        await conn.execute(
            "UPDATE audit_events SET chain_seq = chain_seq + 1000000 WHERE chain_seq > 20"
        )
        await conn.execute(
            "UPDATE audit_events SET chain_seq = chain_seq - 1000001 WHERE chain_seq > 1000000"
        )
    result = await verify(db)
    assert result.exit_code == 1
    assert "BROKEN at chain_seq 20" in result.output
    assert ": deleted" in result.output


async def test_verify_catches_an_inserted_row(db: str) -> None:
    async with as_attacker(db) as conn:
        await conn.execute(
            "UPDATE audit_events SET chain_seq = chain_seq + 1000000 WHERE chain_seq >= 30"
        )
        await conn.execute(
            "UPDATE audit_events SET chain_seq = chain_seq - 999999 WHERE chain_seq >= 1000000"
        )
        prev = await conn.fetchval("SELECT hash FROM audit_events WHERE chain_seq = 29")
        forged = action_batches("act-forged")[0].events[0]
        content = {
            **forged.model_dump(mode="json", exclude={"at", "kind", "run_id"}),
            "kind": "requested",
            "at": forged.at.isoformat(timespec="microseconds"),
        }
        await conn.execute(
            "INSERT INTO audit_events (chain_seq, action_id, seq, kind, digest, actor, channel,"
            " at, payload, prev_hash, hash) VALUES (30, $1, 0, 'requested', $2, $3, NULL, $4,"
            " $5::jsonb, $6, $7)",
            forged.action_id,
            forged.digest,
            forged.actor,
            forged.at,
            canonical_json(forged.payload),
            prev,
            row_hash(30, content, prev),
        )
    result = await verify(db)
    assert result.exit_code == 1
    assert "BROKEN at chain_seq 31" in result.output
    assert ": inserted" in result.output
    assert "written at chain_seq 30" in result.output


async def test_verify_catches_reordered_rows(db: str) -> None:
    async with as_attacker(db) as conn:
        await conn.execute("UPDATE audit_events SET chain_seq = 1000000 WHERE chain_seq = 40")
        await conn.execute("UPDATE audit_events SET chain_seq = 40 WHERE chain_seq = 41")
        await conn.execute("UPDATE audit_events SET chain_seq = 41 WHERE chain_seq = 1000000")
    result = await verify(db)
    assert result.exit_code == 1
    assert "BROKEN at chain_seq 40" in result.output
    assert ": reordered" in result.output


async def test_truncate_is_refused_by_the_trigger(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("TRUNCATE audit_events")
    finally:
        await conn.close()


# --- export ---------------------------------------------------------------------------------


@pytest.fixture
async def mixed(postgres_url: str) -> str:
    """Actions of every kind, one of them outside the export window."""
    url = await create_database(postgres_url)
    ledger = await Ledger.connect(url, migrate=True)
    cases = [
        {"approver": "alice@example.com", "wait": timedelta(minutes=2), "self_attempts": 1},
        {"approver": "carol@example.com", "wait": timedelta(minutes=10), "self_attempts": 2},
        {"approver": "alice@example.com", "wait": timedelta(hours=2)},
        # Approved by the person the agent acted for: not independent.
        {"approver": "bob@example.com", "wait": timedelta(seconds=30)},
        {"approver": "dave@example.com", "wait": timedelta(minutes=7), "deny": True},
        {"approver": None},  # allowed by policy, no human decision
    ]
    try:
        for n, case in enumerate(cases):
            start = T0 + timedelta(days=n % 2, hours=n)
            for batch in action_batches(f"act-{n}", start=start, **case):  # type: ignore[arg-type]
                await ledger.append(batch.events)
        for batch in action_batches("act-late", start=T0 + timedelta(days=30), self_attempts=5):
            await ledger.append(batch.events)
    finally:
        await ledger.close()
    return url


WINDOW = ("--since", "2025-03-01", "--until", "2025-03-10")


async def test_json_export_has_one_record_per_action(mixed: str) -> None:
    result = await invoke("audit", "export", "--database-url", mixed, *WINDOW)
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    actions = {a["action_id"]: a for a in body["actions"]}
    assert sorted(actions) == [f"act-{n}" for n in range(6)]
    first = actions["act-0"]
    assert first["requester"] == "agent:bot"
    assert first["on_behalf_of"] == "bob@example.com"
    assert (first["action"], first["target"]) == ("sql.execute", "prod-db")
    assert first["params"] == {"sql": "UPDATE t SET x = 1 WHERE id = 7"}
    assert first["policy_rule"] == "prod-writes"
    assert first["policy_digest"] == "f" * 64
    assert [(d["approver"], d["decision"], d["reason"]) for d in first["decisions"]] == [
        ("alice@example.com", "approve", "looks <fine>")
    ]
    assert [r["code"] for r in first["refused"]] == ["self_approval"]
    assert first["status"] == "succeeded"
    assert first["result"] == {"rows": 1}
    assert first["time_to_decision_seconds"] == 120
    assert actions["act-4"]["status"] == "denied"
    assert actions["act-4"]["execution_started_at"] is None
    assert actions["act-5"]["time_to_decision_seconds"] is None
    summary = body["summary"]
    assert summary["privileged"] == 5
    assert summary["executed_privileged"] == 4
    assert summary["independently_approved"] == 3
    assert summary["refused_self_approval"] == 3


async def test_csv_export(mixed: str, tmp_path: Path) -> None:
    out = tmp_path / "evidence.csv"
    result = await invoke(
        "audit", "export", "--database-url", mixed, *WINDOW, "--format", "csv", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(rows) == 6
    by_id = {r["action_id"]: r for r in rows}
    assert "carol@example.com approve" in by_id["act-1"]["decisions"]
    assert by_id["act-1"]["refused"].count("self_approval") == 2
    assert by_id["act-1"]["time_to_decision_seconds"] == "600.0"


class Report(HTMLParser):
    """Collects what an auditor reads in the evidence report."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.summary = ""
        self.controls: dict[str, str] = {}
        self.control: str | None = None
        self.actions: list[str] = []
        self.svgs = 0
        self.bars = 0
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.stack.append(attributes.get("id") or tag)
        self.control = attributes.get("data-control")
        if "data-action-id" in attributes:
            self.actions.append(attributes["data-action-id"] or "")
        if tag == "svg":
            self.svgs += 1
        if tag == "rect":
            self.bars += 1
        if tag in ("script", "link", "img", "iframe") or {"src", "href"} & set(attributes):
            self.external.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self.stack.pop()
        self.control = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.stack and self.stack[-1] == "summary":
            self.summary += data
        if self.control:
            self.controls[self.control] = self.controls.get(self.control, "") + data


async def test_html_report_renders_with_the_right_numbers(mixed: str, tmp_path: Path) -> None:
    out = tmp_path / "evidence.html"
    result = await invoke(
        "audit", "export", "--database-url", mixed, *WINDOW, "--format", "html", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    report = Report()
    report.feed(page)
    report.close()
    # Waits: 2m, 10m, 2h, 30s (bob) and 7m (deny): the median is 7m.
    assert report.summary.strip() == (
        "5 privileged actions; 75% approved by someone other than the requester; "
        "3 refused self-approval attempts; median time to decision 7m 00s."
    )
    assert report.controls["Approved by someone other than the requester"] == "3 of 4 (75%)"
    assert report.controls["Refused self-approval attempts"] == "3"
    assert report.controls["Median time to decision"] == "7m 00s"
    assert sorted(report.actions) == [f"act-{n}" for n in range(6)]
    assert report.svgs == 2
    # Seven histogram bins and two days of volume.
    assert report.bars == 7 + 2
    assert report.external == []
    assert "looks <fine>" in "".join(report.text)
    assert "looks <fine>" not in page


async def test_export_of_an_empty_period(mixed: str) -> None:
    result = await invoke(
        "audit",
        "export",
        "--database-url",
        mixed,
        "--since",
        "2024-01-01",
        "--until",
        "2024-02-01",
        "--format",
        "html",
    )
    assert result.exit_code == 0, result.output
    assert "0 privileged actions; n/a approved" in result.output


async def test_bad_format_is_a_usage_error(mixed: str) -> None:
    result = await invoke("audit", "export", "--database-url", mixed, "--format", "pdf")
    assert result.exit_code == 2


async def test_data_dir_uses_the_embedded_postgres(tmp_path: Path) -> None:
    missing = await invoke("audit", "verify", "--data-dir", str(tmp_path / "nothing"))
    assert missing.exit_code == 2
    assert "signoff dev" in missing.output
    try:
        result = await invoke("db", "migrate", "--data-dir", str(tmp_path))
        assert result.exit_code == 0, result.output
        # The server keeps running for other processes; a second command joins it.
        result = await invoke("audit", "verify", "--data-dir", str(tmp_path))
        assert result.exit_code == 0, result.output
        assert "ledger intact: 0 rows" in result.output
    finally:
        stop(pgserver.get_server(tmp_path / "pg", cleanup_mode=None))


FORMULA = '=HYPERLINK("http://evil.test","open")\u202e'


@pytest.fixture
async def hostile(postgres_url: str) -> str:
    """A ledger holding an action whose agent-written fields are formulas and hidden text."""
    url = await create_database(postgres_url)
    ledger = await Ledger.connect(url, migrate=True)
    try:
        for batch in action_batches(
            "act-hostile",
            requester=FORMULA,
            params={"note": "\x1b[2J\u200bquiet", "sql": "-1+2"},
        ):
            await ledger.append(batch.events)
    finally:
        await ledger.close()
    return url


async def test_evidence_neutralises_formulas_and_hidden_text(hostile: str, tmp_path: Path) -> None:
    out = tmp_path / "evidence.csv"
    result = await invoke(
        "audit", "export", "--database-url", hostile, "--format", "csv", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    for raw in ("\x1b", "\u200b", "\u202e"):
        assert raw not in text
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert row["requester"] == "'" + FORMULA.replace("\u202e", "\\u202e")  # never a formula
    assert not [v for v in row.values() if v and v[0] in "=+-@\t\r"]
    assert "\\u001b[2J\\u200bquiet" in row["params"]

    page = tmp_path / "evidence.html"
    result = await invoke(
        "audit", "export", "--database-url", hostile, "--format", "html", "--out", str(page)
    )
    assert result.exit_code == 0, result.output
    html = page.read_text(encoding="utf-8")
    for raw in ("\x1b", "\u200b", "\u202e"):
        assert raw not in html
    report = Report()
    report.feed(html)
    shown = "".join(report.text)
    assert "\\u202e" in shown
    assert "\\u001b[2J\\u200bquiet" in shown
