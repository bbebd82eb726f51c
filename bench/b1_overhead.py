"""B1 overhead: auto-allowed `noop` actions through the whole gate versus bare Temporal.

Gate: `POST /v1/actions?wait=60` to the gateway process (uvicorn) -> workflow on the worker
process -> evaluate_policy (local activity) -> audit -> execute_action (activity) -> audit ->
result, answered when the action has succeeded. Bare: client.start_workflow + result of a
workflow that runs one no-op activity, on a plain worker process. Same dev server, closed-loop
load at each concurrency; the ratio is gate throughput / bare throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from bench.bare import BareWorkflow, GateShape, Shape
from bench.common import (
    AGENT_TOKEN,
    BARE_QUEUE,
    ROOT,
    Section,
    Stack,
    console,
    cpu_seconds,
    fmt,
    free_port,
    process_groups,
    py_spy_available,
    start_py_spy,
    stop_process,
    summary_ms,
    write_profile_summary,
)
from bench.load import LoadResult, closed_loop

GOAL_RATIO = 0.8
# The floor's variants (`--b1-shape parts`): the gate's history shape less one part each.
SHAPES = {
    "floor: the gate's 16 events, no gate work": Shape(),
    "floor plus the outcome's local activity (17: before shape v10)": Shape(last_locals=1),
    "floor less the patch (14 events)": Shape(patch=False),
    "floor less the two status upserts (14 events)": Shape(upserts=False),
    "floor less its local activity (15 events)": Shape(first_locals=0),
}
NOOP = {"action": "noop", "target": "sandbox", "params": {}, "justification": "bench B1"}


def add_options(parser: argparse.ArgumentParser) -> None:
    """B1's options."""
    group = parser.add_argument_group("B1 overhead")
    group.add_argument("--b1-concurrency", type=int, nargs="+", default=[1, 10, 50], metavar="C")
    group.add_argument(
        "--b1-duration", type=float, default=30.0, help="measured seconds per cell, all rounds"
    )
    group.add_argument(
        "--b1-rounds",
        type=int,
        default=4,
        help="alternate bare and gate this many times per concurrency (bare-gate, then "
        "gate-bare), so background load and Temporal's growing database hit both alike",
    )
    group.add_argument(
        "--b1-eager",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure eager workflow start (client and worker in one process)",
    )
    group.add_argument(
        "--b1-shape",
        choices=["none", "full", "parts"],
        default="full",
        help="also measure the floor: the gate's history shape on the bare worker, no gate "
        "work ('full'), and that shape less each part in turn ('parts')",
    )
    group.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the worker and gateway during the gate run at concurrency 10",
    )


def _settle(args: argparse.Namespace) -> tuple[float, float]:
    duration = 5.0 if args.quick else args.b1_duration
    return duration, (1.0 if args.quick else 3.0)


async def gate_load(url: str, *, concurrency: int, duration: float, warmup: float) -> LoadResult:
    """Closed-loop `POST /v1/actions?wait=60` of allowed noops against a gateway."""
    async with httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {AGENT_TOKEN}"},
        timeout=httpx.Timeout(90.0),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    ) as http:

        async def one(_: int) -> None:
            response = await http.post("/v1/actions", params={"wait": 60}, json=NOOP)
            body = response.json()
            if response.status_code != 202 or body.get("status") != "succeeded":
                raise RuntimeError(f"{response.status_code} {str(body)[:200]}")

        return await closed_loop(one, concurrency=concurrency, duration=duration, warmup=warmup)


async def bare_load(
    stack: Stack, *, concurrency: int, duration: float, warmup: float, shape: Shape | None = None
) -> LoadResult:
    """Closed-loop start-and-wait of the bare workflow on the bare worker process.

    `shape`: that much of the gate's history shape with no gate work (`GateShape`) instead.
    """

    async def one(_: int) -> None:
        workflow_id = f"bare-{uuid.uuid4().hex}"
        if shape is None:
            handle = await stack.client.start_workflow(
                BareWorkflow.run, id=workflow_id, task_queue=BARE_QUEUE
            )
        else:
            handle = await stack.client.start_workflow(
                GateShape.run, shape, id=workflow_id, task_queue=BARE_QUEUE
            )
        await handle.result()

    return await closed_loop(one, concurrency=concurrency, duration=duration, warmup=warmup)


def _row(name: str, result: LoadResult, base: LoadResult | None) -> list[str]:
    stats = summary_ms(result.latencies)
    ratio = fmt(result.throughput / base.throughput, 2) if base and base.throughput else "—"
    return [
        name,
        str(result.concurrency),
        str(len(result.latencies)),
        str(result.errors),
        fmt(result.throughput),
        fmt(stats["p50"]),
        fmt(stats["p99"]),
        ratio,
    ]


async def inproc_bare(
    stack: Stack, *, concurrency: int, duration: float, warmup: float, eager: bool
) -> LoadResult:
    """Bare workflows driven from a process that also hosts their worker (eager possible)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bare",
        "--address",
        stack.config.temporal_address,
        "--task-queue",
        f"bench-bare-inproc-{uuid.uuid4().hex[:8]}",
        "--drive",
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        *(["--eager"] if eager else []),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), duration + warmup + 120)
    data: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return LoadResult(
        concurrency=concurrency,
        elapsed=float(data["elapsed"]),
        latencies=list(data["latencies"]),
        errors=int(data["errors"]),
        first_error=str(data["first_error"]),
    )


async def combined_gate(
    stack: Stack, *, concurrency: int, duration: float, warmup: float, eager: bool
) -> LoadResult:
    """The gate with gateway and worker in one process, with or without eager start."""
    port = free_port()
    env = {
        **stack.dev._child_env(),
        "SIGNOFF_TASK_QUEUE": f"bench-combined-{uuid.uuid4().hex[:8]}",
        "SIGNOFF_GATEWAY_PORT": str(port),
        # Gateway and worker in one process: it signs and verifies.
        "SIGNOFF_SIGNING_KEY": str(stack.dev.config.signing_key.resolve()),
        "SIGNOFF_VERIFY_KEYS": str(stack.dev.config.public_keys.resolve()),
    }
    log = (stack.data_dir / "logs" / f"combined-{'eager' if eager else 'plain'}.log").open("ab")
    process = subprocess.Popen(  # noqa: ASYNC220 - a quick fork; stop_process is sync too
        [sys.executable, "-m", "bench.combined", "--port", str(port)]
        + (["--eager"] if eager else []),
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(timeout=5) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await http.get(f"{url}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("combined gateway+worker did not start; see its log")
                await asyncio.sleep(0.25)
        return await gate_load(url, concurrency=concurrency, duration=duration, warmup=warmup)
    finally:
        stop_process(process)
        log.close()


async def measured(
    groups: dict[str, list[int]], cpu: dict[str, dict[str, float]], key: str, work: Any
) -> LoadResult:
    """Run a load; add the CPU seconds of each process group and the requests completed."""
    before = cpu_seconds(groups)
    result: LoadResult = await work
    after = cpu_seconds(groups)
    totals = cpu.setdefault(key, {})
    for g in groups:
        totals[g] = totals.get(g, 0.0) + after[g] - before[g]
    totals["#completed"] = totals.get("#completed", 0.0) + result.completed
    return result


def _cpu_per_action(totals: dict[str, float]) -> float:
    done = totals.get("#completed", 0.0) or float("nan")
    return 1000 * sum(v for g, v in totals.items() if not g.startswith("#")) / done


def merged(parts: list[LoadResult]) -> LoadResult:
    """The rounds of one cell as one result."""
    out = LoadResult(concurrency=parts[0].concurrency, elapsed=0.0)
    for part in parts:
        out.elapsed += part.elapsed
        out.latencies += part.latencies
        out.errors += part.errors
        out.completed += part.completed
        out.first_error = out.first_error or part.first_error
    return out


def cpu_section(cpu: dict[str, dict[str, float]]) -> Section:
    """CPU per action by process, for each measured cell."""
    groups = sorted({g for per in cpu.values() for g in per if not g.startswith("#")})
    section = Section(
        title="B1 CPU ms per completed action, by process",
        columns=["path", *groups, "total"],
    )
    for key, totals in cpu.items():
        done = totals.get("#completed", 0.0) or float("nan")
        per = {g: 1000 * totals.get(g, 0.0) / done for g in groups}
        section.rows.append([key, *(fmt(per[g]) for g in groups), fmt(sum(per.values()))])
    section.notes.append(
        "user+system CPU of each process (and its children) during the cell, divided by the "
        "actions completed in it (warm-up included). With 2 cores saturated, throughput is "
        "bounded by the total."
    )
    return section


async def run(stack: Stack, args: argparse.Namespace) -> list[Section]:
    """Measure bare and gate at each concurrency, then the eager-start experiment."""
    duration, warmup = _settle(args)
    section = Section(
        title="B1 overhead: allowed noop through the gate vs a bare workflow + activity",
        columns=["path", "concurrency", "n", "errors", "actions/s", "p50 ms", "p99 ms", "ratio"],
    )
    ratios: dict[int, float] = {}
    groups = process_groups(stack)
    cpu: dict[str, dict[str, float]] = {}
    rounds = 1 if args.quick else max(1, args.b1_rounds)
    slice_s = duration / rounds
    for concurrency in args.b1_concurrency:
        bare_parts: list[LoadResult] = []
        gate_parts: list[LoadResult] = []
        shapes = dict(list(SHAPES.items())[: {"none": 0, "full": 1}.get(args.b1_shape, 99)])
        shape_parts: dict[str, list[LoadResult]] = {name: [] for name in shapes}
        for r in range(rounds):
            profilers: list[tuple[str, subprocess.Popen[bytes]]] = []
            # Temporal's sqlite file grows as the run goes on, and each action then costs it a
            # little more: the cells go bare-gate, then gate-bare, so neither side always runs
            # on the larger file (an even number of rounds cancels a steady drift).
            for path in ("bare", "gate") if r % 2 == 0 else ("gate", "bare"):
                console.print(f"[bold]B1[/bold] concurrency {concurrency}, round {r + 1}: {path}")
                if path == "bare":
                    bare_parts.append(
                        await measured(
                            groups,
                            cpu,
                            f"bare c={concurrency}",
                            bare_load(
                                stack, concurrency=concurrency, duration=slice_s, warmup=warmup
                            ),
                        )
                    )
                    continue
                if args.profile and concurrency == 10 and r == 0 and py_spy_available():
                    tag = os.environ.get("BENCH_PROFILE_TAG", "b1")
                    for name in ("worker", "gateway"):
                        profilers.append(
                            (
                                f"{tag}-{name}",
                                start_py_spy(stack.pid(name), f"{tag}-{name}", warmup + slice_s),
                            )
                        )
                gate_parts.append(
                    await measured(
                        groups,
                        cpu,
                        f"gate c={concurrency}",
                        gate_load(
                            stack.gateway_url,
                            concurrency=concurrency,
                            duration=slice_s,
                            warmup=warmup,
                        ),
                    )
                )
            for name, profiler in profilers:
                await asyncio.to_thread(profiler.wait, 60)
                from bench.common import PROFILES

                top = write_profile_summary(name, PROFILES / f"{name}.collapsed")
                section.notes.append(
                    f"profile of the {name} at concurrency 10: {top.relative_to(ROOT)}"
                )
            for index, (name, shape) in enumerate(shapes.items()):
                console.print(f"[bold]B1[/bold] concurrency {concurrency}, round {r + 1}: {name}")
                shape_parts[name].append(
                    await measured(
                        groups,
                        cpu,
                        f"shape{index or ''} c={concurrency}",
                        bare_load(
                            stack,
                            concurrency=concurrency,
                            duration=slice_s,
                            warmup=warmup,
                            shape=shape,
                        ),
                    )
                )
        bare, gate = merged(bare_parts), merged(gate_parts)
        section.rows.append(_row("bare (client → workflow → activity)", bare, None))
        section.rows.append(_row("gate (HTTP → policy → execute → audit)", gate, bare))
        for name, parts in shape_parts.items():
            section.rows.append(_row(name, merged(parts), bare))
        if bare.throughput:
            ratios[concurrency] = gate.throughput / bare.throughput
        for result in (bare, gate):
            if result.errors:
                section.notes.append(f"first error at {concurrency}: {result.first_error}")
    if 10 in ratios:
        section.goal(
            "gate throughput ≥ 0.8x bare at concurrency 10",
            f"{ratios[10]:.2f}x",
            ratios[10] >= GOAL_RATIO,
        )
    if "bare c=10" in cpu and "gate c=10" in cpu:
        bare_cpu = _cpu_per_action(cpu["bare c=10"])
        gate_cpu = _cpu_per_action(cpu["gate c=10"])
        section.goal(
            "CPU-bound equivalent at concurrency 10: bare CPU/action ÷ gate CPU/action ≥ 0.8",
            f"{bare_cpu:.0f} / {gate_cpu:.0f} ms = {bare_cpu / gate_cpu:.2f}",
            bare_cpu / gate_cpu >= GOAL_RATIO,
        )
    if "bare c=10" in cpu and "shape c=10" in cpu:
        bare_cpu = _cpu_per_action(cpu["bare c=10"])
        section.notes.append(
            "floor: `GateShape` (bench/bare.py) on the bare worker, unsandboxed like the gate's "
            "worker: an allowed action's history event for event (patch marker, a local "
            "activity, status upsert, activity, final upsert, a local activity), nothing "
            "behind any of them. Its CPU per action over bare's is the least the gate's shape "
            f"costs: {_cpu_per_action(cpu['shape c=10']) / bare_cpu:.2f}x at concurrency 10"
            + "".join(
                f"; {name}: {_cpu_per_action(cpu[f'shape{i} c=10']) / bare_cpu:.2f}x"
                for i, name in enumerate(SHAPES)
                if i and f"shape{i} c=10" in cpu
            )
            + ". The CPU table's rows shape1… are the variants in the order above."
        )
    if args.b1_eager:
        await eager_experiment(stack, args, section, duration, warmup)
    section.notes.append(
        "Separate processes as deployed: load generator (this process), gateway, worker, bare "
        "worker, Temporal dev server and Postgres all share the machine's cores."
    )
    return [section, cpu_section(cpu)]


async def eager_experiment(
    stack: Stack, args: argparse.Namespace, section: Section, duration: float, warmup: float
) -> None:
    """Eager start needs client and worker in one process: compare like with like."""
    concurrency = 10
    console.print("[bold]B1[/bold] eager start experiment (client and worker in one process) ...")
    plain = await inproc_bare(
        stack, concurrency=concurrency, duration=duration, warmup=warmup, eager=False
    )
    eager = await inproc_bare(
        stack, concurrency=concurrency, duration=duration, warmup=warmup, eager=True
    )
    section.rows.append(_row("bare, worker in client process", plain, None))
    section.rows.append(_row("bare, worker in client process, eager start", eager, plain))
    gate_plain = await combined_gate(
        stack, concurrency=concurrency, duration=duration, warmup=warmup, eager=False
    )
    gate_eager = await combined_gate(
        stack, concurrency=concurrency, duration=duration, warmup=warmup, eager=True
    )
    section.rows.append(_row("gate, gateway+worker in one process", gate_plain, plain))
    section.rows.append(_row("gate, gateway+worker in one process, eager", gate_eager, eager))
    section.notes.append(
        "Eager rows: ratio of each eager row is against its non-eager twin (bare) or the "
        "in-process bare baseline with the same start mode (gate)."
    )


if __name__ == "__main__":
    from bench.run_all import standalone

    standalone("b1")
