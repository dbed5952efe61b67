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
from persistence.damage import DamagedRecord, peek_entry
from persistence.entries import JournalEntry, MeterMessage
from persistence.journal import open_journal
from persistence.keys import meter_key
from persistence.recovery import (
    Recovered,
    entries_after,
    find_reference,
    load_snapshots,
    meter_entries_after,
    recover_meter,
    recover_states,
)
from persistence.store import Store, open_store
from persistence.writer import Background, RecordRequest, Writer
from policies.meter import step
from policies.records import AdjustmentApplied, MeterState, TopUpApplied
from tests.persistence.damaged import (
    NOT_MSGPACK,
    damaged_entries,
    damaged_snapshots,
    poke,
    poke_entry,
    tampered,
    unattributable_entries,
)
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


# --- damaged records: the meter is quarantined, the others recover -----------------------------


def index_all(store: Store) -> None:
    """Let the writer index everything journaled so far (entries past it stay in the tail)."""
    writer = Writer(store)
    while writer.indexing:
        writer.write(writer.take())


@pytest.mark.parametrize("kind", sorted(damaged_snapshots(MeterState(balance=1))))
@pytest.mark.parametrize("plan", ["tail", "index"])
def test_a_damaged_snapshot_quarantines_its_meter_only(
    store: Store, plans: list[str], kind: str, plan: str
) -> None:
    meters = ["M-1", "M-2", "M-3"]
    write(store, [topup(n, meters[n % 3]) for n in range(1, 7)])
    write(store, [], {meter: MeterState(balance=1_000, journal_seq=6) for meter in meters})
    write(store, [topup(7, "M-1", 5), topup(8, "M-2", 7)])
    bad = damaged_snapshots(MeterState(balance=1_000, journal_seq=6))[kind]
    poke(store, "snapshots", b"M-2", bad)
    opening = dict.fromkeys(meters, 0)
    if plan == "index":
        opening["M-never"] = 0  # journal_seq 0: far more entries than meters

    recovered = recover_states(store, opening, add)

    assert plans == [plan]
    assert set(recovered.quarantined) == {"M-2"}
    damage = recovered.quarantined["M-2"]
    assert (damage.database, damage.key, damage.meter_id) == ("snapshots", '"M-2"', "M-2")
    assert str(damage).startswith('snapshots["M-2"]: ')
    assert recovered.states["M-1"] == MeterState(balance=1_005, journal_seq=7)
    assert recovered.states["M-3"] == MeterState(balance=1_000, journal_seq=6)
    assert "M-2" not in recovered.states and recovered.skipped == ()
    assert store.get_snapshot("M-2") == bad  # recovery writes nothing


def test_a_snapshot_ahead_of_the_journal_quarantines_its_meter(store: Store) -> None:
    """A journal restored from an older backup than the snapshot: entries the snapshot claims
    are missing, and later top-ups would get seqs it already counts."""
    write(store, [topup(1, "M-1"), topup(2, "M-2")],
          {"M-1": MeterState(balance=5, journal_seq=9), "M-2": MeterState(balance=5,
                                                                          journal_seq=2)})
    recovered = recover_states(store, {"M-1": 0, "M-2": 0}, add)
    assert str(recovered.quarantined["M-1"]) == (
        'snapshots["M-1"]: includes journal entries up to seq 9, but the journal ends at seq 2 '
        "(the journal is older than the snapshot)")
    assert recovered.states == {"M-2": MeterState(balance=5, journal_seq=2)}


@pytest.mark.parametrize("kind", sorted(damaged_entries(topup(1, "M-1"))))
@pytest.mark.parametrize("where", ["indexed", "tail"])
@pytest.mark.parametrize("plan", ["tail", "index"])
def test_a_damaged_journal_entry_quarantines_its_meter_only(
    store: Store, plans: list[str], kind: str, where: str, plan: str
) -> None:
    meters = [f"M-{n}" for n in range(1, 7)]
    owners = ["M-1", "M-2", "M-3", "M-1", "M-3", "M-2", "M-1", "M-3", "M-4"]  # seq 1..9
    entries = [topup(n, meter, amount=n) for n, meter in enumerate(owners, start=1)]
    write(store, entries[:3], {meter: MeterState(balance=0, journal_seq=3) for meter in meters})
    write(store, entries[3:])
    if where == "indexed":
        index_all(store)
    poke_entry(store, 5, damaged_entries(entries[4])[kind])  # seq 5 is M-3's
    opening = dict.fromkeys(meters, 0)
    if plan == "index":
        opening["M-never"] = 0  # journal_seq 0: more entries to read than meters

    recovered = recover_states(store, opening, add)

    assert plans == [plan]
    assert set(recovered.quarantined) == {"M-3"}
    damage = recovered.quarantined["M-3"]
    assert (damage.database, damage.key, damage.meter_id) == ("journal", "seq 5", "M-3")
    assert str(damage).startswith("journal[seq 5]: not a ")
    assert {m: recovered.states[m].balance for m in ("M-1", "M-2", "M-4", "M-5")} == {
        "M-1": 4 + 7, "M-2": 6, "M-4": 9, "M-5": 0}
    assert recovered.skipped == ()


def test_an_entry_that_does_not_apply_quarantines_its_meter(store: Store) -> None:
    write(store, [topup(1, "M-1"), topup(2, "M-2"), topup(3, "M-1")])

    def apply(state: MeterState, message: object) -> MeterState:
        if isinstance(message, TopUpApplied) and message.reference == "ref-3":
            raise ValueError("a policy refuses it")
        return add(state, message)

    recovered = recover_states(store, {"M-1": 0, "M-2": 0}, apply)
    assert str(recovered.quarantined["M-1"]) == (
        "journal[seq 3]: does not apply to meter M-1: ValueError: a policy refuses it")
    assert recovered.states == {"M-2": MeterState(balance=100, journal_seq=2)}


def test_entries_that_overflow_a_balance_quarantine_the_meter(store: Store) -> None:
    write(store, [topup(1, "M-1", 2**62), topup(2, "M-1", 2**62), topup(3, "M-2")])
    recovered = recover_states(store, {"M-1": 0, "M-2": 0}, add)
    assert str(recovered.quarantined["M-1"]).startswith(
        "journal[seq 2]: leaves meter M-1 in an unusable state: balance is 92233720368547758")
    assert set(recovered.states) == {"M-2"}


@pytest.mark.parametrize("kind", sorted(unattributable_entries(topup(1, "M-1"))))
@pytest.mark.parametrize("plan", ["tail", "index"])
def test_an_entry_of_no_readable_meter_is_skipped_and_reported(
    store: Store, plans: list[str], kind: str, plan: str
) -> None:
    write(store, [topup(1, "M-1"), topup(2, "M-2"), topup(3, "M-1"), topup(4, "M-2")])
    poke_entry(store, 2, unattributable_entries(topup(2, "M-2"))[kind])
    index_all(store)  # seq 2 cannot be indexed: nobody can say whose it is
    write(store, [topup(5, "M-1"), topup(6, "M-2")])
    poke_entry(store, 6, unattributable_entries(topup(6, "M-2"))[kind])  # in the tail
    opening = {f"M-{n}": 0 for n in range(1, 7)}
    if plan == "index":
        opening = {"M-1": 0, "M-2": 0}

    recovered = recover_states(store, opening, add)

    assert plans == [plan]
    assert recovered.quarantined == {}
    assert (recovered.states["M-1"].balance, recovered.states["M-2"].balance) == (300, 100)
    # The index plan reads the journal only past the watermark, the tail plan all of it.
    skipped = [str(damage).split(":")[0] for damage in recovered.skipped]
    assert skipped == (["journal[seq 2]", "journal[seq 6]"] if plan == "tail"
                       else ["journal[seq 6]"])


def test_an_indexed_entry_damaged_past_reading_is_its_meters_in_either_plan(
    store: Store, plans: list[str]
) -> None:
    """Indexed before it was damaged: the meter_journal key says whose it is."""
    write(store, [topup(1, "M-1"), topup(2, "M-1"), topup(3, "M-2")])
    index_all(store)
    poke_entry(store, 2, NOT_MSGPACK)
    with pytest.raises(DamagedRecord, match=r"^journal\[seq 2\]: not a journal entry"):
        list(meter_entries_after(store, "M-1", 0))
    for opening in ({"M-1": 0, "M-2": 0, "M-3": 0}, {"M-1": 0, "M-2": 0}):
        recovered = recover_states(store, opening, add)
        assert {meter: damage.key for meter, damage in recovered.quarantined.items()} == {
            "M-1": "seq 2"}
        assert recovered.states["M-2"].balance == 100
    assert plans == ["tail", "index"]


def test_a_damaged_entry_of_a_meter_not_configured_is_skipped(store: Store) -> None:
    write(store, [topup(1, "M-1"), topup(2, "gone")])
    poke_entry(store, 2, damaged_entries(topup(2, "gone"))["a string amount"])
    recovered = recover_states(store, {"M-1": 0}, add)
    assert recovered.states == {"M-1": MeterState(balance=100, journal_seq=1)}
    assert [(d.key, d.meter_id) for d in recovered.skipped] == [("seq 2", "gone")]


def test_an_index_key_that_points_at_the_wrong_entry_quarantines_the_meter(store: Store) -> None:
    write(store, [topup(n, "M-1" if n % 2 else "M-2") for n in range(1, 5)])
    index_all(store)
    poke(store, "meter_journal", meter_key("M-1", 2), b"")  # seq 2 is M-2's
    poke(store, "meter_journal", meter_key("M-2", 9), b"")  # seq 9 does not exist
    opening = {"M-1": 0, "M-2": 0, "M-never": 0}
    recovered = recover_states(store, opening, add)
    assert {meter: str(damage) for meter, damage in recovered.quarantined.items()} == {
        "M-1": 'meter_journal["M-1" seq 2]: points at journal entry seq 2, which is meter M-2\'s',
    }
    # seq 9 is past the watermark: the index plan reads the journal's tail there, not the key.
    assert recovered.states["M-2"].balance == 200


# --- the one-meter path (a supervisor's restart) and the writer's start ------------------------


@pytest.mark.parametrize("where", ["indexed", "tail"])
def test_a_restart_names_its_own_damaged_entry_and_skips_an_unreadable_one(
    store: Store, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    write(store, [topup(1, "M-1"), topup(2, "M-10"), topup(3, "M-1"), topup(4, "M-1")])
    if where == "indexed":
        index_all(store)
    poke_entry(store, 2, damaged_entries(topup(2, "M-10"))["a string amount"])  # holds b"M-1"
    assert [seq for seq, _ in meter_entries_after(store, "M-1", 0)] == [1, 3, 4]

    # Unreadable from its first byte, though it holds the bytes of "M-1":
    poke_entry(store, 4, b"\xc1" + encode_entry(topup(4, "M-1")))
    if where == "indexed":  # the index says it is M-1's
        with pytest.raises(DamagedRecord, match=r"^journal\[seq 4\]: not a journal entry"):
            list(meter_entries_after(store, "M-1", 0))
    else:  # nothing says whose it is: skipped, and logged
        assert [seq for seq, _ in meter_entries_after(store, "M-1", 0)] == [1, 3]
        assert "journal[seq 4]: not a journal entry" in caplog.text
        assert "skipped: whose entry it is cannot be read" in caplog.text
    poke_entry(store, 3, damaged_entries(topup(3, "M-1"))["an amount beyond 64 bits"])
    with pytest.raises(DamagedRecord) as raised:
        list(meter_entries_after(store, "M-1", 0))
    assert str(raised.value).startswith("journal[seq 3]: not a usable journal entry: amount")
    assert raised.value.damage.meter_id == "M-1"


def test_recover_meter_rebuilds_one_meter_or_names_its_damage(store: Store) -> None:
    write(store, [topup(1, "M-1"), topup(2, "M-1", 50)], {"M-1": MeterState(balance=7,
                                                                            journal_seq=1)})
    assert recover_meter(store, "M-1", 0, add) == MeterState(balance=57, journal_seq=2)
    assert recover_meter(store, "M-9", 300, add) == MeterState.opening(300)
    good = store.get_snapshot("M-1")
    assert good is not None
    poke(store, "snapshots", b"M-1", NOT_MSGPACK)
    with pytest.raises(DamagedRecord, match=r'^snapshots\["M-1"\]: not a meter state snapshot'):
        recover_meter(store, "M-1", 0, add)
    poke(store, "snapshots", b"M-1", good)  # repaired from a copy
    assert recover_meter(store, "M-1", 0, add) == MeterState(balance=57, journal_seq=2)


def test_the_writer_starts_over_damaged_tail_entries_and_indexes_what_can_be_read(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    write(store, [topup(1, "M-1"), topup(2, "M-2"), topup(3, "M-1"), topup(4, "M-2")])
    poke_entry(store, 2, damaged_entries(topup(2, "M-2"))["a string amount"])
    poke_entry(store, 3, NOT_MSGPACK)

    writer = Writer(store)  # PendingIndex.load reads the whole tail

    assert len(writer.index) == 4
    assert "journal[seq 2]: not a usable journal entry" in caplog.text
    assert "journal[seq 3]: not a journal entry" in caplog.text
    while writer.indexing:
        writer.write(writer.take())
    with store.read() as txn:
        assert txn.get(meter_key("M-2", 2), db=store.meter_journal) == b""
        assert txn.get(b"ref-2", db=store.refs) is not None  # a repeat stays a duplicate
        assert txn.stat(store.meter_journal)["entries"] == 3  # seq 3 has no readable meter
    # Indexed, the damaged entry still quarantines its meter, and nobody else.
    recovered = recover_states(store, {"M-1": 0, "M-2": 0, "M-never": 0}, add)
    assert set(recovered.quarantined) == {"M-2"}
    assert recovered.states["M-1"].balance == 100


def test_a_reference_lookup_reads_what_it_can_of_a_damaged_tail(store: Store) -> None:
    write(store, [topup(1, "M-1"), topup(2, "M-1"), topup(3, "M-2")])
    poke_entry(store, 2, damaged_entries(topup(2, "M-1"))["a string amount"])
    poke_entry(store, 1, NOT_MSGPACK)
    found = find_reference(store, "ref-3")
    assert found is not None and found.seq == 3
    with pytest.raises(DamagedRecord, match=r"^journal\[seq 2\]"):
        find_reference(store, "ref-2")
    assert find_reference(store, "ref-1") is None  # nothing readable says it was recorded


def test_peek_entry_reads_an_entry_as_far_as_it_goes() -> None:
    entry = JournalEntry("topup", "M-7", 100, "pay-1", 5)
    assert peek_entry(encode_entry(entry)) == ("M-7", "pay-1")
    cut = encode_entry(entry)
    assert peek_entry(cut[: cut.index(b"pay-1")]) == ("M-7", "")
    assert peek_entry(NOT_MSGPACK) == ("", "")
    assert peek_entry(tampered(encode_entry(entry), 2, "M\0x")) == ("", "pay-1")
