"""The server's HTTP protocol: writes of one event-loop turn leave as one, nothing is lost or
reordered, and real HTTP/1.1 traffic (keep-alive, streaming, HEAD, 204) is served as before."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from fsbridge.http_protocol import (
    PEER,
    CoalescingHttpToolsProtocol,
    CoalescingTransport,
    ConnectionLimits,
    LimitedHttpToolsProtocol,
    limited_protocol,
)


class RecordingTransport:
    """The calls a transport receives."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def coalescing(recording: RecordingTransport) -> CoalescingTransport:
    return CoalescingTransport(recording, asyncio.get_running_loop())  # type: ignore[arg-type]


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_writes_of_one_turn_leave_as_one_in_order() -> None:
    """A head and a body written in the same turn reach the socket as one write, in order."""
    recording = RecordingTransport()
    transport = coalescing(recording)
    transport.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
    transport.write(bytearray(b"{}"))
    assert [] == recording.writes
    assert 27 == transport.get_write_buffer_size()
    await next_turn()
    assert [b"HTTP/1.1 202 Accepted\r\n\r\n{}"] == recording.writes
    transport.write(b"next")
    transport.writelines([b", and", b" more"])  # through the hold too, so nothing overtakes it
    await next_turn()
    assert b"next, and more" == recording.writes[-1]


async def test_a_reused_buffer_does_not_change_what_is_sent() -> None:
    """A mutable buffer is copied when written, so reusing it before the turn ends changes nothing."""
    recording = RecordingTransport()
    transport = coalescing(recording)
    buffer = bytearray(b"abc")
    transport.write(buffer)
    buffer[:] = b"xyz"
    await next_turn()
    assert [b"abc"] == recording.writes


async def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    """close() sends the held bytes before closing; abort() discards them; a closed socket gets nothing."""
    recording = RecordingTransport()
    transport = coalescing(recording)
    transport.write(b"last words")
    transport.close()
    assert ([b"last words"], True) == (recording.writes, recording.closed)
    transport.write(b"too late")
    await next_turn()
    assert [b"last words"] == recording.writes

    recording = RecordingTransport()
    transport = coalescing(recording)
    transport.write(b"discarded")
    transport.abort()
    await next_turn()
    assert ([], True) == (recording.writes, recording.aborted)
    assert "info:peername" == transport.get_extra_info("peername")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for n in range(3):
            await send({"type": "http.response.body", "body": b"chunk%d;" % n, "more_body": True})
            await asyncio.sleep(0.001)
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/peer":
        peer = repr(scope.get(PEER)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(peer))]})
        await send({"type": "http.response.body", "body": peer})
        return
    if path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"echo:"
    while True:  # the whole body, as fsbridge's receivers read it
        message = await receive()
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in the backlog until the server accepts them: no start-up race
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", http=CoalescingHttpToolsProtocol, lifespan="off")
    served = uvicorn.Server(config)
    task = asyncio.create_task(served.serve(sockets=[sock]))
    yield f"http://127.0.0.1:{port}"
    served.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task
    sock.close()


async def test_real_http_traffic_is_served_whole(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep-alive requests, a streamed body, HEAD and 204 all arrive whole through the protocol."""
    flushes: list[int] = []
    flush = CoalescingTransport.flush

    def counted(self: CoalescingTransport) -> None:
        flushes.append(1)
        flush(self)

    monkeypatch.setattr(CoalescingTransport, "flush", counted)
    async with httpx.AsyncClient(base_url=server) as client:
        for n in range(20):  # one keep-alive connection, many requests
            response = await client.post("/echo", content=b"n=%d" % n)
            assert (200, b"echo:n=%d" % n) == (response.status_code, response.content)
        streamed = await client.get("/stream")
        assert b"chunk0;chunk1;chunk2;" == streamed.content
        head = await client.head("/echo")
        assert (200, b"") == (head.status_code, head.content)
        assert 204 == (await client.get("/empty")).status_code
        concurrent = await asyncio.gather(*(client.post("/echo", content=b"%d" % n) for n in range(16)))
        assert [b"echo:%d" % n for n in range(16)] == [r.content for r in concurrent]
    assert len(flushes) >= 20  # every response went through the coalescing transport


LIMITS = ConnectionLimits(
    max_header_bytes=2048,
    max_headers=10,
    header_timeout_seconds=0.3,
    body_timeout_seconds=0.3,
    idle_timeout_seconds=0.3,
    max_connections=4,
)


SERVERS: list[uvicorn.Server] = []  # the running limited servers, newest last (their connections can be watched)


@contextlib.asynccontextmanager
async def limited_server(limits: ConnectionLimits) -> AsyncIterator[tuple[str, int]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    config = uvicorn.Config(app, log_level="warning", http=limited_protocol(limits), lifespan="off")
    served = uvicorn.Server(config)
    task = asyncio.create_task(served.serve(sockets=[sock]))
    SERVERS.append(served)
    try:
        yield sock.getsockname()
    finally:
        SERVERS.remove(served)
        served.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


async def exchange(address: tuple[str, int], *parts: bytes) -> tuple[bytes, float]:
    """Send `parts`, then read until the server closes (at most 5 s); the answer and how long it took."""
    reader, writer = await asyncio.open_connection(*address)
    started = asyncio.get_running_loop().time()
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    return answer, asyncio.get_running_loop().time() - started


def status_and_code(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), orjson.loads(body)["error"]["code"]


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n", 431, "headers_too_large"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(20)) + b"\r\n",
            431,
            "too_many_headers",
        ),
        (b"GARBAGE\x00\r\n\r\n", 400, "bad_request"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 408, "request_timeout"),  # headers never end
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b", 408, "request_timeout"),
    ],
    ids=["large header", "many headers", "malformed", "slow headers", "slow body"],
)
async def test_a_connection_over_a_limit_gets_a_json_error_and_is_closed(
    request_bytes: bytes, status: int, code: str
) -> None:
    """Oversized or too many headers (431), malformed HTTP (400), and headers or a body that do not
    arrive in time (408) are answered with the contract's JSON error, and the connection is closed."""
    async with limited_server(LIMITS) as address:
        answer, _ = await exchange(address, request_bytes)
    assert (status, code) == status_and_code(answer)


async def test_an_idle_connection_is_closed() -> None:
    """A connection that never sends a request, or sits idle after one, is closed after the idle timeout."""
    async with limited_server(LIMITS) as address:
        silent, waited = await exchange(address)
        after_one, _ = await exchange(address, b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"" == silent
    assert waited < 4
    assert after_one.startswith(b"HTTP/1.1 204")


async def test_a_full_server_closes_its_longest_idle_connection_for_a_new_one() -> None:
    """With the cap reached by idle connections, a new one (a health probe) is served and the connection idle
    longest is closed; the others still work."""
    async with limited_server(dataclasses.replace(LIMITS, idle_timeout_seconds=30)) as address:
        held = [await asyncio.open_connection(*address) for _ in range(4)]
        try:
            await asyncio.sleep(0)  # not a wait for time: lets the server accept the four
            answer, _ = await exchange(address, b"GET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 204")
            assert b"" == await asyncio.wait_for(held[0][0].read(), timeout=5)  # the oldest was closed
            reader, writer = held[1]
            writer.write(b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await asyncio.wait_for(reader.readline(), timeout=5)).startswith(b"HTTP/1.1 204")
        finally:
            for _, writer in held:
                writer.close()


async def test_connections_beyond_the_cap_are_refused_when_none_is_idle() -> None:
    """With the cap reached by connections mid-request, one more is answered 503 and closed."""
    async with limited_server(
        dataclasses.replace(LIMITS, idle_timeout_seconds=30, header_timeout_seconds=30)
    ) as address:
        held = [await asyncio.open_connection(*address) for _ in range(4)]
        try:
            for _, writer in held:
                writer.write(b"GET /empty HTTP/1.1\r\n")  # headers begun, not ended: busy, not idle
                await writer.drain()
            async with asyncio.timeout(5):  # until the server has read the four partial requests
                connections = SERVERS[-1].server_state.connections
                while sum(getattr(c, "_phase", "") == "headers" for c in connections) < 4:  # noqa: ASYNC110 - no event to await
                    await asyncio.sleep(0)
            answer, _ = await exchange(address)
            assert (503, "too_many_connections") == status_and_code(answer)
        finally:
            for _, writer in held:
                writer.close()


async def test_one_client_gets_only_its_share_of_the_connections() -> None:
    """Past its share, a client's next connection is refused; another address is still served."""
    limits = dataclasses.replace(LIMITS, idle_timeout_seconds=30, max_connections_per_client=2)
    async with limited_server(limits) as address:
        held = [await asyncio.open_connection(*address) for _ in range(2)]
        try:
            await asyncio.sleep(0)
            answer, _ = await exchange(address)
            assert (503, "too_many_connections") == status_and_code(answer)
            reader, writer = await asyncio.open_connection(*address, local_addr=("127.0.0.2", 0))
            writer.write(b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await asyncio.wait_for(reader.readline(), timeout=5)).startswith(b"HTTP/1.1 204")
            writer.close()
        finally:
            for _, writer in held:
                writer.close()


async def test_the_protocol_records_the_socket_peer_before_proxy_headers() -> None:
    """The scope carries the socket's peer address, which no X-Forwarded-For can change."""
    async with limited_server(LIMITS) as address:
        answer, _ = await exchange(
            address, b"GET /peer HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.9.9.9\r\nConnection: close\r\n\r\n"
        )
    assert b"('127.0.0.1'," in answer.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    ("head", "pieces"),
    [
        (b"", [b"GET /healthz HTTP/1.1\r\n"] + [b"X-%d: 1\r\n" % n for n in range(9)]),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", [b"0123456789"] * 9),
    ],
    ids=["headers", "body"],
)
async def test_a_trickled_request_is_timed_from_its_phase_start(head: bytes, pieces: list[bytes]) -> None:
    """Headers or a body sent a piece every 0.1 s get 408 once their phase has lasted the 0.3 s
    timeout: a read inside the phase does not push its deadline back."""
    async with limited_server(LIMITS) as address:
        reader, writer = await asyncio.open_connection(*address)
        answer = asyncio.create_task(reader.read())
        try:
            writer.write(head)
            sent = 0
            for piece in pieces:  # 0.9 s of pieces in all, three times the timeout
                if answer.done():
                    break
                with contextlib.suppress(ConnectionError):
                    writer.write(piece)
                    await writer.drain()
                sent += 1
                await asyncio.wait({answer}, timeout=0.1)  # the trickle's pace, or the answer
            assert (408, "request_timeout") == status_and_code(await asyncio.wait_for(answer, timeout=5))
            assert sent < len(pieces)  # answered while pieces were still coming
        finally:
            writer.close()


async def test_a_request_that_arrives_in_one_read_arms_no_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request whose headers and body come in one read sets no timer; one whose body comes in a
    later read sets the body's deadline once."""
    armed: list[str] = []
    headers_read = asyncio.Event()
    arm = LimitedHttpToolsProtocol._arm

    def counting(self: LimitedHttpToolsProtocol, seconds: float, callback: Any) -> None:
        armed.append(callback.__name__)
        headers_read.set()
        arm(self, seconds, callback)

    monkeypatch.setattr(LimitedHttpToolsProtocol, "_arm", counting)
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    async with limited_server(LIMITS) as address:
        whole, _ = await exchange(address, head + b"hi")
        assert whole.endswith(b"echo:hi")
        assert [] == armed
        reader, writer = await asyncio.open_connection(*address)
        try:
            writer.write(head)
            await writer.drain()
            await asyncio.wait_for(headers_read.wait(), timeout=5)
            writer.write(b"hi")
            split = await asyncio.wait_for(reader.read(), timeout=5)
        finally:
            writer.close()
    assert split.endswith(b"echo:hi")
    assert ["_body_too_slow"] == armed


async def test_the_uvicorn_installed_has_what_the_limited_protocol_extends() -> None:
    """The uvicorn range pyproject.toml allows is the one these tests ran against, and the installed one has
    every method and attribute LimitedHttpToolsProtocol overrides or reads; an incompatible uvicorn fails here."""
    from importlib.metadata import version

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    installed = tuple(int(part) for part in version("uvicorn").split(".")[:2])
    assert (0, 30) <= installed < (0, 55), version("uvicorn")  # as pyproject.toml allows
    for method in ("connection_made", "connection_lost", "data_received", "on_url", "on_header",
                   "on_headers_complete", "on_body", "on_message_complete", "on_response_complete",
                   "on_message_begin", "send_400_response", "timeout_keep_alive_handler"):  # fmt: skip
        assert callable(getattr(HttpToolsProtocol, method, None)), method
    config = uvicorn.Config(app, http=limited_protocol(LIMITS), lifespan="off")
    config.load()
    server_state = uvicorn.Server(config).server_state
    protocol = limited_protocol(LIMITS)(config=config, server_state=server_state, app_state={})
    for attribute in ("loop", "connections", "timeout_keep_alive", "timeout_keep_alive_task", "pipeline", "cycle"):
        assert hasattr(protocol, attribute), attribute
