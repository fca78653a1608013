"""A small asyncio HTTP/1.1 server: keep-alive, Content-Length bodies, and socket-level faults.

Hand-written rather than ``http.server`` for two reasons: throughput (hundreds of 400 kB pages a
second on two cores) and control of the socket, which the reset / truncate / slow-body faults need.
Requests on one connection are answered in order; a delayed answer pauses only its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable

from .api import REASONS, Reply

log = logging.getLogger(__name__)

_MAX_HEAD = 64 * 1024
Handler = Callable[[str, str, dict[str, str], bytes, bool], Reply]


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.closed = False
        self.loopback = True
        self.task: asyncio.Future | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        peer = transport.get_extra_info("peername")
        host = peer[0] if peer else "127.0.0.1"
        self.loopback = host.startswith("127.") or host in ("::1", "localhost")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()

    def _process(self) -> None:
        while not self.closed and not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    self._write_simple(431, b"request header too large", close=True)
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                self._write_simple(400, b"bad request line", close=True)
                return
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            conn_hdr = headers.get("connection", "").lower()
            keep_alive = conn_hdr != "close" if version == "HTTP/1.1" else conn_hdr == "keep-alive"
            try:
                reply = self.server.handler(method, target, headers, body, self.loopback)
            except Exception:
                log.exception("simulator handler failed for %s %s", method, target)
                reply = Reply(500, b'{"status":500,"description":"Server Error","data":null}')
            if reply.delay_s or reply.delivery:
                self.busy = True
                self.task = asyncio.ensure_future(self._send_later(reply, keep_alive))
                return
            self._send(reply, keep_alive)

    def _head(self, reply: Reply, keep_alive: bool) -> bytes:
        lines = [
            f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Unknown')}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
            "Connection: keep-alive" if keep_alive else "Connection: close",
        ]
        lines.extend(f"{k}: {v}" for k, v in reply.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, reply: Reply, keep_alive: bool) -> None:
        assert self.transport is not None
        self.transport.write(self._head(reply, keep_alive) + reply.body)
        if not keep_alive:
            self.closed = True
            self.transport.close()

    def _write_simple(self, status: int, body: bytes, close: bool) -> None:
        self._send(Reply(status, body, content_type="text/plain"), keep_alive=not close)

    async def _send_later(self, reply: Reply, keep_alive: bool) -> None:
        try:
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            if self.closed or self.transport is None:
                return
            if reply.delivery == "reset":
                await self._reset(reply)
                return
            if reply.delivery == "truncate":
                self.transport.write(self._head(reply, False) + reply.body[: len(reply.body) // 2])
                self.closed = True
                self.transport.close()
                return
            if reply.delivery == "slow":
                await self._dribble(reply, keep_alive)
            else:
                self._send(reply, keep_alive)
        finally:
            self.busy = False
        if not self.closed and self.buf:
            self._process()

    async def _reset(self, reply: Reply) -> None:
        """Headers and part of the body, then an RST (SO_LINGER 0) instead of the rest."""
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.write(self._head(reply, True) + reply.body[: max(1, len(reply.body) // 3)])
        await asyncio.sleep(0.05)
        self.closed = True
        self.transport.abort()

    async def _dribble(self, reply: Reply, keep_alive: bool) -> None:
        assert self.transport is not None
        seconds = self.server.slow_body_seconds()
        self.transport.write(self._head(reply, keep_alive))
        body = reply.body
        pieces = 10
        step = max(1, -(-len(body) // pieces))
        for n in range(0, len(body), step):
            if self.closed:
                return
            self.transport.write(body[n : n + step])
            await asyncio.sleep(seconds / pieces)
        if not keep_alive:
            self.closed = True
            self.transport.close()


class HttpServer:
    """Runs the asyncio server on its own event loop in a daemon thread."""

    def __init__(self, handler: Handler, slow_body_seconds: Callable[[], float]) -> None:
        self.handler = handler
        self.slow_body_seconds = slow_body_seconds
        self.connections: set[_Connection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self._server: asyncio.base_events.Server | None = None

    def start(self, host: str, port: int) -> int:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(lambda: _Connection(self), host, port, reuse_address=True, backlog=512)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self.host = host
        self.thread = threading.Thread(target=run, name="commbox-sim", daemon=True)
        self.thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self.port

    def stop(self) -> None:
        loop = self.loop
        if loop is None or self.thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.abort()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            loop.stop()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(shutdown(), loop)
        self.thread.join(timeout=10)
        self.loop = None
        self.thread = None
