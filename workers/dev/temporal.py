"""The Temporal dev server of the local stack: its command line, and the readiness probes."""

from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from workers.dev.binaries import temporal_cli
from workers.dev.config import HOST, DevConfig
from workflows.search_attributes import dev_server_flags

# The dev server's sqlite file keeps a write-ahead log: in the default rollback-journal mode
# each commit takes about four fsyncs, with the log one. `synchronous=full` syncs the log at
# every commit, so a committed transaction survives a power cut as before (the driver's default,
# said here so that no build of it changes that). The stack's Temporal runs one statement at a
# time on this file, so its commits bound how fast every action moves (issue 16).
SQLITE_FLAGS = ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=full"]


def dev_server_argv(config: DevConfig) -> list[str]:
    """`temporal server start-dev` with the stack's sqlite file, ports and search attributes."""
    return [
        str(temporal_cli()),
        "server",
        "start-dev",
        "--db-filename",
        str(config.data_dir / "temporal.db"),
        *SQLITE_FLAGS,
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


async def temporal_healthy(address: str) -> bool:
    """Whether the Temporal frontend at `address` answers its gRPC health check."""
    client = await asyncio.wait_for(Client.connect(address), 5)
    return await asyncio.wait_for(client.service_client.check_health(), 5)


async def queue_polled(client: Client, queue: str) -> bool:
    """Whether a worker polls `queue`: submitted actions get picked up."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace="default",
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len(response.pollers) > 0


async def attributes_usable(client: Client, names: list[str]) -> bool:
    """Whether Temporal accepts a visibility query naming each of these search attributes."""
    # An attribute Temporal does not know yet is an INVALID_ARGUMENT here, which the caller's
    # probe loop takes as "not yet".
    await client.count_workflows(" AND ".join(f"{name} IS NULL" for name in names))
    return True
