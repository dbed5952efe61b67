"""A corrupt record quarantines its meter, not the park: the others start, read and take money."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from actors.effects import AlarmEvent, EffectRouter
from actors.meter import MeterActor
from actors.supervisor import MeterSupervisor
from persistence.codec import encode_entry
from persistence.damage import DamagedRecord
from persistence.entries import JournalEntry
from persistence.index import indexed_through
from persistence.keys import pack_u64
from persistence.recovery import entries_after
from persistence.store import Store, open_store
from persistence.writer import RecordRequest, Writer
from policies.records import MeterState, Reading
from server.app import Park, open_park
from server.config import ParkConfig
from tests.persistence.damaged import (
    NOT_MSGPACK,
    damaged_entries,
    damaged_snapshots,
    poke,
    poke_entry,
)
from tests.policies.builders import policy
from tests.server.parks import small_park

T0 = 1_790_000_000_000
OPENING = 100_00


async def _settle(park: Park) -> None:
    while park.dispatcher.queue_depth:
        await trio.sleep(0.001)


async def _run_a_while(config: ParkConfig) -> dict[str, int]:
    """A first life of the park: readings and a top-up for every meter; returns balances."""
    async with open_park(config, with_field=False) as park:
        for actor in park.registry:
            park.registry.deliver_reading_nowait(actor.key, Reading(T0, 10_000, 100.0))
        await _settle(park)
        for n, actor in enumerate(park.registry):
            await park.ledger.top_up(actor.meter_id, 10_00 * (n + 1), f"first-{n}", T0)
        for actor in park.registry:  # 1 kWh at 1.00 each
            park.registry.deliver_reading_nowait(actor.key, Reading(T0 + 60_000, 11_000, 100.0))
        await _settle(park)
        return {actor.meter_id: actor.state.balance for actor in park.registry}


async def _healthy_meters_work(park: Park, meters: list[str], balances: dict[str, int]) -> None:
    """Each of ``meters`` was rebuilt exactly, charges a reading and takes a top-up."""
    for meter in meters:
        actor = park.registry.get(meter)
        assert not actor.faulted and actor.state.balance == balances[meter]
        park.registry.deliver_reading_nowait(actor.key, Reading(T0 + 120_000, 12_000, 100.0))
        await _settle(park)
        assert actor.state.balance == balances[meter] - 1_00
        ack = await park.ledger.top_up(meter, 5_00, f"later-{meter}", T0)
        assert ack.balance == balances[meter] - 1_00 + 5_00


def _snapshot(config: ParkConfig, meter: str) -> bytes:
    with open_store(config.server.data_dir) as store:
        raw = store.get_snapshot(meter)
    assert raw is not None
    return raw


def indexed_through_now(store: Store) -> int:
    with store.read() as txn:
        return indexed_through(txn, store)


def _seq_of(store: Store, reference: str) -> int:
    return next(seq for seq, entry in entries_after(store, 0) if entry.reference == reference)


@pytest.mark.parametrize("kind", ["not msgpack", "a balance beyond 64 bits", "a string balance"])
async def test_a_damaged_snapshot_quarantines_its_meter_and_the_others_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    config = small_park(tmp_path / "park", meters=3)
    balances = await _run_a_while(config)
    bad = damaged_snapshots(MeterState(balance=1))[kind]
    with open_store(config.server.data_dir) as store:
        poke(store, "snapshots", b"M-1", bad)

    caplog.set_level(logging.INFO)
    heard: list[AlarmEvent] = []
    async with open_park(config, with_field=False, alarm_sinks=(heard.append,)) as park:
        victim = park.registry.get("M-1")
        assert victim.faulted and park.supervisor.faulted_meters == {"M-1"}
        reason = park.supervisor.fault_reason("M-1")
        assert reason is not None and reason.startswith('snapshots["M-1"]: ')
        assert park.router.alarms == 1  # the offline alarm, "faulted: <reason>"
        # Sinks given to open_park hear the alarms of recovery too (serve logs them).
        assert [(a.meter_id, a.kind, a.detail) for a in heard] == [
            ("M-1", "offline", f"faulted: {reason}")]
        assert (f'meter M-1 quarantined: {reason}; the record is kept for repair '
                f'(docs/operations.md, "A corrupt record")') in caplog.text
        assert "Traceback" not in caplog.text
        assert victim.state == MeterState.opening(OPENING)  # a placeholder, shown as faulted
        park.registry.deliver_reading_nowait(victim.key, Reading(T0 + 120_000, 12_000, 100.0))
        await _healthy_meters_work(park, ["M-0", "M-2"], balances)
        assert victim.state == MeterState.opening(OPENING)  # readings are dropped, not charged
        await park.snapshot_now()
    assert _snapshot(config, "M-1") == bad  # kept for repair, never overwritten


@pytest.mark.parametrize("where", ["indexed", "tail"])
async def test_a_damaged_journal_entry_quarantines_its_meter_and_the_writer_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    config = small_park(tmp_path / "park", meters=3)
    balances = await _run_a_while(config)
    damaged = damaged_entries(JournalEntry("topup", "M-2", 1, "x", 0))["a string amount"]
    with open_store(config.server.data_dir) as store:
        writer = Writer(store)
        while writer.indexing:  # what the writer does when idle: index every entry so far
            writer.write(writer.take())
        if where == "tail":  # journaled after the last index chunk: the writer reads it at start
            entry = JournalEntry("topup", "M-2", 3_00, "in-the-tail", T0)
            writer.submit_record(RecordRequest(1, "M-2", b"in-the-tail", encode_entry(entry)))
            while writer.busy:
                writer.write(writer.take())
        seq = _seq_of(store, "in-the-tail" if where == "tail" else "first-2")
        assert (seq > indexed_through_now(store)) == (where == "tail")
        # Without a snapshot recovery reads all of M-2's entries (the entry must be newer).
        txn = store.begin_write()
        txn.delete(b"M-2", db=store.snapshots)  # type: ignore[attr-defined]
        txn.commit()
        poke_entry(store, seq, damaged)

    caplog.set_level(logging.INFO)
    async with open_park(config, with_field=False) as park:
        assert park.supervisor.faulted_meters == {"M-2"}
        reason = park.supervisor.fault_reason("M-2")
        assert reason == (f"journal[seq {seq}]: not a usable journal entry: amount '1.00' is not "
                          f"a 64-bit integer")
        assert f"meter M-2 quarantined: {reason}" in caplog.text
        await _healthy_meters_work(park, ["M-0", "M-1"], balances)  # the writer writes
    with open_store(config.server.data_dir) as store:
        assert store.get_snapshot("M-2") is None  # nothing was written for the quarantined meter
        with store.read() as txn:
            assert txn.get(pack_u64(seq), db=store.journal) == damaged


async def test_an_entry_of_no_readable_meter_is_reported_and_harms_nobody(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = small_park(tmp_path / "park", meters=3)
    balances = await _run_a_while(config)
    with open_store(config.server.data_dir) as store:
        writer = Writer(store)  # one more entry, in the journal's tail
        entry = JournalEntry("topup", "M-0", 1_00, "garbled", T0)
        writer.submit_record(RecordRequest(1, "M-0", b"garbled", encode_entry(entry)))
        while writer.busy:
            writer.write(writer.take())
        seq = store.last_seq()
        poke_entry(store, seq, NOT_MSGPACK)

    caplog.set_level(logging.INFO)
    async with open_park(config, with_field=False) as park:
        assert park.supervisor.faulted_meters == frozenset()
        assert park.router.alarms == 1  # the park-level damaged-record alarm
        assert (f"journal[seq {seq}]: not a journal entry: FormatError; skipped (its entry "
                f"belongs to no meter)") in caplog.text
        await _healthy_meters_work(park, ["M-0", "M-1", "M-2"], balances)


async def test_a_quarantined_meter_runs_again_after_repair_and_reset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = small_park(tmp_path / "park", meters=3)
    balances = await _run_a_while(config)
    good = _snapshot(config, "M-1")  # the copy a backup holds
    with open_store(config.server.data_dir) as store:
        poke(store, "snapshots", b"M-1", NOT_MSGPACK)

    async with open_park(config, with_field=False) as park:
        victim = park.registry.get("M-1")
        assert victim.faulted
        park.supervisor.reset(victim)  # not repaired yet: faulted again, the key named
        assert victim.faulted
        assert park.supervisor.fault_reason("M-1") == (
            'restore failed: snapshots["M-1"]: not a meter state snapshot: FormatError')
        assert "Traceback" not in caplog.text

        park.journal.put_snapshots_nowait([("M-1", good)])  # the record repaired from the copy
        await park.journal.flush()
        park.supervisor.reset(victim)

        assert not victim.faulted and park.supervisor.faulted_meters == frozenset()
        assert victim.state.balance == balances["M-1"]
        await _healthy_meters_work(park, ["M-0", "M-1", "M-2"], balances)
    async with open_park(config, with_field=False) as park:  # and it stays healthy
        assert park.supervisor.faulted_meters == frozenset()
        assert park.registry.get("M-1").state.balance == balances["M-1"] - 1_00 + 5_00


async def test_a_repeat_of_a_damaged_entrys_reference_is_refused_not_fatal(
    tmp_path: Path,
) -> None:
    """The writer finds the reference (indexed under what could be read of it) and answers with
    the damaged first recording: that must be one refused command, not a dead journal."""
    config = small_park(tmp_path / "park", meters=3)
    balances = await _run_a_while(config)
    entry = JournalEntry("topup", "M-2", 30_00, "first-2", T0)
    damaged = damaged_entries(entry)["cut after its reference"]
    with open_store(config.server.data_dir) as store:
        seq = _seq_of(store, "first-2")
        poke_entry(store, seq, damaged)
        txn = store.begin_write()
        txn.delete(b"M-2", db=store.snapshots)  # type: ignore[attr-defined]
        txn.commit()

    async with open_park(config, with_field=False) as park:
        assert park.supervisor.faulted_meters == {"M-2"}
        pattern = rf"^journal\[seq {seq}\]: not a journal entry"
        with pytest.raises(DamagedRecord, match=pattern) as refused:
            await park.ledger.top_up("M-2", 30_00, "first-2", T0)
        assert refused.value.code == "unavailable"
        await _healthy_meters_work(park, ["M-0", "M-1"], balances)


def test_quarantine_raises_the_faulted_alarm_naming_the_key_without_a_restart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = EffectRouter()
    alarms: list[AlarmEvent] = []
    router.alarm_sinks.append(alarms.append)
    restores: list[str] = []

    def restore(actor: MeterActor) -> MeterState:
        restores.append(actor.meter_id)
        return MeterState.opening(OPENING)

    supervisor = MeterSupervisor(restore, router, lambda: 5_000)
    actor = MeterActor("M-3", 0, policy(), MeterState.opening(OPENING), router)
    reason = 'snapshots["M-3"]: not a meter state snapshot: FormatError'

    supervisor.quarantine(actor, reason)

    assert actor.faulted and restores == [] and supervisor.statistics().restarts == 0
    assert alarms == [AlarmEvent(alarm_id="M-3/faulted", meter_id="M-3", kind="offline",
                                 level=0, state="active", ts_ms=5_000,
                                 detail=f"faulted: {reason}")]
    assert [record.getMessage() for record in caplog.records] == [
        f'meter M-3 quarantined: {reason}; the record is kept for repair (docs/operations.md, '
        f'"A corrupt record")']
    supervisor.reset(actor)
    assert not actor.faulted and restores == ["M-3"]
