"""Stored records that cannot be used: decoding that checks, and saying where the damage is.

Theory of operation
-------------------
A snapshot or journal entry can be unreadable (a bit error, a torn copy, another program's
bytes) or readable but impossible (a balance beyond 64 bits, a meter id that is a number). Either
must cost the one meter it belongs to, never the park: recovery quarantines that meter, the
journal writer indexes around the entry, ``wattkeeper check`` lists it. So the readers here
decode *and* check a record, raising :class:`codec.CodecError` for anything wrong with it,
and describe the damage as a :class:`Damage`: which database, which key, what is wrong, and
whose record it is when that can be told.

Whose record a broken journal entry is comes from what can still be read of it
(:func:`peek_entry`): an entry is the array ``(format, kind, meter_id, amount, reference, ...)``
(``codec.encode_entry``), and msgpack is read element by element, so a value damaged after the
meter id, or a record cut short, still names its meter and maybe its reference.

The checks are a few type and range tests per record (~1-2 µs for a state): cheap next to a
decode, and a state that passed them can be encoded again (``encode_state`` refuses integers
beyond 64 bits, which would otherwise fault the meter at its first snapshot).
"""

from __future__ import annotations

import json
import math
import operator
from typing import Any, Final

import attrs
import msgpack

from persistence.codec import CodecError, decode_entry, decode_state
from persistence.entries import KINDS, JournalEntry
from persistence.keys import MAX_KEY_BYTES
from policies.records import (
    EMPTY_ALARMS,
    EMPTY_CREDIT,
    EMPTY_PROTECTION,
    EMPTY_RELAY,
    MeterState,
)

INT_MIN: Final = -(1 << 63)
INT_MAX: Final = (1 << 63) - 1
"""Stored integers are signed 64-bit: what the policies compute in and the codec can write."""


@attrs.frozen
class Damage:
    """One stored record that cannot be used.

    ``key`` is the key as a person reads it (``"M-0003"``, ``seq 1234``); ``meter_id`` is whose
    record it is, ``""`` when that cannot be told; ``reference`` is the money event's reference
    when a broken journal entry still shows it (``""`` otherwise)."""

    database: str
    key: str
    problem: str
    meter_id: str = ""
    reference: str = ""

    def __str__(self) -> str:
        return f"{self.database}[{self.key}]: {self.problem}"


class DamagedRecord(Exception):
    """A record one meter needs cannot be used (raised by the one-meter readers, and to a
    money command whose reference's first recording is damaged: nothing was done)."""

    code = "unavailable"  # the contract's word for "storage cannot serve this; nothing done"

    def __init__(self, damage: Damage) -> None:
        super().__init__(str(damage))
        self.damage = damage


def quote(text: str) -> str:
    """A key or id as it is shown in a report: JSON-quoted, so odd characters are visible."""
    return json.dumps(text, ensure_ascii=False)


def show_key(key: bytes) -> str:
    """A key whose form is not what its database expects: hex, shortened."""
    shown = key[:32].hex()
    return f"0x{shown}{'...' if len(key) > 32 else ''}"


def describe(error: BaseException) -> str:
    """What went wrong, in the words of a CodecError, else with the exception's type."""
    if isinstance(error, CodecError):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _worded(error: CodecError, what: str) -> CodecError:
    """``error``, or, when the decoder's own words are empty (msgpack's FormatError has none),
    one that names the decoder's exception."""
    cause = error.__cause__
    if cause is None or str(cause):
        return error
    return CodecError(f"{what}: {describe(cause)}")


# --- snapshots ------------------------------------------------------------------------------


def checked_state(raw: bytes) -> MeterState:
    """Decode a snapshot and check it; CodecError for anything wrong with it."""
    try:
        state = decode_state(raw)
    except CodecError as error:
        raise _worded(error, "not a meter state snapshot") from error.__cause__
    except Exception as error:  # whatever else a damaged record provokes in the decoder
        raise CodecError(f"not a meter state snapshot: {describe(error)}") from error
    problem = state_problem(state)
    if problem is not None:
        raise CodecError(f"not a usable meter state: {problem}")
    return state


def _int(value: object) -> bool:
    return type(value) is int and INT_MIN <= value <= INT_MAX


def _ints(values: object) -> bool:
    return type(values) is tuple and all(_int(value) for value in values)


_INT_FIELDS: Final = ("balance", "residue", "register_wh", "reading_ms", "reading_mono_ms",
                      "month", "month_wh", "bucket_start_ms", "bucket_wh", "bucket_minor",
                      "journal_seq", "month_minor")
"""Every ``int`` field of ``MeterState`` (a test keeps this list complete)."""
_int_fields: Final = operator.attrgetter(*_INT_FIELDS)
_VALID_LIMIT: Final = 65_536
_valid_parts: dict[int, object] = {}
"""Sub-records that passed their check, by id; the value keeps the id from being reused.
Decoding interns sub-records (``persistence.codec``), so across a park most are one object."""


def state_problem(state: MeterState) -> str | None:
    """What makes a decoded state unusable (wrong types, values out of range), or None.

    Written for speed (it runs once per meter at start-up): the common case is one tuple of
    the integer fields tested in C, and sub-records that are the shared defaults or were
    checked before."""
    ints = _int_fields(state)
    a, b, c, d, e, f, g, h, i, j, k, m = ints
    if not (
        type(a) is int is type(b) is type(c) is type(d) is type(e) is type(f) is type(g)
        is type(h) is type(i) is type(j) is type(k) is type(m)
        # msgpack gives integers in [-2**63, 2**64 - 1]: only the top can be out of range
        and max(ints) <= INT_MAX and k >= 0
    ):
        for name, value in zip(_INT_FIELDS, ints, strict=True):
            if not _int(value):
                return f"{name} is {value!r}, not a 64-bit integer"
        return f"journal_seq is {k}"
    power = state.power_w
    if (type(power) is not float and type(power) is not int) or not math.isfinite(power):
        return f"power_w is {power!r}, not a finite number"
    if type(state.online) is not bool:
        return f"online is {state.online!r}, not a boolean"
    valid = _valid_parts
    relay = state.relay
    if relay is not EMPTY_RELAY and id(relay) not in valid:
        if not (
            type(relay.closed) is bool
            and (relay.reason is None or type(relay.reason) is str)
            and type(relay.manual_open) is bool
            and type(relay.manual_reason) is str
            and type(relay.locked_out) is bool
            and _ints(relay.switch_ms)
            and type(relay.quota_open) is bool
        ):
            return f"relay state {relay!r} is not valid"
        _remember(relay)
    protection = state.protection
    if protection is not EMPTY_PROTECTION and id(protection) not in valid:
        if not (_int(protection.over_since_ms) and _ints(protection.trip_ms)):
            return f"protection state {protection!r} is not valid"
        _remember(protection)
    credit = state.credit
    if credit is not EMPTY_CREDIT and id(credit) not in valid:
        if not (
            type(credit.emergency_in_use) is bool
            and type(credit.emergency_available) is bool
            and _int(credit.debt)
        ):
            return f"credit state {credit!r} is not valid"
        _remember(credit)
    alarms = state.alarms
    if alarms is not EMPTY_ALARMS and id(alarms) not in valid:
        if not (
            type(alarms.active) is tuple
            and _int(alarms.low_level)
            and _int(alarms.next_number)
            and all(
                type(a.alarm_id) is str and type(a.kind) is str and _int(a.level)
                and _int(a.raised_ms) and type(a.acknowledged) is bool and type(a.detail) is str
                for a in alarms.active
            )
        ):
            return f"alarm state {alarms!r} is not valid"
        _remember(alarms)
    return None


def _remember(part: object) -> None:
    if len(_valid_parts) >= _VALID_LIMIT:
        _valid_parts.clear()  # bounded memory; forgetting only costs a check
    _valid_parts[id(part)] = part


# --- journal entries ------------------------------------------------------------------------


def checked_entry(raw: bytes) -> JournalEntry:
    """Decode a journal entry and check it; CodecError for anything wrong with it."""
    try:
        entry = decode_entry(raw)
    except CodecError as error:
        raise _worded(error, "not a journal entry") from error.__cause__
    except Exception as error:
        raise CodecError(f"not a journal entry: {describe(error)}") from error
    problem = entry_problem(entry)
    if problem is not None:
        raise CodecError(f"not a usable journal entry: {problem}")
    return entry


def entry_problem(entry: JournalEntry) -> str | None:
    if entry.kind not in KINDS:
        return f"kind {entry.kind!r} is not one of {sorted(KINDS)}"
    if not usable_meter_id(entry.meter_id):
        return f"meter id {entry.meter_id!r} is not usable"
    if not _int(entry.amount):
        return f"amount {entry.amount!r} is not a 64-bit integer"
    if not usable_reference(entry.reference):
        return f"reference {entry.reference!r} is not usable"
    if not _int(entry.ts_ms):
        return f"ts_ms {entry.ts_ms!r} is not a 64-bit integer"
    if type(entry.detail) is not str:
        return f"detail {entry.detail!r} is not a string"
    for name in ("start_wh", "final_wh", "mono_ms"):
        if not _int(getattr(entry, name)):
            return f"{name} {getattr(entry, name)!r} is not a 64-bit integer"
    return None


def usable_meter_id(value: object) -> bool:
    """An id that per-meter keys can be made of (``persistence.keys.check_meter_id``)."""
    return (
        type(value) is str
        and bool(value)
        and "\0" not in value
        and len(value.encode(errors="replace")) + 9 <= MAX_KEY_BYTES
    )


def usable_reference(value: object) -> bool:
    """A reference that can be a ``refs`` key (``persistence.keys.check_reference``)."""
    return (
        type(value) is str
        and bool(value)
        and len(value.encode(errors="replace")) <= MAX_KEY_BYTES
    )


def peek_entry(raw: bytes) -> tuple[str, str]:
    """``(meter_id, reference)`` of a journal entry as far as they can still be read; each
    ``""`` when it cannot (see the module docstring)."""
    unpacker = msgpack.Unpacker(raw=False, use_list=False, strict_map_key=False)
    unpacker.feed(raw)
    found: list[Any] = []
    try:
        length = unpacker.read_array_header()
        for _ in range(min(length, 5)):
            found.append(unpacker.unpack())
    except Exception:  # damaged is the expected case here: keep what was read
        pass
    meter_id = found[2] if len(found) > 2 else ""
    reference = found[4] if len(found) > 4 else ""
    return (meter_id if usable_meter_id(meter_id) else "",
            reference if usable_reference(reference) else "")


def entry_damage(seq: int, raw: bytes, problem: str) -> Damage:
    """The damage of journal entry ``seq``, attributed as far as its bytes allow."""
    meter_id, reference = peek_entry(raw)
    return Damage("journal", f"seq {seq}", problem, meter_id, reference)


def read_entry(seq: int, raw: bytes) -> JournalEntry | Damage:
    """Journal entry ``seq``, or what is wrong with it."""
    try:
        return checked_entry(raw)
    except CodecError as error:
        return entry_damage(seq, raw, str(error))
