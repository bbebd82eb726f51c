"""The event loop the long-running processes (`signoff worker`, `signoff gateway`) run on.

uvloop, where it is installed (it is a dependency everywhere but Windows), as `uvicorn --loop
auto` would choose: the worker and gateway spend much of their CPU in the loop itself, waking
for every reply from Temporal's core and every socket write (issue 16, round 14).
`SIGNOFF_EVENT_LOOP=asyncio` keeps asyncio's own loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

EventLoopChoice = Literal["auto", "asyncio", "uvloop"]


class EventLoopUnavailable(ValueError):
    """SIGNOFF_EVENT_LOOP asks for a loop this installation does not have."""


def loop_factory(choice: EventLoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the chosen loop; None for asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        import uvloop  # imported only when chosen: `asyncio` never loads it
    except ImportError:
        if choice == "uvloop":
            raise EventLoopUnavailable(
                "the uvloop event loop was asked for, but uvloop is not installed here (pip "
                "install uvloop; it does not support Windows); use auto or asyncio"
            ) from None
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice = "auto") -> T:
    """Run `main` to completion on a new loop of the chosen kind, as `asyncio.run` does."""
    try:
        factory = loop_factory(choice)
    except EventLoopUnavailable:
        main.close()  # never awaited; closing it spares a warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
