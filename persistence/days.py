"""Day records: one meter's closed intervals of one local day, in one record, for reports.

Theory of operation
-------------------
A month of 15-minute history for 10,000 meters is 28.8 million interval records, and Python
reads about one a microsecond: too slow for a statement run or a reconciliation. So beside
every interval the journal's writer keeps, in the same transaction, the record of the
interval's meter and *local day* (the park's ``[calendar] timezone``), in the ``days``
database under ``meter_id NUL day_start_ms``, the UTC instant of that local midnight. A
month is then 300,000 records, each read in about a microsecond.

A record holds what reports ask of a day, already summed, and the intervals themselves:

* per tariff band, the day's energy (Wh) and money (minor units): statements, consumption,
  reconciliation;
* per interval (a *slot*: its start as milliseconds after the day's start), its band, Wh
  and minor units, as packed arrays: the what-if re-prices these, and a reconciliation cut in
  the middle of a day counts the slots before the cut.

A slot is *set*, never added to: an interval written again (a meter recovered from an older
snapshot closes the same bucket again, and the interval's key is overwritten) replaces its
slot and the sums are made again, so a day record always equals the intervals it mirrors.
The common case, the next interval of the day, appends to the arrays and adds to one band.

The day boundaries depend on the time zone. The writer is told the park's zone; when it
differs from the one the records were made in (or there are none yet, in a directory from
before day records), it empties the database and rebuilds it from the history in chunks,
between the other work (``persistence.writer``). :class:`DaysState` in ``meta`` says which
zone the records are in and whether they are complete; until they are, reports make the same
records from the intervals on the fly (``persistence.history``), slower but the same figures.

Value layout (msgpack array): ``[1, bands, band_wh, band_minor, offsets, band_of_slot,
typecode, wh, minor]`` where ``bands`` are the band names, ``band_wh``/``band_minor`` their
sums, ``offsets`` a little-endian ``uint32`` array (ms after the day's start),
``band_of_slot`` one byte per slot (an index into ``bands``), and ``wh``/``minor``
little-endian arrays of ``typecode`` ("i", 32-bit, while every value fits; else "q", 64-bit).
"""

from __future__ import annotations

import datetime as dt
import sys
from array import array
from collections.abc import Callable, Iterator
from typing import Final
from zoneinfo import ZoneInfo

import attrs
import msgpack

from persistence.keys import meter_key

FORMAT: Final = 1
DAYS_KEY: Final = b"days"
"""The ``meta`` key of :class:`DaysState`."""
LAST_DAY_MS: Final = 253_402_214_400_000 - 2 * 86_400_000
"""The last instant whose local day is known (datetime ends with the year 9999)."""
_INT32: Final = (-(1 << 31), (1 << 31) - 1)
_SWAP: Final = sys.byteorder == "big"  # the arrays are stored little-endian

Slots = tuple["array[int]", list[str], "array[int]", "array[int]"]
"""A day's ``(offsets ms, band per slot, wh, minor)``, in slot order."""


class LocalDays:
    """Which local day an instant is in: the UTC ms of that day's local midnight."""

    def __init__(self, timezone: str) -> None:
        self.timezone = timezone
        self._zone = ZoneInfo(timezone)
        self._lo = 0
        self._hi = 0  # [lo, hi): the last day asked about (intervals come in time order)

    def day_of(self, ts_ms: int) -> int:
        if self._lo <= ts_ms < self._hi:
            return self._lo
        day = dt.datetime.fromtimestamp(ts_ms // 1000, self._zone).date()
        self._lo = self._midnight(day)
        self._hi = self._midnight(day + dt.timedelta(days=1))
        return self._lo

    def day_end(self, ts_ms: int) -> int:
        """The end (next local midnight) of the day ``ts_ms`` is in."""
        self.day_of(ts_ms)
        return self._hi

    def _midnight(self, day: dt.date) -> int:
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=self._zone)
                   .timestamp() * 1000)


@attrs.frozen
class DaysState:
    """What the ``days`` database holds: records in ``zone``'s days; ``complete`` once every
    interval of the history is in them, else the rebuild goes on after history key
    ``position``."""

    zone: str
    complete: bool
    position: bytes = b""

    def encode(self) -> bytes:
        return bytes(msgpack.packb([self.zone, self.complete, self.position]))

    @classmethod
    def decode(cls, data: bytes | None) -> DaysState | None:
        if data is None:
            return None
        try:
            zone, complete, position = msgpack.unpackb(data)
            return cls(str(zone), bool(complete), bytes(position))
        except (ValueError, TypeError, msgpack.ExtraData):
            return None  # unreadable: rebuilt like a directory that has none


def usable_interval(start_ms: object, wh: object, minor: object, band: object) -> bool:
    """What a day record can hold (the writer skips, with a log line, what it cannot)."""
    return (type(start_ms) is int and 0 <= start_ms <= LAST_DAY_MS and type(wh) is int
            and type(minor) is int and type(band) is str)


def day_key(meter_id: str, day_ms: int) -> bytes:
    return meter_key(meter_id, day_ms)


class DayRecord:
    """One day record being made or changed (the writer's, the rebuild's, a fallback's)."""

    __slots__ = ("band_minor", "band_of", "band_wh", "bands", "minor", "offsets", "wh")

    def __init__(self) -> None:
        self.bands: list[str] = []
        self.band_wh: list[int] = []
        self.band_minor: list[int] = []
        self.offsets = array("I")
        self.band_of = bytearray()
        self.wh = array("q")
        self.minor = array("q")

    @classmethod
    def load(cls, value: bytes | None) -> DayRecord:
        record = cls()
        if value is not None:
            fields = msgpack.unpackb(value)
            record.bands, record.band_wh, record.band_minor = fields[1], fields[2], fields[3]
            record.offsets = _array("I", fields[4])
            record.band_of = bytearray(fields[5])
            record.wh = array("q", _array(fields[6], fields[7]))
            record.minor = array("q", _array(fields[6], fields[8]))
        return record

    def set_slot(self, offset: int, band: str, wh: int, minor: int) -> None:
        """The interval starting ``offset`` ms into the day (replacing one there)."""
        try:
            index = self.bands.index(band)
        except ValueError:
            index = len(self.bands)
            self.bands.append(band)
            self.band_wh.append(0)
            self.band_minor.append(0)
        offsets = self.offsets
        if not offsets or offset > offsets[-1]:
            offsets.append(offset)
            self.band_of.append(index)
            self.wh.append(wh)
            self.minor.append(minor)
            self.band_wh[index] += wh
            self.band_minor[index] += minor
            return
        slots = dict(zip(offsets, zip(self.band_of, self.wh, self.minor, strict=True),
                         strict=True))
        slots[offset] = (index, wh, minor)
        self._rebuild(slots)

    def _rebuild(self, slots: dict[int, tuple[int, int, int]]) -> None:
        order = sorted(slots)
        used = sorted({index for index, _, _ in slots.values()})  # a replaced slot's band may go
        renumber = {old: new for new, old in enumerate(used)}
        self.bands = [self.bands[old] for old in used]
        self.offsets = array("I", order)
        self.band_of = bytearray(renumber[slots[o][0]] for o in order)
        self.wh = array("q", (slots[o][1] for o in order))
        self.minor = array("q", (slots[o][2] for o in order))
        self.band_wh = [0] * len(used)
        self.band_minor = [0] * len(used)
        for index, wh, minor in slots.values():
            self.band_wh[renumber[index]] += wh
            self.band_minor[renumber[index]] += minor

    def encode(self) -> bytes:
        small = not self.wh or (min(min(self.wh), min(self.minor)) >= _INT32[0]
                                and max(max(self.wh), max(self.minor)) <= _INT32[1])
        code = "i" if small else "q"
        return bytes(msgpack.packb([FORMAT, self.bands, self.band_wh, self.band_minor,
                              _bytes(self.offsets), bytes(self.band_of), code,
                              _bytes(array(code, self.wh)), _bytes(array(code, self.minor))]))


def day_totals(value: bytes) -> Iterator[tuple[str, int, int]]:
    """``(band, wh, minor)`` of each band of a day record."""
    fields = msgpack.unpackb(value)
    return zip(fields[1], fields[2], fields[3], strict=True)


def day_slots(value: bytes) -> Slots:
    """A day record's intervals: ``(offsets ms, band per slot, wh, minor)``."""
    fields = msgpack.unpackb(value)
    bands = fields[1]
    return (_array("I", fields[4]), [bands[i] for i in fields[5]], _array(fields[6], fields[7]),
            _array(fields[6], fields[8]))


def _array(code: str, data: bytes) -> array[int]:
    values = array(code)
    values.frombytes(data)
    if _SWAP:
        values.byteswap()
    return values


def _bytes(values: array[int]) -> bytes:
    if _SWAP:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


class DayUpdates:
    """The day records one transaction changes: intervals in, one put per day record out."""

    def __init__(self, days: LocalDays, get: Callable[[bytes], bytes | None]) -> None:
        """``get(key)`` loads a day record not changed here yet (the write transaction's
        ``get``; ``lambda key: None`` to make records from scratch)."""
        self._days = days
        self._get = get
        self._records: dict[bytes, DayRecord] = {}

    def add(self, meter_id: str, start_ms: int, wh: int, minor: int, band: str) -> None:
        """Put one interval in its day (``0 <= start_ms <= LAST_DAY_MS``; an interval before
        the first local midnight after 1970 is in a day starting then)."""
        day_ms = max(self._days.day_of(start_ms), 0)
        key = day_key(meter_id, day_ms)
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = DayRecord.load(self._get(key))
        record.set_slot(start_ms - day_ms, band, wh, minor)

    def encoded(self) -> Iterator[tuple[bytes, bytes]]:
        for key, record in self._records.items():
            yield key, record.encode()

    def __len__(self) -> int:
        return len(self._records)
