"""Interval history read back for reports.

Theory of operation
-------------------
Every closed interval of a meter is stored under ``meter_id NUL start_ms`` (see
``persistence/keys.py``), so one meter's history is a contiguous, time-ordered key range. A
report over a time window visits each meter's range with one positioned lookup and then skips
straight to the next meter (``meter_id + b"\\x01"`` sorts right after every key of that meter),
so it touches only the intervals in the window, however long the history is. Each value is
``(wh, minor, band)``: energy, money, and the tariff band the interval lies in, so reports can
split a period by band (peak, flat, valley...).

Reads are done in pages with short read transactions (see ``persistence.store.Store.read``):
a long report must not hold up map growth in the writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from persistence.codec import decode_interval, decode_interval_end
from persistence.keys import meter_key, meter_prefix, split_meter_key, unpack_u64
from persistence.store import Store

PAGE = 4096
METERS_PER_TXN = 512


def iter_history(
    store: Store, meter_id: str, from_ms: int, to_ms: int
) -> Iterator[tuple[int, int, int, str]]:
    """``(start_ms, wh, minor, band)`` of one meter's intervals with
    ``from_ms <= start_ms < to_ms``."""
    for start, value in _iter_records(store, meter_id, from_ms, to_ms):
        yield start, *decode_interval(value)


def iter_interval_ends(
    store: Store, meter_id: str, from_ms: int, to_ms: int
) -> Iterator[tuple[int, int, int, int]]:
    """``(start_ms, wh, register_wh, balance)`` of one meter's intervals with
    ``from_ms <= start_ms < to_ms`` that know where the meter stood at their end (records
    written before that was kept are skipped)."""
    for start, value in _iter_records(store, meter_id, from_ms, to_ms):
        end = decode_interval_end(value)
        if end is not None:
            yield start, decode_interval(value)[0], *end


def iter_intervals(
    store: Store, meter_id: str, from_ms: int, to_ms: int
) -> Iterator[tuple[int, int, int, str, tuple[int, int] | None]]:
    """``(start_ms, wh, minor, band, (register_wh, balance) or None)`` of one meter's
    intervals with ``from_ms <= start_ms < to_ms`` (the end is None in old records)."""
    for start, value in _iter_records(store, meter_id, from_ms, to_ms):
        yield start, *decode_interval(value), decode_interval_end(value)


def _iter_records(store: Store, meter_id: str, from_ms: int, to_ms: int
                  ) -> Iterator[tuple[int, bytes]]:
    prefix = meter_prefix(meter_id)
    cut = len(prefix)
    position = max(from_ms, 0)
    while position < to_ms:
        page: list[tuple[int, bytes]] = []
        with store.read() as txn:
            cursor = txn.cursor(db=store.history)
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


def sum_history(
    store: Store, from_ms: int, to_ms: int, meters: Iterable[str] | None = None
) -> dict[str, BandTotals]:
    """Per meter and tariff band, the total ``(wh, minor)`` of intervals starting in
    ``[from_ms, to_ms)`` (``meter_totals`` adds a meter's bands up).

    Meters without intervals in the window are absent. ``meters`` limits the report to those
    meter ids (default: every meter with history)."""
    if meters is not None:
        totals: dict[str, BandTotals] = {}
        for meter_id in meters:
            bands: BandTotals = {}
            for _, wh, minor, band in iter_history(store, meter_id, from_ms, to_ms):
                _add(bands, band, wh, minor)
            if bands:
                totals[meter_id] = bands
        return totals
    return _sum_all(store, max(from_ms, 0), to_ms)


def meter_totals(bands: BandTotals) -> tuple[int, int]:
    """A meter's ``(wh, minor)`` over all its bands."""
    return sum(wh for wh, _ in bands.values()), sum(minor for _, minor in bands.values())


def _add(bands: BandTotals, band: str, wh: int, minor: int) -> None:
    band_wh, band_minor = bands.get(band, (0, 0))
    bands[band] = (band_wh + wh, band_minor + minor)


def _sum_all(store: Store, from_ms: int, to_ms: int) -> dict[str, BandTotals]:
    totals: dict[str, BandTotals] = {}
    seek = b""  # the next key at or after which a not-yet-visited meter's keys start
    while True:
        with store.read() as txn:
            cursor = txn.cursor(db=store.history)
            for _ in range(METERS_PER_TXN):
                if not cursor.set_range(seek):
                    return totals
                meter_id, _ = split_meter_key(cursor.key())
                prefix = meter_prefix(meter_id)
                cut = len(prefix)
                bands: BandTotals = {}
                if cursor.set_range(meter_key(meter_id, from_ms)):
                    for key, value in cursor.iternext():
                        if key[:cut] != prefix or unpack_u64(key[cut:]) >= to_ms:
                            break
                        wh, minor, band = decode_interval(value)
                        _add(bands, band, wh, minor)
                if bands:
                    totals[meter_id] = bands
                seek = meter_id.encode() + b"\x01"


def charges_before(store: Store, cuts: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Per meter of ``cuts``, the total ``(wh, minor)`` of its intervals that start before
    its cut (a snapshot's open bucket: what that snapshot's balance has been charged for)."""
    totals: dict[str, tuple[int, int]] = {}
    for meter_id, cut in cuts.items():
        wh_total = minor_total = 0
        for _, wh, minor, _band in iter_history(store, meter_id, 0, cut):
            wh_total += wh
            minor_total += minor
        totals[meter_id] = (wh_total, minor_total)
    return totals
