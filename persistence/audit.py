"""The audit log's records: who asked for what, when, from where, and what came of it.

Every operator or money command, accepted or refused, becomes one :class:`AuditEntry`
(``server.operations`` writes them). Entries are append-only and read newest first, a page at
a time (:class:`AuditPage`, with an opaque cursor for the next, older page).

Theory of operation
-------------------
A park keeps its log in LMDB (``persistence.audit_log.LmdbAuditLog``), in the ``audit``
database: the key is the entry's *audit number* (u64 big-endian: 1, 2, 3, ... in the order the
commands were answered, continued after the highest number on disk at every start), the value
the entry as a msgpack array whose first element is a format number (:func:`encode_audit`,
like the journal's entries in ``persistence.codec``). Numbers rather than times as keys: two
commands in one millisecond, or a wall clock stepped back, still get distinct keys in the order
they happened, and the page cursor is just the number as text.

Reading (:func:`read_audit`) walks an LMDB cursor backwards from the end, or from just below the
cursor (``set_range`` then one step back), and works on a read-only store too
(``persistence.readonly``), so ``wattkeeper check`` and reports read the log while the server
writes it. A record that cannot be decoded is returned as its :class:`~persistence.damage.Damage`
(the live log shows it as a ``damaged`` entry, ``check`` lists it): it costs its own line, never
the page.

This module is pure (no trio): the journal writer process imports it for :func:`audit_time`.
"""

from __future__ import annotations

from typing import Any, Final, Literal, Protocol

import attrs
import msgpack

from persistence.codec import CodecError
from persistence.damage import INT_MAX, INT_MIN, Damage, describe
from persistence.keys import pack_u64, unpack_u64
from persistence.lmdb_types import Txn
from persistence.store import Store

Result = Literal["accepted", "duplicate", "pending", "refused", "damaged"]
"""``damaged`` only for the stand-in of a stored record that cannot be read
(:func:`damaged_entry`)."""
RESULTS: Final = frozenset({"accepted", "duplicate", "pending", "refused"})
"""What a stored entry may say."""
MAX_PAGE: Final = 200
AUDIT_FORMAT: Final = 1


@attrs.frozen
class AuditEntry:
    ts_ms: int
    user: str
    role: str
    channel: str
    address: str
    command: str  # "topup" | "relay" | "reset_lockout" | "ack_alarm" | "replace_meter" | ...
    meter_id: str
    target: str  # the alarm id for ack_alarm, else ""
    reference: str  # the client's id
    detail: str  # "amount 100.00", "open: maintenance", ...
    result: Result
    code: str = ""  # the error code when refused
    message: str = ""


@attrs.frozen
class AuditPage:
    entries: tuple[AuditEntry, ...]
    next: str | None  # cursor of the next (older) page; None at the oldest entry


class AuditLog(Protocol):
    def append_nowait(self, entry: AuditEntry) -> None: ...

    def page(self, before: str | None, limit: int) -> AuditPage: ...


class MemoryAuditLog:
    """An audit log held in memory, newest last (tools and tests; the park keeps its log in
    LMDB). ``keep`` bounds it: the oldest entries go first."""

    def __init__(self, keep: int = 100_000) -> None:
        self._keep = keep
        self._entries: list[AuditEntry] = []
        self._first = 0  # number of the oldest entry still held

    def append_nowait(self, entry: AuditEntry) -> None:
        self._entries.append(entry)
        if len(self._entries) > self._keep:
            drop = len(self._entries) - self._keep
            del self._entries[:drop]
            self._first += drop

    def page(self, before: str | None, limit: int) -> AuditPage:
        end = self._first + len(self._entries)
        if before is not None:
            try:
                end = min(end, int(before))
            except ValueError:
                raise ValueError(f"not an audit cursor: {before!r}") from None
        start = max(self._first, end - max(1, min(limit, MAX_PAGE)))
        chosen = self._entries[start - self._first:end - self._first]
        return AuditPage(tuple(reversed(chosen)), str(start) if start > self._first else None)


# --- the stored form ------------------------------------------------------------------------

_TEXT_FIELDS: Final = ("user", "role", "channel", "address", "command", "meter_id", "target",
                       "reference", "detail", "result", "code", "message")


def encode_audit(entry: AuditEntry) -> bytes:
    packed: bytes = msgpack.packb(
        (AUDIT_FORMAT, entry.ts_ms, entry.user, entry.role, entry.channel, entry.address,
         entry.command, entry.meter_id, entry.target, entry.reference, entry.detail,
         entry.result, entry.code, entry.message),
        use_bin_type=True)
    return packed


def decode_audit(raw: bytes) -> AuditEntry:
    """The stored entry, checked; CodecError for anything wrong with it."""
    try:
        fields: Any = msgpack.unpackb(raw, use_list=False, raw=False)
    except Exception as error:
        raise CodecError(f"not an audit entry: {describe(error)}") from error
    if type(fields) is not tuple or not fields:
        raise CodecError(f"not an audit entry: {type(fields).__name__}, not an array")
    if fields[0] != AUDIT_FORMAT:
        raise CodecError(f"audit entry format {fields[0]!r} is not readable by this version "
                         f"(reads format {AUDIT_FORMAT})")
    if len(fields) != 2 + len(_TEXT_FIELDS):
        raise CodecError(f"not an audit entry: {len(fields)} fields, expected "
                         f"{2 + len(_TEXT_FIELDS)}")
    _, ts_ms, *texts = fields
    if type(ts_ms) is not int or not INT_MIN <= ts_ms <= INT_MAX:
        raise CodecError(f"not a usable audit entry: ts_ms {ts_ms!r} is not a 64-bit integer")
    for name, value in zip(_TEXT_FIELDS, texts, strict=True):
        if type(value) is not str:
            raise CodecError(f"not a usable audit entry: {name} {value!r} is not text")
    entry = AuditEntry(ts_ms, *texts)
    if entry.result not in RESULTS:
        raise CodecError(f"not a usable audit entry: result {entry.result!r} is not one of "
                         f"{sorted(RESULTS)}")
    return entry


def audit_time(raw: bytes) -> int | None:
    """The entry's wall time (ms), or None when the record cannot be read (retention)."""
    try:
        return decode_audit(raw).ts_ms
    except CodecError:
        return None


def read_record(key: bytes, raw: bytes) -> tuple[int, AuditEntry | Damage]:
    """One stored record: its number and entry, or what is wrong with it."""
    if len(key) != 8:
        return 0, Damage("audit", f"0x{key[:32].hex()}", "the key is not an audit number")
    number = unpack_u64(key)
    try:
        return number, decode_audit(raw)
    except CodecError as error:
        return number, Damage("audit", str(number), str(error))


def damaged_entry(number: int, damage: Damage) -> AuditEntry:
    """What a page shows for a record that cannot be read: that it is there, and why."""
    return AuditEntry(0, "", "", "", "", "damaged", "", "", str(number),
                      f"audit record {number} cannot be read", "damaged", "damaged",
                      damage.problem)


def last_audit_number(store: Store) -> int:
    """The highest audit number on disk (0 for an empty or missing log)."""
    if store.audit is None:
        return 0
    with store.read() as txn:
        cursor = txn.cursor(db=store.audit)
        if not cursor.last():
            return 0
        for key, _ in cursor.iterprev():  # past keys that are not numbers
            if len(key) == 8:
                return unpack_u64(key)
    return 0


def parse_cursor(before: str | None) -> int | None:
    """A page cursor as a number; ValueError (for a bad_request) when it is not one."""
    if before is None:
        return None
    if not isinstance(before, str) or not before.isdigit() or len(before) > 20:
        raise ValueError(f"not an audit cursor: {before!r}")
    number = int(before)
    if number >= 1 << 64:
        raise ValueError(f"not an audit cursor: {before!r}")
    return number


def read_audit(
    store: Store, before: int | None, limit: int
) -> tuple[list[tuple[int, AuditEntry | Damage]], bool]:
    """Up to ``limit`` records with numbers below ``before`` (all when None), newest first,
    and whether there are older ones. Works on a read-only store."""
    if store.audit is None:
        return [], False
    with store.read() as txn:
        return _read_audit(txn, store, before, limit)


def _read_audit(
    txn: Txn, store: Store, before: int | None, limit: int
) -> tuple[list[tuple[int, AuditEntry | Damage]], bool]:
    cursor = txn.cursor(db=store.audit)
    if before is None or not cursor.set_range(pack_u64(before)):
        positioned = cursor.last()
    else:
        positioned = cursor.prev()  # set_range found the first key >= before: one below it
    found: list[tuple[int, AuditEntry | Damage]] = []
    if not positioned:
        return found, False
    for key, raw in cursor.iterprev():
        if len(found) >= limit:
            return found, True
        found.append(read_record(key, raw))
    return found, False
