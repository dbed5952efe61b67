"""The journal writer runs in a process of its own: what happens when either side dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio

from persistence.journal import JournalEntry, StorageUnavailable, open_journal
from persistence.recovery import entries_after
from persistence.store import open_store

REPO = Path(__file__).resolve().parents[2]


def topup(reference: str, amount: int = 10_000) -> JournalEntry:
    return JournalEntry("topup", "M-1", amount, reference, 1_000)


def wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


async def test_a_killed_writer_is_restarted_and_the_journal_goes_on_from_what_was_committed(
    tmp_path: Path,
) -> None:
    with open_store(tmp_path) as store:
        async with open_journal(store) as journal:
            first = await journal.record(topup("before"))
            killed = journal.writer_pid
            os.kill(killed, signal.SIGKILL)
            with trio.fail_after(10):
                while journal.available:
                    await trio.sleep(0.005)
            with pytest.raises(StorageUnavailable, match="nothing was done") as refused:
                await journal.record(topup("refused"))
            assert "exited with code -9" in refused.value.cause
            with pytest.raises(StorageUnavailable):
                journal.put_snapshots_nowait([("M-1", b"state")])
            with trio.fail_after(10):
                while not journal.available:
                    await trio.sleep(0.005)
            assert journal.writer_pid != killed
            again = await journal.record(topup("after"))
            assert again.seq == first.seq + 1
            assert journal.statistics().writer_restarts == 1
        assert [(seq, entry.reference) for seq, entry in entries_after(store, 0)] == [
            (1, "before"), (2, "after")
        ]


def test_the_writer_dies_with_its_server_and_the_directory_reopens(tmp_path: Path) -> None:
    code = """
        import sys, trio
        from persistence.journal import JournalEntry, open_journal
        from persistence.store import open_store

        async def main():
            store = open_store(sys.argv[1])
            async with open_journal(store) as journal:
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
    assert wait_gone(writer_pid), "the writer process outlived its server"
    with open_store(tmp_path) as store:
        assert [entry.reference for _, entry in entries_after(store, 0)] == ["ref-1"]


async def test_a_cancelled_server_still_writes_what_was_queued_and_closes(tmp_path: Path) -> None:
    """Ctrl-C or a crashed sibling task cancels the journal's scope: close must not hang."""
    with open_store(tmp_path) as store:
        with trio.fail_after(20):
            with trio.move_on_after(0.3):
                async with open_journal(store) as journal:
                    await journal.record(topup("acknowledged"))
                    journal.put_snapshots_nowait([("M-1", b"state")])
                    await trio.sleep_forever()
        assert [entry.reference for _, entry in entries_after(store, 0)] == ["acknowledged"]
        assert store.get_snapshot("M-1") == b"state"
    assert wait_gone(journal.writer_pid)
