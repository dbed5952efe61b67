"""The data directory: one exclusive owner, one LMDB environment, its named databases.

Theory of operation
-------------------
``open_store`` first takes an exclusive, non-blocking ``flock`` on ``data_dir/wattkeeper.lock``
and writes our pid into it. LMDB itself would let a second process open the environment and
both would then write the journal; the lock turns that into a clear :class:`DataDirInUse` at
start-up. ``flock`` belongs to the open file description, so a second open in the *same*
process is refused too, and the kernel drops the lock when the process dies (no stale locks).

The environment is opened with ``sync=True`` (a committed transaction is on disk) and eight
named databases (layout in ``persistence/keys.py`` and below). ``meta`` holds the schema
version; a directory written by an incompatible version is refused, never misread.
``refs`` and ``meter_journal`` are written behind the journal (``persistence/index.py``):
they hold the entries up to ``meta[b"indexed"]``, and the journal's tail holds the rest.

========== ====================================== =========================================
database   key                                    value
========== ====================================== =========================================
meta       ``b"schema"``, ``b"indexed"``,         schema version; seq indexed to (u64 BE);
           ``b"days"``                            the day records' zone (``days.DaysState``)
journal    seq (u64 BE)                           msgpack entry (``codec.encode_entry``)
outcomes   seq (u64 BE)                           msgpack balance acknowledged for the entry
refs       reference (UTF-8)                      seq (u64 BE)
meter_journal meter_id NUL seq (u64 BE)           ``b""`` (index: one meter's entries)
snapshots  meter_id (UTF-8)                       msgpack state (``codec.encode_state``)
history    meter_id NUL start_ms (u64 BE)         msgpack ``(wh, minor, band, register, balance)``
audit      audit number (u64 BE), 1, 2, ...       msgpack entry (``audit.encode_audit``)
days       meter_id NUL local day start (u64 BE)  a day's intervals and sums (``days``)
outbox     notice id (UTF-8)                      msgpack notice (``persistence.outbox``)
outbox_seq outbox seq (u64 BE)                    notice id, in the order notices were added
========== ====================================== =========================================

The ``audit`` database came after schema version 2 and did not change it: it is *added*, and
nothing already stored changes meaning. An existing directory gains it (empty) at its next
``open_store``, which creates missing databases; a wattkeeper that predates it opens such a
directory unharmed (LMDB's ``max_dbs`` limits the handles one process opens, not the
databases a file holds), and simply writes no audit entries. A read-only reader of a directory
no new server has opened yet finds no ``audit`` database: ``Store.audit`` is then None
(``OPTIONAL_DBS``) and readers treat it as an empty log. A version bump would have refused
every existing park for a change that both versions read correctly. The ``days`` database
(day records, ``persistence.days``) was added the same way later; it is derived from the
history, and the writer builds it for a directory that has none.

Map size. LMDB needs a fixed maximum size for its memory map. We start small and the writer
grows it (doubling, up to ``max_map_size``) when a transaction hits ``MapFullError``: it aborts
that transaction, grows, and retries, so nothing is ever half-written. ``mdb_env_set_mapsize``
is only safe while no transaction is open in the process, so every read transaction goes
through :meth:`Store.read` (a shared gate) and growth takes the gate exclusively.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Final, cast

import lmdb

from persistence.keys import pack_u64, unpack_u64
from persistence.lmdb_types import Db, Env, Txn

MiB: Final = 1 << 20
GiB: Final = 1 << 30
SCHEMA_VERSION: Final = 2
LOCK_FILE: Final = "wattkeeper.lock"
DB_NAMES: Final = (
    "meta", "journal", "outcomes", "refs", "meter_journal", "snapshots", "history", "audit",
    "days", "outbox", "outbox_seq",
)
OPTIONAL_DBS: Final = frozenset({"audit", "days", "outbox", "outbox_seq"})
"""Databases added without a schema change: a read-only reader may find them missing."""
_SCHEMA_KEY: Final = b"schema"
ORPHAN_GRACE_S: Final = 2.0


class StoreError(Exception):
    """A problem with the data directory that a user can act on; the message says how."""


class DataDirInUse(StoreError):
    """Another process (or another open in this one) owns the data directory."""


class StorageUnavailable(StoreError):
    """The journal cannot write now (its writer is restarting, the disk is full): money is
    refused. Nothing of the refused call was done, unless the message says its outcome is
    unknown (it was in flight when the writer died); a retry with the same reference is safe
    either way, because a reference is applied at most once."""

    code: ClassVar[str] = "unavailable"
    """The contract's error code for it (``unavailable``: storage down, nothing was done)."""

    def __init__(self, message: str, cause: str = "", *, outcome_known: bool = True) -> None:
        super().__init__(message)
        self.cause = cause
        """Why storage is down, for operators (the message is for whoever sent the command;
        the cause is also in the log and the availability detail)."""
        self.outcome_known = outcome_known
        """False for a call that was in flight when the writer died: it may have been
        committed. Adapters tell the client so (a retry with the same id settles it)."""


class StorageFull(StorageUnavailable):
    """The LMDB map reached ``max_map_size``; the work that did not fit was not written.

    A kind of :class:`StorageUnavailable` (same ``code``), so one ``except`` covers both."""


class SchemaMismatch(StoreError):
    """The data directory was written by an incompatible version."""


class _Gate:
    """A readers-writer gate: many read transactions, or one map resize, never both.

    Writer-preferring, so a stream of short reads cannot starve a resize; re-entrant for
    readers (a thread already inside may nest), so preference cannot deadlock a nested read.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._resizing = False
        self._resize_waiting = 0
        self._local = threading.local()

    @contextmanager
    def shared(self) -> Iterator[None]:
        depth: int = getattr(self._local, "depth", 0)
        if depth == 0:
            with self._cond:
                while self._resizing or self._resize_waiting:
                    self._cond.wait()
                self._readers += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._cond:
                    self._readers -= 1
                    if not self._readers:
                        self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._resize_waiting += 1
            while self._readers or self._resizing:
                self._cond.wait()
            self._resize_waiting -= 1
            self._resizing = True
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class Store:
    """An open data directory. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: Path, env: Env, dbs: dict[str, Db], lock_fd: int,
                 max_map_size: int) -> None:
        self.path = path
        self.max_map_size = max_map_size
        self._env = env
        self._dbs = dbs
        self._lock_fd = lock_fd
        self._gate = _Gate()
        self._closed = False
        self.map_grows = 0
        self.meta = dbs["meta"]
        self.journal = dbs["journal"]
        self.outcomes = dbs["outcomes"]
        self.refs = dbs["refs"]
        self.meter_journal = dbs["meter_journal"]
        self.snapshots = dbs["snapshots"]
        self.history = dbs["history"]
        self.audit: Db | None = dbs.get("audit")
        """None only in a read-only store of a directory no server has opened since the audit
        log was added (``OPTIONAL_DBS``); ``open_store`` always creates it."""
        self.days: Db | None = dbs.get("days")
        """None only in a read-only store of a directory no server has opened since day
        records were added (the same way as the audit log); ``open_store`` creates it."""
        self.outbox: Db | None = dbs.get("outbox")
        self.outbox_seq: Db | None = dbs.get("outbox_seq")
        """The notice outbox (``persistence.outbox``), added like the audit log."""

    # -- reading (any thread) ----------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[Txn]:
        """A read-only transaction. Keep it short and never hold it across an ``await``:
        while it is open the map cannot grow, so the writer would wait for it."""
        self._check_open()
        while True:
            with self._gate.shared():
                try:
                    txn = self._env.begin(buffers=False)
                except lmdb.MapResizedError:
                    pass  # the writer process grew the map: adopt its size, then retry
                else:
                    try:
                        yield txn
                    finally:
                        txn.abort()
                    return
            self.adopt_map_size()

    def adopt_map_size(self) -> None:
        """Take over the map size another process (the journal writer) grew the map to."""
        with self._gate.exclusive():
            self._env.set_mapsize(0)

    def get_snapshot(self, meter_id: str) -> bytes | None:
        """The stored snapshot bytes of one meter (decode with ``codec.decode_state``)."""
        with self.read() as txn:
            return txn.get(meter_id.encode(), db=self.snapshots)

    def last_seq(self) -> int:
        """The highest journal sequence number on disk (0 for an empty journal)."""
        with self.read() as txn:
            return _last_seq(txn, self.journal)

    @property
    def map_size(self) -> int:
        return int(self._env.info()["map_size"])

    # -- writing (the journal's writer process only) -----------------------------------------

    def begin_write(self) -> Txn:
        """A write transaction; LMDB allows one at a time, so only the journal writer calls this."""
        self._check_open()
        return self._env.begin(write=True)

    def grow_map(self) -> int:
        """Double the map (capped at ``max_map_size``); call with no write transaction open.

        Raises StorageFull when the map is already at its maximum.
        """
        with self._gate.exclusive():
            current = self.map_size
            if current >= self.max_map_size:
                raise StorageFull(
                    f"the data directory {self.path} is full: the LMDB map reached its maximum "
                    f"of {_human(self.max_map_size)} and the last write was not stored "
                    f"({free_space(self.path)}); raise max_map_size if the disk has room, else "
                    f"free space there or move data_dir to a larger disk"
                )
            new_size = min(current * 2, self.max_map_size)
            self._env.set_mapsize(new_size)
            self.map_grows += 1
            return new_size

    def clear_stale_readers(self) -> int:
        """Free the reader slots of dead processes (a killed journal writer's, say): LMDB keeps
        every page a reader might see, so a stale slot would make ``data.mdb`` grow forever."""
        self._check_open()
        return self._env.reader_check()

    # -- lifetime ------------------------------------------------------------------------------

    @property
    def lock_fd(self) -> int:
        """The descriptor holding the data directory's flock (-1 when not the owner)."""
        return self._lock_fd

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._env.close()
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock (once no child holds it either)

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the data directory {self.path} is closed")


def open_store(
    data_dir: Path | str,
    *,
    map_size: int = 256 * MiB,
    max_map_size: int = 64 * GiB,
    lock: bool = True,
) -> Store:
    """Open (creating if needed) the data directory; the result is also a context manager.

    ``lock=False`` is for the journal writer process only: its parent holds the lock."""
    if map_size <= 0 or max_map_size < map_size:
        raise ValueError(f"need 0 < map_size <= max_map_size, got {map_size} and {max_map_size}")
    path = Path(data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"cannot create the data directory {path}: {error.strerror}") from error
    lock_fd = _lock(path) if lock else -1
    try:
        env = cast(
            Env,
            lmdb.open(
                str(path),
                map_size=map_size,
                max_dbs=len(DB_NAMES) + 2,
                sync=True,
                metasync=True,
                subdir=True,
                readahead=False,  # random snapshot/journal reads; readahead only evicts cache
                max_readers=256,
            ),
        )
        try:
            dbs = _open_databases(env, path)
        except BaseException:
            env.close()
            raise
    except lmdb.Error as error:
        _unlock(lock_fd)
        raise StoreError(f"cannot open the LMDB environment in {path}: {error}") from error
    except BaseException:
        _unlock(lock_fd)
        raise
    return Store(path, env, dbs, lock_fd, max_map_size)


def _unlock(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


def _lock(path: Path) -> int:
    lock_path = path / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock_or_wait_for_orphan(fd)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if holder == str(os.getpid()):
            raise DataDirInUse(
                f"the data directory {path} is already open in this process (pid {holder}); "
                f"close the other store first"
            ) from None
        raise DataDirInUse(
            f"the data directory {path} is in use by another wattkeeper process (pid {holder}); "
            f"stop that process first, or point this one at a different data_dir"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _flock_or_wait_for_orphan(fd: int) -> None:
    """Take the lock; if its owner is dead, wait briefly for its writer process to die too.

    The journal writer process shares the lock and is killed with its server
    (``persistence.writer_process``); that takes a moment after the server's own death, and
    a supervisor restarting the server at once should not be refused for it."""
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            if not holder.isdigit() or _alive(int(holder)) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _open_databases(env: Env, path: Path) -> dict[str, Db]:
    txn = env.begin(write=True)
    try:
        dbs = {name: env.open_db(name.encode(), txn=txn, create=True) for name in DB_NAMES}
        stored = txn.get(_SCHEMA_KEY, db=dbs["meta"])
        if stored is None:
            if _last_seq(txn, dbs["journal"]) or txn.stat(dbs["snapshots"])["entries"]:
                raise SchemaMismatch(
                    f"the data directory {path} has data but no schema version; it was not "
                    f"written by wattkeeper, or is damaged. Restore it from a backup"
                )
            txn.put(_SCHEMA_KEY, pack_u64(SCHEMA_VERSION), db=dbs["meta"])
        elif unpack_u64(stored) != SCHEMA_VERSION:
            raise SchemaMismatch(
                f"the data directory {path} has schema version {unpack_u64(stored)}, but this "
                f"wattkeeper reads version {SCHEMA_VERSION}; run the matching wattkeeper version "
                f"or migrate the directory"
            )
        txn.commit()
    except BaseException:
        txn.abort()
        raise
    return dbs


def _last_seq(txn: Txn, journal: Db) -> int:
    cursor = txn.cursor(db=journal)
    return unpack_u64(cursor.key()) if cursor.last() else 0


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged process may still write on ``path``'s filesystem (None if unknown)."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def free_space(path: Path) -> str:
    """``"N bytes free on its filesystem"``, for messages about a full or failing disk."""
    free = free_bytes(path)
    if free is None:
        return "free space on its filesystem unknown"
    return f"{free:,} bytes free on its filesystem"


def write_failed_message(path: Path, error: BaseException) -> str:
    """What to tell an operator when LMDB could not write (``mdb_txn_commit: Input/output
    error`` is what a full disk, a file-size limit or a failing disk look like)."""
    return (
        f"writing the data directory {path} failed ({error}; {free_space(path)}): if the disk "
        f"is full, free space there or move data_dir to a larger disk; otherwise check the "
        f"disk (the kernel log says more)"
    )


def _human(size: int) -> str:
    return f"{size / GiB:.1f} GiB" if size >= GiB else f"{size / MiB:.0f} MiB"
