"""A small HTTP/2 server on the `h2` library, for protocol-level tests of the HTTP/2 pool.

Granian (the fake upstream's server) decides SETTINGS, GOAWAY and flow control itself; this one
lets a test choose them and records what the client did: connections, streams open at once,
RST_STREAM frames with their time, bytes sent ahead of the client's window updates. It answers every
POST (after `head_delay` seconds) with 200 and `chunks` DATA frames of `chunk_size` bytes, `gap` seconds apart, sent only as the
client's flow-control window allows. Runs its own event loop on a thread (h2c, prior knowledge).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame


@dataclass
class StreamLog:
    connection: int
    stream_id: int
    opened_at: float
    sent: int = 0  # body bytes sent
    ended: bool = False
    reset_at: float | None = None  # when the client's RST_STREAM arrived
    reset_code: int | None = None
    blocked: bool = False  # waiting for window: the client has not released credit


@dataclass
class ServerLog:
    connections: int = 0
    max_open_per_connection: int = 0
    refused: int = 0
    streams: list[StreamLog] = field(default_factory=list)


class _Conn(asyncio.Protocol):
    def __init__(self, server: H2TestServer) -> None:
        self.server = server
        self.number = server.log.connections = server.log.connections + 1
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.transport: asyncio.Transport | None = None
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.logs: dict[int, StreamLog] = {}
        self.window = asyncio.Event()
        server.conns.append(self)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.server.max_concurrent_streams
            },
        )
        self.h2.initiate_connection()
        self.flush()

    def flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                log = StreamLog(self.number, event.stream_id, time.time())
                self.logs[event.stream_id] = log
                self.server.log.streams.append(log)
                open_now = sum(1 for s in self.logs.values() if not s.ended and s.reset_at is None)
                self.server.log.max_open_per_connection = max(
                    self.server.log.max_open_per_connection, open_now
                )
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                sid = event.stream_id
                self.tasks[sid] = asyncio.get_running_loop().create_task(self.respond(sid))
            elif isinstance(event, h2.events.StreamReset):
                log = self.logs.get(event.stream_id)
                if log is not None and event.remote_reset:
                    log.reset_at, log.reset_code = time.time(), int(event.error_code)
                task = self.tasks.pop(event.stream_id, None)
                if task is not None:
                    task.cancel()
            elif isinstance(event, h2.events.WindowUpdated):
                self.window.set()
        self.flush()

    async def respond(self, sid: int) -> None:
        server, log = self.server, self.logs[sid]
        if server.head_delay:
            await asyncio.sleep(server.head_delay)
        self.h2.send_headers(sid, [(":status", "200"), ("content-type", "text/event-stream")])
        self.flush()
        try:
            for i in range(server.chunks):
                if i and server.gap:
                    await asyncio.sleep(server.gap)
                piece = b"x" * server.chunk_size
                while piece:
                    room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                    if room <= 0:
                        log.blocked = True
                        self.window.clear()
                        await self.window.wait()
                        continue
                    log.blocked = False
                    self.h2.send_data(sid, piece[:room])
                    log.sent += min(room, len(piece))
                    piece = piece[room:]
                    self.flush()
            self.h2.end_stream(sid)
            log.ended = True
            self.flush()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.tasks.pop(sid, None)

    def goaway(self, last_stream_id: int | None) -> None:
        # Written by hand: the h2 library's close_connection() also stops it sending on the streams
        # a graceful GOAWAY lets finish.
        last = self.h2.highest_inbound_stream_id if last_stream_id is None else last_stream_id
        self.flush()
        if self.transport is not None:
            self.transport.write(hyperframe.frame.GoAwayFrame(0, last_stream_id=last).serialize())
        if last_stream_id is not None:  # streams above it were never processed: drop them
            for sid, task in list(self.tasks.items()):
                if sid > last_stream_id:
                    task.cancel()

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self.tasks.values():
            task.cancel()


class H2TestServer:
    def __init__(
        self,
        max_concurrent_streams: int = 100,
        chunks: int = 5,
        chunk_size: int = 100,
        gap: float = 0.0,
        head_delay: float = 0.0,
    ) -> None:
        self.max_concurrent_streams = max_concurrent_streams
        self.head_delay = head_delay
        self.chunks = chunks
        self.chunk_size = chunk_size
        self.gap = gap
        self.log = ServerLog()
        self.conns: list[_Conn] = []
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(self.loop.create_server(lambda: _Conn(self), "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        self.loop.run_forever()
        server.close()
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.abort()
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    def __enter__(self) -> H2TestServer:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def goaway(self, last_stream_id: int | None = None) -> None:
        """GOAWAY on every open connection (last_stream_id None: the highest stream seen)."""
        done = threading.Event()

        def send() -> None:
            for conn in self.conns:
                if conn.transport is not None and not conn.transport.is_closing():
                    conn.goaway(last_stream_id)
            done.set()

        self.loop.call_soon_threadsafe(send)
        done.wait(5)
