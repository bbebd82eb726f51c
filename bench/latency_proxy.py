"""A TCP proxy that delays every chunk by half the round trip in each direction.

`python -m bench.latency_proxy --listen 127.0.0.1:6543 --target /tmp/pg/.s.PGSQL.5432 --rtt-ms 2`
puts Postgres "a network hop away" for B5. The target is host:port or a Unix socket path.
Several processes (`--processes`) share the listening port (SO_REUSEPORT), so the proxy's own
Python does not become the bottleneck it is meant to model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy one direction, each chunk delivered `delay` seconds after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(1 << 16):
            queue.put_nowait((loop.time() + delay, data))
    except OSError:
        pass
    queue.put_nowait((0.0, b""))
    with contextlib.suppress(OSError):
        await sender


async def serve(listen: socket.socket, target: str, delay: float) -> None:
    """Accept on the shared socket until killed."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if target.startswith("/"):
            server_r, server_w = await asyncio.open_unix_connection(target)
        else:
            host, port = target.rsplit(":", 1)
            server_r, server_w = await asyncio.open_connection(host, int(port))
        for w in (client_w, server_w):
            sock = w.get_extra_info("socket")
            if sock is not None and sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(pump(client_r, server_w, delay), pump(server_r, client_w, delay))

    server = await asyncio.start_server(handle, sock=listen)
    async with server:
        await server.serve_forever()


def listening_socket(address: str) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT, so several processes can accept on it."""
    host, port = address.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, int(port)))
    sock.listen(256)
    sock.setblocking(False)
    return sock


def _child(address: str, target: str, delay: float) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(serve(listening_socket(address), target, delay))


def proxied(url: str, port: int) -> tuple[str, str]:
    """(the URL through the proxy on `port`, the proxy's target) for a Postgres URL."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = (query.pop("host", [None])[0]) or parts.hostname or "127.0.0.1"
    pg_port = parts.port or 5432
    target = f"{host}/.s.PGSQL.{pg_port}" if host.startswith("/") else f"{host}:{pg_port}"
    user = parts.username or "postgres"
    netloc = f"{user}:{parts.password or ''}@127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, doseq=True), "")), target


def start(
    address: str, target: str, rtt_ms: float, processes: int
) -> list[multiprocessing.Process]:
    """Start the proxy's processes (forked, daemonic); stop them with `stop`."""
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=_child, args=(address, target, rtt_ms / 2000.0), daemon=True)
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    return children


def stop(children: list[multiprocessing.Process]) -> None:
    """Stop the proxy's processes."""
    for child in children:
        child.terminate()
    for child in children:
        child.join(5)


def main() -> None:
    """Run the proxy in the foreground."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="host:port to listen on")
    parser.add_argument("--target", required=True, help="host:port or a Unix socket path")
    parser.add_argument("--rtt-ms", type=float, default=2.0, help="added round trip, ms")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    children = start(args.listen, args.target, args.rtt_ms, args.processes)
    try:
        for child in children:
            child.join()
    except KeyboardInterrupt:
        stop(children)


if __name__ == "__main__":
    main()
