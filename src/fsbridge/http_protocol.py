"""The HTTP protocol `fsbridge serve` gives uvicorn: uvicorn's own httptools protocol, with the writes
a response makes in one turn of the event loop sent in one system call.

uvicorn writes a response's head and its body separately, so every 202 cost two socket writes, and
on a loaded intake replica those were a measured tenth of its CPU. Whatever is written during one
turn of the event loop is held and leaves at the end of that turn, as one write; nothing waits
longer than that turn, and closing or ending the stream sends what is held first.

`LimitedHttpToolsProtocol` adds the bounds every connection is held to before authentication
(header size and count, header and body timeouts, idle time, a connection cap and each client's
share of it), and records the socket's peer address in the scope, so loopback is judged on the
socket, never on proxy headers. A full server makes room by closing its longest-idle connection,
so a client holding idle connections cannot keep a health probe out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, cast

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """An asyncio transport whose writes of one loop turn go out together; all else is passed on."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        # A copy of anything mutable: the caller may reuse its buffer once write returns.
        self._held.append(data if isinstance(data, bytes) else bytes(data))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(chunk) for chunk in self._held)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, CoalescingTransport(transport, self.loop)))


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection may hold or take, before any request reaches the app."""

    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    idle_timeout_seconds: float = 5.0
    max_connections: int = 1000
    max_connections_per_client: int = 500  # one peer address's share (behind a proxy: the proxy's)


PEER = "fsbridge.peer"  # the socket's peer address, kept in the scope before any proxy header rewrites it


def _error(status: int, code: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    reason = HTTPStatus(status).phrase.encode()
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
    return head % (status, reason, len(body)) + body


class LimitedHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """The coalescing protocol with bounds on every connection: header size and count, time to send
    the headers and then the body, idle time, and how many connections are open at once. A breach
    answers with the contract's JSON error (431, 408, 503) and closes the connection; so do
    malformed requests (400), which uvicorn would answer in plain text."""

    limits = ConnectionLimits()
    by_client: ClassVar[dict[str, int]] = {}  # open connections per peer (each limited_protocol class has its own)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.idle_timeout_seconds  # type: ignore[assignment]
        self._phase = "idle"  # idle | headers | body | app | refused
        self._header_bytes = 0
        self._header_count = 0
        self._header_size = 0  # request line and headers as parsed
        self._deadline: asyncio.TimerHandle | None = None
        self._armed_for = ""  # the phase whose deadline is armed ("": none)
        self._peer = ""
        self._idle_since = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = str(self.client[0]) if self.client else ""
        self._idle_since = self.loop.time()
        held = self.by_client[self._peer] = self.by_client.get(self._peer, 0) + 1
        if held > self.limits.max_connections_per_client:
            self._refuse(503, "too_many_connections", "This client holds its share of fsbridge's connections; retry.")
            return
        if len(self.connections) > self.limits.max_connections and not self._close_longest_idle():
            self._refuse(503, "too_many_connections", "fsbridge holds as many connections as it takes; retry.")
            return
        # uvicorn arms its keep-alive timer only after a response: a client that never speaks is idle too.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.limits.idle_timeout_seconds, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if (left := self.by_client.get(self._peer, 0) - 1) > 0:
            self.by_client[self._peer] = left
        else:
            self.by_client.pop(self._peer, None)
        super().connection_lost(exc)

    def _close_longest_idle(self) -> bool:
        """Make room for a new connection by closing the one idle longest; False when none is idle."""
        idle = [c for c in self.connections if c is not self and getattr(c, "_phase", "") == "idle"]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: cast(LimitedHttpToolsProtocol, c)._idle_since)
        cast(LimitedHttpToolsProtocol, oldest).transport.close()
        return True

    def data_received(self, data: bytes) -> None:
        if self._phase == "refused":
            return
        if self._phase == "idle":
            self._phase, self._header_bytes, self._header_count, self._header_size = "headers", 0, 0, 0
        if self._phase == "headers":
            self._header_bytes += len(data)
        super().data_received(data)
        if self._phase == "headers" and self._header_bytes > self.limits.max_header_bytes:
            self._refuse(431, "headers_too_large", f"Send at most {self.limits.max_header_bytes:,} bytes of headers.")
        # A phase's deadline is armed only when a read ends inside it, from that read: a request
        # that arrives whole in one read (nearly every webhook) arms no timer at all, where two
        # timers set and cancelled per request were a measured cost of the loaded event loop.
        if self._phase in ("headers", "body") and self._armed_for != self._phase:
            if self._phase == "headers":
                self._arm(self.limits.header_timeout_seconds, self._headers_too_slow)
            else:
                self._arm(self.limits.body_timeout_seconds, self._body_too_slow)
            self._armed_for = self._phase

    def on_url(self, url: bytes) -> None:
        self._header_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        # The headers may all have come in one read: their exact size is checked here too.
        refusal = (
            ("too_many_headers", f"Send at most {self.limits.max_headers} headers.")
            if self._header_count > self.limits.max_headers
            else ("headers_too_large", f"Send at most {self.limits.max_header_bytes:,} bytes of headers.")
            if self._header_size > self.limits.max_header_bytes
            else None
        )
        if refusal is not None:
            self._phase = "refused"
            self.loop.call_soon(self._refuse, 431, *refusal)
            return
        self._phase = "body"  # its deadline is armed when the read ends (data_received)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._phase != "refused":
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._phase == "refused":
            return
        self._cancel_deadline()
        # An app may answer before the body ends (415, 413): then the next request starts from idle.
        answered = self.cycle is not None and self.cycle.response_complete
        self._phase = "idle" if answered else "app"
        if answered:
            self._idle_since = self.loop.time()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._phase == "app" and not self.pipeline:
            self._phase = "idle"
            self._idle_since = self.loop.time()
        super().on_response_complete()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[PEER] = self.client  # type: ignore[literal-required]

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "bad_request", "The request is not valid HTTP/1.1.")

    def _headers_too_slow(self) -> None:
        if self._phase == "headers":
            self._refuse(408, "request_timeout", "The request's headers took too long to arrive.")

    def _body_too_slow(self) -> None:
        if self._phase != "body":
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self.transport.close()
            return
        if cycle is not None:
            cycle.disconnected = True  # the app's receive() answers http.disconnect, and its reply is dropped
            cycle.message_event.set()
        self._refuse(408, "request_timeout", "The request's body took too long to arrive.")

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._phase = "refused"
        self._cancel_deadline()
        if not self.transport.is_closing():
            self.transport.write(_error(status, code, message))
            self.transport.close()

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(seconds, callback)

    def _cancel_deadline(self) -> None:
        self._armed_for = ""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


def limited_protocol(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with these limits."""
    return type("FsbridgeHttpProtocol", (LimitedHttpToolsProtocol,), {"limits": limits, "by_client": {}})
