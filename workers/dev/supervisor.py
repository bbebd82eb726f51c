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
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from policies import EXAMPLES_DIR
from workers.database import embedded_pgdata
from workers.dev.binaries import temporal_cli
from workers.settings import Settings
from workflows.search_attributes import dev_server_flags
from workflows.signing import Signer, generate_key_pair

HOST = "127.0.0.1"
# Where the flags of each port are named in messages.
PORT_FLAGS = {
    "temporal_port": "--temporal-port",
    "ui_port": "--ui-port",
    "gateway_port": "--gateway-port",
}
# Lines of the worker's log the terminal shows: approval requests and outcomes.
ECHO_LOGGERS = (" signoff.notify ",)
# A child gets this long after SIGTERM before SIGKILL: the worker lets running activities
# finish for up to 30 s (its graceful shutdown timeout) before it exits.
STOP_TIMEOUT = 40.0
POLL_INTERVAL = 0.25
LOG_TAIL_LINES = 20

Echo = Callable[[str, str], None]
Say = Callable[[str], None]


class DevStackError(Exception):
    """Something the user must fix before the stack can run; the message says what."""


class PortInUse(DevStackError):
    """A port the stack needs is taken."""

    def __init__(self, port: int, flag: str) -> None:
        super().__init__(f"port {port} is in use; choose another with {flag}")
        self.port = port
        self.flag = flag


class StartupFailed(DevStackError):
    """A child did not come up in time, or exited while starting."""


class ChildExited(DevStackError):
    """A child exited on its own while the stack was running."""


@dataclass(frozen=True)
class DevConfig:
    """What `signoff dev` runs: data dir, ports, configuration files and timeouts."""

    data_dir: Path = Path(".signoff")
    temporal_port: int = 7233
    ui_port: int = 8233
    gateway_port: int = 8080
    policy: Path = EXAMPLES_DIR / "policy.yaml"
    directory: Path = EXAMPLES_DIR / "directory.yaml"
    targets: Path = EXAMPLES_DIR / "targets.yaml"
    # An external ledger database; None starts the embedded Postgres in DATA_DIR/pg.
    database_url: str | None = None
    ready_timeout: float = 120.0
    stop_timeout: float = STOP_TIMEOUT

    @property
    def temporal_address(self) -> str:
        """Host:port of the Temporal frontend."""
        return f"{HOST}:{self.temporal_port}"

    @property
    def ui_url(self) -> str:
        """The Temporal Web UI."""
        return f"http://{HOST}:{self.ui_port}"

    @property
    def gateway_url(self) -> str:
        """The signoff gateway."""
        return f"http://{HOST}:{self.gateway_port}"

    @property
    def logs_dir(self) -> Path:
        """Where each child's output goes, one file per child."""
        return self.data_dir / "logs"

    @property
    def signing_key(self) -> Path:
        """The gateway's private signing key (owner-only); only the gateway is given it."""
        return self.data_dir / "keys" / "gateway-signing.pem"

    @property
    def public_keys(self) -> Path:
        """The public keys workers verify with (one file per key, for rotation)."""
        return self.data_dir / "keys" / "public"

    @property
    def pids_file(self) -> Path:
        """The supervisor's and children's pids while the stack runs."""
        return self.data_dir / "pids.json"

    @property
    def uses_example_directory(self) -> bool:
        """Whether the directory is the example one, whose dev tokens may be shown."""
        return self.directory.resolve() == (EXAMPLES_DIR / "directory.yaml").resolve()


def check_ports(config: DevConfig) -> None:
    """Raise PortInUse for the first port that is taken (or used twice)."""
    seen: dict[int, str] = {}
    for attr, flag in PORT_FLAGS.items():
        port = getattr(config, attr)
        if port in seen:
            raise DevStackError(
                f"port {port} is given to both {seen[port]} and {flag}; choose another"
            )
        seen[port] = flag
        if not port_free(port):
            raise PortInUse(port, flag)


def port_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on host:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: a port only in TIME_WAIT is free, one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_config(config: DevConfig) -> None:
    """Load policy, directory and targets once, so a mistake is reported before any start."""
    from activities.targets import load_targets
    from policies.loader import PolicyError, load_policy_and_directory

    try:
        load_policy_and_directory(config.policy, config.directory)
        load_targets(config.targets)
    except PolicyError as err:
        raise DevStackError(str(err)) from None
    except OSError as err:
        raise DevStackError(f"cannot read configuration: {err}") from None


def signoff_command() -> list[str]:
    """How to run the `signoff` CLI with this interpreter's installation."""
    script = Path(sys.executable).parent / "signoff"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from signoff.cli import main; main()"]


@dataclass
class Child:
    """One supervised process: its command, log file and what of its output to show."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    echo_filter: tuple[str, ...] = ()
    process: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid (also its process group id), once started."""
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        """Whether the child was started and has not exited."""
        return self.process is not None and self.process.returncode is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the child's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


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
        temporal = await self._spawn(self._temporal_child())
        # Postgres starts while Temporal boots: both take seconds.
        self._pg_start = asyncio.create_task(self._database())
        await self._wait_temporal(temporal, deadline)
        self.say(f"Temporal is up on {config.temporal_address} (Web UI {config.ui_url})")
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
        kid = self._ensure_keys()
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
            self._wait_worker(worker, deadline), self._wait_gateway(gateway, deadline)
        )
        self.say(f"Worker polling, gateway ready on {config.gateway_url}")
        self._write_pids()

    def _ensure_keys(self) -> str:
        """The data dir's key pair, generated on first start; returns the key id."""
        config = self.config
        if not config.signing_key.exists():
            return generate_key_pair(config.signing_key, config.public_keys / "gateway.pem")
        # A private key others can read is no longer the gateway's alone.
        config.signing_key.chmod(0o600)
        return Signer.load(config.signing_key).kid

    def _temporal_child(self) -> Child:
        config = self.config
        argv = [
            str(temporal_cli()),
            "server",
            "start-dev",
            "--db-filename",
            str(config.data_dir / "temporal.db"),
            "--ip",
            HOST,
            "--port",
            str(config.temporal_port),
            "--ui-port",
            str(config.ui_port),
            *dev_server_flags(),
            "--log-level",
            "warn",
        ]
        return Child("temporal", argv, dict(os.environ), config.logs_dir / "temporal.log")

    async def _database(self) -> str:
        """The ledger's URL, migrated: the configured one, or the embedded Postgres's."""
        from activities.ledger.store import Ledger

        url = self.config.database_url
        if url is None:
            try:
                url = await asyncio.to_thread(self._start_embedded_postgres)
            except Exception as err:
                log = embedded_pgdata(self.config.data_dir) / "log"
                raise StartupFailed(f"PostgreSQL did not start ({err}); its log is {log}") from None
        try:
            ledger = await Ledger.connect(url, migrate=True)
        except Exception as err:
            raise StartupFailed(f"cannot prepare the audit ledger database: {err}") from None
        await ledger.close()
        if self.config.database_url is None:
            self.analytics = await sample_analytics(url, self.config.data_dir)
        return url

    def _start_embedded_postgres(self) -> str:
        import warnings

        with warnings.catch_warnings():
            # platformdirs warns that XDG_RUNTIME_DIR is unset on servers; nothing to act on.
            warnings.simplefilter("ignore")
            import pgserver

        pgdata = embedded_pgdata(self.config.data_dir)
        # cleanup_mode=None: this supervisor stops it explicitly, after the worker is gone.
        self._pg_server = pgserver.get_server(pgdata, cleanup_mode=None)
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
        log = child.log_path.open("ab")
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"--- {stamp} signoff dev starts: {' '.join(child.argv)}\n".encode())
        log.flush()
        try:
            child.process = await asyncio.create_subprocess_exec(
                *child.argv,
                env=child.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # Its own process group: Ctrl-C reaches only us, and we can kill the whole group.
                start_new_session=True,
            )
        except OSError as err:
            log.close()
            raise StartupFailed(f"cannot start {child.name} ({child.argv[0]}): {err}") from None
        self.children.append(child)
        child.pump = asyncio.create_task(self._pump(child, log))
        return child

    async def _pump(self, child: Child, log: IO[bytes]) -> None:
        """Copy the child's output to its log file, echoing the interesting lines."""
        assert child.process is not None
        assert child.process.stdout is not None
        stream = child.process.stdout
        pending = b""
        try:
            while chunk := await stream.read(65536):
                log.write(chunk)
                log.flush()
                if not child.echo_filter:
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", errors="replace")
                    if any(marker in line for marker in child.echo_filter):
                        self.echo(child.name, line)
                # A runaway line without newline is logged, not kept in memory.
                pending = pending[-65536:]
        finally:
            log.close()

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

    async def _wait_temporal(self, child: Child, deadline: float) -> None:
        from temporalio.client import Client

        async def healthy() -> bool:
            client = await asyncio.wait_for(Client.connect(self.config.temporal_address), 5)
            return await asyncio.wait_for(client.service_client.check_health(), 5)

        await self._until(
            child, deadline, f"gRPC health on {self.config.temporal_address}", healthy
        )

    async def _wait_worker(self, child: Child, deadline: float) -> None:
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
        from temporalio.client import Client

        client = await Client.connect(self.config.temporal_address)
        queue = Settings().task_queue

        async def polling() -> bool:
            # The worker is ready once it polls its task queue: submitted actions get picked up.
            response = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace="default",
                    task_queue=TaskQueue(name=queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
            return len(response.pollers) > 0

        await self._until(child, deadline, f"polling task queue {queue!r}", polling)

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
        await asyncio.gather(*(self._stop_child(c) for c in first))
        rest = [c for c in self.children if c not in first]
        await asyncio.gather(*(self._stop_child(c) for c in rest))
        await self._stop_postgres()
        with contextlib.suppress(FileNotFoundError):
            self.config.pids_file.unlink()
        self._release_lock()

    async def _stop_child(self, child: Child) -> None:
        process = child.process
        if process is None:
            return
        if process.returncode is None:
            signal_group(process.pid, signal.SIGTERM)
            exited = asyncio.create_task(process.wait())
            forced = asyncio.create_task(self._force.wait())
            await asyncio.wait(
                {exited, forced},
                timeout=self.config.stop_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            forced.cancel()
            if not exited.done():
                signal_group(process.pid, signal.SIGKILL)
            await exited
        # Whatever the leader left behind in its group goes too.
        signal_group(process.pid, signal.SIGKILL)
        if child.pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(child.pump, 5)

    async def _stop_postgres(self) -> None:
        if self._pg_start is not None:
            # If it is still starting in its thread, let it finish, or we would stop nothing.
            with contextlib.suppress(BaseException):
                await self._pg_start
        if self._pg_server is None:
            return
        await asyncio.to_thread(stop_embedded_postgres, self._pg_server)


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
# Functions with effects outside the statement that PUBLIC may run by default; a read must not
# reach them (`SELECT pg_notify(...)` runs in a READ ONLY transaction too).
_PUBLIC_SIDE_EFFECTS = ("pg_notify(text, text)",)


@dataclass(frozen=True)
class AnalyticsUrls:
    """The sample database's DSNs: the reader's for queries and exports, the writer's."""

    reader: str
    writer: str


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
    import asyncpg

    from activities.ledger.migrations import WORKER_ROLE

    ledger_db = urlsplit(ledger_url).path.lstrip("/") or "postgres"
    passwords = {
        role: _role_password(data_dir, role) for role in (ANALYTICS_READER, ANALYTICS_WRITER)
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
        await conn.execute("REVOKE CONNECT ON DATABASE analytics FROM PUBLIC")
        await conn.execute(
            f"GRANT CONNECT ON DATABASE analytics TO {ANALYTICS_READER}, {ANALYTICS_WRITER}"
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
            f" TO {ANALYTICS_WRITER}"
        )
        await conn.execute(
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ANALYTICS_WRITER}"
        )
    finally:
        await conn.close()
    return AnalyticsUrls(
        reader=_as_role(ledger_url, "analytics", ANALYTICS_READER, passwords[ANALYTICS_READER]),
        writer=_as_role(ledger_url, "analytics", ANALYTICS_WRITER, passwords[ANALYTICS_WRITER]),
    )


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send a signal to a whole process group, if any of it is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_embedded_postgres(server: Any) -> None:
    """Stop an embedded pgserver Postgres (fast: disconnect clients, then shut down cleanly)."""
    # pg_ctl is created at import time, so type checkers cannot see it.
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    postmaster = server.get_postmaster_info()
    if not postmaster.is_running():
        return
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
    except Exception:
        # pg_ctl failed (e.g. the server went away meanwhile): make sure it is gone.
        with contextlib.suppress(Exception):
            postmaster.process.kill()
