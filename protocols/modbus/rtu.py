"""Modbus RTU framing over a TCP stream ("RTU over TCP"), behind the same pipeline interface.

Theory of operation
-------------------
Many cheap serial-to-Ethernet converters do not speak Modbus TCP: they copy bytes between a TCP
socket and the RS-485 line, so the master must speak RTU over the socket. An RTU frame is
``unit:u8 function:u8 data... crc:u16le`` with the CRC-16/MODBUS (polynomial 0xA001 reflected,
initial 0xFFFF) over everything before it. There is no transaction id and no length field, so:

* only one request may be on the wire at a time — :class:`RtuPipeline` has a window of 1,
  whatever is configured, and the bus never uses extra command slots with it;
* a reply is matched to *the* request in flight by position, and checked against it (unit and
  function) and its CRC; its length follows from its function code (reads: 5 + byte count;
  single writes: 8; exceptions: 5). A bad CRC or an unexpected unit/function raises
  ``FrameError``/``TransactionMismatch``: the caller reconnects, which also drains whatever
  the converter still had buffered;
* a reply that comes after its request timed out cannot be told apart from the reply to the
  next request. So after a timeout the pipeline *drains*: for ``quiet_s`` it sends nothing and
  discards whatever arrives (counted as late), then resumes. The caller sees the draining
  period as a deadline (:meth:`RtuPipeline.next_deadline`) and ``room == 0``.

Requests have no tid, so a prepared request is the complete frame with its CRC, computed once.
Replies carry a synthetic sequence number as ``tid`` so callers can match them like MBAP ones.
The payload convention is the codec's: data after the byte count for reads, the echoed
address + value for single writes, empty for exceptions (code in ``exception``).

The server side (the simulator's RTU gateway) is :class:`RtuRequestDecoder`: requests are
framed by their function code (8 bytes for functions 1-6; 9 + byte count for 15 and 16) and
handed up as the codec's :class:`~protocols.modbus.codec.Request` with a synthetic ``tid``, so
one request handler serves both framings; :func:`rtu_reply` turns the handler's MBAP reply into
the RTU one. A frame with a bad CRC, or a function code whose length cannot be known, is what
a real slave ignores: the decoder drops everything buffered (counted in ``discarded``) and
resynchronises on the next segment, and no reply goes out (the master's timeout fires).
"""

from __future__ import annotations

import math
import struct
from typing import Final, Generic, TypeVar

from protocols.modbus.client import PreparedRequest, TransactionMismatch
from protocols.modbus.codec import (
    COIL_OFF,
    COIL_ON,
    EXCEPTION_BIT,
    WRITE_SINGLE_COIL,
    FrameError,
    Request,
    Response,
)

T = TypeVar("T")

_REQUEST: Final = struct.Struct(">BBHH")
_READS: Final = frozenset({1, 2, 3, 4})
_FIXED_REQUESTS: Final = frozenset({1, 2, 3, 4, 5, 6})  # unit, function, 2 words, CRC: 8 bytes
_WRITE_MULTIPLE: Final = frozenset({15, 16})  # ... 2 words, a byte count, data, CRC
_MBAP_HEADER: Final = 6  # tid, protocol id, length: what RTU has no use for


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS of ``data`` (sent low byte first)."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def encode_rtu_read(unit: int, function: int, address: int, count: int) -> bytes:
    return with_crc(_REQUEST.pack(unit, function, address, count))


def encode_rtu_write_coil(unit: int, address: int, on: bool) -> bytes:
    value = COIL_ON if on else COIL_OFF
    return with_crc(_REQUEST.pack(unit, WRITE_SINGLE_COIL, address, value))


def rtu_reply(mbap_frame: bytes) -> bytes:
    """The RTU frame for a Modbus TCP reply: the unit id and PDU, then their CRC."""
    return with_crc(mbap_frame[_MBAP_HEADER:])


class RtuRequestDecoder:
    """Server-side RTU framing: ``feed(bytes) -> list[Request]`` (module docstring)."""

    __slots__ = ("_buffer", "_next_tid", "discarded")

    def __init__(self) -> None:
        self._buffer = b""
        self._next_tid = 0
        self.discarded = 0
        """Frames dropped for a bad CRC or an unknown function code."""

    def feed(self, data: bytes) -> list[Request]:
        buffer = self._buffer + data
        requests: list[Request] = []
        pos = 0
        while len(buffer) - pos >= 2:
            function = buffer[pos + 1]
            if function in _FIXED_REQUESTS:
                size = 8
            elif function in _WRITE_MULTIPLE:
                if len(buffer) - pos < 7:
                    break
                size = 9 + buffer[pos + 6]
            else:
                self._discard()
                return requests
            if len(buffer) - pos < size:
                break
            frame = buffer[pos : pos + size]
            if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                self._discard()
                return requests
            unit, _, address, value = _REQUEST.unpack_from(frame)
            requests.append(Request(self._next_tid, unit, function, address, value))
            self._next_tid = (self._next_tid + 1) & 0xFFFF
            pos += size
        self._buffer = buffer[pos:]
        return requests

    def _discard(self) -> None:
        self.discarded += 1
        self._buffer = b""


class RtuPipeline(Generic[T]):
    """The :class:`~protocols.modbus.client.Pipeline` interface for RTU over TCP (window 1)."""

    __slots__ = (
        "_buffer",
        "_draining_until",
        "_inflight",
        "_next_seq",
        "_outgoing",
        "late_replies",
        "quiet_s",
        "timeout_s",
        "window",
    )

    def __init__(self, *, timeout_s: float, quiet_s: float | None = None) -> None:
        self.window = 1
        self.timeout_s = timeout_s
        self.quiet_s = timeout_s / 2 if quiet_s is None else quiet_s
        self.late_replies = 0
        self._buffer = b""
        self._draining_until = -math.inf
        # (seq, token, deadline, unit, function) of the one request on the wire.
        self._inflight: tuple[int, T, float, int, int] | None = None
        self._outgoing: list[bytes] = []
        self._next_seq = 0

    @property
    def in_flight(self) -> int:
        return 0 if self._inflight is None else 1

    @property
    def room(self) -> int:
        if self._inflight is not None or self._draining_until > -math.inf:
            return 0
        return 1

    def prepare_read(self, unit: int, function: int, address: int, count: int) -> PreparedRequest:
        return PreparedRequest(encode_rtu_read(unit, function, address, count), unit, function)

    def _send(self, token: T, frame: bytes, unit: int, function: int, now: float) -> int:
        if self.room < 1:
            raise RuntimeError("RTU allows one request on the wire at a time")
        seq = self._next_seq
        self._next_seq = (seq + 1) & 0xFFFF
        self._outgoing.append(frame)
        self._inflight = (seq, token, now + self.timeout_s, unit, function)
        return seq

    def send_prepared(
        self, token: T, requests: tuple[PreparedRequest, ...], now: float
    ) -> list[int]:
        return [self._send(token, frame, unit, function, now) for frame, unit, function in requests]

    def send_read(
        self, token: T, unit: int, function: int, address: int, count: int, now: float
    ) -> int:
        return self._send(
            token, encode_rtu_read(unit, function, address, count), unit, function, now
        )

    def send_write_coil(self, token: T, unit: int, address: int, on: bool, now: float) -> int:
        frame = encode_rtu_write_coil(unit, address, on)
        return self._send(token, frame, unit, WRITE_SINGLE_COIL, now)

    def take_outgoing(self) -> bytes:
        out, self._outgoing = self._outgoing, []
        return b"".join(out)

    def push_back_outgoing(self, data: bytes) -> None:
        self._outgoing.insert(0, data)

    def feed(self, data: bytes) -> list[tuple[T, Response]]:
        if self._draining_until > -math.inf:
            self.late_replies += 1 if data else 0
            return []
        buffer = self._buffer + data
        request = self._inflight
        if request is None:
            if buffer:
                raise FrameError(f"{len(buffer)} bytes with no RTU request on the wire")
            return []
        if len(buffer) < 3:
            self._buffer = buffer
            return []
        unit, function = buffer[0], buffer[1]
        if function & EXCEPTION_BIT:
            size = 5
        elif function in _READS:
            size = 5 + buffer[2]
        elif function == WRITE_SINGLE_COIL:
            size = 8
        else:
            raise FrameError(f"RTU function code {function:#04x} in a reply")
        if len(buffer) < size:
            self._buffer = buffer
            return []
        if len(buffer) > size:
            raise FrameError(f"{len(buffer) - size} bytes after the RTU reply")
        if crc16(buffer[: size - 2]) != int.from_bytes(buffer[size - 2 : size], "little"):
            raise FrameError("RTU CRC mismatch")
        seq, token, _deadline, want_unit, want_function = request
        if unit != want_unit or function & 0x7F != want_function:
            raise TransactionMismatch(
                f"RTU reply from unit {unit} function {function}, "
                f"request was unit {want_unit} function {want_function}"
            )
        self._buffer = b""
        self._inflight = None
        if function & EXCEPTION_BIT:
            response = Response(seq, unit, function & 0x7F, b"", buffer[2])
        elif function in _READS:
            response = Response(seq, unit, function, buffer[3 : size - 2], 0)
        else:
            response = Response(seq, unit, function, buffer[2:6], 0)
        return [(token, response)]

    def next_deadline(self) -> float:
        if self._inflight is not None:
            return self._inflight[2]
        if self._draining_until > -math.inf:
            return self._draining_until
        return math.inf

    def oldest(self) -> T | None:
        return None if self._inflight is None else self._inflight[1]

    def expire(self, now: float) -> list[T]:
        request = self._inflight
        if request is not None and request[2] <= now:
            self._inflight = None
            self._buffer = b""
            self._draining_until = now + self.quiet_s
            return [request[1]]
        if request is None and self._draining_until <= now:
            self._draining_until = -math.inf
        return []

    def abandon(self, tid: int) -> None:
        request = self._inflight
        if request is not None and request[0] == tid:
            # Its reply may still come: drain, exactly as after a timeout.
            self._inflight = None
            self._buffer = b""
            self._draining_until = request[2]

    def reset(self) -> list[T]:
        request, self._inflight = self._inflight, None
        self._buffer = b""
        self._outgoing = []
        self._draining_until = -math.inf
        return [] if request is None else [request[1]]
