"""The pipe between the server and a helper process of its own: msgpack messages over a
socket pair.

The websocket hub (``server.hub_worker``) and the OPC UA server (``server.opcua_worker``) run
in child processes fed by the park stream (``server.edge_process``). Both pipes carry the same
kinds of message, each a tuple whose first item says what it is:

* server -> helper: :data:`INIT` (its settings; the first message), then
  ``protocols.ws.feed``'s state message and one tick message per stream tick; :data:`REPLY` to
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
from collections.abc import Sequence
from typing import Any, Final

import msgpack
import trio

from protocols.ws.feed import pack

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


class LinkClosed(Exception):
    """The other end is gone (its process ended, or it closed the pipe)."""


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
