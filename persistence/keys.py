"""Key layout of the LMDB databases.

Theory of operation
-------------------
LMDB sorts keys bytewise, so integers are stored as unsigned 64-bit big-endian: the byte order is
then the numeric order, and a cursor walks the journal in sequence order or one meter's history
in time order. Per-meter keys are ``meter_id (UTF-8) + NUL + u64``; the NUL separator sorts below
every other byte, so ``M-1`` and its keys never interleave with ``M-10``'s, and a range scan from
``meter_id + NUL`` stops at the first key that does not start with that prefix. A meter id or
reference therefore must not contain NUL and must fit LMDB's key limit (511 bytes).
"""

from __future__ import annotations

import struct
from typing import Final

MAX_KEY_BYTES: Final = 511
_U64: Final = struct.Struct(">Q")
SEPARATOR: Final = b"\0"

pack_u64 = _U64.pack


def unpack_u64(data: bytes) -> int:
    value: int = _U64.unpack(data)[0]
    return value


def meter_prefix(meter_id: str) -> bytes:
    """``meter_id + NUL``: every per-meter key of this meter starts with it."""
    return meter_id.encode() + SEPARATOR


def meter_key(meter_id: str, number: int) -> bytes:
    return meter_id.encode() + SEPARATOR + _U64.pack(number)


def split_meter_key(key: bytes) -> tuple[str, int]:
    """Inverse of :func:`meter_key`."""
    return key[:-9].decode(), unpack_u64(key[-8:])


def check_meter_id(meter_id: str) -> None:
    if not isinstance(meter_id, str) or not meter_id or "\0" in meter_id:
        raise ValueError(f"meter id must be a non-empty string without NUL, got {meter_id!r}")
    if len(meter_id.encode()) + 9 > MAX_KEY_BYTES:
        raise ValueError(f"meter id is longer than {MAX_KEY_BYTES - 9} bytes: {meter_id[:40]!r}...")


def check_reference(reference: str) -> bytes:
    """The reference as an LMDB key, or ValueError naming what is wrong with it."""
    if not isinstance(reference, str) or not reference:
        raise ValueError(f"a reference must be a non-empty string, got {reference!r}")
    key = reference.encode()
    if len(key) > MAX_KEY_BYTES:
        raise ValueError(f"a reference must be at most {MAX_KEY_BYTES} bytes of UTF-8")
    return key
