"""Interval history: written through the journal writer, read back for reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from persistence import history
from persistence.history import DaySource, iter_history, meter_totals
from persistence.journal import JournalEntry, open_journal
from persistence.store import Store, open_store

HOUR = 3_600_000

# (meter, start_ms, wh, minor, band); M-1 and M-10 are neighbours in key order.
INTERVALS = [
    ("M-1", 0 * HOUR, 100, 80, "valley"),
    ("M-1", 1 * HOUR, 200, 160, "valley"),
    ("M-1", 2 * HOUR, 300, 240, "flat"),
    ("M-10", 0 * HOUR, 1_000, 400, "valley"),
    ("M-10", 5 * HOUR, 2_000, 800, "valley"),
    ("M-2", 1 * HOUR, 50, 60, "valley"),
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    async def fill(store: Store) -> None:
        async with open_journal(store) as journal:
            journal.put_history_nowait(list(INTERVALS))
            await journal.flush()
            assert journal.statistics().history_written == len(INTERVALS)

    with open_store(tmp_path) as opened:
        trio.run(fill, opened)
        yield opened


def test_iter_history_is_one_meters_window_in_time_order(store: Store) -> None:
    assert list(iter_history(store, "M-1", 0, 10 * HOUR)) == [
        (0, 100, 80, "valley"), (HOUR, 200, 160, "valley"), (2 * HOUR, 300, 240, "flat"),
    ]
    # [from, to): the interval starting at `to` is not in the window.
    assert list(iter_history(store, "M-1", HOUR, 2 * HOUR)) == [(HOUR, 200, 160, "valley")]
    assert list(iter_history(store, "M-1", HOUR + 1, 2 * HOUR)) == []
    assert list(iter_history(store, "M-10", -HOUR, 10 * HOUR)) == [
        (0, 1_000, 400, "valley"), (5 * HOUR, 2_000, 800, "valley"),
    ]
    assert list(iter_history(store, "M-3", 0, 10 * HOUR)) == []
    assert list(iter_history(store, "M-1", 5 * HOUR, HOUR)) == []


DAY = 24 * HOUR


def test_band_totals_are_a_meters_days_by_band(store: Store) -> None:
    source = DaySource(store, "UTC")
    assert source.from_records  # written by this writer: the day records are complete
    assert source.band_totals("M-1", 0, DAY) == {"valley": (300, 240), "flat": (300, 240)}
    assert meter_totals(source.band_totals("M-1", 0, DAY)) == (600, 480)
    assert source.band_totals("M-10", 0, DAY) == {"valley": (3_000, 1_200)}
    assert source.band_totals("M-3", 0, DAY) == {}
    # Whole days: a day starting before the window is not in it.
    assert source.band_totals("M-1", HOUR, 2 * DAY) == {}


def test_charged_before_a_cut_counts_the_intervals_starting_before_it(store: Store) -> None:
    source = DaySource(store, "UTC")
    assert source.charged_before("M-1", 0) == (0, 0)
    assert source.charged_before("M-1", HOUR) == (100, 80)
    assert source.charged_before("M-1", HOUR + 1) == (300, 240)
    assert source.charged_before("M-1", 10 * DAY) == (600, 480)
    assert source.charged_before("M-10", 5 * HOUR) == (1_000, 400)


def test_a_rewritten_interval_replaces_the_old_one(tmp_path: Path) -> None:
    async def write(opened: Store) -> None:
        async with open_journal(opened) as journal:
            journal.put_history_nowait([("M-1", 0, 1, 1, "flat")])
            journal.put_history_nowait([("M-1", 0, 7, 9, "flat")])

    with open_store(tmp_path) as opened:
        trio.run(write, opened)
        assert list(iter_history(opened, "M-1", 0, 1)) == [(0, 7, 9, "flat")]


async def test_long_histories_are_read_in_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "PAGE", 7)
    meters = [f"M-{n}" for n in range(10)]
    with open_store(tmp_path) as store:
        async with open_journal(store, chunk_puts=25) as journal:
            journal.put_history_nowait(
                [(meter, start * 1_000, start, 2 * start, "flat") for meter in meters
                 for start in range(30)]
            )
            await journal.flush()
        window = list(iter_history(store, "M-3", 5_000, 25_000))
        assert window == [(start * 1_000, start, 2 * start, "flat") for start in range(5, 25)]
        expected = sum(range(30))
        source = DaySource(store, "UTC")
        assert {meter: source.band_totals(meter, 0, DAY) for meter in meters} == {
            meter: {"flat": (expected, 2 * expected)} for meter in meters
        }


async def test_unusable_meter_ids_are_skipped_not_fatal(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        async with open_journal(store) as journal:
            journal.put_history_nowait(
                [("", 0, 1, 1, "flat"), ("M\0x", 0, 1, 1, "flat"), ("M-1", 0, 2, 3, "flat")])
            journal.put_snapshots_nowait([("", b"x"), ("y" * 600, b"x")])
            await journal.flush()
            # The writer lives on: a record after the skipped puts still commits.
            assert (await journal.record(JournalEntry("topup", "M-1", 1, "r", 0))).seq == 1
        assert DaySource(store, "UTC").band_totals("M-1", 0, 1) == {"flat": (2, 3)}
