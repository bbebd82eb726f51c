"""Holding one activity call back on a real worker, so checks finish in a chosen order.

Temporal's own extension point (a worker interceptor): nothing of ours is replaced, one call
only starts later, as it does when a directory is slow for one person.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor


class HoldOne(Interceptor):
    """Holds the `activity_type` calls `held` picks until another call of that type has
    finished and the worker has started some other activity after it (its handler moved on).
    """

    def __init__(self, activity_type: str, held: Callable[[Any], bool], within: float = 5) -> None:
        self.activity_type = activity_type
        self.held = held
        self.within = within
        self.other_finished = asyncio.Event()
        self.released = asyncio.Event()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap every activity call of the worker."""
        return _Held(next, self)


class _Held(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, hold: HoldOne) -> None:
        super().__init__(next)
        self.hold = hold

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        hold = self.hold
        if activity.info().activity_type != hold.activity_type:
            if hold.other_finished.is_set():
                hold.released.set()
            return await self.next.execute_activity(input)
        if input.args and hold.held(input.args[0]):
            await asyncio.wait_for(hold.released.wait(), hold.within)
            return await self.next.execute_activity(input)
        try:
            return await self.next.execute_activity(input)
        finally:
            hold.other_finished.set()
