"""What the fault tests share: a policy and targets for effects on a real Postgres table."""

from __future__ import annotations

import sys
from pathlib import Path

import asyncpg
import pytest
import yaml

from tests.conftest import DATA
from tests.executors_for_scale import SCHEMA
from workers.settings import Settings

RECORD_RUN = [sys.executable, str(DATA / "record_run.py")]


@pytest.fixture
def fault_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The test settings, plus rules and targets for the effect table and a recording shell.

    `scale.effect` (tests/executors_for_scale.py) is idempotent: it inserts one row keyed by the
    idempotency key, ON CONFLICT DO NOTHING. `shell.run` is not: each run of record_run.py
    appends a line to its file, and a second line would be a second run.
    """
    policy = yaml.safe_load((DATA / "policy.yaml").read_text())
    policy["rules"] = [
        {
            "id": "effects-now",
            "match": {"action": "scale.effect", "target": "effects-db"},
            "effect": "allow",
        },
        {
            "id": "effects-approved",
            "match": {"action": "scale.effect", "target": "effects-db-guarded"},
            "effect": "require_approval",
            "approvals": [{"group": "dba", "min": 1}],
            "expires_after": "1h",
        },
        *policy["rules"],
    ]
    policy_file = tmp_path / "fault-policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    effects = {"kind": "postgres", "dsn_env": "SCALE_TEST_DSN"}
    targets = tmp_path / "fault-targets.yaml"
    targets.write_text(
        yaml.safe_dump(
            {
                "targets": {
                    "effects-db": effects,
                    "effects-db-guarded": effects,
                    "ops-shell": {"kind": "shell", "allowed": [RECORD_RUN], "timeout": "1m"},
                }
            }
        )
    )
    return settings.model_copy(update={"policy": policy_file, "targets": targets})


@pytest.fixture
def effects_dsn(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The effect table's database (the session's Postgres), for in-process workers too."""
    monkeypatch.setenv("SCALE_TEST_DSN", postgres_url)
    return postgres_url


async def effect_counts(db: asyncpg.Connection, keys: list[str]) -> dict[str, int]:
    """How many effect rows each idempotency key has (missing keys have none)."""
    rows = await db.fetch(
        "SELECT idempotency_key, count(*) AS n FROM scale_effects "
        "WHERE idempotency_key = ANY($1) GROUP BY idempotency_key",
        keys,
    )
    return {r["idempotency_key"]: r["n"] for r in rows}


async def effects_table(url: str) -> asyncpg.Connection:
    """A connection to the effect table's database, with the tables created."""
    db = await asyncpg.connect(url)
    await db.execute(SCHEMA)
    return db
