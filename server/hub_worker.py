"""The hub's own process: ``python -m server.hub_worker FD`` (started by ``server.hub_process``).

Theory of operation
-------------------
``FD`` is this process's end of a socket pair with the server (``server.edge_link``,
``server.hub_link``). The
first message holds the hub's settings and the users; the second is the park's state. Then the
websocket hub (``protocols.ws.hub``, the same code as in-process) listens, and one loop here
applies every message from the server: tick messages update the :class:`~protocols.stream.feed.
Mirror` (the hub's ``ParkState``) and go to ``Hub.on_tick``; replies finish the calls of
:class:`RemoteBackend`.

:class:`RemoteBackend` is the hub's ``Backend`` here: passwords, sessions and the login
throttle are checked in this process (a scrypt check takes ~50 ms of CPU the control loop
should not pay); commands and audit pages are calls to the server, which runs them through
``park.operations`` exactly as for an in-process hub. The throttle tells the server of each
failure, and hears of the server's (HTTP logins), so both keep one count per host.

When the server goes away (its end of the pipe closes: it stopped, or died), the hub closes
and this process exits; it ignores SIGINT and SIGTERM, which reach it with the server's.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, cast

import trio

from protocols.stream.feed import STATE, TICK, Mirror
from protocols.ws.backend import Who
from protocols.ws.hub import Hub, HubSettings
from server.auth import HubLogins, LoginThrottle, Sessions, Users
from server.collector import run_collector_hygiene
from server.config import User
from server.edge_link import (
    CALL_TIMEOUT_S,
    INIT,
    READY,
    REFUSED,
    REPLY,
    STATS,
    Link,
    LinkClosed,
    RemoteCommands,
    RemoteError,
    call_message,
    helper_socket,
    log_message,
    replace_log_handlers,
)
from server.errors import UserError
from server.hub_link import (
    LOGIN_FAILED,
    AuditPageLine,
    audit_page_of,
    statistics_row,
)
from server.tls import server_tls_context

log = logging.getLogger("server.hub_worker")

STATS_EVERY_S: Final = 0.1
MAX_QUEUED_NOTICES: Final = 10_000


class _Answer:
    """The server's reply to one call, when it comes."""

    __slots__ = ("done", "ok", "payload")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.ok = False
        self.payload: Any = None


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class RemoteBackend(HubLogins, RemoteCommands):
    """``protocols.ws.backend.Backend`` in the hub's process (module docstring)."""

    def __init__(self, link: Link, users: Users, sessions: Sessions, decimals: int) -> None:
        super().__init__(users, sessions, LoginThrottle())
        self._link = link
        self.decimals = decimals
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Answer] = {}
        self._notices_send, self._notices = trio.open_memory_channel[tuple[Any, ...]](
            MAX_QUEUED_NOTICES)

    def login_failed(self, host: str, now_ms: int) -> None:
        super().login_failed(host, now_ms)
        self.notify((LOGIN_FAILED, host, now_ms))

    # -- calls to the server -------------------------------------------------------------------

    async def audit_page(self, who: Who, before: str | None, limit: int) -> AuditPageLine:
        return audit_page_of(await self.call("audit_page", who, before, limit))

    async def call(self, method: str, who: Who, *args: Any) -> Sequence[Any]:
        call_id = next(self._ids)
        answer = self._waiting[call_id] = _Answer()
        try:
            await self._link.send(call_message(call_id, method, who, args))
            with trio.move_on_after(CALL_TIMEOUT_S):
                await answer.done.wait()
        except LinkClosed:
            raise RemoteError.unreachable() from None
        finally:
            del self._waiting[call_id]
        if not answer.done.is_set():
            raise RemoteError.no_answer()
        if not answer.ok:
            code, message = answer.payload
            raise RemoteError(code, message)
        return cast(Sequence[Any], answer.payload)

    def answered(self, call_id: int, ok: bool, payload: Any) -> None:
        answer = self._waiting.get(call_id)
        if answer is not None:  # else the caller gave up waiting
            answer.ok, answer.payload = ok, payload
            answer.done.set()

    def notify(self, notice: tuple[Any, ...]) -> None:
        """Queue a message for the server (trio thread only); dropped if it does not read."""
        with contextlib.suppress(trio.WouldBlock):
            self._notices_send.send_nowait(notice)

    async def send_notices(self) -> None:
        async for notice in self._notices:
            await self._link.send(notice)


class ServerLogHandler(logging.Handler):
    """Log records go to the server, which logs them with its own (console, log file)."""

    def __init__(self, backend: RemoteBackend, token: trio.lowlevel.TrioToken) -> None:
        super().__init__()
        self._backend = backend
        self._token = token

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # run_sync_soon: records may come from worker threads (password checks).
            self._token.run_sync_soon(self._backend.notify, log_message(record))
        except trio.RunFinishedError:
            pass  # the hub has stopped: no server to tell
        except Exception:
            self.handleError(record)


def log_to_server(backend: RemoteBackend, level: int) -> None:
    replace_log_handlers(ServerLogHandler(backend, trio.lowlevel.current_trio_token()), level)


def hub_settings_of(fields: dict[str, Any], tls: Sequence[str] | None) -> HubSettings:
    context = None if tls is None else server_tls_context(
        tls[0], tls[1], where="[hub] tls_cert, tls_key")
    return HubSettings(**fields, ssl_context=context)


async def serve(link: Link) -> None:
    init = await link.receive()
    if init[0] != INIT:
        raise LinkClosed(f"expected the settings first, got {init[0]!r}")
    _, fields, tls, user_rows, session_ttl_ms, decimals, level = init
    mirror = Mirror()
    state = await link.receive()
    if state[0] != STATE:
        raise LinkClosed(f"expected the park's state, got {state[0]!r}")
    mirror.apply(state)
    users = Users([User(name, password, role) for name, password, role in user_rows])
    backend = RemoteBackend(link, users, Sessions(session_ttl_ms, wall_ms), decimals)
    log_to_server(backend, level)
    try:
        settings = hub_settings_of(fields, tls)
    except UserError as error:
        await link.send((REFUSED, 0, str(error)))
        return
    hub = Hub(settings, mirror, backend, wall_ms)
    async with trio.open_nursery() as nursery:
        try:
            url = await nursery.start(hub.run)
        except OSError as error:
            await link.send((REFUSED, error.errno or 0, str(error)))
            return
        await link.send((READY, url, hub.port))
        # A thousand connections are a lot of long-lived objects: without the hygiene a full
        # collection walks them all, a pause every client sees (server/collector.py).
        await nursery.start(run_collector_hygiene)

        async def until_the_server_goes(send: Callable[[], Awaitable[None]]) -> None:
            # A write to a server that has just stopped: the end, not an error.
            try:
                await send()
            except LinkClosed:
                nursery.cancel_scope.cancel()

        nursery.start_soon(until_the_server_goes, backend.send_notices)
        nursery.start_soon(until_the_server_goes, functools.partial(report_statistics, link, hub))
        try:
            await follow_server(link, mirror, hub, backend)
        except LinkClosed as error:
            log.info("the server closed the hub's pipe (%s): the hub stops", error)
        nursery.cancel_scope.cancel()


async def follow_server(link: Link, mirror: Mirror, hub: Hub, backend: RemoteBackend) -> None:
    while True:
        message = await link.receive()
        kind = message[0]
        if kind == TICK:
            tick = mirror.apply(message)
            if tick is not None:
                hub.on_tick(tick)
        elif kind == REPLY:
            _, call_id, ok, payload = message
            backend.answered(call_id, ok, payload)
        elif kind == LOGIN_FAILED:
            backend.throttle.failed_elsewhere(message[1], message[2])
        else:
            log.warning("the server sent %r; ignored", kind)


async def report_statistics(link: Link, hub: Hub) -> None:
    while True:
        await link.send((STATS, statistics_row(hub.statistics())))
        await trio.sleep(STATS_EVERY_S)


def main(argv: Sequence[str]) -> int:
    sock = helper_socket(argv, "server.hub_worker")
    if sock is None:
        return 2

    async def run() -> None:
        link = Link(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
        try:
            await serve(link)
        except* LinkClosed as closed:  # (raised in a nursery, it comes in a group)
            log.info("the server closed the hub's pipe: %s", closed.exceptions[0])

    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
