"""Sans-I/O Modbus TCP (MBAP) framing, both directions: bytes in, records out, and back.

Theory of operation
-------------------
A Modbus TCP stream is a sequence of ADUs, each an MBAP header followed by a PDU::

    tid:u16  protocol:u16 (= 0)  length:u16  unit:u8 | function:u8  data...
    <------------------ MBAP, 7 bytes ------------->  <-- length - 1 bytes -->

``length`` counts the unit byte and the PDU, so a whole frame is ``6 + length`` bytes. Nothing
else delimits frames: one bad length desynchronises everything after it. The decoders here
therefore check every frame against what Modbus allows (protocol id 0; ``2 <= length <= 254``;
a known function code; for read replies, a byte count that agrees with ``length``; for
exception replies, exactly one code byte) and raise :class:`FrameError` at the first frame
that cannot be Modbus. There is no resynchronisation on purpose: after garbage the stream
cannot be trusted, and the caller drops the connection and reconnects (which also empties
whatever the gateway still had queued for us).

Both decoders are incremental: :meth:`ResponseDecoder.feed` and :meth:`RequestDecoder.feed`
take whatever ``receive_some`` returned (half a frame, or hundreds of frames) and return every
frame that is now complete, keeping the tail for the next call. The work is per *frame*, never
per byte: one ``struct.unpack_from`` reads the header and the first PDU fields in place, and
payloads are single slices. When a feed starts on a frame boundary (the usual case: the buffer
is empty) the frames are parsed straight out of ``data`` without copying it first.

Encoders are plain functions returning ``bytes`` built by one precompiled ``struct.pack``; the
register helpers (:func:`float32_at`, :func:`uint32_at`, ...) read typed values out of a read
reply's payload, with ``word_order`` "big" (high word first, Eastron and most meters) or
"little" (low word first; each 16-bit register is still big-endian on the wire).

Nothing here does I/O, reads a clock or allocates per byte; the socket lives at the edge
(``protocols.modbus.client`` on the client side, ``simulators.gateway`` on the server side).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

import attrs

__all__ = [
    "COIL_OFF",
    "COIL_ON",
    "EXCEPTION_BIT",
    "GATEWAY_PATH_UNAVAILABLE",
    "ILLEGAL_DATA_ADDRESS",
    "ILLEGAL_DATA_VALUE",
    "ILLEGAL_FUNCTION",
    "READ_COILS",
    "READ_DISCRETE_INPUTS",
    "READ_HOLDING_REGISTERS",
    "READ_INPUT_REGISTERS",
    "SERVER_DEVICE_FAILURE",
    "TARGET_FAILED_TO_RESPOND",
    "WRITE_SINGLE_COIL",
    "WRITE_SINGLE_REGISTER",
    "FrameError",
    "Request",
    "RequestDecoder",
    "Response",
    "ResponseDecoder",
    "bit_at",
    "encode_bits_response",
    "encode_exception",
    "encode_read",
    "encode_registers_response",
    "encode_write_coil",
    "encode_write_coil_response",
    "float32_at",
    "int16_at",
    "int32_at",
    "pack_bits",
    "uint16_at",
    "uint32_at",
]

# --- vocabulary -----------------------------------------------------------------------------

READ_COILS: Final = 1
READ_DISCRETE_INPUTS: Final = 2
READ_HOLDING_REGISTERS: Final = 3
READ_INPUT_REGISTERS: Final = 4
WRITE_SINGLE_COIL: Final = 5
WRITE_SINGLE_REGISTER: Final = 6
WRITE_MULTIPLE_COILS: Final = 15
WRITE_MULTIPLE_REGISTERS: Final = 16

EXCEPTION_BIT: Final = 0x80
"""An exception reply echoes the request's function code with this bit set."""

ILLEGAL_FUNCTION: Final = 0x01
ILLEGAL_DATA_ADDRESS: Final = 0x02
ILLEGAL_DATA_VALUE: Final = 0x03
SERVER_DEVICE_FAILURE: Final = 0x04
GATEWAY_PATH_UNAVAILABLE: Final = 0x0A
TARGET_FAILED_TO_RESPOND: Final = 0x0B
"""Gateway target device failed to respond: what a gateway answers for a silent unit."""

COIL_ON: Final = 0xFF00
COIL_OFF: Final = 0x0000

MAX_LENGTH: Final = 254
"""Largest MBAP ``length``: unit byte + the 253-byte maximum PDU (a 260-byte ADU)."""

MAX_READ_REGISTERS: Final = 125
MAX_READ_BITS: Final = 2000

_BIT_READS: Final = frozenset({READ_COILS, READ_DISCRETE_INPUTS})
_REGISTER_READS: Final = frozenset({READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS})
_READS: Final = _BIT_READS | _REGISTER_READS
_ECHOES: Final = frozenset(
    {WRITE_SINGLE_COIL, WRITE_SINGLE_REGISTER, WRITE_MULTIPLE_COILS, WRITE_MULTIPLE_REGISTERS}
)

# MBAP header + function (+ byte count for reads): one unpack per frame.
_HEAD: Final = struct.Struct(">HHHBB")
_HEAD_SIZE: Final = _HEAD.size  # 8: MBAP (7) + function (1)
_REQUEST: Final = struct.Struct(">HHHBBHH")  # a 12-byte request: head + address + count/value
_READ_REPLY_HEAD: Final = struct.Struct(">HHHBBB")
_EXCEPTION: Final = struct.Struct(">HHHBBB")
_U16: Final = struct.Struct(">H")
_I16: Final = struct.Struct(">h")
_U32: Final = struct.Struct(">I")
_I32: Final = struct.Struct(">i")
_F32: Final = struct.Struct(">f")
_BIT_DIGITS: Final = bytes.maketrans(b"\x00\x01", b"01")


class FrameError(Exception):
    """The byte stream is not Modbus TCP (any more): drop the connection and reconnect."""


# --- records --------------------------------------------------------------------------------


@attrs.define(slots=True, weakref_slot=False)
class Response:
    """One reply frame, used as a value (slotted, not frozen: frozen attrs costs ~0.2 µs/field).

    ``function`` is the request's function code (the exception bit is cleared); ``exception``
    is the Modbus exception code, 0 for a normal reply. ``payload`` is the data after the byte
    count for reads (registers big-endian, or packed bits LSB first), the echoed
    address + value (4 bytes) for single writes, and empty for exceptions.
    """

    tid: int
    unit: int
    function: int
    payload: bytes
    exception: int = 0


@attrs.define(slots=True, weakref_slot=False)
class Request:
    """One request frame as a server sees it, used as a value.

    For reads (functions 1-4) ``address`` is the first register/bit and ``count_or_value`` how
    many; for function 5/6 it is the written value (0xFF00/0x0000 for a coil). Other function
    codes are decoded when their frame is well formed (address/value are their first two words,
    or 0), so a server can answer them with ``ILLEGAL_FUNCTION`` instead of hanging up.
    """

    tid: int
    unit: int
    function: int
    address: int
    count_or_value: int


# --- encoders (client side) -------------------------------------------------------------------


def encode_read(tid: int, unit: int, function: int, address: int, count: int) -> bytes:
    """A read request: coils (1), discrete inputs (2), holding (3) or input (4) registers."""
    if function in _REGISTER_READS:
        if not 1 <= count <= MAX_READ_REGISTERS:
            raise ValueError(f"register count must be 1..{MAX_READ_REGISTERS}, got {count}")
    elif function in _BIT_READS:
        if not 1 <= count <= MAX_READ_BITS:
            raise ValueError(f"bit count must be 1..{MAX_READ_BITS}, got {count}")
    else:
        raise ValueError(f"not a read function: {function}")
    return _REQUEST.pack(tid, 0, 6, unit, function, address, count)


def encode_write_coil(tid: int, unit: int, address: int, on: bool) -> bytes:
    """A write-single-coil request (function 5): 0xFF00 = on, 0x0000 = off."""
    return _REQUEST.pack(tid, 0, 6, unit, WRITE_SINGLE_COIL, address, COIL_ON if on else COIL_OFF)


# --- encoders (server side) -------------------------------------------------------------------


def encode_registers_response(tid: int, unit: int, function: int, registers_bytes: bytes) -> bytes:
    """A read-registers reply (function 3 or 4); ``registers_bytes`` is big-endian registers."""
    size = len(registers_bytes)
    if size & 1 or not 2 <= size <= 2 * MAX_READ_REGISTERS:
        raise ValueError(f"register data must be 2..250 bytes, even, got {size}")
    return _READ_REPLY_HEAD.pack(tid, 0, size + 3, unit, function, size) + registers_bytes


def pack_bits(bits: Sequence[bool]) -> bytes:
    """Bits as Modbus packs them: LSB of the first byte first, the last byte zero-padded."""
    if not bits:
        return b""
    # One int built from a b"0"/b"1" string (bytes() of the reversed bools, translated), so
    # the cost is a few C calls whatever the count: no Python-level loop per bit.
    text = bytes(map(bool, reversed(bits))).translate(_BIT_DIGITS)
    return int(text, 2).to_bytes((len(bits) + 7) // 8, "little")


def encode_bits_response(tid: int, unit: int, function: int, bits: Sequence[bool]) -> bytes:
    """A read-coils (1) or read-discrete-inputs (2) reply."""
    data = pack_bits(bits)
    size = len(data)
    if not 1 <= size <= 250:
        raise ValueError(f"bit data must be 1..250 bytes, got {size}")
    return _READ_REPLY_HEAD.pack(tid, 0, size + 3, unit, function, size) + data


def encode_write_coil_response(tid: int, unit: int, address: int, on: bool) -> bytes:
    """The echo a server sends after a write-single-coil."""
    return _REQUEST.pack(tid, 0, 6, unit, WRITE_SINGLE_COIL, address, COIL_ON if on else COIL_OFF)


def encode_exception(tid: int, unit: int, function: int, code: int) -> bytes:
    """An exception reply to ``function`` (the exception bit is set here)."""
    return _EXCEPTION.pack(tid, 0, 3, unit, (function & 0x7F) | EXCEPTION_BIT, code)


# --- decoders -------------------------------------------------------------------------------


def _bad_header(protocol: int, length: int) -> str:
    if protocol != 0:
        return f"protocol id {protocol} is not Modbus (0)"
    return f"MBAP length {length} outside 2..{MAX_LENGTH}"


class ResponseDecoder:
    """Incremental client-side framing: ``feed(bytes) -> list[Response]`` (module docstring)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame kept for the next feed."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Response]:
        """Every reply completed by ``data``; raises :class:`FrameError` on garbage."""
        buffer = self._buffer + data if self._buffer else bytes(data)
        responses: list[Response] = []
        append = responses.append
        unpack = _HEAD.unpack_from
        end = len(buffer)
        pos = 0
        while end - pos >= _HEAD_SIZE:
            tid, protocol, length, unit, function = unpack(buffer, pos)
            if protocol or not 2 <= length <= MAX_LENGTH:
                raise FrameError(_bad_header(protocol, length))
            frame_end = pos + 6 + length
            if function in _READS:
                # Check the byte count as soon as it arrives: a bad one is garbage already.
                if end - pos < 9:
                    break
                count = buffer[pos + 8]
                if count != length - 3 or (function in _REGISTER_READS and count & 1):
                    raise FrameError(
                        f"function {function}: byte count {count} disagrees with length {length}"
                    )
                if frame_end > end:
                    break
                append(Response(tid, unit, function, buffer[pos + 9 : frame_end], 0))
            elif function & EXCEPTION_BIT:
                if length != 3 or not function & 0x7F:
                    raise FrameError(f"exception reply {function:#04x} with length {length}")
                if frame_end > end:
                    break
                append(Response(tid, unit, function & 0x7F, b"", buffer[pos + 8]))
            elif function in _ECHOES:
                if length != 6:
                    raise FrameError(f"function {function} reply with length {length}, not 6")
                if frame_end > end:
                    break
                append(Response(tid, unit, function, buffer[pos + 8 : frame_end], 0))
            else:
                raise FrameError(f"function code {function:#04x} in a reply")
            pos = frame_end
        self._buffer = buffer[pos:] if pos < end else b""
        return responses


class RequestDecoder:
    """Incremental server-side framing: ``feed(bytes) -> list[Request]`` (module docstring)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Request]:
        """Every request completed by ``data``; raises :class:`FrameError` on garbage."""
        buffer = self._buffer + data if self._buffer else bytes(data)
        requests: list[Request] = []
        append = requests.append
        unpack_head = _HEAD.unpack_from
        unpack_request = _REQUEST.unpack_from
        end = len(buffer)
        pos = 0
        while end - pos >= _HEAD_SIZE:
            tid, protocol, length, unit, function = unpack_head(buffer, pos)
            if protocol or not 2 <= length <= MAX_LENGTH:
                raise FrameError(_bad_header(protocol, length))
            if function in _READS or function == WRITE_SINGLE_COIL or function == 6:
                if length != 6:
                    raise FrameError(f"function {function} request with length {length}, not 6")
                if end - pos < 12:
                    break
                _, _, _, _, _, address, value = unpack_request(buffer, pos)
                append(Request(tid, unit, function, address, value))
                pos += 12
                continue
            if function == 0 or function & EXCEPTION_BIT:
                raise FrameError(f"function code {function:#04x} in a request")
            # A well-formed frame of a function we do not serve: hand it up for ILLEGAL_FUNCTION.
            frame_end = pos + 6 + length
            if frame_end > end:
                break
            address = value = 0
            if length >= 6:
                _, _, _, _, _, address, value = unpack_request(buffer, pos)
            append(Request(tid, unit, function, address, value))
            pos = frame_end
        self._buffer = buffer[pos:] if pos < end else b""
        return requests


# --- register helpers -----------------------------------------------------------------------


def _word_swapped(payload: bytes, offset: int) -> bytes:
    start = 2 * offset
    return payload[start + 2 : start + 4] + payload[start : start + 2]


def float32_at(payload: bytes, register_offset: int, word_order: str = "big") -> float:
    """The IEEE-754 float32 starting ``register_offset`` registers into a read payload."""
    if word_order == "big":
        return float(_F32.unpack_from(payload, 2 * register_offset)[0])
    return float(_F32.unpack(_word_swapped(payload, register_offset))[0])


def uint32_at(payload: bytes, register_offset: int, word_order: str = "big") -> int:
    if word_order == "big":
        return int(_U32.unpack_from(payload, 2 * register_offset)[0])
    return int(_U32.unpack(_word_swapped(payload, register_offset))[0])


def int32_at(payload: bytes, register_offset: int, word_order: str = "big") -> int:
    if word_order == "big":
        return int(_I32.unpack_from(payload, 2 * register_offset)[0])
    return int(_I32.unpack(_word_swapped(payload, register_offset))[0])


def uint16_at(payload: bytes, register_offset: int) -> int:
    return int(_U16.unpack_from(payload, 2 * register_offset)[0])


def int16_at(payload: bytes, register_offset: int) -> int:
    return int(_I16.unpack_from(payload, 2 * register_offset)[0])


def bit_at(payload: bytes, bit_offset: int) -> bool:
    """Bit ``bit_offset`` of a coil/discrete-input read payload (LSB of the first byte = 0)."""
    return bool(payload[bit_offset >> 3] >> (bit_offset & 7) & 1)
