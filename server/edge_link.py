"""The pipe between the server and a helper process of its own: msgpack messages over a
socket pair.

The websocket hub (``server.hub_worker``) and the OPC UA server (``server.opcua_worker``) run
in child processes fed by the park stream (``server.edge_process``). Both pipes carry the same
kinds of message, each a tuple whose first item says what it is:

* server -> helper: :data:`INIT` (its settings; the first message), then
  ``protocols.stream.feed``'s state message and one tick message per stream tick; :data:`REPLY` to
  each call;
* helper -> server: :data:`READY` ``(url, port)`` once it listens, or :data:`REFUSED`
  ``(errno, message)`` when it cannot; :data:`CALL` ``(call_id, method, who, args)`` for every
  command a client sends (the server runs it: roles, journal, audit); :data:`STATS` (its
  figures, for ``/metrics``); :data:`LOG` for each of its log records, which the server logs
  as its own (one console, one log file).

A helper may add kinds of its own (the hub's failed logins). :class:`Link` is the trio end
(the server, the hub); :class:`AsyncioLink` the asyncio end (the OPC UA server, which is an
asyncio program).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgpack
import trio

from protocols.stream.feed import pack
from protocols.ws.backend import Who
from protocols.ws.protocol import AckInfo

INIT: Final = "I"
READY: Final = "U"
REFUSED: Final = "X"
CALL: Final = "C"
REPLY: Final = "R"
STATS: Final = "H"
LOG: Final = "G"

MAX_MESSAGE_BYTES: Final = 256 << 20
"""The biggest message either end accepts (a 100,000-meter state message is ~10 MB)."""
RECEIVE_BYTES: Final = 1 << 16


CALL_TIMEOUT_S: Final = 30.0
"""How long a helper waits for the server's answer to a call."""


class LinkClosed(Exception):
    """The other end is gone (its process ended, or it closed the pipe)."""


class RemoteError(Exception):
    """A call the server refused (``code`` is the hub protocol's), or could not answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def unreachable(cls) -> RemoteError:
        return cls("unavailable", "the server cannot be reached; nothing was done")

    @classmethod
    def no_answer(cls) -> RemoteError:
        return cls("overloaded", f"the server did not answer within {CALL_TIMEOUT_S:g} s; the "
                                 "command may have been done: send it again with the same "
                                 "reference")


class RemoteCommands:
    """The operator commands as calls to the server, for a helper process: a subclass says
    how a call travels (``call``, on its own event loop)."""

    async def call(self, method: str, who: Who, *args: Any) -> Sequence[Any]:
        raise NotImplementedError

    async def top_up(self, who: Who, meter_id: str, amount: int, reference: str) -> AckInfo:
        return AckInfo(*await self.call("top_up", who, meter_id, amount, reference))

    async def set_relay(self, who: Who, meter_id: str, action: str, reason: str,
                        reference: str) -> AckInfo:
        return AckInfo(*await self.call("set_relay", who, meter_id, action, reason, reference))

    async def reset_lockout(self, who: Who, meter_id: str, reference: str) -> AckInfo:
        return AckInfo(*await self.call("reset_lockout", who, meter_id, reference))

    async def ack_alarm(self, who: Who, alarm_id: str, reference: str) -> AckInfo:
        return AckInfo(*await self.call("ack_alarm", who, alarm_id, reference))

    async def report(self, who: Who, kind: str, query: Mapping[str, str]) -> tuple[str, str]:
        body, form = await self.call("report", who, kind, dict(query))
        return str(body), str(form)

    async def quotas(self, who: Who) -> list[dict[str, Any]]:
        return list(await self.call("quotas", who))

    async def request_quota(self, who: Who, group: str, amount: str, reason: str,
                            reference: str) -> tuple[str, dict[str, Any]]:
        status, found = await self.call("request_quota", who, group, amount, reason, reference)
        return str(status), dict(found)

    async def decide_quota(self, who: Who, group: str, request: str, approve: bool, note: str,
                           reference: str) -> tuple[str, dict[str, Any]]:
        status, found = await self.call("decide_quota", who, group, request, approve, note,
                                        reference)
        return str(status), dict(found)

    async def record_output(self, who: Who, line: str, date: str, count: int,
                            reference: str) -> tuple[str, str, str, int, str]:
        status, line_id, day, counted, unit = await self.call("record_output", who, line, date,
                                                              count, reference)
        return str(status), str(line_id), str(day), int(counted), str(unit)

    async def notices(self, who: Who) -> dict[str, Any]:
        view: Any = await self.call("notices", who)  # (a map; msgpack gives its lists as tuples)
        return {**view, "dead_letters": [dict(letter) for letter in view["dead_letters"]]}

    async def retry_notices(self, who: Who, notice: str, reference: str) -> tuple[str, str]:
        asked, status = await self.call("retry_notices", who, notice, reference)
        return str(asked), str(status)


def call_message(call_id: int, method: str, who: Who, args: Sequence[Any]) -> tuple[Any, ...]:
    return (CALL, call_id, method, (who.user, who.role, who.address), tuple(args))


def helper_socket(argv: Sequence[str], module: str) -> socket.socket | None:
    """A helper process's start (``python -m MODULE FD``): its end of the pipe, or None (a
    usage line is printed) when it was not started by the server. Until the pipe carries them,
    its log records go to stderr. It ignores SIGINT and SIGTERM: Ctrl-C on the terminal and a
    service manager's SIGTERM reach the whole process group, the server stops in order and
    then closes the pipe, which is what ends the helper."""
    if len(argv) != 1 or not argv[0].isdigit():
        print(f"usage: python -m {module} FD (started by the server)", file=sys.stderr)
        return None
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return socket.socket(fileno=int(argv[0]))


def replace_log_handlers(handler: logging.Handler, level: int) -> None:
    """The helper's log records go to ``handler`` only (from there, to the server)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def log_message(record: logging.LogRecord) -> tuple[Any, ...]:
    """A helper's log record as the server logs it."""
    text = record.getMessage()
    if record.exc_info:
        text += "\n" + logging.Formatter().formatException(record.exc_info)
    return (LOG, record.levelno, record.name, text)


def _unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(use_list=False, raw=False, max_buffer_size=MAX_MESSAGE_BYTES)


def _next_message(unpacker: msgpack.Unpacker) -> tuple[Any, ...] | None:
    try:
        message = next(unpacker)
    except StopIteration:
        return None
    if not isinstance(message, tuple) or not message:
        raise LinkClosed(f"not a link message: {message!r:.80}")
    return message


class Link:
    """Messages over one trio stream: any task may send (a lock keeps messages whole), one
    task receives."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._unpacker = _unpacker()
        self._send_lock = trio.Lock()

    async def send(self, message: Sequence[Any]) -> None:
        await self.send_packed(pack(message))

    async def send_packed(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                raise LinkClosed(str(error)) from None

    async def receive(self) -> tuple[Any, ...]:
        while True:
            message = _next_message(self._unpacker)
            if message is not None:
                return message
            try:
                data = await self._stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                raise LinkClosed(str(error)) from None
            if not data:
                raise LinkClosed("the other end closed the pipe")
            self._unpacker.feed(data)

    async def aclose(self) -> None:
        await self._stream.aclose()


class AsyncioLink:
    """The same messages over an asyncio stream pair (one receiving task; sends are whole
    because ``StreamWriter.write`` buffers each message at once)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._unpacker = _unpacker()

    async def send(self, message: Sequence[Any]) -> None:
        if self._writer.is_closing():
            raise LinkClosed("the pipe is closed")
        self._writer.write(pack(message))
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as error:
            raise LinkClosed(str(error)) from None

    async def receive(self) -> tuple[Any, ...]:
        while True:
            message = _next_message(self._unpacker)
            if message is not None:
                return message
            try:
                data = await self._reader.read(RECEIVE_BYTES)
            except (ConnectionError, OSError) as error:
                raise LinkClosed(str(error)) from None
            if not data:
                raise LinkClosed("the other end closed the pipe")
            self._unpacker.feed(data)

    def close(self) -> None:
        self._writer.close()
