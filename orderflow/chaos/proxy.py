"""An asyncio TCP proxy that misbehaves on purpose: latency, connection resets, blackholes.

Services are pointed at the proxy instead of the broker or the database. ``latency`` delays every
chunk in both directions; ``reset_all`` drops every open connection with a TCP RST; ``blackhole``
stops forwarding (sockets stay open, bytes wait) until it is lifted. Only loopback addresses.

It counts what it did, so that a run can prove its faults happened: ``connections`` carried,
``resets`` (connections cut by ``reset_all``), ``blackholed`` (connections that had bytes held
back by a blackhole), ``delayed`` (chunks held back by latency), and the local ports of its
upstream sockets (``upstream_ports``: what the target sees as the peer port of a proxied client).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct


class TcpProxy:
    def __init__(
        self,
        *,
        target_host: str,
        target_port: int,
        listen_port: int = 0,
        server_ssl: ssl.SSLContext | None = None,
    ) -> None:
        if target_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the chaos proxy forwards to loopback addresses only")
        self.target = (target_host, target_port)
        self._listen_port = listen_port
        self._server_ssl = server_ssl  # terminate TLS here (for TLS tests against a plain server)
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.latency = 0.0
        self._open = asyncio.Event()
        self._open.set()
        self.connections = 0  # carried: accepted and connected to the target
        self.resets = 0  # connections cut by reset_all
        self.blackholed = 0  # connections that had bytes held back by a blackhole
        self.delayed = 0  # chunks held back by latency
        self.upstream_ports: set[int] = set()  # every local port of an upstream socket, ever
        self._held: set[int] = set()  # ids of the pairs held back by the current blackhole

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self._listen_port, ssl=self._server_ssl
        )
        return self

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(client_w)
            return
        self.connections += 1
        with contextlib.suppress(OSError, TypeError, IndexError):
            self.upstream_ports.add(int(server_w.get_extra_info("sockname")[1]))
        pair = (client_w, server_w)
        self._pairs.add(pair)
        for reader, writer in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.create_task(self._pump(reader, writer, pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if not self._open.is_set():
                    if id(pair) not in self._held:
                        self._held.add(id(pair))
                        self.blackholed += 1
                    await self._open.wait()
                if self.latency:
                    self.delayed += 1
                    await asyncio.sleep(self.latency)
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._pairs.discard(pair)
            for w in pair:
                _abort(w)

    @property
    def open_connections(self) -> int:
        """Connections open through the proxy now."""
        return len(self._pairs)

    def reset_all(self) -> int:
        """Drop every open connection with RST; returns how many."""
        pairs = list(self._pairs)
        for pair in pairs:
            for w in pair:
                _abort(w)
        self._pairs.clear()
        self.resets += len(pairs)
        return len(pairs)

    async def wait_open(self, timeout: float) -> bool:
        """Until at least one connection is open (True), or ``timeout`` seconds passed."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._pairs:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def blackhole(self, on: bool) -> None:
        if on:
            if self._open.is_set():
                self._held.clear()
            self._open.clear()
        else:
            self._open.set()

    def heal(self) -> None:
        self.latency = 0.0
        self.blackhole(False)

    async def close(self) -> None:
        self.heal()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        self.reset_all()
        for task in list(self._tasks):
            task.cancel()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a dropped network path would."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        if sock is not None and sock.fileno() != -1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
