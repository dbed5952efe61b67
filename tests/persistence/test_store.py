"""The data directory: exclusive lock, schema version, map growth."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lmdb
import pytest

from persistence.keys import pack_u64
from persistence.store import (
    DB_NAMES,
    LOCK_FILE,
    SCHEMA_VERSION,
    DataDirInUse,
    SchemaMismatch,
    StorageFull,
    StoreError,
    open_store,
)

REPO = Path(__file__).resolve().parents[2]
KiB = 1024


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


# --- the single-owner lock --------------------------------------------------------------------


def test_creates_the_directory_with_its_databases_and_lock(tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "park"
    with open_store(data_dir) as store:
        assert store.path == data_dir
        assert (data_dir / "data.mdb").exists()
        assert (data_dir / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        assert store.last_seq() == 0
        assert store.get_snapshot("M-1") is None
        with store.read() as txn:
            assert txn.get(b"schema", db=store.meta) == pack_u64(SCHEMA_VERSION)
    env = lmdb.open(str(data_dir), max_dbs=10, readonly=True)
    try:
        with env.begin() as txn:
            names = {key.decode() for key, _ in txn.cursor()}
    finally:
        env.close()
    assert names == set(DB_NAMES)


def test_second_open_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        with pytest.raises(DataDirInUse, match="already open in this process") as refused:
            open_store(tmp_path)
        assert str(tmp_path) in str(refused.value)
        assert store.last_seq() == 0  # the refused open did not disturb the first
    with open_store(tmp_path):  # closing released the lock
        pass


def test_open_in_another_process_is_refused_while_we_hold_it(tmp_path: Path) -> None:
    with open_store(tmp_path):
        child = _python(
            """
            import sys
            from persistence.store import DataDirInUse, open_store
            try:
                open_store(sys.argv[1])
            except DataDirInUse as error:
                print(error)
                sys.exit(3)
            """,
            str(tmp_path),
        )
        out, err = child.communicate(timeout=30)
    assert child.returncode == 3, err
    assert str(tmp_path) in out
    assert f"in use by another wattkeeper process (pid {os.getpid()})" in out


def test_we_are_refused_while_another_process_holds_it_and_not_after_it_exits(
    tmp_path: Path,
) -> None:
    child = _python(
        """
        import sys
        from persistence.store import open_store
        store = open_store(sys.argv[1])
        print("ready", flush=True)
        sys.stdin.read()
        store.close()
        """,
        str(tmp_path),
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        with pytest.raises(DataDirInUse) as refused:
            open_store(tmp_path)
        message = str(refused.value)
        assert str(tmp_path) in message
        assert f"pid {child.pid}" in message
        assert "stop that process first" in message
    finally:
        child.communicate("", timeout=30)
    assert child.returncode == 0
    with open_store(tmp_path):
        pass


def test_a_killed_owner_leaves_no_stale_lock(tmp_path: Path) -> None:
    child = _python(
        """
        import sys
        from persistence.store import open_store
        store = open_store(sys.argv[1])
        print("ready", flush=True)
        sys.stdin.read()
        """,
        str(tmp_path),
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    child.kill()
    child.communicate(timeout=30)
    with open_store(tmp_path) as store:
        assert store.last_seq() == 0


# --- schema -----------------------------------------------------------------------------------


def _put_raw(data_dir: Path, db: str, key: bytes, value: bytes) -> None:
    env = lmdb.open(str(data_dir), max_dbs=10)
    try:
        with env.begin(write=True) as txn:
            txn.put(key, value, db=env.open_db(db.encode(), txn=txn))
    finally:
        env.close()


def test_another_schema_version_is_refused_by_number(tmp_path: Path) -> None:
    with open_store(tmp_path):
        pass
    _put_raw(tmp_path, "meta", b"schema", pack_u64(SCHEMA_VERSION + 1))
    for _ in range(2):  # a refused open releases the lock: the second is refused the same way
        with pytest.raises(SchemaMismatch) as refused:
            open_store(tmp_path)
        message = str(refused.value)
        assert str(tmp_path) in message
        assert f"schema version {SCHEMA_VERSION + 1}" in message
        assert f"reads version {SCHEMA_VERSION}" in message
    _put_raw(tmp_path, "meta", b"schema", pack_u64(SCHEMA_VERSION))
    with open_store(tmp_path):
        pass


def test_data_without_a_schema_version_is_refused(tmp_path: Path) -> None:
    _put_raw(tmp_path, "journal", pack_u64(1), b"not ours")
    with pytest.raises(SchemaMismatch, match="has data but no schema version"):
        open_store(tmp_path)


def test_an_empty_foreign_environment_is_adopted(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path), max_dbs=10)
    env.close()
    with open_store(tmp_path) as store, store.read() as txn:
        assert txn.get(b"schema", db=store.meta) == pack_u64(SCHEMA_VERSION)


# --- misuse -----------------------------------------------------------------------------------


def test_bad_sizes_and_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="map_size"):
        open_store(tmp_path, map_size=2 * KiB * KiB, max_map_size=KiB * KiB)
    with pytest.raises(ValueError, match="map_size"):
        open_store(tmp_path, map_size=0)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create the data directory"):
        open_store(blocker / "park")


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="is closed"):
        store.last_seq()
    with pytest.raises(StoreError, match="is closed"):
        store.begin_write()


# --- map size ---------------------------------------------------------------------------------


def test_grow_map_doubles_up_to_the_cap_then_reports_full(tmp_path: Path) -> None:
    with open_store(tmp_path, map_size=64 * KiB, max_map_size=160 * KiB) as store:
        assert store.map_size == 64 * KiB
        assert store.grow_map() == 128 * KiB
        assert store.grow_map() == 160 * KiB  # capped, not doubled past the maximum
        assert store.map_size == 160 * KiB
        with pytest.raises(StorageFull) as full:
            store.grow_map()
        assert str(tmp_path) in str(full.value)
        assert "raise max_map_size" in str(full.value)
        assert store.map_grows == 2


def test_a_reopened_store_fits_its_data_whatever_map_size_is_asked(tmp_path: Path) -> None:
    with open_store(tmp_path, map_size=64 * KiB) as store:
        store.grow_map()
        store.grow_map()
        txn = store.begin_write()
        for number in range(100):
            txn.put(b"M-%d" % number, b"x" * 600, db=store.snapshots)
        txn.commit()
        assert store.get_snapshot("M-99") == b"x" * 600
    file_size = (tmp_path / "data.mdb").stat().st_size
    assert file_size > 64 * KiB
    with open_store(tmp_path, map_size=64 * KiB) as store:
        # The grown size is not remembered; LMDB maps at least the file's current size.
        assert store.map_size >= file_size
        assert store.get_snapshot("M-99") == b"x" * 600


def test_the_reader_slot_of_a_killed_process_is_cleared(tmp_path: Path) -> None:
    """A journal writer killed inside a read transaction leaves its slot in LMDB's reader
    table; the next writer clears it so freed pages can be reused."""
    with open_store(tmp_path) as store:
        reader = _python(
            """
            import sys, time, lmdb
            env = lmdb.open(sys.argv[1], max_dbs=16, subdir=True)
            txn = env.begin()
            print("reading", flush=True)
            time.sleep(60)
            """,
            str(tmp_path),
        )
        assert reader.stdout is not None
        assert reader.stdout.readline() == "reading\n"
        reader.kill()
        reader.communicate(timeout=30)
        assert store.clear_stale_readers() == 1
        assert store.clear_stale_readers() == 0
