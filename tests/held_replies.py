"""A TCP hop to Postgres whose replies can be held back: writes land, their answers never come.

What a network partition does just after a commit: the row is in the database, and the client
that wrote it waits for an answer that does not arrive. The fault tests use it to lose a
completion at a chosen moment, with the real database and the real worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

CHUNK = 1 << 16


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, open_: asyncio.Event | None
) -> None:
    """Copy one direction; while `open_` is cleared, what arrives is kept, not delivered."""
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(CHUNK):
            if open_ is not None:
                await open_.wait()
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


@asynccontextmanager
async def held_replies(postgres_url: str) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A URL for the same Postgres through the hop, and the event that lets its replies through.

    Replies flow while the event is set; `clear()` it to hold every later one back.
    """
    parts = urlsplit(postgres_url)
    socket_dir = parse_qs(parts.query)["host"][0]
    port = parts.port or 5432
    flowing = asyncio.Event()
    flowing.set()
    pumps: set[asyncio.Task[None]] = set()

    async def connect(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{port}")
        for pump in (
            _pump(client_r, server_w, None),
            _pump(server_r, client_w, flowing),
        ):
            task = asyncio.create_task(pump)
            pumps.add(task)
            task.add_done_callback(pumps.discard)

    server = await asyncio.start_server(connect, "127.0.0.1", 0)
    listening = server.sockets[0].getsockname()[1]
    user = parts.username or "postgres"
    try:
        yield f"postgresql://{user}@127.0.0.1:{listening}{parts.path}", flowing
    finally:
        server.close()
        for task in list(pumps):
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
