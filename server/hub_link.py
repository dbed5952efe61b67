"""The pipe between the server and its hub process: msgpack messages over a socket pair.

Both ends (``server.hub_process`` in the server, ``server.hub_worker`` in the hub's process)
speak these messages, each a tuple whose first item says what it is:

* server -> hub: :data:`INIT` (settings, users; the first message), then
  ``protocols.ws.feed``'s state message and one tick message per stream tick;
  :data:`REPLY` to each call; :data:`LOGIN_FAILED` for a failed HTTP login.
* hub -> server: :data:`READY` once it listens (or :data:`REFUSED` when it cannot);
  :data:`CALL` for every command and audit page (the server runs them: roles, journal,
  audit); :data:`STATS` once a second; :data:`LOGIN_FAILED` for a failed hub login;
  :data:`LOG` for each of its log records, which the server logs as its own (one console,
  one log file).

``LOGIN_FAILED`` goes both ways so that one login throttle covers the hub and HTTP, as it does
when the hub runs in the server's process: guessing passwords over one does not reset the
delay of the other.

The records that cross (who is calling, a command's answer, an audit page, the hub's
statistics) travel as tuples in field order; the helpers here turn them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs
import msgpack
import trio

from protocols.ws.backend import Who
from protocols.ws.feed import AuditLine, pack
from protocols.ws.hub import HubStatistics
from protocols.ws.protocol import AckInfo
from protocols.ws.views import AuditRecord

INIT: Final = "I"
READY: Final = "U"
REFUSED: Final = "X"
CALL: Final = "C"
REPLY: Final = "R"
STATS: Final = "H"
LOGIN_FAILED: Final = "L"
LOG: Final = "G"

MAX_MESSAGE_BYTES: Final = 256 << 20
"""The biggest message either end accepts (a 100,000-meter state message is ~10 MB)."""
RECEIVE_BYTES: Final = 1 << 16


class LinkClosed(Exception):
    """The other end is gone (its process ended, or it closed the pipe)."""


class Link:
    """Messages over one trio stream: any task may send (a lock keeps messages whole), one
    task receives."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._unpacker = msgpack.Unpacker(use_list=False, raw=False,
                                          max_buffer_size=MAX_MESSAGE_BYTES)
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
        unpacker = self._unpacker
        while True:
            try:
                message = next(unpacker)
            except StopIteration:
                pass
            else:
                if not isinstance(message, tuple) or not message:
                    raise LinkClosed(f"not a link message: {message!r:.80}")
                return message
            try:
                data = await self._stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                raise LinkClosed(str(error)) from None
            if not data:
                raise LinkClosed("the other end closed the pipe")
            unpacker.feed(data)

    async def aclose(self) -> None:
        await self._stream.aclose()


def who_row(who: Who) -> tuple[str, str, str]:
    return (who.user, who.role, who.address)


def ack_row(ack: AckInfo) -> tuple[Any, ...]:
    return (ack.meter_id, ack.status, ack.balance, ack.relay_closed, ack.relay_reason)


def audit_rows(entries: Sequence[AuditRecord]) -> list[tuple[Any, ...]]:
    names = [field.name for field in attrs.fields(AuditLine)]
    return [tuple(getattr(entry, name) for name in names) for entry in entries]


@attrs.frozen
class AuditPageLine:
    """An audit page as the hub's process receives it."""

    entries: tuple[AuditLine, ...]
    next: str | None


def audit_page_of(payload: Sequence[Any]) -> AuditPageLine:
    rows, after = payload
    return AuditPageLine(tuple(AuditLine(*row) for row in rows), after)


def statistics_row(statistics: HubStatistics) -> tuple[Any, ...]:
    return attrs.astuple(statistics)


def statistics_of(row: Sequence[Any]) -> HubStatistics:
    return HubStatistics(*row)
