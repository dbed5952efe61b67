"""A small HTTP/1.1 client for webhook notices: h11 over trio streams, keep-alive connections
pooled per origin.

Why not httpx (which the SMS and WeChat adapters use): a webhook notice is one small POST, and
a burst is thousands of them to the same few receivers. Profiled under trio, httpx cost about
0.9 ms of CPU a request with 8 in flight and 3.4 ms with 64 (its pool's locking); this client,
with h11 doing all the parsing, costs a fraction of that, which is what lets one delivery
process keep up with a park-wide burst (``bench notify``).

It does what a webhook needs and no more: ``POST`` with a body, ``http`` and ``https`` (the
system's trust store, SNI, hostname checked), a timeout for the whole exchange, no redirects
(a receiver that moved answers 3xx: that is its answer), answers up to ``MAX_ANSWER_BYTES``.
A connection that fails or that the server closes is dropped; a request on a kept-alive
connection that the server had closed in the meantime is sent once more on a new one (it never
reached the server).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

import attrs
import h11
import trio

MAX_ANSWER_BYTES: Final = 64 << 10
MAX_IDLE_PER_ORIGIN: Final = 16
RECEIVE_BYTES: Final = 65536


class HttpFailure(Exception):
    """No answer: the connection failed, timed out or the answer was not HTTP."""


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@attrs.frozen
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> tuple[Origin, str]:
        """The origin of ``url`` and its request target (path and query)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpFailure(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port), target

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class _Connection:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.used = False
        self.heard = False
        """Any byte of an answer to the current request arrived."""

    async def exchange(self, request: h11.Request, body: bytes) -> Answer:
        connection = self.h11
        self.heard = False
        await self.stream.send_all(connection.send(request) + connection.send(
            h11.Data(data=body)) + connection.send(h11.EndOfMessage()))
        response: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(RECEIVE_BYTES)
                self.heard = self.heard or bool(data)
                connection.receive_data(bytes(data))
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size <= MAX_ANSWER_BYTES:
                    chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise HttpFailure("the server closed the connection before answering")
        assert response is not None
        headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                   for name, value in response.headers}
        return Answer(response.status_code, headers, b"".join(chunks))

    @property
    def reusable(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    def next_cycle(self) -> None:
        self.h11.start_next_cycle()
        self.used = True


class HttpClient:
    """``async with HttpClient() as client: await client.post(url, body, headers, timeout)``."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None,
                 user_agent: str = "wattkeeper") -> None:
        self._ssl = ssl_context or ssl.create_default_context()
        self._user_agent = user_agent
        self._idle: dict[Origin, list[_Connection]] = {}

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def post(self, url: str, body: bytes, headers: Sequence[tuple[str, str]],
                   timeout_s: float) -> Answer:
        origin, target = Origin.of(url)
        request = h11.Request(method="POST", target=target, headers=[
            ("Host", origin.host_header), ("User-Agent", self._user_agent),
            ("Content-Length", str(len(body))), *headers])
        with trio.move_on_after(timeout_s) as scope:
            for _ in range(2):
                connection = self._idle_connection(origin)
                fresh = connection is None
                if connection is None:
                    connection = await self._connect(origin)
                try:
                    answer = await connection.exchange(request, body)
                except trio.Cancelled:  # the timeout: this connection is mid-exchange
                    await _close(connection)
                    raise
                except (HttpFailure, OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                        h11.ProtocolError) as error:
                    await _close(connection)
                    if fresh or not _never_reached(connection):
                        raise HttpFailure(f"{type(error).__name__}: {error}") from None
                    continue  # a kept-alive connection the server had closed: once more
                if connection.reusable:
                    connection.next_cycle()
                    self._keep(origin, connection)
                else:
                    await _close(connection)
                return answer
        assert scope.cancelled_caught
        raise HttpFailure(f"no answer within {timeout_s:g} s")

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        return idle.pop() if idle else None

    def _keep(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) < MAX_IDLE_PER_ORIGIN:
            idle.append(connection)
        else:
            trio.lowlevel.spawn_system_task(_close, connection)

    async def _connect(self, origin: Origin) -> _Connection:
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(origin.host, origin.port)
            if origin.scheme == "https":
                tls = trio.SSLStream(stream, self._ssl, server_hostname=origin.host,
                                     https_compatible=True)
                await tls.do_handshake()
                stream = tls
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as error:
            raise HttpFailure(f"cannot connect to {origin.host}:{origin.port}: {error}") from None
        return _Connection(stream)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await _close(connection)


def _never_reached(connection: _Connection) -> bool:
    """A reused connection that failed before any answer came back: the server closed it while
    it was idle, so the request was not taken (HTTP/1.1 section 9.6 lets a client resend)."""
    return connection.used and not connection.heard


async def _close(connection: _Connection) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1), \
            contextlib.suppress(OSError, trio.BrokenResourceError):
        await connection.stream.aclose()
