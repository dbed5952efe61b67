"""Audit retention: ``[audit] keep``, pruning only what is older, in chunks, never before money."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from persistence.audit import encode_audit, read_audit
from persistence.audit_log import DAY_MS, run_audit_retention
from persistence.codec import encode_entry
from persistence.entries import JournalEntry
from persistence.journal import StorageUnavailable, open_journal
from persistence.keys import pack_u64
from persistence.readonly import open_store_readonly
from persistence.store import Store, open_store
from persistence.writer import Background, RecordRequest, Writer
from server.app import open_park
from server.config import ConfigError, ParkConfig
from tests.persistence.damaged import NOT_MSGPACK, poke
from tests.persistence.test_audit import entry
from tests.server.parks import park_toml

T0 = 1_790_000_000_000
HOUR_MS = 3_600_000


def numbers(store: Store) -> list[int]:
    records, _ = read_audit(store, None, 1000)
    return sorted(n for n, _ in records)


def fill(writer: Writer, times: list[int]) -> None:
    """Audit entries 1, 2, ... written at ``times`` (``entry(n)`` adds n ms)."""
    writer.submit_background(Background("audit", [
        (n, encode_audit(entry(n, ts - n))) for n, ts in enumerate(times, start=1)]))
    while writer.busy:
        writer.write(writer.take())


def test_only_entries_older_than_the_cutoff_go(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        writer = Writer(store)
        fill(writer, [T0 - 3 * DAY_MS, T0 - 2 * DAY_MS, T0 - DAY_MS, T0, T0 + 1])
        writer.submit_background(Background("audit_prune", [T0 - DAY_MS]))
        while writer.busy:
            writer.write(writer.take())
        assert numbers(store) == [3, 4, 5]
        assert writer.counters.audit_pruned == 2
        writer.submit_background(Background("audit_prune", [T0 - DAY_MS]))  # nothing more
        writer.write(writer.take())
        assert numbers(store) == [3, 4, 5] and not writer.busy


def test_pruning_runs_in_small_chunks_and_money_is_never_behind_it(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        writer = Writer(store, chunk_puts=4)
        fill(writer, [T0 - DAY_MS] * 10 + [T0])
        writer.submit_background(Background("audit_prune", [T0 - 1]))
        topup = JournalEntry("topup", "M-1", 100, "pay-1", T0)
        writer.submit_record(RecordRequest(1, "M-1", b"pay-1", encode_entry(topup)))
        first = writer.write(writer.take())
        assert [request.seq for request in first.committed] == [1]  # in the first chunk
        assert numbers(store) == list(range(5, 12))
        transactions = 1
        while writer.busy:
            writer.write(writer.take())
            transactions += 1
        assert numbers(store) == [11] and transactions == 3


def test_a_damaged_record_goes_only_with_older_entries_after_it(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        writer = Writer(store)
        fill(writer, [T0 - DAY_MS, T0 - DAY_MS, T0 - DAY_MS, T0, T0])
        poke(store, "audit", pack_u64(2), NOT_MSGPACK)  # between old entries: old too
        poke(store, "audit", pack_u64(4), NOT_MSGPACK)  # after the last old one: kept
        writer.submit_background(Background("audit_prune", [T0 - 1]))
        while writer.busy:
            writer.write(writer.take())
        assert numbers(store) == [4, 5]


async def test_the_journal_prunes_in_the_writer_process(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        async with open_journal(store) as journal:
            for n, ts in enumerate([T0 - DAY_MS, T0 - DAY_MS, T0], start=1):
                journal.put_audit_nowait(n, encode_audit(entry(n, ts - n)))
            journal.prune_audit_nowait(T0 - 1)
            await journal.flush()
            assert journal.statistics().audit_pruned == 2
        assert numbers(store) == [3]


class FakeJournal:
    def __init__(self) -> None:
        self.prunes: list[tuple[float, int]] = []
        self.down = False

    def put_audit_nowait(self, number: int, encoded: bytes) -> None:
        raise AssertionError("not used")

    def prune_audit_nowait(self, before_ms: int) -> None:
        if self.down:
            raise StorageUnavailable("storage is unavailable")
        self.prunes.append((trio.current_time(), before_ms))

    @property
    def audit_written_through(self) -> int:
        return 0


async def test_retention_runs_at_start_then_hourly_and_soon_after_storage_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = FakeJournal()
    keep = 400 * DAY_MS
    async with trio.open_nursery() as nursery:
        await nursery.start(run_audit_retention, journal, lambda: T0, keep)
        await trio.sleep(2 * 3600 + 1)
        assert [(round(at), before) for at, before in journal.prunes] == [
            (0, T0 - keep), (3600, T0 - keep), (7200, T0 - keep)]
        journal.down = True
        await trio.sleep(3600)  # the 3 h run is refused: tried again a minute later
        journal.down = False
        await trio.sleep(61)
        assert [round(at) for at, _ in journal.prunes][3:] == [3 * 3600 + 60]
        nursery.cancel_scope.cancel()


async def test_a_park_applies_its_configured_keep_at_start(tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    with open_store(tmp_path / "park") as store:
        fill(Writer(store), [now - 3 * DAY_MS, now - 2 * DAY_MS, now - HOUR_MS])
    config = ParkConfig.from_toml_text(park_toml(tmp_path / "park") + '\n[audit]\nkeep = "1d"\n')
    assert config.audit.keep_ms == DAY_MS
    async with open_park(config, with_field=False) as park:
        await park.journal.flush()
        assert park.journal.statistics().audit_pruned == 2
    with open_store_readonly(tmp_path / "park") as reader:
        assert numbers(reader) == [3]


# --- the config -------------------------------------------------------------------------------


def load(extra: str) -> ParkConfig:
    return ParkConfig.from_toml_text(park_toml(Path("data")) + extra, "park.toml")


@pytest.mark.parametrize("written, keep_ms", [
    (None, 400 * DAY_MS), ('"30d"', 30 * DAY_MS), ('"720h"', 720 * HOUR_MS), ('"1h"', HOUR_MS)])
def test_keep_is_a_duration_in_days_or_the_usual_units(written: str | None, keep_ms: int) -> None:
    extra = "" if written is None else f"\n[audit]\nkeep = {written}\n"
    assert load(extra).audit.keep_ms == keep_ms


@pytest.mark.parametrize("written, problem", [
    ('"5m"', 'audit.keep: must be at least 1h, got "5m"'),
    ('"0d"', 'audit.keep: must be at least 1h, got "0d"'),
    ('"1y"', 'audit.keep: expected a duration like "500ms", "2s", "5m" or "1h" (units: ms, s, '
             'm, h), got "1y"; days are written like "400d"'),
    ("400", 'audit.keep: expected a duration with a unit like "2s" or "500ms", got 400; days '
            'are written like "400d"'),
    ('"1d"\nkept = "2d"', 'audit.kept: unknown key (did you mean "keep"?)'),
])
def test_a_bad_keep_is_named_with_its_line(written: str, problem: str) -> None:
    text = park_toml(Path("data")) + f"\n[audit]\nkeep = {written}\n"
    with pytest.raises(ConfigError) as error:
        ParkConfig.from_toml_text(text, "park.toml")
    (found,) = error.value.problems
    key = problem.partition(":")[0].rpartition(".")[2]
    assert found.line == 1 + text.splitlines().index(
        next(line for line in text.splitlines() if line.startswith(f"{key} =")))
    assert str(found) == f"park.toml:{found.line}: {problem}"
