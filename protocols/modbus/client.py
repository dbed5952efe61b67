"""A lean, pipelined Modbus TCP connection for trio: one stream per gateway, many in flight.

Theory of operation
-------------------
pymodbus spends ~110-170 µs of CPU per poll, most of it in per-request machinery (a future, a
timer, a transaction object, logging hooks, an event-loop round trip per request). Polling a
park means tens of thousands of tiny, identical requests a second, so this module turns the
unit of work from "a request" into "a batch":

* :class:`Pipeline` is the sans-I/O core. It allocates transaction ids, encodes requests with
  our codec into one outgoing buffer, keeps the in-flight table (tid -> token, deadline) and
  turns received bytes into ``(token, Response)`` completions. Many requests go out in one
  ``send_all`` and one read may complete many of them. Tokens are opaque to the
  pipeline; the caller (the bus actor) hands in whatever object it needs back, so completing a
  request is a dict pop and a callback-free return value, not a task wake-up.
* Deadlines: every request of one pipeline has the same timeout, so the in-flight dict (which
  keeps insertion order) is also ordered by deadline; the earliest deadline is its first entry
  and expiring is a pop from the front.
* A reply whose tid timed out a moment ago is *late*, not wrong: it is dropped and counted. A
  reply whose tid was never issued, or whose unit/function does not match the request, means
  the byte stream cannot be trusted any more (:class:`TransactionMismatch`, like the codec's
  ``FrameError``): the caller drops the connection and reconnects.
* :class:`GatewayConnection` is the I/O edge: it opens the TCP stream (with a connect timeout),
  and offers :meth:`GatewayConnection.exchange` — send everything submitted since the last
  call in one ``send_all``, then wait for the next batch of replies *or* a deadline *or* an
  :meth:`~GatewayConnection.interrupt` from another task (a relay command that must not wait
  for the next poll reply). It passes one checkpoint (fairness), then reads whatever has
  arrived without waiting; only when nothing has, it waits for readability in a cancel scope
  with the deadline. Reads are synchronous and only the wait is cancellable, so no bytes are
  ever lost to an interrupt.
* :class:`Backoff` is exponential, capped and jittered by an injected random source, so tests
  are deterministic.
* :class:`ModbusTcpClient` (``open_modbus_tcp``) is the convenience face for tools and tests:
  ``await client.request(...)`` from many tasks at once, pipelined over one connection by a
  reader task. The bus actor does not use it: it drives a ``GatewayConnection`` from its single
  task, which is where the CPU per poll is won.

Exception replies are ordinary results (``Response.exception`` set), never raised.
"""

from __future__ import annotations

import math
import os
import random as _random
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, Generic, NamedTuple, Protocol, TypeVar

import attrs
import trio

from protocols.modbus.codec import (
    FrameError,
    Response,
    ResponseDecoder,
    encode_read,
    encode_write_coil,
)

T = TypeVar("T")

RECEIVE_BYTES: Final = 65_536
"""One read takes up to this much: a few hundred replies at once."""

LATE_TIDS_KEPT: Final = 1_024
"""How many timed-out tids are remembered so their late replies are not taken for garbage."""

FUNCTION_MASK: Final = 0x7F
"""Exception replies set the top bit of the function code."""


class TransactionMismatch(Exception):
    """A reply that answers no request we sent (unknown tid, or wrong unit/function)."""


class ConnectionLost(Exception):
    """The gateway closed the stream (or it broke)."""


class RequestTimeout(Exception):
    """``ModbusTcpClient.request`` got no reply within the timeout (after its retries)."""


PROTOCOL_ERRORS: Final = (FrameError, TransactionMismatch)
"""Errors that mean the stream is garbage: drop the connection and reconnect."""

_TID: Final = struct.Struct(">H")


class PreparedRequest(NamedTuple):
    """A request encoded once, sent many times: everything but the MBAP transaction id.

    A poll sends the same few requests every cycle; only the tid (the first two bytes of the
    MBAP header) changes, so the codec runs once per request *shape*, not once per request.
    """

    tail: bytes
    unit: int
    function: int


class RequestPipeline(Protocol[T]):
    """What a connection and the bus need from a framing: :class:`Pipeline` (MBAP) or
    :class:`protocols.modbus.rtu.RtuPipeline` (RTU over TCP)."""

    window: int
    timeout_s: float
    late_replies: int

    @property
    def in_flight(self) -> int: ...

    @property
    def room(self) -> int: ...

    def prepare_read(
        self, unit: int, function: int, address: int, count: int
    ) -> PreparedRequest: ...

    def send_prepared(
        self, token: T, requests: tuple[PreparedRequest, ...], now: float
    ) -> list[int]: ...

    def send_read(
        self, token: T, unit: int, function: int, address: int, count: int, now: float
    ) -> int: ...

    def send_write_coil(self, token: T, unit: int, address: int, on: bool, now: float) -> int: ...

    def take_outgoing(self) -> bytes: ...

    def push_back_outgoing(self, data: bytes) -> None: ...

    def feed(self, data: bytes) -> list[tuple[T, Response]]: ...

    def next_deadline(self) -> float: ...

    def oldest(self) -> T | None: ...

    def expire(self, now: float) -> list[T]: ...

    def abandon(self, tid: int) -> None: ...

    def reset(self) -> list[T]: ...


# --- sans-I/O core ---------------------------------------------------------------------------


class Pipeline(Generic[T]):
    """Transaction ids, in-flight table and framing for one connection (see module docstring)."""

    __slots__ = (
        "_decoder",
        "_inflight",
        "_late",
        "_next_tid",
        "_outgoing",
        "late_replies",
        "timeout_s",
        "window",
    )

    def __init__(self, *, window: int, timeout_s: float) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.timeout_s = timeout_s
        self.late_replies = 0
        self._decoder = ResponseDecoder()
        # tid -> (token, deadline, unit, function); insertion order == deadline order.
        self._inflight: dict[int, tuple[T, float, int, int]] = {}
        self._late: dict[int, None] = {}
        self._outgoing: list[bytes] = []
        self._next_tid = 0

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def room(self) -> int:
        """How many more requests the window allows right now."""
        return self.window - len(self._inflight)

    def _allocate_tid(self) -> int:
        tid = self._next_tid
        inflight = self._inflight
        # With window << 65536 this loops at most a few times after a wrap-around.
        while tid in inflight:
            tid = (tid + 1) & 0xFFFF
        self._next_tid = (tid + 1) & 0xFFFF
        return tid

    def send_read(
        self, token: T, unit: int, function: int, address: int, count: int, now: float
    ) -> int:
        """Queue a read request (functions 1-4); returns its tid. Ignores the window."""
        tid = self._allocate_tid()
        self._outgoing.append(encode_read(tid, unit, function, address, count))
        self._inflight[tid] = (token, now + self.timeout_s, unit, function)
        return tid

    def prepare_read(self, unit: int, function: int, address: int, count: int) -> PreparedRequest:
        """Encode a read once, for :meth:`send_prepared` to send many times."""
        tail = encode_read(0, unit, function, address, count)[2:]
        return PreparedRequest(tail, unit, function)

    def send_prepared(
        self, token: T, requests: tuple[PreparedRequest, ...], now: float
    ) -> list[int]:
        """Queue prepared requests (one poll's read plan) for ``token``; returns their tids."""
        inflight = self._inflight
        outgoing = self._outgoing
        pack_tid = _TID.pack
        deadline = now + self.timeout_s
        tids = []
        tid = self._next_tid
        for tail, unit, function in requests:
            while tid in inflight:  # only after a wrap-around, with window << 65536
                tid = (tid + 1) & 0xFFFF
            outgoing.append(pack_tid(tid) + tail)
            inflight[tid] = (token, deadline, unit, function)
            tids.append(tid)
            tid = (tid + 1) & 0xFFFF
        self._next_tid = tid
        return tids

    def send_write_coil(self, token: T, unit: int, address: int, on: bool, now: float) -> int:
        """Queue a write-single-coil request (function 5); returns its tid."""
        tid = self._allocate_tid()
        self._outgoing.append(encode_write_coil(tid, unit, address, on))
        self._inflight[tid] = (token, now + self.timeout_s, unit, 5)
        return tid

    def take_outgoing(self) -> bytes:
        """Everything queued since the last call, as one buffer for one ``send_all``."""
        out = self._outgoing
        if not out:
            return b""
        self._outgoing = []
        return out[0] if len(out) == 1 else b"".join(out)

    def push_back_outgoing(self, data: bytes) -> None:
        """Put unsent bytes back in front of the queue (after a partial write)."""
        self._outgoing.insert(0, data)

    def feed(self, data: bytes) -> list[tuple[T, Response]]:
        """Completions for the replies in ``data`` (partial frames are kept for the next call).

        Raises the codec's ``FrameError`` or :class:`TransactionMismatch` when the stream can
        no longer be trusted.
        """
        completions: list[tuple[T, Response]] = []
        inflight = self._inflight
        for response in self._decoder.feed(data):
            entry = inflight.pop(response.tid, None)
            if entry is None:
                if response.tid in self._late:
                    del self._late[response.tid]
                    self.late_replies += 1
                    continue
                raise TransactionMismatch(f"reply with unknown transaction id {response.tid}")
            if entry[2] != response.unit or entry[3] != response.function & FUNCTION_MASK:
                raise TransactionMismatch(
                    f"reply tid {response.tid} is unit {response.unit} function "
                    f"{response.function}, request was unit {entry[2]} function {entry[3]}"
                )
            completions.append((entry[0], response))
        return completions

    def next_deadline(self) -> float:
        """The earliest deadline of a request in flight (``inf`` when none is)."""
        for entry in self._inflight.values():
            return entry[1]
        return math.inf

    def oldest(self) -> T | None:
        """The token of the oldest request in flight (replies come in order: the next due)."""
        for entry in self._inflight.values():
            return entry[0]
        return None

    def expire(self, now: float) -> list[T]:
        """Tokens of the requests whose deadline has passed; their late replies are ignored."""
        inflight = self._inflight
        expired: list[T] = []
        while inflight:
            tid = next(iter(inflight))
            entry = inflight[tid]
            if entry[1] > now:
                break
            del inflight[tid]
            self._remember_late(tid)
            expired.append(entry[0])
        return expired

    def abandon(self, tid: int) -> None:
        """Stop waiting for ``tid`` (its request failed elsewhere); a late reply is ignored."""
        if self._inflight.pop(tid, None) is not None:
            self._remember_late(tid)

    def _remember_late(self, tid: int) -> None:
        late = self._late
        late[tid] = None
        if len(late) > LATE_TIDS_KEPT:
            del late[next(iter(late))]

    def reset(self) -> list[T]:
        """Forget the connection (it was dropped): tokens of everything in flight, oldest first."""
        tokens = [entry[0] for entry in self._inflight.values()]
        self._inflight.clear()
        self._late.clear()
        self._outgoing = []
        self._decoder = ResponseDecoder()
        return tokens


class Backoff:
    """Exponential, capped, jittered delays: ``base * 2**n`` up to ``cap``, times [0.5, 1).

    ``random`` returns a float in [0, 1); pass a constant for deterministic tests.
    """

    __slots__ = ("_attempts", "_random", "base_s", "cap_s")

    def __init__(
        self, base_s: float, cap_s: float, random: Callable[[], float] | None = None
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self._random = random if random is not None else _random.random
        self._attempts = 0

    @property
    def attempts(self) -> int:
        return self._attempts

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.base_s * (2.0 ** min(self._attempts, 30)))
        self._attempts += 1
        # "Equal jitter": never less than half the delay (keeps the backoff meaningful), and
        # gateways that dropped at the same moment do not all come back in the same instant.
        return delay * (0.5 + 0.5 * self._random())

    def reset(self) -> None:
        self._attempts = 0


# --- trio edge -------------------------------------------------------------------------------


class GatewayConnection(Generic[T]):
    """One TCP stream to one gateway, driven by a single task (see module docstring)."""

    __slots__ = (
        "_interrupted",
        "_sending",
        "_stream",
        "_wait_scope",
        "connect_timeout_s",
        "host",
        "pipeline",
        "port",
    )

    def __init__(
        self, host: str, port: int, pipeline: RequestPipeline[T], *, connect_timeout_s: float
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.pipeline = pipeline
        self._stream: trio.SocketStream | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._interrupted = False
        self._sending = False

    @property
    def connected(self) -> bool:
        return self._stream is not None

    async def connect(self) -> None:
        """Open the stream; raises ``OSError`` (refused, unreachable, or timed out)."""
        with trio.move_on_after(self.connect_timeout_s):
            self._stream = await trio.open_tcp_stream(self.host, self.port)
            return
        raise TimeoutError(f"connect to {self.host}:{self.port} timed out")

    async def aclose(self) -> list[T]:
        """Close the stream; returns the tokens of the requests that were still in flight."""
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        return self.pipeline.reset()

    def interrupt(self) -> None:
        """Make the current (or next) :meth:`exchange` return early with no completions."""
        self._interrupted = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def flush_nowait(self) -> None:
        """Write queued requests to the socket now, from whichever task calls this.

        For requests that must not wait until the driving task next runs (a relay trip, when
        every gateway's task is busy, can otherwise wait a whole scheduler round). Safe because
        trio is single-threaded: the driving task is parked at an await, and if that await is
        a ``send_all`` still in progress we leave the bytes queued rather than interleave them.
        Anything not written now is sent by the next :meth:`exchange`; the driving task is
        interrupted either way so it re-reads deadlines and the window.
        """
        stream = self._stream
        if stream is not None and not self._sending:
            data = self.pipeline.take_outgoing()
            if data:
                try:
                    written = os.write(stream.socket.fileno(), data)
                except OSError:  # BlockingIOError, or broken: the driving task will see it
                    written = 0
                if written < len(data):
                    self.pipeline.push_back_outgoing(data[written:])
        self.interrupt()

    async def exchange(self, wake_at: float) -> list[tuple[T, Response]]:
        """Flush queued requests, then return the next batch of completions.

        Returns ``[]`` when ``wake_at`` (trio time) passes or :meth:`interrupt` is called
        first. Raises :class:`ConnectionLost`, the codec's ``FrameError`` or
        :class:`TransactionMismatch`; the caller then closes and reconnects.
        """
        stream = self._stream
        if stream is None:
            raise ConnectionLost("not connected")
        out = self.pipeline.take_outgoing()
        try:
            if out:
                # Write synchronously first: the socket is almost always writable, and
                # send_all would park this task in a checkpoint with a send "in progress" —
                # long enough, on a busy loop, to keep flush_nowait from jumping the queue.
                try:
                    written = os.write(stream.socket.fileno(), out)
                except BlockingIOError:
                    written = 0
                if written < len(out):
                    self._sending = True
                    await stream.send_all(memoryview(out)[written:])
                    self._sending = False
            # Let the other tasks have their turn first (fairness), then read whatever has
            # arrived meanwhile: under load that is a batch, and then this is all the
            # scheduling it costs. Only when nothing has arrived, wait for readability (a
            # cancel scope and an epoll registration: the expensive way, for idle moments).
            await trio.lowlevel.checkpoint()
            if self._interrupted:
                self._interrupted = False
                return []
            fd = stream.socket.fileno()
            try:
                data = os.read(fd, RECEIVE_BYTES)
            except BlockingIOError:
                with trio.CancelScope(deadline=wake_at) as scope:
                    self._wait_scope = scope
                    await trio.lowlevel.wait_readable(stream.socket)
                self._wait_scope = None
                if scope.cancelled_caught:
                    self._interrupted = False
                    return []
                try:
                    data = os.read(fd, RECEIVE_BYTES)
                except BlockingIOError:  # readable, yet nothing to read: nothing happened
                    return []
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            self._wait_scope = None
            self._sending = False
            raise ConnectionLost(f"connection to {self.host}:{self.port} broke: {error}") from error
        if not data:
            raise ConnectionLost(f"{self.host}:{self.port} closed the connection")
        return self.pipeline.feed(data)


# --- request/response face for tools and tests -------------------------------------------------


@attrs.define(slots=True, eq=False)
class _Waiter:
    event: trio.Event = attrs.field(factory=trio.Event)
    response: Response | None = None
    error: Exception | None = None


@attrs.frozen
class ClientStatistics:
    connected: bool
    in_flight: int
    requests: int
    timeouts: int
    reconnects: int
    late_replies: int


class ModbusTcpClient:
    """Awaitable requests pipelined over one connection; reconnects with backoff on garbage.

    Use :func:`open_modbus_tcp`. Any number of tasks may call :meth:`request` at once; at most
    ``window`` requests are in flight, and replies are matched by tid in whatever order the
    gateway sends them.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        window: int,
        timeout_s: float,
        retries: int,
        backoff: Backoff,
    ) -> None:
        pipeline: Pipeline[_Waiter] = Pipeline(window=window, timeout_s=timeout_s)
        self._connection = GatewayConnection(host, port, pipeline, connect_timeout_s=timeout_s)
        self._retries = retries
        self._backoff = backoff
        self._room = trio.Semaphore(window)
        self._send_lock = trio.StrictFIFOLock()
        self._connected = trio.Event()
        self._have_work = trio.Event()
        self._requests = 0
        self._timeouts = 0
        self._reconnects = 0

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            connected=self._connection.connected,
            in_flight=self._connection.pipeline.in_flight,
            requests=self._requests,
            timeouts=self._timeouts,
            reconnects=self._reconnects,
            late_replies=self._connection.pipeline.late_replies,
        )

    async def read(self, unit: int, function: int, address: int, count: int) -> Response:
        """Read ``count`` coils/inputs/registers (function 1-4)."""

        def submit(waiter: _Waiter, now: float) -> None:
            self._connection.pipeline.send_read(waiter, unit, function, address, count, now)

        return await self._request(submit)

    async def write_coil(self, unit: int, address: int, on: bool) -> Response:
        """Write one coil (function 5)."""

        def submit(waiter: _Waiter, now: float) -> None:
            self._connection.pipeline.send_write_coil(waiter, unit, address, on, now)

        return await self._request(submit)

    async def _request(self, submit: Callable[[_Waiter, float], None]) -> Response:
        for _attempt in range(self._retries + 1):
            async with self._room:
                await self._connected.wait()
                waiter = _Waiter()
                submit(waiter, trio.current_time())
                self._requests += 1
                # The reader may be parked in receive_some: wake it so the request goes out now.
                self._connection.interrupt()
                self._have_work.set()
                await waiter.event.wait()
            if waiter.response is not None:
                return waiter.response
            if not isinstance(waiter.error, RequestTimeout):
                assert waiter.error is not None
                raise waiter.error
        self._timeouts += 1
        raise RequestTimeout(f"no reply after {self._retries + 1} attempts")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the connection up and route replies; never returns."""
        connection = self._connection
        started = False
        while True:
            try:
                await connection.connect()
            except OSError:
                await trio.sleep(self._backoff.next_delay())
                continue
            self._connected.set()
            if not started:
                task_status.started()
                started = True
            try:
                while True:
                    if connection.pipeline.in_flight == 0:
                        await self._have_work.wait()
                        self._have_work = trio.Event()
                    completions = await connection.exchange(connection.pipeline.next_deadline())
                    if completions:
                        self._backoff.reset()
                    for waiter, response in completions:
                        waiter.response = response
                        waiter.event.set()
                    for waiter in connection.pipeline.expire(trio.current_time()):
                        waiter.error = RequestTimeout("no reply within the timeout")
                        waiter.event.set()
            except (ConnectionLost, *PROTOCOL_ERRORS) as error:
                self._connected = trio.Event()
                for waiter in await connection.aclose():
                    waiter.error = ConnectionLost(str(error))
                    waiter.event.set()
                self._reconnects += 1
                await trio.sleep(self._backoff.next_delay())


@asynccontextmanager
async def open_modbus_tcp(
    host: str,
    port: int,
    *,
    window: int = 4,
    timeout_s: float = 1.0,
    retries: int = 0,
    backoff: Backoff | None = None,
) -> AsyncIterator[ModbusTcpClient]:
    """A connected :class:`ModbusTcpClient`; its reader task lives as long as the block."""
    client = ModbusTcpClient(
        host,
        port,
        window=window,
        timeout_s=timeout_s,
        retries=retries,
        backoff=backoff if backoff is not None else Backoff(0.05, 5.0),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()
            await client._connection.aclose()
