"""The gateway process: load configuration, connect to Temporal, serve the app with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import asyncpg
import uvicorn
from fastapi import FastAPI

from activities.executors import register_builtins
from activities.ledger.store import CONNECTION_ERRORS, Ledger, create_pool
from policies.loader import load_policy_and_directory
from signoff.executor import registry
from workers import telemetry
from workers.database import DatabaseNotConfigured, resolve_database_url
from workers.gateway.app import create_app
from workers.gateway.service import ActionService, load_signer
from workers.gateway.tracing import instrument_app
from workers.settings import Settings
from workers.temporal import connect
from workers.wiring.channels import channel_routers
from workflows.signing import Signer

log = logging.getLogger("signoff.gateway")

# A checkpoint that cannot be written now (ledger away, or not migrated yet) waits a round.
CHECKPOINT_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)


class _Server(uvicorn.Server):
    """uvicorn, stopping on SIGINT/SIGTERM and returning normally.

    Stock uvicorn re-raises the signal once it has shut down, which kills the process with
    SIGTERM's default action before our own cleanup; a supervisor then sees exit 143, not 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install stop handlers on the running loop for the duration of the server."""
        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stop)
                handled.append(sig)
        try:
            yield
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    def _stop(self) -> None:
        # A second signal while shutting down means: stop waiting for open connections.
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


async def serve(app: FastAPI, host: str, port: int, *, sock: socket.socket | None = None) -> None:
    """Serve the app with uvicorn until SIGINT or SIGTERM."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep the process's logging setup
        access_log=False,  # AccessLog logs requests, with the principal
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    server = _Server(config)
    await server.serve(sockets=[sock] if sock is not None else None)


async def gateway_ledger(settings: Settings) -> Ledger | None:
    """The ledger a reused idempotency key is checked against; it connects on first use."""
    try:
        url = resolve_database_url(settings=settings)
    except DatabaseNotConfigured as err:
        log.warning(
            "no audit ledger configured (%s): an idempotency key reused after Temporal's "
            "retention is refused only by the worker, once the action reaches it",
            err,
        )
        return None
    # A pool with min_size 0 opens nothing until a submission needs it.
    return Ledger(await create_pool(url, max_size=4))


async def write_checkpoints(ledger: Ledger, signer: Signer, interval: float) -> None:
    """Sign a checkpoint over every chain's head every `interval` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            made = await ledger.checkpoint(signer, if_changed=True)
        except CHECKPOINT_ERRORS as err:
            # The ledger is away (or not migrated yet): the next round tries again.
            log.warning("ledger checkpoint not written: %s: %s", type(err).__name__, err)
        else:
            if made is not None:
                log.debug("ledger checkpoint #%d %s", made.seq, made.hash)


async def run_gateway(
    settings: Settings, *, host: str | None = None, port: int | None = None
) -> None:
    """Load configuration, connect to Temporal, and serve the gateway until signalled."""
    policy, directory = load_policy_and_directory(settings.policy, settings.directory)
    register_builtins(registry)
    registry.load_modules(settings.executor_modules)
    # Telemetry: traces when OTEL_* asks for them (the Temporal client carries them on).
    tracer_provider = telemetry.setup_tracing("signoff-gateway")
    client = await connect(settings, interceptors=telemetry.client_interceptors(tracer_provider))
    signer = load_signer(settings)
    ledger = await gateway_ledger(settings)
    service = ActionService(client, settings, policy, directory, registry, signer, ledger)
    app = create_app(
        service, directory, settings, routers=channel_routers(settings, service, directory)
    )
    if tracer_provider is not None:
        instrument_app(app, tracer_provider, lambda: service.client)
    host = host or settings.gateway_host
    port = settings.gateway_port if port is None else port
    log.info(
        "gateway on http://%s:%d, Temporal %s namespace %s task queue %s (policy %s)",
        host,
        port,
        settings.temporal_address,
        settings.temporal_namespace,
        settings.task_queue,
        policy.digest[:12],
    )
    interval = settings.ledger_checkpoint_interval.total_seconds()
    checkpoints = (
        asyncio.create_task(write_checkpoints(ledger, signer, interval))
        if ledger is not None and interval > 0
        else None
    )
    try:
        await serve(app, host, port)
    finally:
        if checkpoints is not None:
            checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpoints
        telemetry.shutdown_tracing(tracer_provider)  # telemetry: flush the last spans
    log.info("gateway stopped")
