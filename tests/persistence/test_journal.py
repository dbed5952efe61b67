"""The money journal: durable on return, idempotent on its reference, group commit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from persistence.codec import decode_entry, decode_state, encode_entry, encode_state
from persistence.journal import (
    JournalBroken,
    JournalEntry,
    Recorded,
    ReferenceConflict,
    open_journal,
)
from persistence.recovery import entries_after, find_reference, load_snapshots
from persistence.store import StorageFull, Store, open_store
from persistence.writer import BatchResult, RecordRequest, Writer
from policies.records import MeterState

REPO = Path(__file__).resolve().parents[2]
KiB = 1024


def topup(reference: str, meter: str = "M-1", amount: int = 10_000, ts_ms: int = 1_000,
          detail: str = "") -> JournalEntry:
    return JournalEntry("topup", meter, amount, reference, ts_ms, detail)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "park") as opened:
        yield opened


def journal_rows(store: Store) -> list[tuple[int, JournalEntry]]:
    return list(entries_after(store, 0))


# --- durability -------------------------------------------------------------------------------


async def test_a_recorded_topup_is_committed_when_record_returns(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        async with open_journal(store) as journal:
            recorded = await journal.record(topup("a1f3"))
            assert recorded == Recorded(1, topup("a1f3"))
            # Read back in a new transaction before the journal is closed or flushed.
            assert journal_rows(store) == [(1, topup("a1f3"))]
            assert store.last_seq() == journal.last_seq == 1
    with open_store(tmp_path) as store:
        assert journal_rows(store) == [(1, topup("a1f3"))]
        assert find_reference(store, "a1f3") == Recorded(1, topup("a1f3"), None, duplicate=True)


def test_an_acknowledged_topup_survives_sigkill(tmp_path: Path) -> None:
    """The process dies right after ``record`` returned: no flush, no close, no atexit."""
    code = """
        import sys, trio
        from persistence.journal import JournalEntry, open_journal
        from persistence.store import open_store

        async def main():
            store = open_store(sys.argv[1])
            async with open_journal(store) as journal:
                for n in range(20):
                    recorded = await journal.record(
                        JournalEntry("topup", "M-1", 100 + n, f"ref-{n}", n))
                    print("ACK", recorded.seq, flush=True)
                await trio.sleep_forever()

        trio.run(main)
    """
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(tmp_path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    acks = [child.stdout.readline() for _ in range(20)]
    child.kill()
    child.communicate(timeout=30)
    assert acks == [f"ACK {n}\n" for n in range(1, 21)]
    with open_store(tmp_path) as store:
        rows = journal_rows(store)
    assert [(seq, entry.reference, entry.amount) for seq, entry in rows] == [
        (n + 1, f"ref-{n}", 100 + n) for n in range(20)
    ]


# --- idempotency ------------------------------------------------------------------------------


async def test_a_repeated_reference_returns_the_first_recording_and_writes_nothing(
    store: Store,
) -> None:
    async with open_journal(store) as journal:
        first = await journal.record(topup("r-1", ts_ms=1_000, detail="cash"))
        await journal.record(topup("r-2"))
        again = await journal.record(topup("r-1", ts_ms=9_999, detail="retry"))
        assert again == Recorded(first.seq, first.entry, None, duplicate=True)
        assert again.entry.ts_ms == 1_000  # the first recording, not the repeat
        assert journal.last_seq == 2
        stats = journal.statistics()
        assert (stats.entries, stats.duplicates) == (2, 1)
    assert [seq for seq, _ in journal_rows(store)] == [1, 2]
    with store.read() as txn:
        assert txn.stat(store.journal)["entries"] == 2


async def test_a_repeat_after_a_restart_is_still_a_duplicate(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        async with open_journal(store) as journal:
            first = await journal.record(topup("r-1"))
    with open_store(tmp_path) as store:
        async with open_journal(store) as journal:
            assert journal.last_seq == 1
            again = await journal.record(topup("r-1"))
            assert again == Recorded(first.seq, first.entry, None, duplicate=True)
            assert (await journal.record(topup("r-2"))).seq == 2


@pytest.mark.parametrize(
    "changed",
    [topup("r-1", amount=10_001), topup("r-1", meter="M-2"),
     JournalEntry("adjustment", "M-1", 10_000, "r-1", 1_000)],
    ids=["amount", "meter", "kind"],
)
async def test_reusing_a_reference_for_other_money_is_a_conflict(
    store: Store, changed: JournalEntry
) -> None:
    async with open_journal(store) as journal:
        await journal.record(topup("r-1"))
        with pytest.raises(ReferenceConflict, match="'r-1' was already used") as conflict:
            await journal.record(changed)
        assert "M-1" in str(conflict.value)
        assert journal.last_seq == 1
    assert journal_rows(store) == [(1, topup("r-1"))]


async def test_concurrent_repeats_share_one_recording(store: Store) -> None:
    results: list[Recorded] = []

    async def record(entry: JournalEntry) -> None:
        results.append(await journal.record(entry))

    async with open_journal(store) as journal, trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(record, topup("same"))
    assert {result.seq for result in results} == {1}
    assert sorted(result.duplicate for result in results) == [False] + [True] * 4
    assert len(journal_rows(store)) == 1


async def test_a_conflict_with_a_record_in_flight_is_refused(store: Store) -> None:
    outcomes: list[str] = []

    async def record(entry: JournalEntry) -> None:
        try:
            await journal.record(entry)
            outcomes.append(f"recorded {entry.amount}")
        except ReferenceConflict:
            outcomes.append(f"conflict {entry.amount}")

    async with open_journal(store) as journal, trio.open_nursery() as nursery:
        # Both start in one scheduler batch: the second finds the first in flight (whichever
        # trio runs first), before any commit could be delivered.
        nursery.start_soon(record, topup("r-1", amount=1))
        nursery.start_soon(record, topup("r-1", amount=2))
    assert len(outcomes) == 2
    assert sorted(outcome.split()[0] for outcome in outcomes) == ["conflict", "recorded"]
    winner = int(next(o for o in outcomes if o.startswith("recorded")).split()[1])
    assert journal_rows(store) == [(1, topup("r-1", amount=winner))]


async def test_a_stored_outcome_answers_repeats_after_a_restart(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        async with open_journal(store) as journal:
            recorded = await journal.record(topup("r-1"))
            journal.record_outcome_nowait(recorded, 18_765)
            # Until the outcome is committed, a repeat is answered from memory.
            assert (await journal.record(topup("r-1"))).outcome == 18_765
            await journal.flush()
            assert journal.statistics().outcomes_written == 1
    with open_store(tmp_path) as store:
        assert find_reference(store, "r-1") == Recorded(1, topup("r-1"), 18_765, duplicate=True)
        assert find_reference(store, "unknown") is None
        async with open_journal(store) as journal:
            again = await journal.record(topup("r-1"))
            assert (again.seq, again.outcome, again.duplicate) == (1, 18_765, True)


async def test_an_outcome_for_an_unknown_entry_is_not_stored(store: Store) -> None:
    async with open_journal(store) as journal:
        journal.record_outcome_nowait(Recorded(7, topup("never-recorded")), 5)
        await journal.flush()
        assert journal.statistics().outcomes_written == 0
        with pytest.raises(ValueError, match="first recording"):
            journal.record_outcome_nowait(Recorded(7, topup("x"), duplicate=True), 5)
    assert find_reference(store, "never-recorded") is None


# --- group commit and delivery order ----------------------------------------------------------


async def test_concurrent_records_share_commits_and_get_contiguous_seqs(store: Store) -> None:
    delivered: list[tuple[int, JournalEntry]] = []
    seqs: list[int] = []

    async def client(task: int) -> None:
        for n in range(10):
            recorded = await journal.record(topup(f"t{task}-{n}", meter=f"M-{task % 7}"))
            # on_committed runs before the caller is woken.
            assert (recorded.seq, recorded.entry) in delivered[-2000:]
            seqs.append(recorded.seq)

    async with open_journal(store, on_committed=delivered.extend) as journal:
        async with trio.open_nursery() as nursery:
            for task in range(100):
                nursery.start_soon(client, task)
        stats = journal.statistics()
    assert sorted(seqs) == list(range(1, 1001))
    assert [seq for seq, _ in delivered] == list(range(1, 1001))  # in journal order
    assert stats.entries == 1000 and stats.last_seq == 1000 and stats.in_flight == 0
    assert stats.commits < 1000
    assert stats.average_batch > 1
    assert stats.largest_batch > 1
    rows = journal_rows(store)
    assert [seq for seq, _ in rows] == list(range(1, 1001))
    assert {entry.reference for _, entry in rows} == {
        f"t{task}-{n}" for task in range(100) for n in range(10)
    }


async def test_max_records_splits_a_burst_over_transactions(store: Store) -> None:
    async with open_journal(store, max_records=7) as journal, trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(journal.record, topup(f"r-{n}"))
    assert journal.statistics().largest_batch <= 7
    assert [seq for seq, _ in journal_rows(store)] == list(range(1, 51))


async def test_a_failing_callback_is_counted_and_does_not_lose_the_record(store: Store) -> None:
    def explode(_: list[tuple[int, JournalEntry]]) -> None:
        raise RuntimeError("ledger bug")

    async with open_journal(store) as journal:
        journal.set_on_committed(explode)
        recorded = await journal.record(topup("r-1"))
        assert recorded.seq == 1
        assert journal.statistics().callback_errors == 1
        journal.set_on_committed(None)
        await journal.record(topup("r-2"))
    assert len(journal_rows(store)) == 2


# --- validation and lifetime ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        (JournalEntry("refund", "M-1", 1, "r", 0), "unknown journal entry kind"),
        (JournalEntry("topup", "M-1", 1.5, "r", 0), "amount must be an int"),  # type: ignore[arg-type]
        (JournalEntry("topup", "M-1", True, "r", 0), "amount must be an int"),
        (JournalEntry("topup", "M\0-1", 1, "r", 0), "meter id"),
        (JournalEntry("topup", "", 1, "r", 0), "meter id"),
        (JournalEntry("topup", "M-1", 1, "", 0), "reference"),
        (JournalEntry("topup", "M-1", 1, "r" * 600, 0), "reference"),
    ],
)
async def test_bad_entries_are_refused_and_nothing_is_written(
    store: Store, entry: JournalEntry, complaint: str
) -> None:
    async with open_journal(store) as journal:
        with pytest.raises(ValueError, match=complaint):
            await journal.record(entry)
    assert journal_rows(store) == []


async def test_a_closed_journal_refuses_records(store: Store) -> None:
    async with open_journal(store) as journal:
        pass
    with pytest.raises(JournalBroken, match="closed"):
        await journal.record(topup("r-1"))
    with pytest.raises(JournalBroken, match="closed"):
        journal.put_snapshots_nowait([("M-1", b"")])


# --- snapshots and flush ----------------------------------------------------------------------


async def test_snapshots_are_readable_after_flush(store: Store) -> None:
    states = {f"M-{n}": MeterState(balance=n * 100, journal_seq=n) for n in range(25)}
    async with open_journal(store, chunk_puts=10) as journal:
        journal.put_snapshots_nowait([(meter, encode_state(s)) for meter, s in states.items()])
        recorded = await journal.record(topup("r-1"))  # not held up by the snapshot
        await journal.flush()
        stats = journal.statistics()
        assert stats.snapshots_written == 25
        assert stats.commits >= 3  # 25 puts in chunks of at most 10
        assert stats.pending_background_puts == 0
        raw = store.get_snapshot("M-7")
        assert raw is not None and decode_state(raw) == states["M-7"]
        assert load_snapshots(store) == states
        # A newer snapshot replaces the older one.
        journal.put_snapshots_nowait([("M-7", encode_state(MeterState(balance=1, journal_seq=9)))])
        await journal.flush()
        assert load_snapshots(store)["M-7"] == MeterState(balance=1, journal_seq=9)
    assert recorded.seq == 1


async def test_writes_bigger_than_the_pipe_interleave_without_losing_a_frame(
    store: Store,
) -> None:
    # 40 queued snapshot chunks pass EARLY_WRITE, so the link writes from the caller's stack; a
    # frame of ~2,000 states is far bigger than a pipe buffer, so the write is partial and the
    # sender task must finish it before anything else goes down the pipe.
    states = {f"M-{n}": MeterState(balance=n, journal_seq=n) for n in range(20_000)}
    encoded = [(meter, encode_state(state)) for meter, state in states.items()]
    seqs: list[int] = []

    async def client(task: int) -> None:
        for n in range(5):
            seqs.append((await journal.record(topup(f"p{task}-{n}"))).seq)

    async with open_journal(store) as journal:
        async with trio.open_nursery() as nursery:
            for start in range(0, len(encoded), 500):
                journal.put_snapshots_nowait(encoded[start:start + 500])
                if start % 5000 == 0:
                    nursery.start_soon(client, start)
        await journal.flush()
        assert journal.statistics().snapshots_written == len(states)
    assert sorted(seqs) == list(range(1, len(seqs) + 1)) and len(seqs) == 20
    assert load_snapshots(store) == states


async def test_close_writes_what_was_queued(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        async with open_journal(store, chunk_puts=3) as journal:
            journal.put_snapshots_nowait(
                [(f"M-{n}", encode_state(MeterState.opening(n))) for n in range(10)]
            )
            journal.put_history_nowait([("M-1", 0, 5, 6, "flat")])
    with open_store(tmp_path) as store:
        assert len(load_snapshots(store)) == 10


# --- a full data directory --------------------------------------------------------------------


async def test_a_tiny_map_grows_and_keeps_everything(tmp_path: Path) -> None:
    detail = "x" * 900
    with open_store(tmp_path, map_size=64 * KiB, max_map_size=64 * KiB * KiB) as store:
        async with open_journal(store) as journal, trio.open_nursery() as nursery:
            for n in range(300):
                nursery.start_soon(journal.record, topup(f"r-{n}", detail=detail))
        stats = journal.statistics()
        assert stats.map_grows >= 2
        assert stats.map_size > 64 * KiB
        assert stats.entries == 300
    with open_store(tmp_path, map_size=64 * KiB) as store:
        rows = journal_rows(store)
    assert [seq for seq, _ in rows] == list(range(1, 301))
    assert all(entry.detail == detail for _, entry in rows)


async def test_a_capped_map_refuses_money_with_storage_full_and_keeps_what_it_had(
    tmp_path: Path,
) -> None:
    detail = "x" * 900
    acknowledged: list[Recorded] = []
    with open_store(tmp_path, map_size=128 * KiB, max_map_size=128 * KiB) as store:
        async with open_journal(store) as journal:
            with pytest.raises(StorageFull) as full:
                for n in range(1000):
                    acknowledged.append(await journal.record(topup(f"r-{n}", detail=detail)))
            message = str(full.value)
            assert str(tmp_path) in message and "full" in message
            assert 10 < len(acknowledged) < 1000
            assert journal.last_seq == len(acknowledged)
            # A repeat of an acknowledged reference is still answered (nothing to write).
            assert (await journal.record(topup("r-0", detail=detail))).duplicate
    with open_store(tmp_path, map_size=1024 * KiB) as store:
        rows = journal_rows(store)
        assert [seq for seq, _ in rows] == [r.seq for r in acknowledged]
        async with open_journal(store) as journal:  # room again: the journal goes on
            assert (await journal.record(topup("after"))).seq == len(acknowledged) + 1


async def test_snapshots_that_do_not_fit_are_dropped_before_money(tmp_path: Path) -> None:
    big = [(f"M-{n}", b"s" * 1000) for n in range(400)]  # ~400 KiB: never fits in 128 KiB
    with open_store(tmp_path, map_size=128 * KiB, max_map_size=128 * KiB) as store:
        async with open_journal(store) as journal:
            journal.put_snapshots_nowait(big)
            recorded = await journal.record(topup("r-1"))
            with pytest.raises(StorageFull, match="400 snapshot/history writes were dropped"):
                await journal.flush()
            await journal.flush()  # reported once
            stats = journal.statistics()
            assert stats.dropped_puts == 400
            assert stats.snapshots_written == 0
        assert recorded.seq == 1
        assert journal_rows(store) == [(1, topup("r-1"))]
        assert load_snapshots(store) == {}


def test_a_repeat_in_the_same_transaction_as_the_outcome_sees_the_outcome(store: Store) -> None:
    """Regression: outcomes are written before the batch's records are looked up."""
    results: list[BatchResult] = []
    writer = Writer(store)  # the transaction logic alone, run here

    def request(token: int) -> RecordRequest:
        return RecordRequest(token, "M-1", b"r-1", encode_entry(topup("r-1")))

    def transact() -> None:
        results.append(writer.write(writer.take()))

    writer.submit_record(request(1))
    transact()
    assert [request.seq for request in results[0].committed] == [1]
    repeat = request(2)
    writer.submit_outcome(1, "r-1", 18_765)
    writer.submit_record(repeat)
    transact()  # one transaction with both
    assert results[1].outcomes == [("r-1", 18_765)]
    assert results[1].settled == [repeat]
    assert repeat.first is not None
    first_seq, raw, outcome = repeat.first
    assert (first_seq, decode_entry(raw), outcome) == (1, topup("r-1"), 18_765)
