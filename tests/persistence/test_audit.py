"""The audit log in LMDB: stored form, pages newest first, restarts, damage, storage down."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import lmdb
import msgpack
import pytest
import trio

from persistence.audit import (
    AuditEntry,
    decode_audit,
    encode_audit,
    last_audit_number,
    read_audit,
)
from persistence.audit_log import LmdbAuditLog
from persistence.check import check_store
from persistence.codec import CodecError
from persistence.damage import Damage
from persistence.journal import RestartPolicy, StorageUnavailable, open_journal
from persistence.keys import pack_u64
from persistence.readonly import open_store_readonly
from persistence.store import DB_NAMES, SCHEMA_VERSION, open_store
from persistence.writer import Background, Writer
from server.app import open_park
from server.auth import Caller
from server.operations import Forbidden
from tests.persistence.damaged import NOT_MSGPACK, poke, tampered
from tests.server.parks import small_park

T0 = 1_790_000_000_000
ADMIN = Caller("root", "admin", "http", "127.0.0.1:5002")
VIEWER = Caller("eve", "viewer", "hub", "127.0.0.1:5001")


def entry(n: int, ts_ms: int = T0, **changes: str) -> AuditEntry:
    fields = {"user": "op", "role": "operator", "channel": "hub", "address": "10.0.0.7:4000",
              "command": "topup", "meter_id": f"M-{n}", "target": "", "reference": f"ref-{n}",
              "detail": "amount 1.00", "result": "accepted", "code": "", "message": ""}
    fields.update(changes)
    return AuditEntry(ts_ms + n, **fields)  # type: ignore[arg-type]


def write_entries(store_path: Path, entries: list[AuditEntry], first: int = 1) -> None:
    """Entries numbered from ``first``, written by the writer's own transactions."""
    with open_store(store_path) as store:
        writer = Writer(store)
        writer.submit_background(Background("audit", [
            (first + i, encode_audit(e)) for i, e in enumerate(entries)]))
        while writer.busy:
            writer.write(writer.take())


def references(page_entries: tuple[AuditEntry, ...]) -> list[str]:
    return [e.reference for e in page_entries]


# --- the stored form -------------------------------------------------------------------------


def test_an_entry_survives_encoding_and_says_its_format() -> None:
    original = entry(1, command="relay", target="", detail="open: maintenance", result="refused",
                     code="forbidden", message="a viewer may not switch relays")
    raw = encode_audit(original)
    assert msgpack.unpackb(raw)[0] == 1
    assert decode_audit(raw) == original


@pytest.mark.parametrize("raw, words", [
    (NOT_MSGPACK, "not an audit entry"),
    (msgpack.packb({"user": "op"}), "not an array"),
    (tampered(encode_audit(entry(1)), 0, 7), "format 7 is not readable"),
    (tampered(encode_audit(entry(1)), 1, "yesterday"), "ts_ms 'yesterday'"),
    (tampered(encode_audit(entry(1)), 2, 42), "user 42 is not text"),
    (tampered(encode_audit(entry(1)), 11, "maybe"), "result 'maybe'"),
    (encode_audit(entry(1))[:-3], "not an audit entry"),
])
def test_a_damaged_record_is_a_codec_error_naming_what_is_wrong(raw: bytes, words: str) -> None:
    with pytest.raises(CodecError, match=words):
        decode_audit(raw)


# --- the database ----------------------------------------------------------------------------


def old_directory(path: Path) -> None:
    """A data directory as the version before the audit log wrote it: no ``audit`` database
    (nor the ``days`` one, which came later)."""
    env = lmdb.open(str(path), max_dbs=9, subdir=True)
    with env.begin(write=True) as txn:
        for name in DB_NAMES:
            if name not in ("audit", "days"):
                db = env.open_db(name.encode(), txn=txn)
        txn.put(b"schema", pack_u64(SCHEMA_VERSION), db=env.open_db(b"meta", txn=txn))
        del db
    env.close()


def test_an_existing_directory_opens_and_gains_the_audit_database(tmp_path: Path) -> None:
    old_directory(tmp_path)
    with open_store_readonly(tmp_path) as reader:  # a reader cannot create it: an empty log
        assert reader.audit is None
        assert read_audit(reader, None, 10) == ([], False)
        report = check_store(reader)
        assert report.clean and [str(f) for f in report.notes] == [
            "audit[-]: no audit database yet: this directory was last opened by a wattkeeper "
            "without the audit log; the next server start creates it",
            "days[-]: the day records are not complete yet (the journal writer builds them "
            "from the history); reports read the intervals meanwhile"]
    write_entries(tmp_path, [entry(1)])  # open_store creates it, same schema version
    with open_store_readonly(tmp_path) as reader:
        assert reader.audit is not None
        records, older = read_audit(reader, None, 10)
        assert [(n, e) for n, e in records] == [(1, entry(1))] and not older
        assert check_store(reader).counts["audit"] == 1


def test_pages_run_newest_first_below_the_cursor(tmp_path: Path) -> None:
    write_entries(tmp_path, [entry(n) for n in range(1, 8)])
    with open_store_readonly(tmp_path) as store:
        first, older = read_audit(store, None, 3)
        assert [n for n, _ in first] == [7, 6, 5] and older
        second, older = read_audit(store, 5, 3)
        assert [n for n, _ in second] == [4, 3, 2] and older
        last, older = read_audit(store, 2, 3)
        assert [n for n, _ in last] == [1] and not older
        assert read_audit(store, 1, 3) == ([], False)
        beyond, _ = read_audit(store, 1000, 2)  # a cursor past the end: the newest
        assert [n for n, _ in beyond] == [7, 6]
        assert last_audit_number(store) == 7


def test_a_damaged_record_is_reported_by_check_and_read_as_damage(tmp_path: Path) -> None:
    write_entries(tmp_path, [entry(n) for n in range(1, 4)])
    with open_store(tmp_path) as store:
        poke(store, "audit", pack_u64(2), NOT_MSGPACK)
        poke(store, "audit", b"odd key", encode_audit(entry(9)))
    with open_store_readonly(tmp_path) as store:
        report = check_store(store)
        records, _ = read_audit(store, None, 10)
    assert not report.clean and report.counts["audit"] == 4
    assert [str(f) for f in report.errors] == [
        "audit[2]: not an audit entry: FormatError",
        "audit[0x6f6464206b6579]: the key is not an audit number"]
    # The key that is not a number sorts after every number: it comes first, as damage.
    assert [(n, isinstance(r, Damage)) for n, r in records] == [
        (0, True), (3, False), (2, True), (1, False)]
    assert isinstance(records[2][1], Damage) and records[2][1].key == "2"


def test_check_command_fails_on_a_damaged_audit_record(tmp_path: Path) -> None:
    from tests.server.test_check_command import check, write_config

    config = write_config(tmp_path)
    write_entries(tmp_path / "data", [entry(1), entry(2)])
    with open_store(tmp_path / "data") as store:
        poke(store, "audit", pack_u64(1), tampered(encode_audit(entry(1)), 3, None))
    result = check(config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "  audit[1]: not a usable audit entry: role None is not text" in result.stdout
    assert [line.split() for line in result.stdout.splitlines() if "audit  " in line] == [
        ["audit", "2"]]


# --- the live log, through the journal writer --------------------------------------------------


async def test_entries_persist_across_a_restart_and_numbers_continue(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        async with open_journal(store) as journal:
            log = LmdbAuditLog(store, journal)
            for n in range(1, 6):
                log.append_nowait(entry(n))
            # Readable at once, before the writer has reported anything back.
            assert references(log.page(None, 2).entries) == ["ref-5", "ref-4"]
            await journal.flush()
    with open_store(tmp_path) as store:
        async with open_journal(store) as journal:
            log = LmdbAuditLog(store, journal)
            assert log.last_number == 5
            log.append_nowait(entry(6))
            seen: list[str] = []
            page = log.page(None, 2)
            pages = 1
            while True:
                seen += references(page.entries)
                if page.next is None:
                    break
                page = log.page(page.next, 2)
                pages += 1
            assert seen == [f"ref-{n}" for n in range(6, 0, -1)] and pages == 3
            await journal.flush()
            assert journal.statistics().audit_written == 1
    with open_store_readonly(tmp_path) as reader:
        records, _ = read_audit(reader, None, 10)
        assert [n for n, _ in records] == [6, 5, 4, 3, 2, 1]


async def test_a_page_mixes_unwritten_and_written_entries_without_repeats(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        async with open_journal(store) as journal:
            log = LmdbAuditLog(store, journal)
            for n in range(1, 4):
                log.append_nowait(entry(n))
            await journal.flush()
            for n in range(4, 7):
                log.append_nowait(entry(n))  # these wait in the log's tail
            page = log.page(None, 4)
            assert references(page.entries) == ["ref-6", "ref-5", "ref-4", "ref-3"]
            assert page.next == "3"
            rest = log.page(page.next, 4)
            assert references(rest.entries) == ["ref-2", "ref-1"] and rest.next is None
            with pytest.raises(ValueError, match="not an audit cursor"):
                log.page("abc", 4)


async def test_storage_down_refuses_an_append_and_unwritten_entries_are_resent(
    tmp_path: Path,
) -> None:
    policy = RestartPolicy(first_delay_s=0.3, max_delay_s=0.3)
    with open_store(tmp_path) as store:
        async with open_journal(store, restart_policy=policy) as journal:
            log = LmdbAuditLog(store, journal)
            log.append_nowait(entry(1))
            await journal.flush()
            os.kill(journal.writer_pid, signal.SIGSTOP)  # a stuck writer takes nothing
            log.append_nowait(entry(2))
            log.append_nowait(entry(3))
            assert journal.statistics().audit_pending == 2
            os.kill(journal.writer_pid, signal.SIGKILL)
            with trio.fail_after(10):
                while journal.available:
                    await trio.sleep(0.005)
            with pytest.raises(StorageUnavailable):
                log.append_nowait(entry(4))
            assert log.last_number == 3  # the refused entry took no number
            assert references(log.page(None, 10).entries) == ["ref-3", "ref-2", "ref-1"]
            with trio.fail_after(10):
                while not journal.available:
                    await trio.sleep(0.005)
            log.append_nowait(entry(5))
            await journal.flush()
            assert journal.statistics().audit_pending == 0
    with open_store_readonly(tmp_path) as reader:
        records, _ = read_audit(reader, None, 10)
    assert [(n, e.reference) for n, e in records if isinstance(e, AuditEntry)] == [
        (4, "ref-5"), (3, "ref-3"), (2, "ref-2"), (1, "ref-1")]


async def test_a_damaged_record_shows_as_such_in_a_page(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    write_entries(tmp_path, [entry(n) for n in range(1, 4)])
    with open_store(tmp_path) as store:
        poke(store, "audit", pack_u64(2), NOT_MSGPACK)
        async with open_journal(store) as journal:
            with caplog.at_level(logging.ERROR):
                page = LmdbAuditLog(store, journal).page(None, 10)
    assert [(e.command, e.result, e.reference) for e in page.entries] == [
        ("topup", "accepted", "ref-3"), ("damaged", "damaged", "2"),
        ("topup", "accepted", "ref-1")]
    assert page.entries[1].message == "not an audit entry: FormatError"
    assert "a damaged audit record was shown as such: audit[2]" in caplog.text


# --- the park -----------------------------------------------------------------------------------


async def test_the_park_audits_to_lmdb_and_reads_it_back_after_a_restart(tmp_path: Path) -> None:
    config = small_park(tmp_path / "park")
    async with open_park(config, with_field=False) as park:
        await park.operations.top_up(ADMIN, "M-0", 5_00, "pay-1")
        with pytest.raises(Forbidden):
            await park.operations.top_up(VIEWER, "M-1", 5_00, "pay-2")
        assert len(park.users) == 0
    async with open_park(config, with_field=False) as park:
        await park.operations.reset_lockout(ADMIN, "M-2", "reset-1")
        page = park.operations.audit_page(ADMIN, limit=2)
        older = park.operations.audit_page(ADMIN, before=page.next, limit=2)
    assert [(e.command, e.user, e.result, e.code) for e in page.entries + older.entries] == [
        ("reset_lockout", "root", "accepted", ""), ("topup", "eve", "refused", "forbidden"),
        ("topup", "root", "accepted", "")]
    assert older.next is None
    assert page.entries[1].address == "127.0.0.1:5001"
    assert older.entries[0].detail == "amount 5.00"


async def test_storage_down_the_command_is_still_answered_and_the_gap_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_park(small_park(tmp_path / "park"), with_field=False) as park:
        os.kill(park.journal.writer_pid, signal.SIGKILL)
        with trio.fail_after(10):
            while park.journal.available:
                await trio.sleep(0.005)
        # No checkpoint from here on: the writer cannot come back in between.
        with caplog.at_level(logging.ERROR), pytest.raises(Forbidden):
            await park.operations.top_up(VIEWER, "M-1", 5_00, "pay-down")
        with pytest.raises(StorageUnavailable):
            await park.operations.top_up(ADMIN, "M-1", 5_00, "pay-down-2")
        assert caplog.text.count("audit entry not written") == 2


async def test_audit_entries_that_do_not_fit_are_dropped_before_money_and_forgotten(
    tmp_path: Path,
) -> None:
    from persistence.journal import JournalEntry, StorageFull

    kib = 1024
    with open_store(tmp_path, map_size=128 * kib, max_map_size=128 * kib) as store:
        async with open_journal(store, chunk_puts=100_000) as journal:
            log = LmdbAuditLog(store, journal)
            for n in range(1, 401):  # ~400 KiB of entries: never fits in 128 KiB at once
                log.append_nowait(entry(n, detail="x" * 1000))
            recorded = await journal.record(JournalEntry("topup", "M-1", 100, "pay-1", T0))
            with pytest.raises(StorageFull, match="snapshot/history writes were dropped"):
                await journal.flush()
            stats = journal.statistics()
            assert stats.audit_written + stats.dropped_puts == 400 and stats.dropped_puts > 0
            assert stats.audit_pending == 0  # dropped is taken care of: nothing left to resend
            assert len(log.page(None, 200).entries) == stats.audit_written
        assert recorded.seq == 1
