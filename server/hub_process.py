"""The websocket hub in a process of its own, fed by the park stream (``[hub] isolation``).

Theory of operation
-------------------
With a control room connected, the hub's work (a thousand sockets, framing, per-client
queues) is several times the control loop's, and in one process it shares the trio thread
and the garbage collector with every relay decision: measured, the control path's p99 went
from 0.4 ms to 9-25 ms with 1,000 clients (docs/decisions.md). So by default the hub runs in a
child process (``server.hub_worker``) and this module is its server side:

* **feed**: :class:`HubProcess` subscribes to the stream like the in-process hub does, but
  ``on_tick`` only merges the tick into what is pending (latest view per meter wins, events
  in order) and wakes one sender task, which packs it (``protocols.ws.feed``) and writes it to
  the pipe. A hub process that falls behind makes the pipe full; the sender waits, ticks keep
  merging, and the next write carries the latest state: the control loop never waits for the
  hub, and its cost stays one dict write per changed meter plus the packing;
* **calls**: every command and audit page a hub client sends comes back here as a call and
  runs through :class:`server.hub_backend.HubBackend` (``park.operations``: roles, journal,
  audit), one task per call, exactly as in-process;
* **supervision**: if the hub process dies (killed, crashed, out of memory), the park goes on;
  it is restarted on the same port after a pause that doubles from 1 s to 30 s while it keeps
  dying quickly. Its clients reconnect (the consoles do by themselves); a command that was
  on its way may or may not have been done, and is resent with the same id (idempotent).

Logins are checked in the hub's process (it gets the users with its settings); sessions live
there too, so a restarted hub process has forgotten them and clients log in again.
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
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from protocols.ws.backend import Who
from protocols.ws.feed import encode_state, encode_tick
from protocols.ws.hub import HubSettings, HubStatistics, hub_url
from protocols.ws.protocol import AckInfo, command_error, internal_error
from protocols.ws.views import AlarmView, AuditRecord, GatewayView, MeterView, ParkView, StreamTick
from server.config import User
from server.hub_backend import HubBackend
from server.hub_link import (
    CALL,
    INIT,
    LOG,
    LOGIN_FAILED,
    READY,
    REFUSED,
    REPLY,
    STATS,
    Link,
    LinkClosed,
    ack_row,
    audit_rows,
    statistics_of,
)
from server.stream import ParkStream

log = logging.getLogger(__name__)

REPO: Final = Path(__file__).resolve().parents[1]
WORKER_MODULE = "server.hub_worker"
START_TIMEOUT_S: Final = 30.0
STOP_GRACE_S: Final = 2.0
FIRST_RESTART_DELAY_S: Final = 1.0
MAX_RESTART_DELAY_S: Final = 30.0
STEADY_AFTER_S: Final = 60.0
"""A hub process that ran this long before it died is restarted after the first delay again."""
MAX_CALLS_IN_FLIGHT: Final = 1_000
MAX_PENDING_EVENTS: Final = 100_000

NO_STATISTICS: Final = HubStatistics(*(0 for _ in attrs.fields(HubStatistics)))


START_FAILURES: Final = (trio.TooSlowError, LinkClosed)


def _failure(error: BaseException) -> str:
    if isinstance(error, trio.TooSlowError):
        return f"it was not ready within {START_TIMEOUT_S:g} s"
    if isinstance(error, LinkClosed):
        return f"its pipe closed: {error}"
    return str(error)


class HubNotStarted(Exception):
    """The first hub process ended before it was ready (the message says why)."""


class HubRefused(Exception):
    """The hub process could not listen (``errno`` as the OS said)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


@attrs.frozen
class HubProcessSettings:
    hub: HubSettings  # its ssl_context is not sent: the process loads tls_paths itself
    tls_paths: tuple[str, str] | None
    users: Sequence[User]
    session_ttl_ms: int


def _init_message(settings: HubProcessSettings, port: int, decimals: int) -> tuple[Any, ...]:
    hub = attrs.asdict(settings.hub, filter=lambda field, _: field.name != "ssl_context")
    hub["port"] = port
    users = [(user.name, user.password, user.role) for user in settings.users]
    return (INIT, hub, settings.tls_paths, users, settings.session_ttl_ms, decimals,
            logging.getLogger().getEffectiveLevel())


class HubProcess:
    """See the module docstring. Has the in-process hub's ``url``, ``port``, ``statistics()``
    and ``on_tick``, so the rest of the server does not care where the hub runs."""

    def __init__(self, settings: HubProcessSettings, stream: ParkStream,
                 backend: HubBackend) -> None:
        self._settings = settings
        self._stream = stream
        self._backend = backend
        self.port = settings.hub.port
        self.restarts = 0
        self.pid: int | None = None  # of the hub process, while one runs
        self._calls_nursery: trio.Nursery | None = None
        self.dropped_events = 0
        self._statistics = NO_STATISTICS
        self._link: Link | None = None
        self._calls = 0
        self._commands: dict[str, Callable[..., Awaitable[AckInfo]]] = {
            "top_up": backend.top_up, "set_relay": backend.set_relay,
            "reset_lockout": backend.reset_lockout, "ack_alarm": backend.ack_alarm,
        }
        # What is pending for the hub process (merged ticks).
        self._meters: dict[str, MeterView] = {}
        self._park: ParkView | None = None
        self._gateways: dict[str, GatewayView] = {}
        self._alarms: deque[AlarmView] = deque()
        self._audit: deque[AuditRecord] = deque()
        self._ts_ms = 0
        self._taken_s = math.inf
        self._ticked = False
        self._logins: deque[tuple[str, str, int]] = deque(maxlen=MAX_PENDING_EVENTS)
        self._wakeup = trio.Event()
        backend.throttle.listeners.append(self._http_login_failed)

    @property
    def url(self) -> str:
        return hub_url(self._settings.hub.host, self.port,
                       tls=self._settings.tls_paths is not None)

    def statistics(self) -> HubStatistics:
        """As the hub process last reported them (ten times a second); zeros while it is down."""
        return self._statistics if self._link is not None else NO_STATISTICS

    # -- the stream's side: never blocks -----------------------------------------------------

    def on_tick(self, tick: StreamTick) -> None:
        if self._link is None:  # no hub process: the next one starts from the state message
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
        while len(queue) > MAX_PENDING_EVENTS:  # a hub process stuck for minutes
            queue.popleft()
            self.dropped_events += 1

    def _take_pending(self) -> bytes:
        data = encode_tick(self._meters.values(), self._park, self._gateways.values(),
                           self._alarms, self._audit, self._ts_ms, self._taken_s)
        self._meters = {}
        self._park = None
        self._gateways = {}
        self._alarms.clear()
        self._audit.clear()
        self._taken_s = math.inf
        self._ticked = False
        return data

    def _forget_pending(self) -> None:
        self._take_pending()
        self._logins.clear()

    # -- the process ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the hub process, then keep one running until cancelled. The first start's
        failure to listen raises ``OSError`` (as the in-process hub's would), any other
        failure of it :class:`HubNotStarted`: a server whose hub cannot start says so at once
        rather than retrying out of sight."""
        try:
            running = await self._start()
        except HubRefused as error:
            raise OSError(error.errno, str(error)) from None
        except START_FAILURES as error:
            raise HubNotStarted(f"the hub process did not start: {_failure(error)}") from None
        task_status.started(self.url)
        delay = FIRST_RESTART_DELAY_S
        # Commands run here, not under one hub process: one that dies mid-command does not
        # cancel it (its answer is lost; the client sends it again with the same id).
        async with trio.open_nursery() as self._calls_nursery:
            while True:
                began = trio.current_time()
                why = await self._serve(*running)
                if trio.current_time() - began > STEADY_AFTER_S:
                    delay = FIRST_RESTART_DELAY_S
                while True:
                    log.error("the hub process ended (%s); the park goes on, the hub restarts "
                              "in %g s", why, delay)
                    await trio.sleep(delay)
                    delay = min(MAX_RESTART_DELAY_S, delay * 2)
                    self.restarts += 1
                    try:
                        running = await self._start()
                        break
                    except (HubRefused, *START_FAILURES) as error:
                        why = f"its restart failed: {_failure(error)}"

    async def _start(self) -> tuple[Link, trio.Process]:
        """A hub process with the park's state, listening (or an exception: it is gone)."""
        ours, theirs = socket.socketpair()
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", WORKER_MODULE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
        finally:
            theirs.close()
        link = Link(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        try:
            await link.send(_init_message(self._settings, self.port, self._backend.decimals))
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
            if answer[0] == REFUSED:
                raise HubRefused(answer[1], answer[2])
            if answer[0] != READY:
                raise LinkClosed(f"it said {answer[0]!r} instead of ready")
        except BaseException:
            await self._stop(link, process)
            raise
        self.port = answer[2]
        self.pid = process.pid
        log.info("the hub runs in its own process (pid %d)", process.pid)
        return link, process

    async def _stop(self, link: Link, process: trio.Process) -> None:
        self._link = None
        self.pid = None
        self._statistics = NO_STATISTICS
        with trio.CancelScope(shield=True):
            await link.aclose()  # it sees the end of its input and stops
            with trio.move_on_after(STOP_GRACE_S):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def _serve(self, link: Link, process: trio.Process) -> str:
        """Feed the hub process and answer its calls until it ends; returns why it ended."""
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
                while self._logins:
                    await link.send(self._logins.popleft())
                if self._ticked:
                    await link.send_packed(self._take_pending())
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
                                      "send it again later with the same id")))
                    continue
                self._calls += 1
                assert self._calls_nursery is not None  # (run() opened it)
                self._calls_nursery.start_soon(self._serve_call, link, call_id, method,
                                               Who(*who), args)
            elif kind == STATS:
                self._statistics = statistics_of(message[1])
            elif kind == LOGIN_FAILED:
                self._backend.throttle.failed_elsewhere(message[1], message[2])
            elif kind == LOG:
                _, level, name, text = message
                logging.getLogger(name).log(level, "%s", text)
            else:
                log.warning("the hub process sent %r; ignored", kind)

    async def _serve_call(self, link: Link, call_id: int, method: str, who: Who,
                          args: Sequence[Any]) -> None:
        try:
            reply = (REPLY, call_id, True, await self._call(method, who, args))
        except Exception as error:
            answer = command_error(error)
            if answer is None:
                log.exception("hub command %s from %s failed", method, who.user)
                answer = internal_error(error)
            reply = (REPLY, call_id, False, answer)
        finally:
            self._calls -= 1
        with contextlib.suppress(LinkClosed):  # gone: the client resends with the same id
            await link.send(reply)

    async def _call(self, method: str, who: Who, args: Sequence[Any]) -> Any:
        if method == "audit_page":
            before, limit = args
            page = await self._backend.audit_page(who, before, limit)
            return (audit_rows(page.entries), page.next)
        command = self._commands.get(method)
        if command is None:
            raise ValueError(f"the hub process asked for {method!r}, which is not a call")
        return ack_row(await command(who, *args))

    def _http_login_failed(self, host: str, now_ms: int) -> None:
        """The throttle's listener: tell the hub process (it checks its own logins)."""
        if self._link is not None:
            self._logins.append((LOGIN_FAILED, host, now_ms))
            self._wakeup.set()
