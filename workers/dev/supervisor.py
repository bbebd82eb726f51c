"""The local stack behind `signoff dev`: Temporal, Postgres, a worker and the gateway.

Each child runs in its own process group, so a Ctrl-C at the terminal reaches only this
supervisor, which then stops the children in order (gateway and worker first, Temporal after
them, Postgres last) and kills whatever is left of each group after a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
from temporalio.client import Client

from workers.database import (
    embedded_pgdata,
    embedded_server,
    stop_embedded_server,
)
from workers.dev import process
from workers.dev.binaries import temporal_cli
from workers.dev.config import (
    HOST,
    ChildExited,
    DevConfig,
    DevStackError,
    StartupFailed,
    check_config,
    check_ports,
)
from workers.dev.keys import ensure_keys
from workers.dev.postgres import AnalyticsUrls, migrate_ledger, sample_analytics
from workers.dev.process import Child, Echo, signoff_command
from workers.dev.temporal import (
    attributes_usable,
    dev_server_argv,
    queue_polled,
    temporal_healthy,
)
from workers.settings import Settings
from workflows import search_attributes

# Lines of the worker's log the terminal shows: approval requests and outcomes.
ECHO_LOGGERS = (" signoff.notify ",)
POLL_INTERVAL = 0.25

Say = Callable[[str], None]


@dataclass
class DevStack:
    """Starts, watches and stops the local stack; `run()` is the whole lifecycle."""

    config: DevConfig
    echo: Echo = field(default=lambda name, line: None)
    say: Say = field(default=lambda text: None)
    children: list[Child] = field(default_factory=list)
    database_url: str | None = None
    analytics: AnalyticsUrls | None = None
    _pg_server: Any = None
    _pg_start: asyncio.Task[str] | None = None
    _lock: IO[str] | None = None
    _force: asyncio.Event = field(default_factory=asyncio.Event)

    # --- start --------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Everything checked before anything starts: data dir lock, ports, configuration."""
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            try:
                temporal_cli()
            except FileNotFoundError as err:
                raise DevStackError(str(err)) from None
            check_ports(config)
            check_config(config)
        except BaseException:
            self._release_lock()
            raise

    def _take_lock(self) -> None:
        # Two stacks on one data dir would share Temporal's sqlite file and Postgres.
        lock = (self.config.data_dir / "dev.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise DevStackError(
                f"another `signoff dev` (pid {holder}) is using {self.config.data_dir}; "
                "stop it or choose another --data-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    async def start(self) -> None:
        """Start every child and wait until all are ready; raise StartupFailed otherwise."""
        config = self.config
        config.logs_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + config.ready_timeout
        temporal = await self._spawn(
            Child(
                "temporal",
                dev_server_argv(config),
                dict(os.environ),
                config.logs_dir / "temporal.log",
            )
        )
        # Postgres starts while Temporal boots: both take seconds.
        self._pg_start = asyncio.create_task(self._database())
        await self._until(
            temporal,
            deadline,
            f"gRPC health on {config.temporal_address}",
            lambda: temporal_healthy(config.temporal_address),
        )
        self.say(f"Temporal is up on {config.temporal_address} (Web UI {config.ui_url})")
        # One client for the rest of the start: the attributes now, the worker's poll later.
        client = await Client.connect(config.temporal_address)
        await self._register_attributes(client, temporal, deadline)
        try:
            self.database_url = await asyncio.wait_for(
                asyncio.shield(self._pg_start), max(deadline - time.monotonic(), 0.1)
            )
        except TimeoutError:
            raise StartupFailed(
                f"PostgreSQL did not come up within {config.ready_timeout:g}s; "
                f"its log is {embedded_pgdata(config.data_dir) / 'log'}"
            ) from None
        where = "SIGNOFF_DATABASE_URL" if config.database_url else embedded_pgdata(config.data_dir)
        self.say(f"Audit ledger ready ({where}), migrated")
        env = self._child_env()
        kid = ensure_keys(config)
        self.say(
            f"Signing key {kid} in {config.signing_key.parent} (gateway signs, worker verifies)"
        )
        # The worker gets the public keys only; the private key goes to the gateway alone.
        worker_env = {k: v for k, v in env.items() if k != "SIGNOFF_SIGNING_KEY"}
        worker_env["SIGNOFF_VERIFY_KEYS"] = str(config.public_keys.resolve())
        gateway_env = {**env, "SIGNOFF_SIGNING_KEY": str(config.signing_key.resolve())}
        signoff = signoff_command()
        worker = await self._spawn(
            Child(
                "worker",
                [*signoff, "worker"],
                worker_env,
                config.logs_dir / "worker.log",
                ECHO_LOGGERS,
            )
        )
        gateway = await self._spawn(
            Child(
                "gateway",
                [*signoff, "gateway", "--host", HOST, "--port", str(config.gateway_port)],
                gateway_env,
                config.logs_dir / "gateway.log",
            )
        )
        await asyncio.gather(
            self._wait_worker(client, worker, deadline), self._wait_gateway(gateway, deadline)
        )
        self.say(f"Worker polling, gateway ready on {config.gateway_url}")
        self._write_pids()

    async def _database(self) -> str:
        """The ledger's URL, migrated: the configured one, or the embedded Postgres's."""
        url = self.config.database_url
        if url is None:
            try:
                url = await asyncio.to_thread(self._start_embedded_postgres)
            except Exception as err:
                log = embedded_pgdata(self.config.data_dir) / "log"
                raise StartupFailed(f"PostgreSQL did not start ({err}); its log is {log}") from None
        await migrate_ledger(url)
        if self.config.database_url is None:
            self.analytics = await sample_analytics(url, self.config.data_dir)
        return url

    def _start_embedded_postgres(self) -> str:
        # This supervisor stops it explicitly, after the worker is gone.
        self._pg_server = embedded_server(self.config.data_dir)
        return str(self._pg_server.get_uri())

    def _child_env(self) -> dict[str, str]:
        config = self.config
        assert self.database_url is not None
        # The local Temporal has no TLS and no API key, whatever the shell has exported.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_TEMPORAL_")}
        if self.analytics is not None:
            # The example targets file reads the `analytics` target's DSNs from here.
            env.setdefault("ANALYTICS_DSN", self.analytics.reader)
            env.setdefault("ANALYTICS_WRITE_DSN", self.analytics.writer)
            env.setdefault("ANALYTICS_GRANT_DSN", self.analytics.granter)
        env.update(
            {
                "SIGNOFF_TEMPORAL_ADDRESS": config.temporal_address,
                "SIGNOFF_TEMPORAL_NAMESPACE": "default",
                "SIGNOFF_UI_URL": config.ui_url,
                "SIGNOFF_DATABASE_URL": self.database_url,
                "SIGNOFF_DATA_DIR": str(config.data_dir.resolve()),
                "SIGNOFF_POLICY": str(config.policy.resolve()),
                "SIGNOFF_DIRECTORY": str(config.directory.resolve()),
                "SIGNOFF_TARGETS": str(config.targets.resolve()),
                "SIGNOFF_GATEWAY_HOST": HOST,
                "SIGNOFF_GATEWAY_PORT": str(config.gateway_port),
                "SIGNOFF_GATEWAY": config.gateway_url,
                # Log lines must reach the terminal as they happen, not when a buffer fills.
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    async def _spawn(self, child: Child) -> Child:
        await process.spawn(child, self.echo)
        self.children.append(child)
        return child

    def _exited(self, child: Child) -> StartupFailed:
        assert child.process is not None
        tail = child.log_tail()
        return StartupFailed(
            f"{child.name} exited with code {child.process.returncode} while starting; "
            f"its log is {child.log_path}" + (f"\n{tail}" if tail else "")
        )

    def _timed_out(self, child: Child, what: str) -> StartupFailed:
        tail = child.log_tail()
        return StartupFailed(
            f"{child.name} did not become ready ({what}) within {self.config.ready_timeout:g}s; "
            f"its log is {child.log_path}" + (f"\n{tail}" if tail else "")
        )

    async def _until(
        self, child: Child, deadline: float, what: str, probe: Callable[[], Any]
    ) -> None:
        """Call the async probe until it returns true, the child exits or time runs out."""
        while True:
            if not child.running:
                raise self._exited(child)
            with contextlib.suppress(Exception):
                if await probe():
                    return
            if time.monotonic() > deadline:
                raise self._timed_out(child, what)
            await asyncio.sleep(POLL_INTERVAL)

    async def _register_attributes(self, client: Client, child: Child, deadline: float) -> None:
        """Register the search attributes a data dir from an earlier release lacks."""
        # The server's flags register them only when it creates its database. On a file an
        # earlier release made, an attribute added since would fail every run that sets it.
        added = await search_attributes.register(client, "default")
        if added:
            self.say(f"Registered search attributes new to this data dir: {', '.join(added)}")
            await self._until(
                child,
                deadline,
                "the new search attributes",
                lambda: attributes_usable(client, added),
            )

    async def _wait_worker(self, client: Client, child: Child, deadline: float) -> None:
        queue = Settings().task_queue
        await self._until(
            child, deadline, f"polling task queue {queue!r}", lambda: queue_polled(client, queue)
        )

    async def _wait_gateway(self, child: Child, deadline: float) -> None:
        url = f"{self.config.gateway_url}/readyz"
        async with httpx.AsyncClient(timeout=5) as http:

            async def ready() -> bool:
                return (await http.get(url)).status_code == 200

            await self._until(child, deadline, f"GET {url}", ready)

    def _write_pids(self) -> None:
        pids: dict[str, Any] = {
            "supervisor": os.getpid(),
            "children": {c.name: c.pid for c in self.children},
        }
        if self._pg_server is not None:
            pids["postgres"] = self._pg_server.get_pid()
        self.config.pids_file.write_text(json.dumps(pids, indent=2) + "\n")

    # --- run ----------------------------------------------------------------------------------

    async def run(self, on_ready: Callable[[], None]) -> None:
        """Start, call `on_ready`, run until SIGINT/SIGTERM or a child dies, then stop all."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        signals = (signal.SIGINT, signal.SIGTERM)

        def on_signal() -> None:
            # The first signal stops gracefully; a second one means "now": kill what is left.
            if stopping.is_set():
                self._force.set()
            stopping.set()

        for sig in signals:
            loop.add_signal_handler(sig, on_signal)
        stop_wait = asyncio.create_task(stopping.wait())
        try:
            startup = asyncio.create_task(self.start())
            await asyncio.wait({startup, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not startup.done():
                # Stopped while starting: abandon the start, then stop what is already up.
                startup.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await startup
                return
            startup.result()
            on_ready()
            watch = asyncio.create_task(self.watch())
            await asyncio.wait({watch, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                child = watch.result()
                assert child.process is not None
                tail = child.log_tail()
                raise ChildExited(
                    f"{child.name} exited with code {child.process.returncode}; "
                    f"the stack was stopped. Its log is {child.log_path}"
                    + (f"\n{tail}" if tail else "")
                )
            watch.cancel()
        finally:
            stop_wait.cancel()
            if any(c.running for c in self.children):
                self.say(
                    f"Stopping (running actions get up to {self.config.stop_timeout:g}s; "
                    "signal again to kill now) ..."
                )
            await self.stop()
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def watch(self) -> Child:
        """Wait until a child exits on its own; return it."""
        waits = {
            asyncio.create_task(c.process.wait()): c for c in self.children if c.process is not None
        }
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return waits[done.pop()]

    # --- stop ---------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop the children (gateway and worker, then Temporal), then Postgres; no orphans."""
        by_name = {c.name: c for c in self.children}
        first = [by_name[n] for n in ("gateway", "worker") if n in by_name]
        timeout = self.config.stop_timeout
        await asyncio.gather(*(process.stop(c, timeout, self._force) for c in first))
        rest = [c for c in self.children if c not in first]
        await asyncio.gather(*(process.stop(c, timeout, self._force) for c in rest))
        await self._stop_postgres()
        with contextlib.suppress(FileNotFoundError):
            self.config.pids_file.unlink()
        self._release_lock()

    async def _stop_postgres(self) -> None:
        if self._pg_start is not None:
            # If it is still starting in its thread, let it finish, or we would stop nothing.
            with contextlib.suppress(BaseException):
                await self._pg_start
        if self._pg_server is None:
            return
        await asyncio.to_thread(stop_embedded_server, self._pg_server)
