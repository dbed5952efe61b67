"""Day records: kept by the writer beside the intervals, equal to what the intervals say,
rebuilt for a directory that has none or for another time zone, read by reports."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistence.codec import HistoryItem
from persistence.days import DAYS_KEY, DayRecord, DaysState, LocalDays, day_slots, day_totals
from persistence.history import DaySource
from persistence.keys import split_meter_key
from persistence.store import Store, open_store
from persistence.writer import Background, Writer

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
SHANGHAI = "Asia/Shanghai"
# 2026-11-01 00:00 in Shanghai (UTC+8) is 2026-10-31 16:00 UTC.
T0 = int(dt.datetime(2026, 11, 1, tzinfo=ZoneInfo(SHANGHAI)).timestamp() * 1000)


def write_all(writer: Writer, items: list[HistoryItem] | None = None) -> None:
    if items:
        writer.submit_background(Background("history", items))
    while writer.busy:
        writer.write(writer.take())


def stored_days(store: Store) -> dict[tuple[str, int], bytes]:
    assert store.days is not None
    with store.read() as txn:
        return {split_meter_key(key): value
                for key, value in txn.cursor(db=store.days).iternext()}


def days_from_intervals(store: Store, zone: str, meters: list[str]) -> dict[tuple[str, int],
                                                                            bytes]:
    source = DaySource(store, zone)
    source.from_records = False  # what a reader makes from the intervals alone
    return {(meter, day): value for meter in meters
            for day, value in source.days(meter, 0, 1 << 62)}


def decoded(days: dict[tuple[str, int], bytes]) -> dict[tuple[str, int], object]:
    return {key: (sorted(day_totals(value)), [list(part) for part in day_slots(value)])
            for key, value in days.items()}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path) as opened:
        yield opened


def test_a_day_record_sums_its_slots_by_band_and_a_rewrite_replaces_a_slot() -> None:
    record = DayRecord()
    record.set_slot(0, "valley", 100, 40)
    record.set_slot(15 * MIN, "valley", 200, 80)
    record.set_slot(9 * HOUR, "peak", 50, 60)
    record.set_slot(15 * MIN, "valley", 10, 4)  # the same interval written again
    record.set_slot(5 * MIN, "valley", 1, 1)  # one that arrives late
    value = DayRecord.load(record.encode()).encode()
    assert sorted(day_totals(value)) == [("peak", 50, 60), ("valley", 111, 45)]
    offsets, bands, wh, minor = day_slots(value)
    assert list(offsets) == [0, 5 * MIN, 15 * MIN, 9 * HOUR]
    assert bands == ["valley", "valley", "valley", "peak"]
    assert (list(wh), list(minor)) == ([100, 1, 10, 50], [40, 1, 4, 60])


def test_values_beyond_32_bits_are_kept_exactly() -> None:
    record = DayRecord()
    record.set_slot(0, "flat", 3 << 40, -(5 << 33))
    value = record.encode()
    assert list(day_totals(value)) == [("flat", 3 << 40, -(5 << 33))]
    assert list(day_slots(value)[2]) == [3 << 40]


def test_local_days_follow_the_zone_through_a_daylight_saving_change() -> None:
    berlin = LocalDays("Europe/Berlin")
    # 2026-03-29 has 23 hours in Berlin: it starts at 23:00 UTC the day before.
    start = int(dt.datetime(2026, 3, 28, 23, tzinfo=dt.UTC).timestamp() * 1000)
    assert berlin.day_of(start) == start
    assert berlin.day_of(start + 22 * HOUR + 59 * MIN) == start
    assert berlin.day_end(start) == start + 23 * HOUR
    assert berlin.day_of(start + 23 * HOUR) == start + 23 * HOUR
    assert berlin.day_of(start - 1) == start - 24 * HOUR


def test_the_writer_keeps_a_record_per_meter_and_local_day(store: Store) -> None:
    writer = Writer(store, days_zone=SHANGHAI)
    write_all(writer, [("M-1", T0 - 15 * MIN, 5, 2, "valley"),  # the local day before
                       ("M-1", T0, 100, 40, "valley"), ("M-1", T0 + 20 * HOUR, 7, 9, "peak"),
                       ("M-2", T0 + DAY, 1, 1, "valley")])
    days = stored_days(store)
    assert sorted(days) == [("M-1", T0 - DAY), ("M-1", T0), ("M-2", T0 + DAY)]
    assert sorted(day_totals(days["M-1", T0])) == [("peak", 7, 9), ("valley", 100, 40)]
    assert writer.counters.days_complete
    assert DaySource(store, SHANGHAI).band_totals("M-1", T0, T0 + DAY) == {
        "valley": (100, 40), "peak": (7, 9)}


ITEMS = st.lists(st.tuples(
    st.sampled_from(["M-1", "M-10", "M-2"]),
    st.integers(0, 4 * 96 - 1).map(lambda slot: T0 - DAY + slot * 15 * MIN),
    st.integers(0, 5_000), st.integers(0, 9_000), st.sampled_from(["valley", "flat", "peak"]),
), max_size=60)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(ITEMS, min_size=1, max_size=4))
def test_day_records_always_equal_the_intervals(tmp_path_factory: pytest.TempPathFactory,
                                                batches: list[list[HistoryItem]]) -> None:
    """Any mix of batches, repeats and late intervals: the stored records are what a reader
    makes from the intervals alone."""
    with open_store(tmp_path_factory.mktemp("days")) as store:
        writer = Writer(store, chunk_puts=7, days_zone=SHANGHAI)
        for batch in batches:
            write_all(writer, list(batch))
        meters = ["M-1", "M-10", "M-2"]
        assert decoded(stored_days(store)) == decoded(days_from_intervals(store, SHANGHAI,
                                                                          meters))


def test_a_directory_without_day_records_gets_them_built_in_chunks(store: Store) -> None:
    items: list[HistoryItem] = [(f"M-{m}", T0 + slot * 15 * MIN, slot, 2 * slot, "flat")
                                for m in range(5) for slot in range(200)]
    write_all(Writer(store, days_zone=SHANGHAI), items)
    wanted = decoded(stored_days(store))
    # As a directory from before day records: none, and nothing in meta.
    txn = store.begin_write()
    assert store.days is not None
    txn.drop(store.days, delete=False)
    txn.delete(DAYS_KEY, db=store.meta)
    txn.commit()
    assert not DaySource(store, SHANGHAI).from_records

    writer = Writer(store, chunk_puts=150, days_zone=SHANGHAI)
    for _ in range(3):  # a writer that dies part of the way...
        writer.write(writer.take())
    with store.read() as txn:
        state = DaysState.decode(txn.get(DAYS_KEY, db=store.meta))
    assert state is not None and not state.complete and state.position
    writer = Writer(store, chunk_puts=150, days_zone=SHANGHAI)  # ...and the next goes on
    transactions = 0
    while writer.busy:
        writer.write(writer.take())
        transactions += 1
    assert transactions == (1000 - 3 * 150) // 150 + 1
    assert writer.counters.days_complete and DaySource(store, SHANGHAI).from_records
    assert decoded(stored_days(store)) == wanted


def test_another_time_zone_rebuilds_the_records_in_its_days(store: Store) -> None:
    items: list[HistoryItem] = [("M-1", T0 + slot * HOUR, 10, 1, "flat") for slot in range(48)]
    write_all(Writer(store, days_zone=SHANGHAI), items)
    assert sorted(day for _, day in stored_days(store)) == [T0, T0 + DAY]
    assert not DaySource(store, "UTC").from_records  # another zone's days: not these

    write_all(Writer(store, days_zone="UTC"), [])
    utc_midnight = T0 + 8 * HOUR
    assert sorted(day for _, day in stored_days(store)) == [
        utc_midnight - DAY, utc_midnight, utc_midnight + DAY]
    assert DaySource(store, "UTC").from_records
    # A writer not told a zone keeps the records' own.
    write_all(Writer(store), [])
    assert DaySource(store, "UTC").from_records


def test_damaged_intervals_are_left_out_of_a_rebuild(store: Store) -> None:
    write_all(Writer(store, days_zone="UTC"), [("M-1", 0, 5, 5, "flat"),
                                               ("M-1", HOUR, 6, 6, "flat")])
    txn = store.begin_write()
    txn.put(b"M-1\0" + (HOUR).to_bytes(8, "big"), b"\xc1 not msgpack", db=store.history)
    txn.commit()
    writer = Writer(store, days_zone=SHANGHAI)
    write_all(writer)
    assert writer.counters.days_complete
    assert [list(day_totals(value)) for value in stored_days(store).values()] == [
        [("flat", 5, 5)]]


def test_a_report_reads_the_same_figures_before_the_records_are_complete(store: Store) -> None:
    items: list[HistoryItem] = [("M-1", T0 + slot * 15 * MIN, slot, slot, "flat")
                                for slot in range(300)]
    write_all(Writer(store, days_zone=SHANGHAI), items)
    complete = DaySource(store, SHANGHAI)
    partial = DaySource(store, SHANGHAI)
    partial.from_records = False
    for source in (complete, partial):
        assert source.band_totals("M-1", T0 + DAY, T0 + 2 * DAY) == {
            "flat": (sum(range(96, 192)), sum(range(96, 192)))}
        cut = T0 + DAY + 90 * MIN
        assert source.charged_before("M-1", cut) == (sum(range(102)), sum(range(102)))
