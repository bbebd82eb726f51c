"""What every benchmark shares: the stack it runs against, statistics, tables and RESULTS.md.

The stack is the one `signoff dev` runs (workers/devstack.py): a Temporal dev server, an
embedded Postgres for the ledger, a `signoff worker` and a `signoff gateway` process, all in a
temporary directory on free ports. The bench adds one process of its own: a bare Temporal
worker (bench/bare.py) on the same dev server, the baseline of B1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from rich.console import Console
from rich.table import Table
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench import latency_proxy
from workers.database import embedded_server, stop_embedded_server
from workers.dev.binaries import temporal_cli
from workers.dev.config import DevConfig
from workers.dev.process import signal_group
from workers.dev.supervisor import DevStack

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
PROFILES = BENCH_DIR / "profiles"

# Example directory's public dev tokens (policies/examples/README.md).
AGENT_TOKEN = "dev-etl-bot"  # noqa: S105 - agent:etl-bot, owned by bob
APPROVER_TOKEN = "dev-dave"  # noqa: S105 - dave: sre, not party to the agent's requests
BARE_QUEUE = "bench-bare"
BENCH_EXPIRY = "12h"  # of the `noop` approvals every benchmark submits (bench_policy)

# Wide enough for the tables when the output goes to a file (make bench > log).
console = Console(width=None if sys.stdout.isatty() else 150)


# --- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds of durations given in seconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else float("nan"),
        "mean": statistics.fmean(ms) if ms else float("nan"),
    }


# --- machine and results ----------------------------------------------------------------------


def _running_loop() -> str:
    """The kind of event loop running here (the stack's processes run the same kind)."""
    try:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]
    except RuntimeError:
        return "none"


def machine_info() -> dict[str, str]:
    """CPU, cores, RAM, Python, Temporal CLI and SDK versions, event loop, load right now."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        temporal = subprocess.run(
            [str(temporal_cli()), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except (OSError, FileNotFoundError):
        temporal = "unknown"
    from importlib.metadata import version
    from importlib.util import find_spec

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "Python": platform.python_version(),
        "temporal CLI": temporal,
        "temporalio": version("temporalio"),
        "event loop (every process)": _running_loop(),
        "gateway's HTTP parser": "httptools" if find_spec("httptools") else "h11",
        "load average at start (1/5/15 min)": load,
    }


def command_line() -> str:
    """The exact command that is running, as one could type it again."""
    argv = [Path(sys.executable).relative_to(ROOT) if _under_root() else sys.executable]
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return shlex.join([str(argv[0]), "-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]])
    return shlex.join([str(argv[0]), *sys.argv])


def _under_root() -> bool:
    try:
        Path(sys.executable).relative_to(ROOT)
    except ValueError:
        return False
    return True


@dataclass
class Section:
    """One benchmark's results: a table plus notes, printed and appended to RESULTS.md."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    goals: list[tuple[str, str, bool | None]] = field(default_factory=list)

    def goal(self, name: str, measured: str, met: bool | None) -> None:
        """Record a goal with the measured figure; None when it was not measured."""
        self.goals.append((name, measured, met))

    def print(self) -> None:
        """Show the table (and goals) on the terminal."""
        table = Table(title=self.title)
        for column in self.columns:
            table.add_column(column, justify="right" if column[:1].isdigit() else "left")
        for row in self.rows:
            table.add_row(*row)
        console.print(table)
        for name, measured, met in self.goals:
            mark = {True: "[green]met[/green]", False: "[red]missed[/red]", None: "n/a"}[met]
            console.print(f"  goal {name}: {measured} — {mark}")
        for note in self.notes:
            console.print(f"  [dim]{note}[/dim]")

    def markdown(self) -> str:
        """The section as Markdown for RESULTS.md."""
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.goals:
            lines += ["", "| goal | measured | |", "|---|---|---|"]
            for name, measured, met in self.goals:
                verdict = {True: "met", False: "**missed**", None: "n/a"}[met]
                lines.append(f"| {name} | {measured} | {verdict} |")
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def append_results(sections: Sequence[Section], *, label: str, info: dict[str, str]) -> None:
    """Append a dated run with machine info, the exact command and every section."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"\n## {stamp} — {label}\n", f"Command: `{command_line()}`\n"]
    parts.append("| machine | |\n|---|---|")
    parts += [f"| {k} | {v} |" for k, v in info.items()]
    parts.append("")
    parts += [s.markdown() for s in sections]
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by `make bench`; see README.md.\n")
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write("\n".join(parts))
    console.print(f"[dim]appended to {RESULTS}[/dim]")


def fmt(value: float, digits: int = 1) -> str:
    """A number for a table cell."""
    return f"{value:,.{digits}f}"


# --- the stack --------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """A running dev stack plus the bench's bare worker."""

    dev: DevStack
    data_dir: Path
    marks: Path
    client: Client
    bare: subprocess.Popen[bytes] | None = None
    far: FarPostgres | None = None

    @property
    def config(self) -> DevConfig:
        """The dev stack's configuration."""
        return self.dev.config

    @property
    def gateway_url(self) -> str:
        """Base URL of the gateway."""
        return self.config.gateway_url

    @property
    def database_url(self) -> str:
        """The ledger's Postgres URL."""
        assert self.dev.database_url is not None
        return self.dev.database_url

    def pid(self, name: str) -> int:
        """Pid of a child of the dev stack: temporal, worker or gateway."""
        for child in self.dev.children:
            if child.name == name and child.pid is not None:
                return child.pid
        raise KeyError(name)

    def http(self, token: str, *, connections: int = 100) -> httpx.AsyncClient:
        """An HTTP client of the gateway authenticated as `token`'s principal."""
        return httpx.AsyncClient(
            base_url=self.gateway_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(120.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )


def stack_options(parser: argparse.ArgumentParser) -> None:
    """Options of the stack every benchmark starts."""
    parser.add_argument(
        "--max-cached-workflows",
        type=int,
        default=1000,
        help="the worker's SIGNOFF_MAX_CACHED_WORKFLOWS (bounds its memory; the product's 1000)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary data dir (logs) after the run"
    )
    parser.add_argument(
        "--pg-rtt-ms",
        type=float,
        default=0.0,
        help="put the ledger's Postgres this many ms of round trip away (bench.latency_proxy)",
    )


@dataclass
class FarPostgres:
    """A Postgres of the stack's own, reached through the latency proxy."""

    server: Any
    proxy: list[Any]
    url: str

    @classmethod
    def start(cls, data_dir: Path, rtt_ms: float) -> FarPostgres:
        """Start Postgres in `data_dir`/far and a proxy adding `rtt_ms` in front of it."""
        server = embedded_server(data_dir / "far")
        url, target = latency_proxy.proxied(str(server.get_uri()), port := free_port())
        return cls(server, latency_proxy.start(f"127.0.0.1:{port}", target, rtt_ms, 2), url)

    def stop(self) -> None:
        """Stop the proxy, then Postgres."""
        latency_proxy.stop(self.proxy)
        stop_embedded_server(self.server)


@contextlib.asynccontextmanager
async def running_stack(args: argparse.Namespace, *, bare: bool = False) -> AsyncIterator[Stack]:
    """Start Temporal, Postgres, worker and gateway in a temp dir on free ports; stop after."""
    data_dir = Path(tempfile.mkdtemp(prefix="signoff-bench-"))
    marks = data_dir / "marks.txt"
    # The children inherit this environment (DevStack._child_env copies os.environ).
    os.environ["SIGNOFF_EXECUTOR_MODULES"] = '["bench.executor"]'
    os.environ["SIGNOFF_MAX_CACHED_WORKFLOWS"] = str(args.max_cached_workflows)
    os.environ["BENCH_MARK_FILE"] = str(marks)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    rtt = getattr(args, "pg_rtt_ms", 0.0)
    far = FarPostgres.start(data_dir, rtt) if rtt > 0 else None
    config = DevConfig(
        data_dir=data_dir,
        database_url=far.url if far else None,
        policy=bench_policy(data_dir),
        temporal_port=free_port(),
        ui_port=free_port(),
        gateway_port=free_port(),
        ready_timeout=180.0,
    )
    dev = DevStack(config, say=lambda text: console.print(f"[dim]stack: {text}[/dim]"))
    console.print(f"[dim]stack: starting in {data_dir}[/dim]")
    dev.preflight()
    stack: Stack | None = None
    try:
        await dev.start()
        client = await Client.connect(
            config.temporal_address, data_converter=pydantic_data_converter
        )
        stack = Stack(dev=dev, data_dir=data_dir, marks=marks, client=client, far=far)
        if bare:
            stack.bare = start_bare_worker(config.temporal_address, data_dir)
            await wait_polling(client, BARE_QUEUE)
        yield stack
    finally:
        if stack is not None and stack.bare is not None:
            stop_process(stack.bare)
        await dev.stop()
        if far is not None:
            far.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            console.print(f"[dim]stack: kept {data_dir}[/dim]")


def bench_policy(data_dir: Path) -> Path:
    """The example policy with `noop` approvals lasting 12 h, written into `data_dir`.

    Filling B6 to 100,000 pending takes over an hour on a small box; with the example's 1 h
    expiry the first actions would expire before the last were submitted.
    """
    example = DevConfig().policy
    policy = yaml.safe_load(example.read_text())
    (rule,) = (rule for rule in policy["rules"] if rule["id"] == "noop")
    rule["expires_after"] = BENCH_EXPIRY
    path = data_dir / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def start_bare_worker(address: str, data_dir: Path) -> subprocess.Popen[bytes]:
    """The baseline: a plain Temporal worker process with one workflow and one activity."""
    log = (data_dir / "logs" / "bare-worker.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "bench.bare", "--address", address, "--task-queue", BARE_QUEUE],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM a child's group, then SIGKILL what is left after `timeout`."""
    if process.poll() is None:
        signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGKILL)
            process.wait()
    signal_group(process.pid, signal.SIGKILL)


async def wait_polling(client: Client, queue: str, within: float = 60.0) -> None:
    """Wait until a worker polls `queue`'s workflow task queue."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace="default",
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        if response.pollers:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no worker polls {queue} after {within:g}s")


def process_groups(stack: Stack) -> dict[str, list[int]]:
    """The processes whose CPU time B1 accounts for, by role."""
    groups: dict[str, list[int]] = {
        name: [stack.pid(name)] for name in ("temporal", "worker", "gateway")
    }
    pg = stack.dev._pg_server or (stack.far and stack.far.server)
    if pg is not None:
        with contextlib.suppress(Exception):
            postmaster = int(pg.get_pid())
            groups["postgres"] = [postmaster]
    if stack.bare is not None:
        groups["bare worker"] = [stack.bare.pid]
    groups["load generator"] = [os.getpid()]
    return groups


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """User+system CPU seconds used so far by each group (Postgres with its backends)."""
    used: dict[str, float] = {}
    for name, pids in groups.items():
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                # Postgres works in backends (children); the others' children are not theirs
                # (this process is the parent of the whole dev stack).
                family = process.children(recursive=True) if name == "postgres" else []
                for p in [process, *family]:
                    with contextlib.suppress(psutil.Error):
                        times = p.cpu_times()
                        total += times.user + times.system
        used[name] = total
    return used


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB."""
    return float(psutil.Process(pid).memory_info().rss) / 2**20


# --- profiling --------------------------------------------------------------------------------


def py_spy_available() -> bool:
    """Whether py-spy can be run (it is in the venv's bin when installed)."""
    return (Path(sys.executable).parent / "py-spy").exists()


def start_py_spy(pid: int, name: str, duration: float) -> subprocess.Popen[bytes]:
    """Sample `pid` for `duration` seconds into bench/profiles/NAME.collapsed (collapsed stacks,
    for flame graph tools; git-ignored)."""
    PROFILES.mkdir(exist_ok=True)
    out = PROFILES / f"{name}.collapsed"
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(duration))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# Leaf frames that mean "waiting", not working: left out of the percentages.
IDLE_LEAVES = ("EpollSelector.select", "Condition.wait", "Lock.acquire", "SimpleQueue.get")


def summarise_profile(
    path: Path, *, top: int = 15, by: str = "self"
) -> list[tuple[str, float, float]]:
    """(function, self %, inclusive %) of the hottest frames of the busy samples in a
    collapsed-stack file, ranked by `by` ("self" or "inclusive")."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return []
    table = own if by == "self" else inclusive
    ranked = sorted(table, key=lambda f: table[f], reverse=True)[:top]
    return [(f, 100 * own.get(f, 0) / total, 100 * inclusive[f] / total) for f in ranked]


def _short(frame: str) -> str:
    # py-spy frames look like "function (path/to/file.py:123)": keep the file's tail.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    parts = where.split("/")
    tail = "/".join(parts[-2:]) if len(parts) > 1 else where
    return f"{name} ({tail.rsplit(':', 1)[0]})"


def write_profile_summary(name: str, path: Path) -> Path:
    """A readable top list next to the raw profile; returns its path."""
    out = PROFILES / f"{name}.top.md"
    lines = [f"# {name}: py-spy, busy samples only (idle waits left out)", ""]
    for by in ("self", "inclusive"):
        lines += [f"## by {by} time", "", "| frame | self % | incl % |", "|---|---|---|"]
        rows = summarise_profile(path, top=30 if by == "inclusive" else 20, by=by)
        lines += [f"| `{f}` | {s:.1f} | {i:.1f} |" for f, s, i in rows]
        lines.append("")
    out.write_text("\n".join(lines))
    return out


def env_flag(name: str) -> bool:
    """Whether an environment variable is set to something true."""
    return os.environ.get(name, "").lower() in {"1", "true", "yes"}


def jsonable(value: Any) -> Any:
    """Numbers rounded for JSON summaries."""
    if isinstance(value, float):
        return round(value, 3)
    return value
