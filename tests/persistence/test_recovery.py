"""Recovery: snapshot + newer journal entries, by either plan."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persistence import recovery
from persistence.codec import encode_entry, encode_state
from persistence.entries import JournalEntry, MeterMessage
from persistence.journal import open_journal
from persistence.recovery import (
    Recovered,
    entries_after,
    load_snapshots,
    meter_entries_after,
    recover_states,
)
from persistence.store import Store, open_store
from persistence.writer import Background, RecordRequest, Writer
from policies.meter import step
from policies.records import AdjustmentApplied, MeterState, TopUpApplied
from tests.policies.builders import policy


def write(store: Store, entries: list[JournalEntry],
          snapshots: dict[str, MeterState] | None = None) -> None:
    """Journal ``entries`` (and put ``snapshots``) through the real writer, synchronously."""
    writer = Writer(store)
    for token, entry in enumerate(entries):
        request = RecordRequest(token, entry.meter_id, entry.reference.encode(),
                                encode_entry(entry))
        writer.submit_record(request)
    if snapshots:
        items = [(meter, encode_state(state)) for meter, state in snapshots.items()]
        writer.submit_background(Background("snapshots", items))
    while writer.busy:
        writer.write(writer.take())


def add(state: MeterState, message: object) -> MeterState:
    """A minimal replay step: credit the amount, remember the seq."""
    assert isinstance(message, TopUpApplied | AdjustmentApplied)
    return attrs.evolve(state, balance=state.balance + message.amount, journal_seq=message.seq)


def topup(n: int, meter: str, amount: int = 100) -> JournalEntry:
    return JournalEntry("topup", meter, amount, f"ref-{n}", n)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path) as opened:
        yield opened


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which plan each recover_states call used."""
    used: list[str] = []
    tail, index = recovery._tail_plan, recovery._index_plan

    def spy_tail(*args: object) -> object:
        used.append("tail")
        return tail(*args)  # type: ignore[arg-type]

    def spy_index(*args: object) -> object:
        used.append("index")
        return index(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(recovery, "_tail_plan", spy_tail)
    monkeypatch.setattr(recovery, "_index_plan", spy_index)
    return used


# --- the two plans ----------------------------------------------------------------------------


def test_tail_plan_after_a_clean_stop(store: Store, plans: list[str]) -> None:
    meters = [f"M-{n}" for n in range(5)]
    write(store, [topup(n, meters[n % 5]) for n in range(1, 11)])  # seq 1..10, 2 per meter
    write(store, [], {meter: MeterState(balance=1_000 + i, journal_seq=10)
                      for i, meter in enumerate(meters)})
    # Three entries after the snapshot: 13 - 10 <= 5 meters, so one pass over the tail.
    write(store, [topup(11, "M-1", 5), topup(12, "M-3", 7), topup(13, "M-1", 11)])
    states = recover_states(store, dict.fromkeys(meters, 0), add).states
    assert plans == ["tail"]
    assert {meter: (s.balance, s.journal_seq) for meter, s in states.items()} == {
        "M-0": (1_000, 10), "M-1": (1_001 + 5 + 11, 13), "M-2": (1_002, 10),
        "M-3": (1_003 + 7, 12), "M-4": (1_004, 10),
    }


def test_index_plan_when_a_meter_was_never_snapshotted(store: Store, plans: list[str]) -> None:
    write(store, [topup(n, "M-1" if n % 2 else "M-10") for n in range(1, 21)])
    write(store, [], {"M-1": MeterState(balance=5_000, journal_seq=15)})
    states = recover_states(store, {"M-1": 0, "M-10": 2_500, "M-2": 700}, add).states
    assert plans == ["index"]  # M-10 starts at seq 0: 20 entries > 3 meters
    # M-1: snapshot at 15 plus its entries 17 and 19.
    assert (states["M-1"].balance, states["M-1"].journal_seq) == (5_200, 19)
    # M-10 (whose keys sort next to M-1's): opening balance plus all ten of its entries.
    assert (states["M-10"].balance, states["M-10"].journal_seq) == (2_500 + 1_000, 20)
    # No snapshot and no entries: the opening balance, as configured.
    assert states["M-2"] == MeterState.opening(700)


def test_no_meters_no_work(store: Store, plans: list[str]) -> None:
    write(store, [topup(1, "M-1")])
    assert recover_states(store, {}, add) == Recovered({}, {})
    assert plans == []


def test_an_empty_data_directory_recovers_opening_balances(store: Store) -> None:
    assert recover_states(store, {"M-1": 100, "M-2": 0}, add).states == {
        "M-1": MeterState.opening(100), "M-2": MeterState.opening(0),
    }


def test_snapshots_of_meters_not_configured_are_ignored_and_kept(store: Store) -> None:
    write(store, [topup(1, "gone")], {"gone": MeterState(balance=9, journal_seq=1)})
    assert recover_states(store, {"M-1": 5}, add) == Recovered({"M-1": MeterState.opening(5)}, {})
    assert load_snapshots(store) == {"gone": MeterState(balance=9, journal_seq=1)}


def test_apply_can_differ_per_meter(store: Store) -> None:
    write(store, [topup(1, "M-1"), topup(2, "M-2")])

    def double(state: MeterState, message: object) -> MeterState:
        assert isinstance(message, TopUpApplied)
        return attrs.evolve(state, balance=state.balance + 2 * message.amount,
                            journal_seq=message.seq)

    states = recover_states(store, {"M-1": 0, "M-2": 0}, {"M-1": add, "M-2": double}).states
    assert (states["M-1"].balance, states["M-2"].balance) == (100, 200)


async def test_recovery_with_the_real_policy_matches_the_journal(tmp_path: Path) -> None:
    """Through open_journal and the meter policy, as the app does it."""
    meter_policy = policy()
    with open_store(tmp_path) as store:
        async with open_journal(store) as journal:
            await journal.record(JournalEntry("topup", "M-1", 5_000, "a", 1_000))
            await journal.record(JournalEntry("adjustment", "M-1", -1_200, "b", 2_000, "fix"))
            await journal.record(JournalEntry("topup", "M-2", 300, "c", 3_000))
            snapshot = step(MeterState.opening(10_000),
                            TopUpApplied(1, 5_000, "a", 1_000), meter_policy)[0]
            journal.put_snapshots_nowait([("M-1", encode_state(snapshot))])
            await journal.flush()

    def apply(state: MeterState, message: object) -> MeterState:
        return step(state, message, meter_policy)[0]

    with open_store(tmp_path) as store:
        states = recover_states(store, {"M-1": 10_000, "M-2": 0}, apply).states
    assert (states["M-1"].balance, states["M-1"].journal_seq) == (13_800, 2)
    assert (states["M-2"].balance, states["M-2"].journal_seq) == (300, 3)


journals = st.lists(st.sampled_from(["M-1", "M-10", "M-2", "M-20", "X"]), max_size=40)


@settings(max_examples=40)
@given(journals, st.dictionaries(st.sampled_from(["M-1", "M-10", "M-2", "X"]),
                                 st.integers(0, 45)))
def test_both_plans_find_exactly_the_newer_entries(
    meters: list[str], snapshot_seqs: dict[str, int]
) -> None:
    entries = [topup(n, meter, amount=n) for n, meter in enumerate(meters, start=1)]
    snapshots = {meter: MeterState(balance=0, journal_seq=min(seq, len(entries)))
                 for meter, seq in snapshot_seqs.items()}
    opening = dict.fromkeys(["M-1", "M-10", "M-2", "M-3"], 0)
    with tempfile.TemporaryDirectory() as directory, open_store(directory) as store:
        write(store, entries, snapshots)
        states = {meter: snapshots.get(meter, MeterState.opening(0)) for meter in opening}
        expected = {
            meter: [(n, entry) for n, entry in enumerate(entries, start=1)
                    if entry.meter_id == meter and n > state.journal_seq]
            for meter, state in states.items()
        }
        expected = {meter: found for meter, found in expected.items() if found}
        oldest = min(state.journal_seq for state in states.values())
        with store.read() as txn:
            assert recovery._tail_plan(txn, store, states, oldest) == (expected, [])
            assert recovery._index_plan(txn, store, states) == (expected, [])
        recovered = recover_states(store, opening, add).states
    for meter, state in states.items():
        assert recovered[meter].balance == sum(n for n, _ in expected.get(meter, []))
        assert recovered[meter].journal_seq == max(
            [state.journal_seq, *(n for n, _ in expected.get(meter, []))])


# --- the readers ------------------------------------------------------------------------------


def test_entries_after_reads_in_pages(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recovery, "PAGE", 3)
    entries = [topup(n, f"M-{n % 4}") for n in range(1, 11)]
    write(store, entries)
    assert list(entries_after(store, 0)) == list(enumerate(entries, start=1))
    assert [seq for seq, _ in entries_after(store, 7)] == [8, 9, 10]
    assert [seq for seq, _ in entries_after(store, 9)] == [10]
    assert list(entries_after(store, 10)) == []
    assert list(entries_after(store, 99)) == []


def test_meter_entries_after_gives_the_messages_an_actor_applies(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recovery, "PAGE", 2)
    write(store, [
        topup(1, "M-1"), topup(2, "M-10"), topup(3, "M-1", 50),
        JournalEntry("adjustment", "M-1", -30, "ref-4", 4, "meter swap"), topup(5, "M-1", 70),
        JournalEntry("apportionment", "M-1", -5, "ref-6", 6),
    ])
    messages: list[tuple[int, MeterMessage]] = list(meter_entries_after(store, "M-1", 1))
    assert messages == [
        (3, TopUpApplied(3, 50, "ref-3", 3)),
        (4, AdjustmentApplied(4, -30, "meter swap", 4)),
        (5, TopUpApplied(5, 70, "ref-5", 5)),
        (6, AdjustmentApplied(6, -5, "apportionment", 6)),
    ]
    assert [seq for seq, _ in meter_entries_after(store, "M-10", 0)] == [2]
    assert list(meter_entries_after(store, "M-1", 6)) == []
    assert list(meter_entries_after(store, "M-3", 0)) == []


def test_reading_while_the_journal_writes_never_blocks_growth(tmp_path: Path) -> None:
    """A slow consumer of entries_after holds no read transaction between pages."""
    with open_store(tmp_path, map_size=64 * 1024) as store:
        write(store, [topup(n, "M-1") for n in range(1, 6)])
        reader = entries_after(store, 0)
        assert next(reader)[0] == 1
        store.grow_map()  # would wait forever if the generator kept a transaction open
        assert [seq for seq, _ in reader] == [2, 3, 4, 5]
