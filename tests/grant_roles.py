"""Postgres roles for `postgres.grant_role` tests and recordings: a role to grant, a granter."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

GRANTABLE = "jit_writers"
PRIVILEGED = "jit_role_admins"
GRANTER = "jit_granter"
DSN_ENV = "SIGNOFF_TEST_GRANT_DSN"


async def granter_roles(postgres_url: str) -> str:
    """Create the roles (idempotently); the granter's DSN, a least-privilege role."""
    password = uuid.uuid4().hex
    conn = await asyncpg.connect(postgres_url)
    try:
        for role, options in (
            (GRANTABLE, "NOLOGIN"),
            (PRIVILEGED, "NOLOGIN CREATEROLE"),
            (GRANTER, f"LOGIN PASSWORD '{password}'"),
        ):
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f"ALTER ROLE {role} {options}")
            else:
                await conn.execute(f"CREATE ROLE {role} {options}")
        await conn.execute(f"GRANT {GRANTABLE}, {PRIVILEGED} TO {GRANTER} WITH ADMIN OPTION")
    finally:
        await conn.close()
    parts = urlsplit(postgres_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{GRANTER}:{password}@{host}"))


async def new_grantee(postgres_url: str) -> str:
    """A fresh database user to grant roles to."""
    name = f"jit_user_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f"CREATE ROLE {name} LOGIN")
    finally:
        await conn.close()
    return name


def grant_targets(directory: Path) -> Path:
    """A targets file with the Postgres target `grant-db`, its DSN read from DSN_ENV."""
    path = directory / "grant-targets.yaml"
    path.write_text(f"targets:\n  grant-db: {{kind: postgres, dsn_env: {DSN_ENV}}}\n")
    return path
