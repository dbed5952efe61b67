"""The journal writer is supervised: a dead writer is restarted, money is refused meanwhile, and
no committed entry is lost or delivered twice across the restart."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from persistence.codec import encode_entry
from persistence.journal import (
    JournalEntry,
    Recorded,
    RestartPolicy,
    StorageFull,
    StorageUnavailable,
    open_journal,
)
from persistence.recovery import entries_after, find_reference
from persistence.restarts import Restarts
from persistence.store import LOCK_FILE, Store, StoreError, open_store
from persistence.writer import RecordRequest, Writer
from persistence.writer_process import check_free_space

REPO = Path(__file__).resolve().parents[2]
QUICK = RestartPolicy(first_delay_s=0.01, max_delay_s=0.3, intensity=5, period_s=60)


def topup(reference: str, amount: int = 10_000, detail: str = "") -> JournalEntry:
    return JournalEntry("topup", "M-1", amount, reference, 1_000, detail)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    with trio.fail_after(timeout_s):
        while not condition():
            await trio.sleep(0.002)


def references(where: Store | Path) -> list[tuple[int, str]]:
    """The journal's (seq, reference) pairs, from an open store or a closed directory."""
    if isinstance(where, Path):
        with open_store(where) as store:
            return references(store)
    return [(seq, entry.reference) for seq, entry in entries_after(where, 0)]


def wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


# --- the restart policy (pure) ----------------------------------------------------------------


def test_restart_delays_double_to_the_cap_then_restarting_is_too_often() -> None:
    restarts = Restarts(RestartPolicy(first_delay_s=0.1, max_delay_s=5.0, intensity=5,
                                      period_s=60.0))
    delays = [restarts.next_delay(now) for now in (0.0, 1.0, 2.0, 3.0, 4.0)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert not restarts.too_often
    assert restarts.next_delay(5.0) == 5.0  # the sixth within 60 s
    assert restarts.too_often and restarts.recent == 6 and restarts.total == 6
    assert restarts.next_delay(6.0) == 5.0


def test_restarts_older_than_the_period_are_forgotten() -> None:
    restarts = Restarts(RestartPolicy(first_delay_s=0.1, max_delay_s=5.0, intensity=2,
                                      period_s=10.0))
    for now in (0.0, 1.0, 2.0):
        restarts.next_delay(now)
    assert restarts.too_often
    assert restarts.next_delay(100.0) == 0.1  # quiet for longer than the period
    assert not restarts.too_often and restarts.total == 4


def test_a_policy_that_cannot_work_is_refused() -> None:
    with pytest.raises(ValueError, match="first_delay_s"):
        RestartPolicy(first_delay_s=2.0, max_delay_s=1.0)
    with pytest.raises(ValueError, match="intensity"):
        RestartPolicy(intensity=0)


# --- a killed writer --------------------------------------------------------------------------


async def test_a_killed_writer_is_restarted_and_says_so_to_the_availability_callback(
    tmp_path: Path,
) -> None:
    events: list[tuple[bool, str]] = []
    with open_store(tmp_path) as store:
        async with open_journal(store, restart_policy=QUICK) as journal:
            assert journal.available
            journal.set_on_availability(lambda available, detail: events.append(
                (available, detail)))
            await journal.record(topup("r-1"))
            killed = journal.writer_pid
            os.kill(killed, signal.SIGKILL)
            await until(lambda: not journal.available)
            with pytest.raises(StorageUnavailable) as refused:
                await journal.record(topup("r-2"))
            assert refused.value.code == "unavailable"
            assert str(refused.value) == (
                "storage is unavailable, so nothing was done: retry with the same id in a few "
                "seconds (the server log and the park's storage alarm say why)")
            assert refused.value.cause == "the journal writer process exited with code -9"
            with pytest.raises(StorageUnavailable):
                journal.put_history_nowait([("M-1", 0, 5, 6, "flat")])
            with pytest.raises(StorageUnavailable):
                await journal.flush()
            await until(lambda: journal.available)
            restarted = journal.writer_pid
            assert restarted != killed and wait_gone(killed)
            # The restarted writer shares the data directory's lock, as the first one did.
            held = os.readlink(f"/proc/{restarted}/fd/{store.lock_fd}")
            assert held == str((tmp_path / LOCK_FILE).resolve())
            assert (await journal.record(topup("r-2"))).seq == 2
            stats = journal.statistics()
            assert (stats.writer_restarts, stats.entries, stats.available) == (1, 2, True)
    assert [available for available, _ in events] == [False, True]
    assert "exited with code -9" in events[0][1] and "restarting it in 0.0 s" in events[0][1]
    assert f"pid {restarted}" in events[1][1]
    assert references(tmp_path) == [(1, "r-1"), (2, "r-2")]


async def test_records_in_flight_when_the_writer_dies_get_outcome_unknown_and_retry_safely(
    tmp_path: Path,
) -> None:
    errors: list[str] = []

    async def record(reference: str) -> None:
        try:
            await journal.record(topup(reference))
        except StorageUnavailable as error:
            errors.append(str(error))

    with open_store(tmp_path) as store:
        async with open_journal(store, restart_policy=QUICK) as journal:
            await journal.record(topup("r-0"))
            os.kill(journal.writer_pid, signal.SIGSTOP)  # records reach its pipe, no commit
            async with trio.open_nursery() as nursery:
                for n in range(1, 6):
                    nursery.start_soon(record, f"r-{n}")
                nursery.start_soon(record, "r-1")  # a repeat waiting on the first
                await until(lambda: journal.statistics().in_flight == 5)
                os.kill(journal.writer_pid, signal.SIGKILL)
            assert len(errors) == 6
            assert all("its outcome is unknown" in error for error in errors)
            assert all("retry with the same id, which is safe" in error for error in errors)
            await until(lambda: journal.available)
            retried = [await journal.record(topup(f"r-{n}")) for n in range(1, 6)]
            assert [recorded.seq for recorded in retried] == [2, 3, 4, 5, 6]
            assert not any(recorded.duplicate for recorded in retried)
    assert references(tmp_path) == [(n + 1, f"r-{n}") for n in range(6)]


async def test_entries_a_dead_writer_committed_are_delivered_once_before_anything_new(
    tmp_path: Path,
) -> None:
    """The writer committed an entry and died before its result reached the journal.

    Made deterministic by committing that entry ourselves (with the same transaction code the
    writer runs) between the kill and the restart."""
    delivered: list[tuple[int, str]] = []
    slow = RestartPolicy(first_delay_s=0.5, max_delay_s=1.0)
    with open_store(tmp_path) as store:
        async with open_journal(
            store, restart_policy=slow,
            on_committed=lambda entries: delivered.extend(
                (seq, entry.reference) for seq, entry in entries),
        ) as journal:
            first = await journal.record(topup("r-1"))
            os.kill(journal.writer_pid, signal.SIGSTOP)
            lost_errors: list[StorageUnavailable] = []

            async def record_lost() -> None:
                try:
                    await journal.record(topup("r-lost", amount=777))
                except StorageUnavailable as error:
                    lost_errors.append(error)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(record_lost)
                await until(lambda: journal.statistics().in_flight == 1)
                os.kill(journal.writer_pid, signal.SIGKILL)
            assert "outcome is unknown" in str(lost_errors[0])
            # The acknowledged balance of r-1 is given while storage is down: kept, sent later.
            journal.record_outcome_nowait(first, 18_765)
            behind = Writer(store)  # the dead writer's last transaction, as it would have been
            behind.submit_record(RecordRequest(
                0, "M-1", b"r-lost", encode_entry(topup("r-lost", amount=777))))
            assert [r.seq for r in behind.write(behind.take()).committed] == [2]
            assert delivered == [(1, "r-1")]
            await until(lambda: journal.available)
            assert delivered == [(1, "r-1"), (2, "r-lost")]  # before any new record
            retry = await journal.record(topup("r-lost", amount=777))
            assert (retry.seq, retry.duplicate) == (2, True)
            assert (await journal.record(topup("r-3"))).seq == 3
            await journal.flush()
            stats = journal.statistics()
            assert (stats.redelivered, stats.last_seq) == (1, 3)
    assert delivered == [(1, "r-1"), (2, "r-lost"), (3, "r-3")]  # each exactly once
    assert references(tmp_path) == [(1, "r-1"), (2, "r-lost"), (3, "r-3")]
    with open_store(tmp_path) as store:
        assert find_reference(store, "r-1") == Recorded(1, topup("r-1"), 18_765, duplicate=True)


async def test_restarting_too_often_is_said_in_the_log_and_the_availability_detail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[tuple[bool, str]] = []
    policy = RestartPolicy(first_delay_s=0.01, max_delay_s=0.2, intensity=2, period_s=60)
    with open_store(tmp_path) as store:
        async with open_journal(store, restart_policy=policy) as journal:
            journal.set_on_availability(lambda available, detail: events.append(
                (available, detail)))
            for _ in range(3):
                os.kill(journal.writer_pid, signal.SIGKILL)
                await until(lambda: not journal.available)
                await until(lambda: journal.available)
            assert (await journal.record(topup("r-1"))).seq == 1
    assert [available for available, _ in events] == [False, True] * 3
    too_often = "restarting too often (3 restarts in the last 60 s): trying again every 0.2 s"
    assert too_often not in events[2][1]
    assert too_often in events[4][1], events[4][1]
    assert any(too_often in record.getMessage() and record.levelno == logging.ERROR
               for record in caplog.records)


async def test_closing_never_waits_for_a_writer_that_is_down(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        with trio.fail_after(5):
            async with open_journal(store, restart_policy=RestartPolicy(
                    first_delay_s=30, max_delay_s=30)) as journal:
                await journal.record(topup("r-1"))
                os.kill(journal.writer_pid, signal.SIGKILL)
                await until(lambda: not journal.available)
        # And while a restarted writer is still starting (Python takes ~0.1 s to start it).
        with trio.fail_after(5):
            async with open_journal(store, restart_policy=QUICK) as journal:
                killed = journal.writer_pid
                os.kill(killed, signal.SIGKILL)
                await until(lambda: journal.writer_pid != killed)
                starting = journal.writer_pid
                assert not journal.available
        assert wait_gone(starting)
        assert references(store) == [(1, "r-1")]


def test_a_restarted_writer_dies_with_its_server_too(tmp_path: Path) -> None:
    code = """
        import os, signal, sys, trio
        from persistence.journal import JournalEntry, RestartPolicy, open_journal
        from persistence.store import open_store

        async def main():
            store = open_store(sys.argv[1])
            policy = RestartPolicy(first_delay_s=0.01)
            async with open_journal(store, restart_policy=policy) as journal:
                os.kill(journal.writer_pid, signal.SIGKILL)
                while journal.available:
                    await trio.sleep(0.005)
                while not journal.available:
                    await trio.sleep(0.005)
                await journal.record(JournalEntry("topup", "M-1", 5, "ref-1", 1))
                print(journal.writer_pid, flush=True)
                await trio.sleep_forever()

        trio.run(main)
    """
    server = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(tmp_path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None
    writer_pid = int(server.stdout.readline())
    server.kill()
    server.communicate(timeout=30)
    assert wait_gone(writer_pid), "the restarted writer outlived its server"
    with open_store(tmp_path) as store:
        assert references(store) == [(1, "ref-1")]


# --- a full disk ------------------------------------------------------------------------------


async def test_a_writer_does_not_start_on_a_full_disk_and_the_journal_opens_unavailable(
    tmp_path: Path,
) -> None:
    """A filesystem with less than ``min_free_bytes`` free (here: more than any disk has)."""
    with open_store(tmp_path) as store:
        with trio.fail_after(10):
            async with open_journal(store, min_free_bytes=1 << 62,
                                    restart_policy=QUICK) as journal:
                assert not journal.available
                with pytest.raises(StorageUnavailable) as refused:
                    await journal.record(topup("r-1"))
    assert "nothing was done" in str(refused.value)
    cause = refused.value.cause  # for the operator: in the log and the availability detail
    assert f"the disk holding the data directory {tmp_path.resolve()} is full" in cause
    assert "bytes free on its filesystem" in cause
    assert "free space there or move data_dir" in cause
    assert references(tmp_path) == []


def test_the_free_space_check_names_the_directory_and_the_free_bytes(tmp_path: Path) -> None:
    check_free_space(str(tmp_path), 1)
    with pytest.raises(StoreError, match=r"is full \([\d,]+ bytes free on its filesystem"):
        check_free_space(str(tmp_path), 1 << 62)


def test_a_capped_map_names_the_directory_free_bytes_and_what_to_do(tmp_path: Path) -> None:
    with (open_store(tmp_path, map_size=64 * 1024, max_map_size=64 * 1024) as store,
          pytest.raises(StorageFull) as full):
        store.grow_map()
    message = str(full.value)
    assert str(tmp_path) in message and "bytes free on its filesystem" in message
    assert "raise max_map_size" in message and "move data_dir" in message
    assert isinstance(full.value, StorageUnavailable) and full.value.code == "unavailable"


DISK_FULL = """
    import json, os, resource, signal, sys, trio
    from pathlib import Path
    from persistence.journal import (JournalEntry, RestartPolicy, StorageUnavailable,
                                     open_journal)
    from persistence.store import open_store

    def big(reference):
        return JournalEntry("topup", "M-1", 100, reference, 1, "x" * 3000)

    async def main(path):
        events, acked, refused = [], [], []
        store = open_store(path, map_size=4 << 20)
        policy = RestartPolicy(first_delay_s=0.02, max_delay_s=0.1)
        async with open_journal(store, restart_policy=policy) as journal:
            journal.set_on_availability(lambda up, detail: events.append([up, detail]))
            for n in range(3):
                acked.append((await journal.record(big(f"ok-{n}"))).entry.reference)
            # The disk is full: data.mdb may not grow, for the running writer and for the
            # restarted ones (they inherit the limit from us).
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            full = (os.path.getsize(path / "data.mdb"), hard)
            resource.setrlimit(resource.RLIMIT_FSIZE, full)
            resource.prlimit(journal.writer_pid, resource.RLIMIT_FSIZE, full)
            start = trio.current_time()
            n = 0
            while trio.current_time() - start < 1.0 or not refused:
                n += 1
                try:
                    acked.append((await journal.record(big(f"full-{n}"))).entry.reference)
                except StorageUnavailable as error:
                    refused.append([f"full-{n}", str(error), error.cause])
                    await trio.sleep(0.01)
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space freed
            with trio.fail_after(10):
                while True:
                    try:
                        acked.append((await journal.record(big("after"))).entry.reference)
                        break
                    except StorageUnavailable:
                        await trio.sleep(0.01)
            available = journal.available
        print(json.dumps({"events": events, "acked": acked, "refused": refused,
                          "available": available}))

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    trio.run(main, Path(sys.argv[1]))
"""


def test_a_full_disk_refuses_money_says_why_and_recovers_once_space_is_freed(
    tmp_path: Path,
) -> None:
    """A file-size limit (``ulimit -f``) makes LMDB's commit fail like a full disk does:
    ``mdb_txn_commit: File too large`` or ``Input/output error`` (the issue's message)."""
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DISK_FULL), str(tmp_path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
        capture_output=True, timeout=60, check=False,
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["available"] and report["acked"][-1] == "after"
    downs = [detail for up, detail in report["events"] if not up]
    assert downs, "storage never went down"
    assert "mdb_txn_commit: " in downs[0]
    assert "Input/output error" in downs[0] or "File too large" in downs[0]
    assert f"writing the data directory {tmp_path.resolve()} failed" in downs[0]
    assert "bytes free on its filesystem" in downs[0] and "free space there" in downs[0]
    assert report["events"][-1][0] is True
    unknown = {reference for reference, message, _ in report["refused"]
               if "outcome is unknown" in message}
    assert all("outcome is unknown" in message or "nothing was done" in message
               for _, message, _ in report["refused"])
    assert all("writing the data directory" in cause
               for _, _, cause in report["refused"])
    with open_store(tmp_path) as store:
        journaled = [reference for _, reference in references(store)]
    assert len(journaled) == len(set(journaled))
    assert set(report["acked"]) <= set(journaled)  # every acknowledgement is on disk
    assert set(journaled) - set(report["acked"]) <= unknown  # the rest were "unknown"
    # The writer said it in one line on its stderr, not a traceback.
    assert "mdb_txn_commit" in child.stderr and "Traceback" not in child.stderr
