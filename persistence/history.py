"""The interval history read back: one interval at a time, or a local day at a time.

Theory of operation
-------------------
Every closed interval of a meter is stored under ``meter_id NUL start_ms`` (see
``persistence/keys.py``), so one meter's history is a contiguous, time-ordered key range,
visited with one positioned lookup: a window touches only its own intervals, however long the
history is. Each value is ``(wh, minor, band, register, balance)``: energy, money, the tariff
band the interval lies in (peak, flat, valley...), and where the meter stood at its end. The
meter page, the console's charts and OPC UA's HistoryRead read intervals.

Reports read day records instead (``persistence.days``: a meter's local day in one record,
the same key layout in ``days``) through :class:`DaySource`, thirty times fewer records for
the same figures.

Reads are done in pages with short read transactions (see ``persistence.store.Store.read``):
a long report must not hold up map growth in the writer.
"""

from __future__ import annotations

from collections.abc import Iterator

from persistence.codec import decode_interval, decode_interval_end
from persistence.days import (
    DAYS_KEY,
    LAST_DAY_MS,
    DaysState,
    DayUpdates,
    LocalDays,
    day_slots,
    day_totals,
)
from persistence.keys import meter_key, meter_prefix, split_meter_key, unpack_u64
from persistence.lmdb_types import Db
from persistence.store import Store

PAGE = 4096


def iter_history(
    store: Store, meter_id: str, from_ms: int, to_ms: int
) -> Iterator[tuple[int, int, int, str]]:
    """``(start_ms, wh, minor, band)`` of one meter's intervals with
    ``from_ms <= start_ms < to_ms``."""
    for start, value in _iter_records(store, store.history, meter_id, from_ms, to_ms):
        yield start, *decode_interval(value)


def iter_interval_ends(
    store: Store, meter_id: str, from_ms: int, to_ms: int
) -> Iterator[tuple[int, int, int, int]]:
    """``(start_ms, wh, register_wh, balance)`` of one meter's intervals with
    ``from_ms <= start_ms < to_ms`` that know where the meter stood at their end (records
    written before that was kept are skipped)."""
    for start, value in _iter_records(store, store.history, meter_id, from_ms, to_ms):
        end = decode_interval_end(value)
        if end is not None:
            yield start, decode_interval(value)[0], *end


def iter_intervals(
    store: Store, meter_id: str, from_ms: int, to_ms: int
) -> Iterator[tuple[int, int, int, str, tuple[int, int] | None]]:
    """``(start_ms, wh, minor, band, (register_wh, balance) or None)`` of one meter's
    intervals with ``from_ms <= start_ms < to_ms`` (the end is None in old records)."""
    for start, value in _iter_records(store, store.history, meter_id, from_ms, to_ms):
        yield start, *decode_interval(value), decode_interval_end(value)


def _iter_records(store: Store, db: Db, meter_id: str, from_ms: int, to_ms: int
                  ) -> Iterator[tuple[int, bytes]]:
    prefix = meter_prefix(meter_id)
    cut = len(prefix)
    position = max(from_ms, 0)
    while position < to_ms:
        page: list[tuple[int, bytes]] = []
        with store.read() as txn:
            cursor = txn.cursor(db=db)
            if cursor.set_range(meter_key(meter_id, position)):
                for key, value in cursor.iternext():
                    if key[:cut] != prefix:
                        break
                    start = unpack_u64(key[cut:])
                    if start >= to_ms:
                        break
                    page.append((start, value))
                    if len(page) == PAGE:
                        break
        yield from page
        if len(page) < PAGE:
            return
        position = page[-1][0] + 1


BandTotals = dict[str, tuple[int, int]]
"""Tariff band name -> total ``(wh, minor)`` in it."""


def add_band(bands: BandTotals, band: str, wh: int, minor: int) -> None:
    """Add ``(wh, minor)`` to ``band`` in ``bands``."""
    old_wh, old_minor = bands.get(band, (0, 0))
    bands[band] = (old_wh + wh, old_minor + minor)


def meter_totals(bands: BandTotals) -> tuple[int, int]:
    """A meter's ``(wh, minor)`` over all its bands."""
    return sum(wh for wh, _ in bands.values()), sum(minor for _, minor in bands.values())


def days_complete(store: Store, timezone: str) -> bool:
    """The day records hold every interval, in ``timezone``'s days (``persistence.days``)."""
    if store.days is None:
        return False
    with store.read() as txn:
        state = DaysState.decode(txn.get(DAYS_KEY, db=store.meta))
    return state is not None and state.complete and state.zone == timezone


class DaySource:
    """A meter's history a local day at a time, for reports: the ``days`` database when its
    records are complete in the park's zone, else the same records made from the intervals
    (while the writer is still building them, or in a directory no server has opened since
    they were added): slower, the same figures."""

    def __init__(self, store: Store, timezone: str) -> None:
        self._store = store
        self._local_days = LocalDays(timezone)
        self.from_records = days_complete(store, timezone)

    def days(self, meter_id: str, from_ms: int, to_ms: int) -> Iterator[tuple[int, bytes]]:
        """``(day start ms, day record)`` of the meter's days starting in ``[from_ms, to_ms)``,
        in time order (decode with ``persistence.days.day_totals`` / ``day_slots``)."""
        store = self._store
        if self.from_records and store.days is not None:
            yield from _iter_records(store, store.days, meter_id, from_ms, to_ms)
            return
        if to_ms <= max(from_ms, 0):
            return
        local_days = self._local_days
        made = DayUpdates(local_days, lambda key: None)
        end = to_ms if to_ms > LAST_DAY_MS else local_days.day_end(to_ms - 1)
        for start, wh, minor, band in iter_history(store, meter_id, from_ms, end):
            made.add(meter_id, start, wh, minor, band)
        for key, value in made.encoded():
            day_ms = split_meter_key(key)[1]
            if from_ms <= day_ms < to_ms:
                yield day_ms, value

    def band_totals(self, meter_id: str, from_ms: int, to_ms: int) -> BandTotals:
        """Per tariff band, the meter's ``(wh, minor)`` over the days starting in
        ``[from_ms, to_ms)``."""
        bands: BandTotals = {}
        for _, value in self.days(meter_id, from_ms, to_ms):
            for band, wh, minor in day_totals(value):
                add_band(bands, band, wh, minor)
        return bands

    def charged_before(self, meter_id: str, cut_ms: int) -> tuple[int, int]:
        """The meter's total ``(wh, minor)`` of intervals starting before ``cut_ms`` (a
        snapshot's open bucket: what that snapshot's balance has been charged for)."""
        wh_total = minor_total = 0
        last: tuple[int, bytes] | None = None
        for day in self.days(meter_id, 0, cut_ms):
            if last is not None:
                for _, wh, minor in day_totals(last[1]):
                    wh_total += wh
                    minor_total += minor
            last = day
        if last is not None:  # the cut's own day: only its intervals before the cut
            day_ms, value = last
            offsets, _bands, whs, minors = day_slots(value)
            for offset, wh, minor in zip(offsets, whs, minors, strict=True):
                if day_ms + offset < cut_ms:
                    wh_total += wh
                    minor_total += minor
        return wh_total, minor_total
