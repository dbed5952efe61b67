"""The deferred indexes: money transactions only append; ``refs`` and ``meter_journal`` follow.

Every reader must give the same answer whatever the indexer's progress, and the writer's
duplicate check must hold whether the first recording is in this batch, in the tail or indexed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persistence.codec import encode_entry
from persistence.entries import JournalEntry, Recorded
from persistence.index import PendingIndex, indexed_through
from persistence.recovery import find_reference, meter_journal_after, recover_states
from persistence.store import Store, open_store
from persistence.writer import MAX_INDEX_CHUNK, MIN_INDEX_CHUNK, RecordRequest, Writer
from policies.records import AdjustmentApplied, MeterState, TopUpApplied


def topup(n: int, meter: str = "M-1", amount: int = 100) -> JournalEntry:
    return JournalEntry("topup", meter, amount, f"ref-{n}", n)


def request(token: int, entry: JournalEntry) -> RecordRequest:
    return RecordRequest(token, entry.meter_id, entry.reference.encode(), encode_entry(entry))


def record(writer: Writer, entries: list[JournalEntry]) -> list[RecordRequest]:
    """One transaction with ``entries``; returns the requests, answered."""
    requests = [request(token, entry) for token, entry in enumerate(entries)]
    for one in requests:
        writer.submit_record(one)
    while writer.busy:
        writer.write(writer.take())
    return requests


def index_all(writer: Writer) -> None:
    while writer.indexing:
        writer.write(writer.take())


def table_size(store: Store, name: str) -> int:
    with store.read() as txn:
        entries: int = txn.stat(getattr(store, name))["entries"]
        return entries


def watermark(store: Store) -> int:
    with store.read() as txn:
        return indexed_through(txn, store)


def add(state: MeterState, message: object) -> MeterState:
    assert isinstance(message, TopUpApplied | AdjustmentApplied)
    return attrs.evolve(state, balance=state.balance + message.amount, journal_seq=message.seq)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path) as opened:
        yield opened


# --- the writer ---------------------------------------------------------------------------


def test_a_money_transaction_only_appends_and_the_index_follows(store: Store) -> None:
    writer = Writer(store)
    record(writer, [topup(n, f"M-{n % 3}") for n in range(1, 7)])
    assert table_size(store, "journal") == 6
    assert (table_size(store, "refs"), table_size(store, "meter_journal")) == (0, 0)
    assert (len(writer.index), watermark(store)) == (6, 0)
    index_all(writer)
    assert (table_size(store, "refs"), table_size(store, "meter_journal")) == (6, 6)
    assert (len(writer.index), watermark(store), writer.counters.indexed_entries) == (0, 6, 6)


def test_the_index_is_written_in_chunks_oldest_first(store: Store) -> None:
    writer = Writer(store)
    record(writer, [topup(n) for n in range(1, MIN_INDEX_CHUNK * 2 + 4)])
    batch = writer.take()
    assert batch.index == MIN_INDEX_CHUNK
    writer.write(batch)
    assert watermark(store) == MIN_INDEX_CHUNK
    assert len(writer.index) == MIN_INDEX_CHUNK + 3


@pytest.mark.parametrize("where", ["same batch", "tail", "indexed", "tail after a restart"])
def test_a_repeated_reference_is_found_wherever_its_first_recording_is(
    store: Store, where: str
) -> None:
    writer = Writer(store)
    if where == "same batch":
        first, repeat = record(writer, [topup(1), topup(1)])
    else:
        (first,) = record(writer, [topup(1)])
        if where == "indexed":
            index_all(writer)
        elif where == "tail after a restart":
            writer = Writer(store)
            assert len(writer.index) == 1  # rebuilt from the journal past the watermark
        (repeat,) = record(writer, [topup(1)])
    assert first.seq == 1
    assert repeat.first is not None and repeat.first[0] == 1
    assert table_size(store, "journal") == 1


def test_a_repeat_gets_the_stored_outcome(store: Store) -> None:
    writer = Writer(store)
    record(writer, [topup(1)])
    writer.submit_outcome(1, "ref-1", 18_765)
    (repeat,) = record(writer, [topup(1)])
    assert repeat.first is not None and repeat.first[2] == 18_765
    index_all(writer)
    assert find_reference(store, "ref-1") == Recorded(1, topup(1), 18_765, duplicate=True)


def test_index_chunks_follow_the_time_budget(store: Store) -> None:
    entries = [topup(n, f"M-{n}") for n in range(1, 2000)]  # one transaction
    roomy = Writer(store, index_budget_s=10.0)
    record(roomy, entries)
    sizes = []
    while roomy.indexing:
        batch = roomy.take()
        sizes.append(batch.index)
        roomy.write(batch)
    assert sizes[:4] == [MIN_INDEX_CHUNK, 2 * MIN_INDEX_CHUNK, 4 * MIN_INDEX_CHUNK,
                         8 * MIN_INDEX_CHUNK]
    assert max(sizes) <= MAX_INDEX_CHUNK
    tight = Writer(store, index_budget_s=0.0)
    record(tight, [topup(n, f"M-{n}") for n in range(3000, 3100)])
    while tight.indexing:
        batch = tight.take()
        assert batch.index == MIN_INDEX_CHUNK
        tight.write(batch)


# --- readers: the same answer at any indexing progress ---------------------------------------

meters = st.sampled_from(["M-1", "M-2", "M-10"])


@settings(max_examples=40, deadline=None)
@given(
    owners=st.lists(meters, min_size=1, max_size=40),
    indexed=st.integers(0, 40),
    snapshot_seq=st.integers(0, 40),
)
def test_readers_agree_whatever_has_been_indexed(
    owners: list[str], indexed: int, snapshot_seq: int
) -> None:
    entries = [topup(n, meter, amount=n) for n, meter in enumerate(owners, start=1)]
    indexed = min(indexed, len(entries))
    with tempfile.TemporaryDirectory() as directory, open_store(Path(directory)) as store:
        writer = Writer(store, index_budget_s=0.0)  # chunks of MIN_INDEX_CHUNK
        record(writer, entries)
        while len(entries) - len(writer.index) < indexed:
            writer.write(writer.take())
        for meter in ("M-1", "M-2", "M-10"):
            expected = [(seq, entry) for seq, entry in enumerate(entries, start=1)
                        if entry.meter_id == meter and seq > snapshot_seq]
            assert list(meter_journal_after(store, meter, snapshot_seq)) == expected
        never_snapshotted = {"M-1": 0, "M-2": 0, "M-10": 0}
        states = recover_states(store, never_snapshotted, add).states
        for meter, state in states.items():
            assert state.balance == sum(e.amount for e in entries if e.meter_id == meter)
        for n in (1, len(entries)):
            found = find_reference(store, f"ref-{n}")
            assert found is not None and (found.seq, found.entry) == (n, entries[n - 1])
        assert find_reference(store, "ref-0") is None


def test_money_records_carry_no_index_work_until_the_backlog_is_too_long(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = Writer(store)
    record(writer, [topup(n) for n in range(1, 6)])
    writer.submit_record(request(9, topup(6)))
    assert writer.take().index == 0  # records waiting: the backlog waits for a quiet writer
    monkeypatch.setattr("persistence.writer.MAX_INDEX_LAG", 4)
    writer.submit_record(request(10, topup(7)))
    assert writer.take().index == MIN_INDEX_CHUNK


def test_a_full_map_stops_indexing_but_not_money(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store(tmp_path, map_size=1 << 20, max_map_size=1 << 20) as store:
        writer = Writer(store)
        record(writer, [topup(1), topup(2)])

        def full(self: PendingIndex, txn: object, store: Store, limit: int) -> int:
            if limit:
                raise lmdb.MapFullError("full")
            return 0

        monkeypatch.setattr(PendingIndex, "put_chunk", full)
        writer.write(writer.take())  # the index chunk hits the full map
        assert not writer.indexing and len(writer.index) == 2
        (third,) = record(writer, [topup(3)])
        (repeat,) = record(writer, [topup(1)])
        assert third.seq == 3 and third.error is None
        assert repeat.first is not None and repeat.first[0] == 1
