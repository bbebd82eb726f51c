"""A closed-loop load generator: `concurrency` callers, each sending its next request when the
previous one answers, for a fixed time after a warm-up. Light on imports on purpose: the bare
worker's workflow sandbox imports this module too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """What one load run measured: per-request latencies (s) within the measured window."""

    concurrency: int
    elapsed: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    completed: int = 0  # every success, warm-up included (for CPU per request)
    first_error: str = ""

    @property
    def throughput(self) -> float:
        """Completed requests per second over the measured window."""
        return len(self.latencies) / self.elapsed if self.elapsed > 0 else 0.0


async def closed_loop(
    call: Callable[[int], Awaitable[None]],
    *,
    concurrency: int,
    duration: float,
    warmup: float,
) -> LoadResult:
    """Run `call(i)` from `concurrency` loops; measure the requests that finish inside the
    window after the warm-up (so throughput is the steady-state completion rate)."""
    start = time.perf_counter()
    window_start = start + warmup
    window_end = window_start + duration
    result = LoadResult(concurrency=concurrency, elapsed=duration)
    counter = 0

    async def loop() -> None:
        nonlocal counter
        while time.perf_counter() < window_end:
            counter += 1
            began = time.perf_counter()
            try:
                await call(counter)
            except Exception as err:  # a failed request is counted, never retried silently
                result.errors += 1
                result.first_error = result.first_error or f"{type(err).__name__}: {err}"
                continue
            ended = time.perf_counter()
            result.completed += 1
            if window_start <= ended <= window_end:
                result.latencies.append(ended - began)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return result
