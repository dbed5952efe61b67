"""Opening a data directory to read it, next to a running server (``wattkeeper check``).

Theory of operation
-------------------
The server's ``open_store`` takes the directory's ``wattkeeper.lock`` and may create the
directory and its databases; a reader must do neither. So here the LMDB environment is opened
with ``readonly=True``: no write transaction is possible, nothing is created, and
``wattkeeper.lock`` is not touched (our exclusive lock is for writers; LMDB readers in other
processes are safe by LMDB's own design). LMDB still registers the reader in its reader table
``lock.mdb``: that is how the server's writer knows not to reuse the pages this reader is
looking at, and it is the only file such a reader changes. On read-only media (a backup copy
on a read-only mount) there is no reader table to use and none is needed, as nothing else can
write there: the environment is then opened without LMDB's locking.

The result is an ordinary :class:`Store` (``lock_fd`` -1), so every reader function in
``persistence`` works on it; ``begin_write`` fails. A database added after the directory was
last opened by a server (``store.OPTIONAL_DBS``: the audit log) may be missing; it cannot be
created here, so its handle is None and readers see an empty log.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import cast

import lmdb

from persistence.lmdb_types import Db, Env
from persistence.store import DB_NAMES, OPTIONAL_DBS, Store, StoreError


def open_store_readonly(data_dir: Path | str) -> Store:
    """Open an existing data directory read-only, without its lock (see the module docstring).

    Raises StoreError, in words, when there is no wattkeeper data directory at ``data_dir``."""
    path = Path(data_dir)
    if not (path / "data.mdb").is_file():
        raise StoreError(
            f"there is no wattkeeper data directory at {path} (no data.mdb); check data_dir in "
            f"the park config"
        )
    try:
        env = _open(path, lock=True)
    except lmdb.Error as error:
        if not _read_only_media(error):
            raise StoreError(f"cannot open the LMDB environment in {path}: {error}") from error
        try:
            env = _open(path, lock=False)
        except lmdb.Error as again:
            raise StoreError(f"cannot open the LMDB environment in {path}: {again}") from again
    try:
        dbs = _open_databases(env, path)
    except BaseException:
        env.close()
        raise
    return Store(path, env, dbs, -1, env.info()["map_size"])


def _open(path: Path, *, lock: bool) -> Env:
    return cast(
        Env,
        lmdb.open(
            str(path),
            readonly=True,
            lock=lock,
            create=False,
            max_dbs=len(DB_NAMES) + 2,
            subdir=True,
            readahead=False,
            max_readers=256,
        ),
    )


def _read_only_media(error: lmdb.Error) -> bool:
    """The reader table cannot be opened for writing: a read-only file or filesystem."""
    return isinstance(error, lmdb.ReadonlyError) or errno.EROFS in error.args


def _open_databases(env: Env, path: Path) -> dict[str, Db]:
    dbs: dict[str, Db] = {}
    for name in DB_NAMES:
        try:
            # Without a transaction py-lmdb opens the handle in a read transaction it commits,
            # so the handle stays valid for the environment's lifetime.
            dbs[name] = env.open_db(name.encode(), create=False)
        except lmdb.NotFoundError:
            if name in OPTIONAL_DBS:
                continue  # added later without a schema change (persistence.store)
            raise StoreError(
                f"the data directory {path} has no {name!r} database; it was not written by "
                f"this wattkeeper version, or is damaged"
            ) from None
    return dbs
