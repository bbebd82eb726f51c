"""Which Postgres holds the audit ledger: `SIGNOFF_DATABASE_URL`, or the embedded one of a data dir.

The embedded server (pgserver) lives in `DATA_DIR/pg` and keeps running after the process
that started it exits, so `signoff dev`, the worker and the audit CLI share one server:
pgserver takes an inter-process lock while it checks `postmaster.pid`, and a second process
simply connects to the server already running there.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from workers.settings import Settings

EMBEDDED_DIR = "pg"


class DatabaseNotConfigured(Exception):
    """No database URL was given and the data dir has no embedded Postgres."""


def embedded_pgdata(data_dir: Path) -> Path:
    """Where a data dir keeps its embedded Postgres."""
    return data_dir / EMBEDDED_DIR


def embedded_url(data_dir: Path, *, create: bool = True) -> str:
    """Start (or join) the embedded Postgres of `data_dir` and return its URL."""
    pgdata = embedded_pgdata(data_dir)
    if not create and not (pgdata / "PG_VERSION").exists():
        raise DatabaseNotConfigured(
            f"no embedded Postgres in {pgdata}: run `signoff dev` first, or pass --database-url"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset on servers; nothing to act on.
        warnings.simplefilter("ignore")
        # Imported here: pgserver is heavy and unused when a database URL is configured.
        import pgserver

        # cleanup_mode=None leaves the server running when this process exits, for the others.
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    return str(server.get_uri())


def resolve_database_url(
    database_url: str | None = None,
    data_dir: Path | None = None,
    *,
    settings: Settings | None = None,
    create: bool = False,
) -> str:
    """The database: an explicit data dir's, else the URL, else the default data dir's."""
    if data_dir is not None:
        return embedded_url(data_dir, create=create)
    if database_url:
        return database_url
    settings = settings or Settings()
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return embedded_url(settings.data_dir, create=create)
