"""The delivery process's own LMDB environment: which notices it has taken from the outbox,
what is still to be sent where, and the dead letters.

Theory of operation
-------------------
The outbox (``persistence.outbox``) is written by the journal's writer and only read here. The
delivery process (``server.notify_worker``) is the one writer of a second, small environment
in ``<data_dir>/notify``, so it never competes with the journal for LMDB's write lock:

========== ========================================== ======================================
database   key                                        value
========== ========================================== ======================================
meta       ``b"cursor"``                              the last outbox seq taken (u64 BE)
pending    notice id NUL channel NUL address digest   msgpack :class:`Delivery`
dead       the same                                   msgpack :class:`Delivery` (its last error)
========== ========================================== ======================================

Taking notices and creating their deliveries is one transaction (the cursor moves with the
deliveries it made), so a crash neither skips a notice nor makes its deliveries twice. A
delivery leaves ``pending`` when it is delivered or dead, written within a few tens of ms of
the provider's answer: a crash inside that window sends it again after the restart, with the
same notice id (receivers deduplicate on it; docs/tenants.md says so).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final, cast

import attrs
import lmdb
import msgpack

from persistence.keys import pack_u64, unpack_u64
from persistence.lmdb_types import Env

DIRECTORY: Final = "notify"
MAP_SIZE: Final = 1 << 30
CURSOR_KEY: Final = b"cursor"
SEPARATOR: Final = b"\0"


@attrs.frozen
class Delivery:
    """One notice to one contact."""

    notice_id: str
    channel: str
    address: str
    attempts: int = 0
    next_ms: int = 0
    """Not before this wall time (quiet hours, a backoff, a rate limit)."""
    detail: str = ""
    """The last failure, in the provider's words."""
    first_ms: int = 0
    """When it was created (for the dead letters' age and the delivery latency)."""

    @property
    def key(self) -> bytes:
        return delivery_key(self.notice_id, self.channel, self.address)


def delivery_key(notice_id: str, channel: str, address: str) -> bytes:
    digest = hashlib.blake2b(address.encode(), digest_size=8).hexdigest().encode()
    key: bytes = SEPARATOR.join((notice_id.encode(), channel.encode(), digest))
    return key


def _encode(delivery: Delivery) -> bytes:
    encoded: bytes = msgpack.packb((delivery.notice_id, delivery.channel, delivery.address,
                          delivery.attempts, delivery.next_ms, delivery.detail,
                          delivery.first_ms), use_bin_type=True)
    return encoded


def _decode(value: bytes) -> Delivery:
    fields = msgpack.unpackb(value, raw=False, use_list=False)
    return Delivery(*fields)


class Deliveries:
    """The environment above; every method is one short transaction."""

    def __init__(self, env: Env, *, readonly: bool = False) -> None:
        self._env = env
        self._readonly = readonly
        self._meta = env.open_db(b"meta", create=not readonly)
        self._pending = env.open_db(b"pending", create=not readonly)
        self._dead = env.open_db(b"dead", create=not readonly)

    def close(self) -> None:
        self._env.close()

    def cursor(self) -> int:
        with self._env.begin() as txn:
            value = txn.get(CURSOR_KEY, db=self._meta)
        return unpack_u64(bytes(value)) if value is not None else 0

    def take(self, cursor: int, created: Sequence[Delivery]) -> None:
        """Move the cursor to ``cursor`` and create ``created``, together."""
        with self._env.begin(write=True) as txn:
            for delivery in created:
                if txn.get(delivery.key, db=self._dead) is None:
                    txn.put(delivery.key, _encode(delivery), db=self._pending,
                            overwrite=False)
            txn.put(CURSOR_KEY, pack_u64(cursor), db=self._meta)

    def settle(self, done: Sequence[Delivery], retried: Sequence[Delivery],
               dead: Sequence[Delivery]) -> None:
        """Record answers: ``done`` leave, ``retried`` wait again, ``dead`` move aside."""
        with self._env.begin(write=True) as txn:
            for delivery in done:
                txn.delete(delivery.key, db=self._pending)
            for delivery in retried:
                txn.put(delivery.key, _encode(delivery), db=self._pending)
            for delivery in dead:
                txn.delete(delivery.key, db=self._pending)
                txn.put(delivery.key, _encode(delivery), db=self._dead)

    def pending(self) -> list[Delivery]:
        with self._env.begin() as txn:
            return [_decode(bytes(value))
                    for _, value in txn.cursor(db=self._pending).iternext()]

    def dead(self, limit: int = 1000) -> list[Delivery]:
        """The dead letters, up to ``limit``, newest notice ids last (key order)."""
        with self._env.begin() as txn:
            found = []
            for _, value in txn.cursor(db=self._dead).iternext():
                found.append(_decode(bytes(value)))
                if len(found) >= limit:
                    break
            return found

    def counts(self) -> tuple[int, int]:
        """(pending, dead)."""
        with self._env.begin() as txn:
            return (txn.stat(self._pending)["entries"], txn.stat(self._dead)["entries"])

    def revive(self, notice_id: str, now_ms: int) -> list[Delivery]:
        """Dead letters of ``notice_id`` (all when empty) back to pending, attempts reset."""
        prefix = notice_id.encode() + SEPARATOR if notice_id else b""
        revived = []
        with self._env.begin(write=True) as txn:
            cursor = txn.cursor(db=self._dead)
            found = cursor.set_range(prefix)
            while found:
                key = bytes(cursor.key())
                if not key.startswith(prefix):
                    break
                delivery = attrs.evolve(_decode(bytes(cursor.value())), attempts=0,
                                        next_ms=now_ms)
                txn.put(key, _encode(delivery), db=self._pending)
                revived.append(delivery)
                cursor.delete()  # (it moves to the next record)
                found = bool(cursor.key())
        return revived


def deliveries_path(data_dir: Path) -> Path:
    return Path(data_dir) / DIRECTORY


def open_deliveries(data_dir: Path) -> Deliveries:
    """The delivery process's environment (created when missing)."""
    path = deliveries_path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    env = cast(Env, lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=4, sync=True,
                              metasync=True, lock=True))
    return Deliveries(env)


@contextmanager
def read_deliveries(data_dir: Path) -> Iterator[Deliveries | None]:
    """The environment read-only, for the server's dead-letter page (None: none yet)."""
    path = deliveries_path(data_dir)
    if not (path / "data.mdb").exists():
        yield None
        return
    env = cast(Env, lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=4, readonly=True,
                              lock=True))
    try:
        yield Deliveries(env, readonly=True)
    finally:
        env.close()

