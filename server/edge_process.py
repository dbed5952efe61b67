"""A network service in a process of its own, fed by the park stream: the server's side.

Theory of operation
-------------------
The websocket hub and the OPC UA server each have more work than the control loop (a
thousand sockets, an address space of a hundred thousand nodes, encryption), and in one
process they would share the trio thread and the garbage collector with every relay decision:
measured, the control path's p99 went from 0.4 ms to 9-25 ms with 1,000 hub clients
(docs/decisions.md). So each runs in a child process (``python -m WORKER FD``) and an
:class:`EdgeProcess` is its server side:

* **feed**: it subscribes to the stream like an in-process service would, but ``on_tick``
  only merges the tick into what is pending (latest view per meter wins, events in order) and
  wakes one sender task, which packs it (``protocols.stream.feed``) and writes it to the pipe. A
  child that falls behind makes the pipe full; the sender waits, ticks keep merging, and the
  next write carries the latest state: the control loop never waits for the child, and its
  cost stays one dict write per changed meter plus the packing;
* **calls**: every command a client of the child sends comes back here as a call and runs in
  this process (``park.operations``: roles, journal, audit), one task per call, in a nursery
  that outlives any one child: a child that dies mid-command does not cancel it (its answer is
  lost; the client sends it again with the same reference, which is idempotent);
* **supervision**: if the child dies (killed, crashed, out of memory), the park goes on; it
  is restarted on the same port after a pause that doubles from 1 s to 30 s while it keeps
  dying quickly. A child that cannot start the first time stops the server with one clear
  line instead (:class:`ProcessNotStarted`, or ``OSError`` when it cannot listen).

Subclasses say what the child is (:attr:`WORKER_MODULE`, :meth:`init_message`), which calls
it may make (:meth:`calls`), and what to do with messages of their own kinds
(:meth:`on_message`). ``server.edge_link`` describes the messages.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol

import trio

from protocols.stream.feed import encode_state, encode_tick
from protocols.stream.views import (
    AlarmView,
    AuditRecord,
    GatewayView,
    MeterView,
    ParkView,
    StreamTick,
)
from protocols.ws.backend import Who
from protocols.ws.protocol import command_error, internal_error
from server.edge_link import CALL, LOG, READY, REFUSED, REPLY, STATS, Link, LinkClosed
from server.stream import ParkStream

log = logging.getLogger(__name__)

REPO: Final = Path(__file__).resolve().parents[1]
START_TIMEOUT_S: Final = 30.0
STOP_GRACE_S: Final = 2.0
FIRST_RESTART_DELAY_S: Final = 1.0
MAX_RESTART_DELAY_S: Final = 30.0
STEADY_AFTER_S: Final = 60.0
"""A child that ran this long before it died is restarted after the first delay again."""
MAX_CALLS_IN_FLIGHT: Final = 1_000
MAX_PENDING_EVENTS: Final = 100_000
CHUNK_METERS: Final = 2_000
"""Meters per tick message to a child (see ``_take_pending``)."""

Call = Callable[..., Awaitable[Any]]
"""``call(who, *args)``: runs a child's call, returns what goes back (msgpack-able)."""

START_FAILURES: Final = (trio.TooSlowError, LinkClosed)


class Child(Protocol):
    """What is needed of the child: ``trio.Process`` (a benchmark may run one in a thread)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def kill(self) -> None: ...


def _failure(error: BaseException) -> str:
    if isinstance(error, trio.TooSlowError):
        return f"it was not ready within {START_TIMEOUT_S:g} s"
    if isinstance(error, LinkClosed):
        return f"its pipe closed: {error}"
    return str(error)


class ProcessNotStarted(Exception):
    """The first child process ended before it was ready (the message says why)."""


class ProcessRefused(Exception):
    """The child could not listen (``errno`` as the OS said)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


class EdgeProcess:
    """See the module docstring. ``port``, ``pid`` (while a child runs), ``restarts``,
    ``on_tick`` and ``run`` are the same for every kind of child."""

    WORKER_MODULE: ClassVar[str]
    WHAT: ClassVar[str]
    """What the child is, in log lines ("the hub process")."""

    def __init__(self, stream: ParkStream, port: int) -> None:
        self._stream = stream
        self.port = port
        self.restarts = 0
        self.pid: int | None = None
        self.dropped_events = 0
        self._calls_nursery: trio.Nursery | None = None
        self._link: Link | None = None
        self._calls = 0
        self._call_table: Mapping[str, Call] = self.calls()
        # What is pending for the child (merged ticks), and messages of the subclass's own.
        self._meters: dict[str, MeterView] = {}
        self._park: ParkView | None = None
        self._gateways: dict[str, GatewayView] = {}
        self._alarms: deque[AlarmView] = deque()
        self._audit: deque[AuditRecord] = deque()
        self._ts_ms = 0
        self._taken_s = math.inf
        self._ticked = False
        self._notices: deque[tuple[Any, ...]] = deque(maxlen=MAX_PENDING_EVENTS)
        self._wakeup = trio.Event()

    # -- what a subclass says --------------------------------------------------------------

    def init_message(self, port: int) -> tuple[Any, ...]:
        """The child's first message: its settings, listening on ``port``."""
        raise NotImplementedError

    def calls(self) -> Mapping[str, Call]:
        """The calls the child may make, by name."""
        raise NotImplementedError

    def on_statistics(self, row: Sequence[Any]) -> None:
        """The child's figures (a STATS message)."""

    def on_message(self, message: tuple[Any, ...]) -> None:
        log.warning("%s sent %r; ignored", self.WHAT, message[0])

    def on_stopped(self) -> None:
        """The child has gone (its figures are void)."""

    @property
    def running(self) -> bool:
        return self._link is not None

    def notify(self, message: tuple[Any, ...]) -> None:
        """Send the child a message of the subclass's own (dropped while none runs)."""
        if self._link is not None:
            self._notices.append(message)
            self._wakeup.set()

    # -- the stream's side: never blocks -----------------------------------------------------

    def on_tick(self, tick: StreamTick) -> None:
        if self._link is None:  # no child: the next one starts from the state message
            return
        meters = self._meters
        for view in tick.meters:
            meters[view.meter_id] = view
        if tick.park is not None:
            self._park = tick.park
        for gateway in tick.gateways:
            self._gateways[gateway.gateway_id] = gateway
        self._queue(self._alarms, tick.alarms)
        self._queue(self._audit, tick.audit)
        self._ts_ms = tick.ts_ms
        self._taken_s = min(self._taken_s, tick.taken_s)
        self._ticked = True
        self._wakeup.set()

    def _queue(self, queue: deque[Any], events: Sequence[Any]) -> None:
        queue.extend(events)
        while len(queue) > MAX_PENDING_EVENTS:  # a child stuck for minutes
            queue.popleft()
            self.dropped_events += 1

    def _take_pending(self) -> Iterator[bytes]:
        """What is pending, as tick messages of at most CHUNK_METERS meters each (the first
        has the park, gateways and events). Packed one by one as the sender asks: packing a
        100,000-meter tick at once would hold the control loop's thread for tens of ms."""
        meters = list(self._meters.values())
        park, gateways = self._park, list(self._gateways.values())
        alarms, audit = list(self._alarms), list(self._audit)
        ts_ms, taken_s = self._ts_ms, self._taken_s
        self._clear_pending()
        yield encode_tick(meters[:CHUNK_METERS], park, gateways, alarms, audit, ts_ms, taken_s)
        for start in range(CHUNK_METERS, len(meters), CHUNK_METERS):
            yield encode_tick(meters[start:start + CHUNK_METERS], None, (), (), (), ts_ms,
                              taken_s)

    def _clear_pending(self) -> None:
        self._meters = {}
        self._park = None
        self._gateways = {}
        self._alarms.clear()
        self._audit.clear()
        self._taken_s = math.inf
        self._ticked = False

    def _forget_pending(self) -> None:
        self._clear_pending()
        self._notices.clear()

    # -- the process ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the child, then keep one running until cancelled; ``started`` gets its url.
        The first start's failure to listen raises ``OSError``, any other failure of it
        :class:`ProcessNotStarted`."""
        try:
            running, url = await self._start()
        except ProcessRefused as error:
            raise OSError(error.errno, str(error)) from None
        except START_FAILURES as error:
            raise ProcessNotStarted(f"{self.WHAT} did not start: {_failure(error)}") from None
        task_status.started(url)
        delay = FIRST_RESTART_DELAY_S
        async with trio.open_nursery() as self._calls_nursery:
            while True:
                began = trio.current_time()
                why = await self._serve(*running)
                if trio.current_time() - began > STEADY_AFTER_S:
                    delay = FIRST_RESTART_DELAY_S
                while True:
                    log.error("%s ended (%s); the park goes on, it restarts in %g s",
                              self.WHAT, why, delay)
                    await trio.sleep(delay)
                    delay = min(MAX_RESTART_DELAY_S, delay * 2)
                    self.restarts += 1
                    try:
                        running, _ = await self._start()
                        break
                    except (ProcessRefused, *START_FAILURES) as error:
                        why = f"its restart failed: {_failure(error)}"

    async def spawn(self, theirs: socket.socket) -> Child:
        """The child, given its end of the pipe (``python -m WORKER_MODULE FD``)."""
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", self.WORKER_MODULE, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})

    async def _start(self) -> tuple[tuple[Link, Child], str]:
        """A child with the park's state, listening (or an exception: it is gone)."""
        ours, theirs = socket.socketpair()
        try:
            process = await self.spawn(theirs)
        finally:
            theirs.close()
        link = Link(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        try:
            await link.send(self.init_message(self.port))
            # The state and the subscription are taken together, on this thread: every
            # change after the state message is in a later tick message.
            stream = self._stream
            state = encode_state(stream.current().values(), stream.park_view(),
                                 stream.gateway_views(), stream.active_alarms())
            self._forget_pending()
            self._link = link
            await link.send_packed(state)
            with trio.fail_after(START_TIMEOUT_S):
                answer = await link.receive()
                while answer[0] == LOG:  # what it says while it starts
                    self._log(answer)
                    answer = await link.receive()
            if answer[0] == REFUSED:
                raise ProcessRefused(answer[1], answer[2])
            if answer[0] != READY:
                raise LinkClosed(f"it said {answer[0]!r} instead of ready")
        except BaseException:
            await self._stop(link, process)
            raise
        url, self.port = answer[1], answer[2]
        self.pid = process.pid
        log.info("%s runs (pid %d)", self.WHAT, process.pid)
        return (link, process), url

    async def _stop(self, link: Link, process: Child) -> None:
        self._link = None
        self.pid = None
        self.on_stopped()
        with trio.CancelScope(shield=True):
            await link.aclose()  # it sees the end of its input and stops
            with trio.move_on_after(STOP_GRACE_S):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def _serve(self, link: Link, process: Child) -> str:
        """Feed the child and answer its calls until it ends; returns why it ended."""
        why = ""
        try:
            async with trio.open_nursery() as nursery:
                async def watch() -> None:
                    nonlocal why
                    code = await process.wait()
                    why = f"exit status {code}"
                    nursery.cancel_scope.cancel()

                async def receive() -> None:
                    nonlocal why
                    try:
                        await self._receive_loop(link)
                    except LinkClosed as error:
                        why = why or f"its pipe closed: {error}"
                        nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                nursery.start_soon(receive)
                nursery.start_soon(self._send_loop, link)
        finally:
            await self._stop(link, process)
        return why

    async def _send_loop(self, link: Link) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                while self._notices:
                    await link.send(self._notices.popleft())
                if self._ticked:
                    for data in self._take_pending():
                        await link.send_packed(data)
                        await trio.lowlevel.checkpoint()  # readings go first
        except LinkClosed:
            return  # the receiver or the watcher says why

    async def _receive_loop(self, link: Link) -> None:
        while True:
            message = await link.receive()
            kind = message[0]
            if kind == CALL:
                _, call_id, method, who, args = message
                if self._calls >= MAX_CALLS_IN_FLIGHT:
                    await link.send((REPLY, call_id, False, (
                        "overloaded", f"more than {MAX_CALLS_IN_FLIGHT} commands in progress; "
                                      "send it again later with the same reference")))
                    continue
                self._calls += 1
                assert self._calls_nursery is not None  # (run() opened it)
                self._calls_nursery.start_soon(self._serve_call, link, call_id, method,
                                               Who(*who), args)
            elif kind == STATS:
                self.on_statistics(message[1])
            elif kind == LOG:
                self._log(message)
            else:
                self.on_message(message)

    @staticmethod
    def _log(message: tuple[Any, ...]) -> None:
        _, level, name, text = message
        logging.getLogger(name).log(level, "%s", text)

    async def _serve_call(self, link: Link, call_id: int, method: str, who: Who,
                          args: Sequence[Any]) -> None:
        try:
            call = self._call_table.get(method)
            if call is None:
                raise ValueError(f"{self.WHAT} asked for {method!r}, which is not a call")
            reply = (REPLY, call_id, True, await call(who, *args))
        except Exception as error:
            answer = command_error(error)
            if answer is None:
                log.exception("%s: %s from %s failed", self.WHAT, method, who.user)
                answer = internal_error(error)
            reply = (REPLY, call_id, False, answer)
        finally:
            self._calls -= 1
        with contextlib.suppress(LinkClosed):  # gone: the client resends with the same id
            await link.send(reply)
