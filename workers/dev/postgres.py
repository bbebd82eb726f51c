"""The local stack's Postgres: the ledger migrated, a sample `analytics` database and its roles."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from activities.ledger.migrations import WORKER_ROLE
from activities.ledger.store import Ledger
from workers.dev.config import StartupFailed


async def migrate_ledger(url: str) -> None:
    """Bring the ledger's schema up to date, or raise StartupFailed saying why not."""
    try:
        ledger = await Ledger.connect(url, migrate=True)
    except Exception as err:
        raise StartupFailed(f"cannot prepare the audit ledger database: {err}") from None
    await ledger.close()


SAMPLE_CUSTOMERS = [
    ("Ada Ltd", "emea", "2025-01-14"),
    ("Borealis AB", "emea", "2025-02-03"),
    ("Cobalt Inc", "amer", "2025-02-21"),
    ("Dunmore LLC", "amer", "2025-03-09"),
    ("Esker Pty", "apac", "2025-03-30"),
    ("Fjord AS", "emea", "2025-04-12"),
    ("Granite Co", "amer", "2025-05-02"),
    ("Halcyon KK", "apac", "2025-05-27"),
]


# The sample database's roles: least privilege, never the cluster's superuser.
ANALYTICS_READER = "signoff_analytics_reader"
ANALYTICS_WRITER = "signoff_analytics_writer"
# Just-in-time access (postgres.grant_role): a group role worth granting, a user to grant it to,
# and the role the executor connects as, which may grant that group and nothing else.
ANALYTICS_WRITERS = "analytics_writers"
ANALYST = "analyst"
ACCESS_GRANTER = "signoff_access_granter"
# Functions with effects outside the statement that PUBLIC may run by default; a read must not
# reach them (`SELECT pg_notify(...)` runs in a READ ONLY transaction too).
_PUBLIC_SIDE_EFFECTS = ("pg_notify(text, text)",)


@dataclass(frozen=True)
class AnalyticsUrls:
    """The sample database's DSNs: the reader's for queries and exports, the writer's."""

    reader: str
    writer: str
    granter: str = ""


def _role_password(data_dir: Path, role: str) -> str:
    """The role's password, generated once into the data dir (owner-only)."""
    path = data_dir / "roles" / f"{role}.password"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(password + "\n")
    return password


def _as_role(url: str, database: str, role: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}"))


async def sample_analytics(ledger_url: str, data_dir: Path) -> AnalyticsUrls:
    """Create the embedded `analytics` database, its customers table and two roles for it.

    The reader may SELECT, the writer may also INSERT/UPDATE/DELETE; neither is a superuser
    or a member of a privileged role, and neither may connect to the ledger's database.
    """
    ledger_db = urlsplit(ledger_url).path.lstrip("/") or "postgres"
    passwords = {
        role: _role_password(data_dir, role)
        for role in (ANALYTICS_READER, ANALYTICS_WRITER, ACCESS_GRANTER)
    }
    conn = await asyncpg.connect(ledger_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'analytics'"):
            await conn.execute("CREATE DATABASE analytics")
        for role, password in passwords.items():
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            verb = "ALTER" if exists else "CREATE"
            # DDL takes no parameters; the password is ours (token_urlsafe), so quoting is safe.
            await conn.execute(
                f"{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                f" NOBYPASSRLS PASSWORD '{password}'"
            )
        # Nobody but the superuser reaches the ledger's database (PUBLIC could connect before).
        await conn.execute(f'REVOKE CONNECT ON DATABASE "{ledger_db}" FROM PUBLIC')
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", WORKER_ROLE):
            # Login roles granted the ledger's worker role keep reaching it.
            await conn.execute(f'GRANT CONNECT ON DATABASE "{ledger_db}" TO {WORKER_ROLE}')
        for role, options in ((ANALYTICS_WRITERS, "NOLOGIN"), (ANALYST, "LOGIN")):
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f"CREATE ROLE {role} {options}")
        await conn.execute(f"GRANT {ANALYTICS_WRITERS} TO {ACCESS_GRANTER} WITH ADMIN OPTION")
        await conn.execute("REVOKE CONNECT ON DATABASE analytics FROM PUBLIC")
        await conn.execute(
            f"GRANT CONNECT ON DATABASE analytics TO {ANALYTICS_READER}, {ANALYTICS_WRITER},"
            f" {ACCESS_GRANTER}, {ANALYST}"
        )
    finally:
        await conn.close()
    url = urlunsplit(urlsplit(ledger_url)._replace(path="/analytics"))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS customers ("
            " id serial PRIMARY KEY, name text UNIQUE NOT NULL, region text NOT NULL,"
            " signed_up date NOT NULL)"
        )
        await conn.executemany(
            "INSERT INTO customers (name, region, signed_up) VALUES ($1, $2, $3::text::date)"
            " ON CONFLICT (name) DO NOTHING",
            SAMPLE_CUSTOMERS,
        )
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        for function in _PUBLIC_SIDE_EFFECTS:
            await conn.execute(f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")
        await conn.execute(
            f"GRANT USAGE ON SCHEMA public TO {ANALYTICS_READER}, {ANALYTICS_WRITER}"
        )
        await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ANALYTICS_READER}")
        await conn.execute(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public"
            f" TO {ANALYTICS_WRITER}, {ANALYTICS_WRITERS}"
        )
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {ANALYTICS_WRITERS}")
        await conn.execute(
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ANALYTICS_WRITER}"
        )
    finally:
        await conn.close()
    return AnalyticsUrls(
        reader=_as_role(ledger_url, "analytics", ANALYTICS_READER, passwords[ANALYTICS_READER]),
        writer=_as_role(ledger_url, "analytics", ANALYTICS_WRITER, passwords[ANALYTICS_WRITER]),
        granter=_as_role(ledger_url, "analytics", ACCESS_GRANTER, passwords[ACCESS_GRANTER]),
    )
