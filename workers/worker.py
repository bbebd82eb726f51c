"""The signoff worker: runs the action workflow and the activities that hold credentials."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

from temporalio.client import Client
from temporalio.worker import Interceptor, UnsandboxedWorkflowRunner, Worker

from activities.admission import Admission
from activities.audit import AuditActivities
from activities.decision_checks import DecisionChecks
from activities.execution import ExecutionActivities
from activities.executors import register_builtins
from activities.ledger.store import CONNECTION_ERRORS, Ledger
from activities.notify import Notifications
from activities.policy import PolicyActivities
from activities.targets import Targets, load_targets
from activities.verify import SignatureActivities
from activities.windows import LiveWindows
from channels.console import ConsoleNotifier
from channels.notifier import Notifier
from policies.directory import Directory
from policies.engine import Policy
from policies.loader import load_policy_and_directory
from signoff.executor import ExecutorRegistry, registry
from workers import telemetry
from workers.activity_guard import ActivityGuard
from workers.converter import UndecodablePayload, data_converter
from workers.database import resolve_database_url
from workers.sandbox import SANDBOX
from workers.settings import Settings
from workers.temporal import connect
from workers.wiring.channels import notifiers_for
from workflows.action import ActionWorkflow
from workflows.signing import KeySet, SigningError
from workflows.window import WindowWorkflow

log = logging.getLogger("signoff.worker")


@dataclass
class WorkerParts:
    """Everything a worker needs besides the Temporal client."""

    policy: Policy
    directory: Directory
    ledger: Ledger
    targets: Targets
    executors: ExecutorRegistry = field(default_factory=lambda: registry)
    notifiers: Sequence[Notifier] = field(default_factory=lambda: [ConsoleNotifier()])


def build_worker(
    client: Client,
    settings: Settings,
    parts: WorkerParts,
    *,
    interceptors: Sequence[Interceptor] = (),
) -> Worker:
    """A worker for the settings' task queue with the workflow and all activities registered.

    Tracing comes from the client's interceptors; `interceptors` adds worker-only ones.
    """
    notifications = Notifications(parts.notifiers)
    policy = PolicyActivities(
        parts.policy,
        parts.directory,
        parts.executors,
        channels=notifications.channels,
        ui_base_url=settings.ui_url,
        page_base=next(
            (n.page_base for n in parts.notifiers if isinstance(n, ConsoleNotifier)), None
        ),
        heartbeat_timeout=settings.heartbeat_timeout,
        caller_timeout=settings.caller_report_timeout,
        windows=LiveWindows(client, settings.task_queue),
    )
    executors = ExecutionActivities(parts.executors, parts.targets, ledger=parts.ledger)
    audit = AuditActivities(parts.ledger)
    keys = KeySet.load(settings.verify_keys) if settings.verify_keys else None
    signatures = SignatureActivities(keys, settings.signature_max_age)
    checks = DecisionChecks(signatures, policy)
    admission = Admission(signatures, audit, policy)
    if client.data_converter is not data_converter:
        # Whoever built the client, the worker decodes with the contract's converter.
        config = client.config()
        config["data_converter"] = data_converter
        client = Client(**config)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[ActionWorkflow, WindowWorkflow],
        activities=[
            policy.evaluate_policy,
            policy.resolve_principal,
            notifications.notify,
            notifications.notify_update,
            notifications.notify_window,
            executors.execute_action,
            executors.revert_action,
            audit.record_audit_events,
            audit.check_run,
            audit.claim_execution_activity,
            audit.record_and_claim,
            audit.record_outcome,
            signatures.verify_signature,
            checks.check_decision,
            admission.admit_request,
        ],
        workflow_runner=SANDBOX if settings.workflow_sandbox else UnsandboxedWorkflowRunner(),
        max_cached_workflows=settings.max_cached_workflows,
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=settings.worker_shutdown_timeout,
        # Input no deploy can make valid fails the run at once, with the reason, instead of
        # failing its first workflow task forever (see signoff.converter). Other task
        # failures stay retried (a deploy fixes them) and alert (deploy/prometheus).
        workflow_failure_exception_types=[UndecodablePayload],
        # First, so nothing else sees an activity it refuses (workers/activity_guard.py).
        # Notification failures are counted per channel for alerting (telemetry).
        interceptors=[ActivityGuard(parts.ledger), telemetry.NotificationMetrics(), *interceptors],
    )


async def run_worker(settings: Settings) -> None:
    """Load configuration, connect, and run until SIGINT or SIGTERM."""
    if settings.verify_keys is None:
        # Without public keys every new action would be refused; say so before starting.
        raise SigningError(
            "SIGNOFF_VERIFY_KEYS is not set: the worker needs the gateway's public key(s) "
            "(a PEM file or a directory of *.pem) to accept signed requests and decisions"
        )
    KeySet.load(settings.verify_keys)  # unreadable or wrong keys: fail now, not per action
    policy, directory = load_policy_and_directory(settings.policy, settings.directory)
    targets = load_targets(settings.targets)
    register_builtins(registry)
    registry.load_modules(settings.executor_modules)
    ledger = await Ledger.connect(
        resolve_database_url(settings=settings, create=True),
        partitions=settings.ledger_partitions,
    )
    # A worker that finds the ledger's schema behind its code says so instead of failing
    # every action's audit write (upgrade order: `signoff db migrate`, then the workers). A
    # ledger that cannot be reached now does not stop the start: audit writes wait for it.
    try:
        await ledger.require_schema()
    except CONNECTION_ERRORS as err:
        log.warning("audit ledger unreachable at start (%s); its schema is not checked", err)
    # Telemetry: traces when OTEL_* asks for them, Prometheus when the metrics port is set.
    tracer_provider = telemetry.setup_tracing("signoff-worker")
    client = await connect(
        settings,
        interceptors=telemetry.client_interceptors(tracer_provider),
        runtime=telemetry.worker_runtime(settings),
    )
    parts = WorkerParts(
        policy=policy,
        directory=directory,
        ledger=ledger,
        targets=targets,
        notifiers=notifiers_for(settings, directory),
    )
    worker = build_worker(client, settings, parts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker on %s namespace %s task queue %s (policy %s)",
        settings.temporal_address,
        settings.temporal_namespace,
        settings.task_queue,
        policy.digest[:12],
    )
    try:
        async with worker:
            await stop.wait()
    finally:
        await ledger.close()
        telemetry.shutdown_tracing(tracer_provider)
