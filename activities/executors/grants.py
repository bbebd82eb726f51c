"""`postgres.grant_role`: grant a database role to a user for a duration, revoked at the end.

The grant is the action; its revert revokes it. A grant never hands out a role that reaches
beyond the database (a superuser, a role that creates roles or bypasses row security, a member
of one, or a predefined `pg_*` role) unless the target sets `allow_privileged_grants: true`.
Identifiers are checked against the catalog first and always quoted, never interpolated raw.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from activities.executors.sql import PRIVILEGED_ROLES, connection
from activities.targets import PostgresTarget
from signoff.executor import ExecutionContext, Executor, ExecutorError
from signoff.models import parse_duration

# Postgres truncates identifiers at 63 bytes; a longer name would silently name another role.
MAX_IDENTIFIER_BYTES = 63


def quote_identifier(name: str) -> str:
    """A Postgres identifier, double-quoted with inner quotes doubled: safe in any DDL."""
    return '"' + name.replace('"', '""') + '"'


class GrantRoleParams(BaseModel):
    """Which role to grant to which database user, and for how long."""

    model_config = ConfigDict(extra="forbid")

    role: str = Field(min_length=1, examples=["analytics_writers"])
    user: str = Field(min_length=1, examples=["analyst"])
    duration: str = Field(examples=["30m"], description="How long the grant lasts, e.g. 30m")

    @field_validator("role", "user")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if len(value.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
            raise ValueError(f"longer than Postgres's {MAX_IDENTIFIER_BYTES}-byte identifier limit")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value) or value != value.strip():
            raise ValueError("must not contain control characters or surrounding spaces")
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str) -> str:
        parsed = parse_duration(value)
        if not isinstance(parsed, timedelta) or parsed <= timedelta(0):
            raise ValueError("must be a positive duration such as 30m")
        return value


_ROLE_POWERS = """
SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls,
       r.rolname LIKE 'pg\\_%' AS predefined,
       ARRAY(SELECT g.rolname FROM pg_roles g
             WHERE g.oid <> r.oid AND pg_has_role(r.oid, g.oid, 'MEMBER')
               AND (g.rolsuper OR g.rolcreaterole OR g.rolbypassrls OR g.rolreplication
                    OR g.rolname = ANY($2::text[]) OR g.rolname LIKE 'pg\\_%')) AS privileged
FROM pg_roles r WHERE r.rolname = $1
"""
_DIRECT_MEMBER = """
SELECT EXISTS (SELECT 1 FROM pg_auth_members m
               JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
               WHERE r.rolname = $1 AND u.rolname = $2)
"""


async def _check_grantable(
    conn: asyncpg.Connection, name: str, target: PostgresTarget, role: str
) -> None:
    """Refuse an unknown role, or one whose members reach beyond the database."""
    row = await conn.fetchrow(_ROLE_POWERS, role, list(PRIVILEGED_ROLES))
    if row is None:
        raise ExecutorError(f"target {name!r} has no role {role!r}")
    if target.allow_privileged_grants:
        return
    powers = [
        label
        for label, held in (
            ("a superuser", row["rolsuper"]),
            ("able to create roles", row["rolcreaterole"]),
            ("able to create databases", row["rolcreatedb"]),
            ("a replication role", row["rolreplication"]),
            ("able to bypass row-level security", row["rolbypassrls"]),
            ("a predefined pg_* role", row["predefined"]),
        )
        if held
    ] + [f"a member of {g}" for g in row["privileged"]]
    if powers:
        raise ExecutorError(
            f"role {role!r} on target {name!r} is {' and '.join(powers)}; postgres.grant_role "
            "never grants it (set `allow_privileged_grants: true` on the target to allow it)"
        )


async def _check_user(conn: asyncpg.Connection, name: str, user: str, role: str) -> None:
    if user == role:
        raise ExecutorError("a role cannot be granted to itself")
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user):
        raise ExecutorError(f"target {name!r} has no user {user!r}")


async def grant_role(ctx: ExecutionContext[GrantRoleParams]) -> JsonValue:
    """Grant a database role to a user for a duration; revoked when it ends."""
    target = ctx.target
    assert isinstance(target, PostgresTarget)
    role, user = ctx.params.role, ctx.params.user
    async with connection("postgres.grant_role", ctx.target_name, target, write=True) as conn:
        await _check_grantable(conn, ctx.target_name, target, role)
        await _check_user(conn, ctx.target_name, user, role)
        # A membership that existed before is not this grant's to take back at the end.
        already = bool(await conn.fetchval(_DIRECT_MEMBER, role, user))
        if not already:
            await conn.execute(f"GRANT {quote_identifier(role)} TO {quote_identifier(user)}")
    return {"role": role, "user": user, "granted": not already, "already_member": already}


async def revoke_role(ctx: ExecutionContext[GrantRoleParams]) -> JsonValue:
    """Revoke the role the grant gave (idempotent: revoking twice, or a dropped role, is done)."""
    target = ctx.target
    assert isinstance(target, PostgresTarget)
    role, user = ctx.params.role, ctx.params.user
    result = ctx.result if isinstance(ctx.result, dict) else {}
    if result.get("already_member") is True:
        return {"role": role, "user": user, "revoked": False, "reason": "member before the grant"}
    async with connection("postgres.grant_role", ctx.target_name, target, write=True) as conn:
        exists = await conn.fetchval(
            "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1::text[])", [role, user]
        )
        if exists != 2:
            return {"role": role, "user": user, "revoked": False, "reason": "role or user gone"}
        if await conn.fetchval(_DIRECT_MEMBER, role, user):
            await conn.execute(f"REVOKE {quote_identifier(role)} FROM {quote_identifier(user)}")
    return {"role": role, "user": user, "revoked": True}


POSTGRES_GRANT_ROLE = Executor.define(
    grant_role,
    "postgres.grant_role",
    # At most once: a retried grant would find its own membership and think it pre-existing.
    idempotent=False,
    timeout=timedelta(minutes=1),
    params_model=GrantRoleParams,
    target_kind="postgres",
    revert=revoke_role,
)
