"""One supervised child: started in its own process group, logged, stopped without orphans."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from workers.dev.config import StartupFailed

LOG_TAIL_LINES = 20

# Shows one interesting line of a child's output: (child name, line).
Echo = Callable[[str, str], None]


def signoff_command() -> list[str]:
    """How to run the `signoff` CLI with this interpreter's installation."""
    script = Path(sys.executable).parent / "signoff"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from signoff.cli import main; main()"]


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send a signal to a whole process group, if any of it is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


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


async def spawn(child: Child, echo: Echo) -> None:
    """Start the child in its own process group, its output going to its log."""
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
    child.pump = asyncio.create_task(_pump(child, log, echo))


async def _pump(child: Child, log: IO[bytes], echo: Echo) -> None:
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
                    echo(child.name, line)
            # A runaway line without newline is logged, not kept in memory.
            pending = pending[-65536:]
    finally:
        log.close()


async def stop(child: Child, grace: float, force: asyncio.Event) -> None:
    """SIGTERM the child's group, SIGKILL it after `grace` seconds or once `force` is set."""
    process = child.process
    if process is None:
        return
    if process.returncode is None:
        signal_group(process.pid, signal.SIGTERM)
        exited = asyncio.create_task(process.wait())
        forced = asyncio.create_task(force.wait())
        await asyncio.wait({exited, forced}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if not exited.done():
            signal_group(process.pid, signal.SIGKILL)
        await exited
    # Whatever the leader left behind in its group goes too.
    signal_group(process.pid, signal.SIGKILL)
    if child.pump is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(child.pump, 5)
