"""The OPC UA server's own process: ``python -m server.opcua_worker FD`` (started by
``server.opcua_process``).

Theory of operation
-------------------
asyncua is an asyncio library; the server process belongs to trio and to the control loop.
So the OPC UA server lives here, in a plain asyncio program fed by the park stream over a
socket pair (``server.edge_link``): the first message holds its settings and the users, the
second the park's state, then one tick message per stream tick. A
:class:`~protocols.stream.feed.Mirror` keeps the latest view of every meter (the address space
reads through it, ``protocols.opcua.model``), and each tick goes to the OPC UA server's
``apply`` (data-change notifications, alarm condition events).

Methods (``TopUp``, ``OpenRelay``, ...) and standard ``Acknowledge`` calls become calls to
the server (:class:`PipeCommands`), which runs them through ``park.operations`` with the
channel ``opcua``; passwords are checked here (the same users as everywhere). Log records
go to the server's log. When the server closes the pipe this process stops; it ignores SIGINT
and SIGTERM, which reach it with the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from persistence.history import iter_interval_ends
from persistence.readonly import open_store_readonly
from persistence.store import Store, StoreError
from protocols.opcua.server import (
    OpcUaServer,
    OpcUaSettings,
    endpoint_with_port,
    open_opcua_server,
)
from protocols.stream.feed import STATE, TICK, Mirror
from protocols.ws.backend import Who
from server.auth import Users
from server.config import User
from server.edge_link import (
    CALL_TIMEOUT_S,
    INIT,
    READY,
    REFUSED,
    REPLY,
    STATS,
    AsyncioLink,
    LinkClosed,
    RemoteCommands,
    RemoteError,
    call_message,
    helper_socket,
    log_message,
    replace_log_handlers,
)

log = logging.getLogger("server.opcua_worker")

STATS_EVERY_S: Final = 1.0


class PipeCommands(RemoteCommands):
    """``protocols.opcua.methods.Commands`` over the pipe, on asyncio."""

    def __init__(self, link: AsyncioLink) -> None:
        self._link = link
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[tuple[bool, Any]]] = {}

    async def call(self, method: str, who: Who, *args: Any) -> Sequence[Any]:
        call_id = next(self._ids)
        answer = self._waiting[call_id] = asyncio.get_running_loop().create_future()
        try:
            await self._link.send(call_message(call_id, method, who, args))
            ok, payload = await asyncio.wait_for(answer, CALL_TIMEOUT_S)
        except LinkClosed:
            raise RemoteError.unreachable() from None
        except TimeoutError:
            raise RemoteError.no_answer() from None
        finally:
            self._waiting.pop(call_id, None)
        if not ok:
            code, message = payload
            raise RemoteError(code, message)
        return payload  # type: ignore[no-any-return]

    def answered(self, call_id: int, ok: bool, payload: Any) -> None:
        answer = self._waiting.get(call_id)
        if answer is not None and not answer.done():  # else the caller gave up waiting
            answer.set_result((ok, payload))


class ServerLogHandler(logging.Handler):
    """Log records go to the server, which logs them with its own (console, log file)."""

    def __init__(self, link: AsyncioLink, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._link = link
        self._loop = loop
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(maxsize=10_000)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # Records may come from threads (history reads, asyncua's executor).
            self._loop.call_soon_threadsafe(self._put, log_message(record))
        except RuntimeError:
            pass  # the loop has stopped: no server to tell
        except Exception:
            self.handleError(record)

    def _put(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(message)

    async def run(self) -> None:
        while True:
            await self._link.send(await self._queue.get())


def log_to_server(link: AsyncioLink, level: int) -> ServerLogHandler:
    handler = ServerLogHandler(link, asyncio.get_running_loop())
    replace_log_handlers(handler, level)
    # asyncua logs every request at INFO; the park's log wants its warnings only.
    logging.getLogger("asyncua").setLevel(max(level, logging.WARNING))
    return handler


def with_free_port(endpoint: str) -> str:
    """``endpoint`` with port 0 replaced by a free port: asyncua would advertise port 0."""
    parts = urlsplit(endpoint)
    if parts.port != 0:
        return endpoint
    host = parts.hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    return endpoint_with_port(endpoint, port)


class StoredHistory:
    """``protocols.opcua.history.HistorySource`` over the data directory, opened read-only
    (an LMDB reader next to the running server: ``persistence.readonly``)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def interval_ends(self, meter_id: str, from_ms: int, to_ms: int
                      ) -> Iterator[tuple[int, int, int, int]]:
        return iter_interval_ends(self._store, meter_id, from_ms, to_ms)

    def close(self) -> None:
        self._store.close()


def open_history(data_dir: str) -> StoredHistory | None:
    try:
        return StoredHistory(open_store_readonly(Path(data_dir)))
    except StoreError as error:
        log.warning("OPC UA history is not available: %s", error)
        return None


async def serve(link: AsyncioLink, *, own_process: bool = True) -> None:
    """The OPC UA server for the settings and park state the link brings, until it closes.
    ``own_process`` False: a benchmark runs this in a thread of the server's process, which
    keeps its own logging, and whose data directory is open already (LMDB forbids a process
    to open an environment twice), so there is no history then."""
    init = await link.receive()
    if init[0] != INIT:
        raise LinkClosed(f"expected the settings first, got {init[0]!r}")
    _, fields, user_rows, level = init
    mirror = Mirror()
    state = await link.receive()
    if state[0] != STATE:
        raise LinkClosed(f"expected the park's state, got {state[0]!r}")
    mirror.apply(state)
    tasks = []
    if own_process:
        tasks.append(asyncio.ensure_future(log_to_server(link, level).run()))
    users = Users([User(name, password, role) for name, password, role in user_rows])
    settings = OpcUaSettings(**{**fields, "endpoint": with_free_port(fields["endpoint"])})
    commands = PipeCommands(link)
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                opcua = await stack.enter_async_context(open_opcua_server(
                    settings, mirror, commands, users.authenticate,
                    open_history(settings.data_dir) if own_process else None))
            except OSError as error:
                await link.send((REFUSED, error.errno or 0, f"the OPC UA server cannot listen "
                                                            f"on {settings.endpoint}: {error}"))
                return
            await link.send((READY, opcua.url, opcua.port))
            log.info("OPC UA server on %s", opcua.url)
            tasks.append(asyncio.ensure_future(report_statistics(link, opcua)))
            await follow_server(link, mirror, opcua, commands)
    finally:
        for task in tasks:
            task.cancel()


async def follow_server(link: AsyncioLink, mirror: Mirror, opcua: OpcUaServer,
                        commands: PipeCommands) -> None:
    while True:
        message = await link.receive()
        kind = message[0]
        if kind == TICK:
            tick = mirror.apply(message)
            if tick is not None:
                await opcua.apply(tick)
        elif kind == REPLY:
            _, call_id, ok, payload = message
            commands.answered(call_id, ok, payload)
        else:
            log.warning("the server sent %r; ignored", kind)


async def report_statistics(link: AsyncioLink, opcua: OpcUaServer) -> None:
    while True:
        s = opcua.statistics()
        await link.send((STATS, (s.sessions, s.build_s, s.updates, s.notified, s.events)))
        await asyncio.sleep(STATS_EVERY_S)


def main(argv: Sequence[str]) -> int:
    sock = helper_socket(argv, "server.opcua_worker")
    if sock is None:
        return 2
    asyncio.run(run_worker(sock))
    return 0


async def run_worker(sock: socket.socket, *, own_process: bool = True) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    link = AsyncioLink(reader, writer)
    try:
        await serve(link, own_process=own_process)
    except LinkClosed as closed:
        log.info("the server closed the OPC UA server's pipe (%s): it stops", closed)
    finally:
        link.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
