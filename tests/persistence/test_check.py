"""``check_store``: every kind of damage is found and named by database and key; reads only."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from persistence.check import ERROR, NOTE, CheckReport, check_store
from persistence.codec import encode_entry, encode_interval, encode_outcome, encode_state
from persistence.entries import JournalEntry
from persistence.index import INDEXED_KEY
from persistence.keys import meter_key, pack_u64
from persistence.readonly import open_store_readonly
from persistence.store import Store, StoreError, open_store
from persistence.writer import Background, RecordRequest, Writer
from policies.records import MeterState
from tests.persistence.damaged import (
    NOT_MSGPACK,
    damaged_entries,
    damaged_snapshots,
    delete,
    poke,
    poke_entry,
    unattributable_entries,
)

METERS = ("M-1", "M-2", "M-3")


def topup(n: int, meter: str) -> JournalEntry:
    return JournalEntry("topup", meter, 100 * n, f"ref-{n}", n)


def build(store: Store, *, entries: int = 9) -> None:
    """A healthy directory: entries, outcomes, snapshots of every meter, some history."""
    writer = Writer(store)
    journal = [topup(n, METERS[n % 3]) for n in range(1, entries + 1)]
    for token, entry in enumerate(journal):
        writer.submit_record(RecordRequest(token, entry.meter_id, entry.reference.encode(),
                                           encode_entry(entry)))
    while writer.busy:
        writer.write(writer.take())
    for seq, entry in enumerate(journal, start=1):
        writer.submit_outcome(seq, entry.reference, 10_000 + seq)
    writer.submit_background(Background("snapshots", [
        (meter, encode_state(MeterState(balance=10_000, journal_seq=entries)))
        for meter in METERS]))
    writer.submit_background(Background("history", [
        (meter, 900_000 * k, 250, 25, "flat") for meter in METERS for k in range(3)]))
    while writer.busy or writer.indexing:
        writer.write(writer.take())


def unindex(store: Store) -> None:
    """Back to the state before the writer indexed anything: every entry in the tail."""
    for database in ("refs", "meter_journal"):
        with store.read() as txn:
            keys = [key for key, _ in txn.cursor(db=getattr(store, database)).iternext()]
        for key in keys:
            delete(store, database, key)
    poke(store, "meta", INDEXED_KEY, pack_u64(0))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path) as opened:
        build(opened)
        yield opened


def problems(report: CheckReport) -> list[str]:
    return [str(finding) for finding in report.errors]


def test_a_healthy_directory_is_clean(store: Store) -> None:
    report = check_store(store, METERS)
    assert report.clean and report.findings == ()
    assert report.counts == {"journal": 9, "outcomes": 9, "refs": 9, "meter_journal": 9,
                             "snapshots": 3, "history": 9, "audit": 0, "days": 3}
    assert (report.schema, report.last_seq, report.indexed) == (2, 9, 9)


def test_an_unindexed_tail_is_not_a_problem(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        build(store)
        unindex(store)
        report = check_store(store, METERS)
    assert report.clean and (report.indexed, report.counts["refs"]) == (0, 0)


def test_snapshots_of_meters_not_configured_are_noted_not_errors(store: Store) -> None:
    report = check_store(store, ["M-1", "M-2"])
    assert report.clean
    assert [(f.severity, str(f)) for f in report.findings] == [
        (NOTE, 'snapshots["M-3"]: a snapshot of a meter that is not in the config (kept; '
               "harmless, used again if the meter is configured again)")]


@pytest.mark.parametrize("kind", sorted(damaged_snapshots(MeterState(balance=1))))
def test_each_kind_of_damaged_snapshot_is_named(store: Store, kind: str) -> None:
    poke(store, "snapshots", b"M-2", damaged_snapshots(MeterState(balance=1))[kind])
    report = check_store(store, METERS)
    assert not report.clean and report.error_count == 1
    assert problems(report)[0].startswith('snapshots["M-2"]: ')


def test_a_snapshot_ahead_of_the_journal_is_named(store: Store) -> None:
    poke(store, "snapshots", b"M-1", encode_state(MeterState(balance=1, journal_seq=50)))
    assert problems(check_store(store, METERS)) == [
        'snapshots["M-1"]: includes journal entries up to seq 50, but the journal ends at seq 9']


@pytest.mark.parametrize("kind", sorted(damaged_entries(topup(1, "M-1"))))
def test_each_kind_of_damaged_entry_is_named_with_its_meter(store: Store, kind: str) -> None:
    poke_entry(store, 4, damaged_entries(topup(4, "M-2"))[kind])
    found = problems(check_store(store, METERS))
    assert found[0].startswith("journal[seq 4]: not a ") and found[0].endswith("(meter M-2)")
    if kind == "cut in its reference":  # the reference cannot be read to match its refs key
        assert found[1:] == ['refs["ref-4"]: points at journal entry seq 4, whose reference is '
                             "unreadable"]
    else:
        assert len(found) == 1


def test_an_unreadable_indexed_entry_is_named_with_the_meter_the_index_says(store: Store) -> None:
    poke_entry(store, 4, NOT_MSGPACK)
    assert problems(check_store(store, METERS)) == [
        "journal[seq 4]: not a journal entry: FormatError (meter M-2)",
        'refs["ref-4"]: points at journal entry seq 4, whose reference is unreadable',
    ]


@pytest.mark.parametrize("kind", sorted(unattributable_entries(topup(1, "M-1"))))
def test_an_entry_of_no_readable_meter_is_named(tmp_path: Path, kind: str) -> None:
    with open_store(tmp_path) as store:
        build(store)
        unindex(store)
        poke_entry(store, 5, unattributable_entries(topup(5, "M-3"))[kind])
        found = problems(check_store(store, METERS))
    assert len(found) == 1 and found[0].startswith("journal[seq 5]: not a ")
    assert found[0].endswith("(its meter cannot be read)")


def test_a_missing_or_wrong_index_key_is_named(store: Store) -> None:
    delete(store, "meter_journal", meter_key("M-1", 3))
    poke(store, "meter_journal", meter_key("M-1", 4), b"")  # seq 4 is M-2's
    poke(store, "meter_journal", meter_key("M-3", 7), b"")  # seq 7 is M-2's
    assert problems(check_store(store, METERS)) == [
        'meter_journal["M-1" seq 3]: missing: journal entry seq 3 is up to the index watermark '
        "(seq 9) but not indexed",
        'meter_journal["M-1" seq 4]: points at journal entry seq 4, which is meter M-2\'s',
        'meter_journal["M-3" seq 7]: points at journal entry seq 7, which is meter M-2\'s',
    ]


def test_index_keys_past_the_watermark_or_the_journal_are_named(store: Store) -> None:
    poke(store, "meta", INDEXED_KEY, pack_u64(8))
    found = problems(check_store(store, METERS))
    assert found == [
        'meter_journal["M-1" seq 9]: indexed past the watermark (seq 8)',
        'refs["ref-9"]: indexed past the watermark (seq 8)',
    ]
    poke(store, "meta", INDEXED_KEY, pack_u64(12))
    assert problems(check_store(store, METERS)) == [
        'meta["indexed"]: the indexes claim entries up to seq 12, but the journal ends at seq 9']


def test_a_missing_or_wrong_reference_key_is_named(store: Store) -> None:
    delete(store, "refs", b"ref-2")
    poke(store, "refs", b"ref-5", pack_u64(6))
    poke(store, "refs", b"stray", pack_u64(99))
    assert problems(check_store(store, METERS)) == [
        'refs["ref-2"]: missing: journal entry seq 2 is up to the index watermark (seq 9) but its '
        "reference is not indexed",
        'refs["ref-5"]: points at journal entry seq 6, but journal entry seq 5 has this reference '
        "too (one reference, two money events)",
        'refs["ref-5"]: points at journal entry seq 6, whose reference is "ref-6"',
        'refs["stray"]: indexed past the watermark (seq 9)',
    ]


def test_damaged_outcomes_history_and_keys_are_named(store: Store) -> None:
    poke(store, "outcomes", pack_u64(3), encode_interval(1, 2, "flat"))
    poke(store, "outcomes", pack_u64(40), encode_outcome(5))
    poke(store, "history", meter_key("M-1", 900_000), NOT_MSGPACK)
    poke(store, "history", meter_key("M-2", 0), encode_interval(1, 2, "flat")[:-1])
    poke(store, "history", b"short", encode_interval(1, 2, "flat"))
    poke(store, "snapshots", b"\xff\xfe", encode_state(MeterState(balance=1)))
    poke(store, "journal", b"not-a-seq", encode_entry(topup(1, "M-1")))
    assert problems(check_store(store, METERS)) == [
        "journal[0x6e6f742d612d736571]: the key is not a sequence number",
        "outcomes[seq 3]: not a stored outcome: (1, 2, 'flat', -1, 0)",
        "outcomes[seq 40]: an outcome of a journal entry that does not exist",
        "snapshots[0xfffe]: the key is not a meter id (not UTF-8)",
        'history["M-1" 900000]: not a history interval: FormatError',
        'history["M-2" 0]: not a history interval: ValueError: Unpack failed: incomplete input',
        "history[0x73686f7274]: not a meter id and interval start",
        # The day records still have what the two damaged intervals were.
        'days["M-1" day 0]: differs from the day\'s intervals in the history (an interval '
        "changed or removed behind the writer's back?)",
        'days["M-2" day 0]: differs from the day\'s intervals in the history (an interval '
        "changed or removed behind the writer's back?)",
    ]


def test_a_wrong_schema_stops_the_check_there(store: Store) -> None:
    poke(store, "meta", b"schema", pack_u64(1))
    poke_entry(store, 1, NOT_MSGPACK)  # not even looked at
    report = check_store(store, METERS)
    assert problems(report) == [
        'meta["schema"]: schema version 1, but this wattkeeper reads version 2; nothing else was '
        "checked (run the matching wattkeeper version)"]
    assert report.schema == 1 and not report.clean


def test_findings_beyond_the_limit_are_counted(store: Store) -> None:
    for meter in METERS:
        poke(store, "snapshots", meter.encode(), NOT_MSGPACK)
    report = check_store(store, METERS, max_findings=2)
    assert (len(report.findings), report.error_count) == (2, 3)
    assert all(finding.severity == ERROR for finding in report.findings)


def test_the_check_reads_a_closed_directory_read_only_and_writes_nothing(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        build(store)
        poke_entry(store, 2, NOT_MSGPACK)
    before = hashlib.sha256((tmp_path / "data.mdb").read_bytes()).hexdigest()
    lock_before = (tmp_path / "wattkeeper.lock").read_bytes()
    with open_store_readonly(tmp_path) as reader:
        report = check_store(reader, METERS)
        with pytest.raises(Exception, match="read-only"):
            reader.begin_write()
    assert problems(report)[0].startswith("journal[seq 2]")
    assert hashlib.sha256((tmp_path / "data.mdb").read_bytes()).hexdigest() == before
    assert (tmp_path / "wattkeeper.lock").read_bytes() == lock_before
    with open_store(tmp_path):  # and the lock was never taken: a server can start
        pass


def test_a_reader_needs_an_existing_data_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"there is no wattkeeper data directory at .*/nope"):
        open_store_readonly(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
