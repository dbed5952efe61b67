"""The journal's two indexes, written behind the journal: ``refs`` and ``meter_journal``.

Theory of operation
-------------------
A money record must be on disk before it is acknowledged, and a synced LMDB commit costs about
0.5 ms plus 60-80 µs for every *scattered* page it writes (measured here: a batch of 100
top-ups costs 11.5 ms when each also inserts its reference and its meter-index key, whose pages
are random, and 1.1 ms as appends to the journal alone). So the acknowledged transaction only
appends: the entry to ``journal`` (key = seq) and, one transaction later, the acknowledged
balance to ``outcomes`` (key = seq). The two indexes follow behind in small background chunks,
like snapshots, oldest entry first.

The invariant that keeps this exact: ``meta[b"indexed"]`` = *W*, written in the same
transaction as the index keys, and ``refs`` and ``meter_journal`` hold exactly the entries with
``seq <= W``. Everything past *W* is the *tail* of the journal: short (at most what arrived
since the indexer last caught up) and read in order by anyone who needs all of it:

* the writer keeps the tail's references in memory (:class:`PendingIndex`), rebuilt from the
  journal at start, so its duplicate check is "in memory, else ``refs``" and stays
  authoritative;
* readers in other processes (recovery, a restarting actor, :func:`find_seq`) read *W* and the
  tail in the same read transaction as the index, so they never miss an entry or see one twice.

An index chunk is sized to keep its transaction near a time budget (it doubles while commits are
short, halves when one runs long), so a top-up never waits long behind index work; bursts are
absorbed by the tail and indexed once the burst is over.

A tail entry that does not decode (``persistence.damage``) is indexed under whatever can still
be read of it: its meter (so recovery keeps finding it and keeps that meter quarantined until
the entry is repaired, instead of the index silently passing it by) and its reference (so a
repeat of that reference is still a duplicate, never a second recording). What cannot be read
is not indexed; the watermark moves past the entry all the same, and every reader of the tail
reports it. The writer must start whatever one record holds: the park's money path depends on it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Final

from persistence.damage import Damage, read_entry
from persistence.entries import JournalEntry
from persistence.keys import meter_key, pack_u64, unpack_u64
from persistence.lmdb_types import Txn
from persistence.store import Store

log = logging.getLogger(__name__)

INDEXED_KEY: Final = b"indexed"


def indexed_through(txn: Txn, store: Store) -> int:
    """*W*: the highest seq whose ``refs`` and ``meter_journal`` keys are written."""
    raw = txn.get(INDEXED_KEY, db=store.meta)
    return 0 if raw is None else unpack_u64(raw)


def tail_entries(
    txn: Txn, store: Store, after: int, meter_id: str | None = None
) -> Iterator[tuple[int, JournalEntry | Damage]]:
    """Journal entries with seq > ``after``, in order, each decoded or described as damaged.

    With ``meter_id``, only that meter's entries, and the damaged ones that may be its: those
    that name it and those whose meter cannot be read at all (the caller decides)."""
    cursor = txn.cursor(db=store.journal)
    if not cursor.set_range(pack_u64(after + 1)):
        return
    if meter_id is None:
        for key, value in cursor.iternext():
            yield unpack_u64(key), read_entry(unpack_u64(key), value)
        return
    # A restarting actor reads the tail for one meter, maybe during a burst of top-ups: an
    # entry holds the id's UTF-8 bytes, so entries without them are skipped undecoded (a damaged
    # entry without them cannot be shown to be this meter's either).
    needle = meter_id.encode()
    for key, value in cursor.iternext():
        if needle in value:
            seq = unpack_u64(key)
            entry = read_entry(seq, value)
            if entry.meter_id == meter_id or (isinstance(entry, Damage) and not entry.meter_id):
                yield seq, entry


def indexed_owner(txn: Txn, store: Store, meters: Iterable[str], seq: int) -> str:
    """Which of ``meters`` entry ``seq`` is indexed under, or ``""``: for an indexed entry
    damaged past reading its meter id. One lookup per meter, so only for the rare damaged one."""
    get, index = txn.get, store.meter_journal
    for meter_id in meters:
        if get(meter_key(meter_id, seq), db=index) is not None:
            return meter_id
    return ""


def find_seq(txn: Txn, store: Store, key: bytes) -> int | None:
    """The seq of the entry recorded under reference ``key``, or None (index, then tail).

    A damaged tail entry counts under the reference that can still be read of it."""
    raw = txn.get(key, db=store.refs)
    if raw is not None:
        return unpack_u64(raw)
    reference = key.decode()
    for seq, entry in tail_entries(txn, store, indexed_through(txn, store)):
        if entry.reference == reference:
            return seq
    return None


class PendingIndex:
    """The writer's view of the tail: references by seq, and the keys still to index."""

    def __init__(self, indexed: int) -> None:
        self.indexed = indexed
        self._seq_by_ref: dict[bytes, int] = {}
        self._queue: deque[tuple[int, bytes, str]] = deque()  # (seq, reference, meter id)

    @classmethod
    def load(cls, store: Store) -> PendingIndex:
        """Rebuild from the journal: everything past *W* is still to index (a damaged entry
        under what can be read of it; see the module docstring)."""
        with store.read() as txn:
            pending = cls(indexed_through(txn, store))
            for seq, entry in tail_entries(txn, store, pending.indexed):
                if isinstance(entry, Damage):
                    log.error("%s; indexed under meter %s and reference %s (what can be read "
                              "of it); repair it from a backup (docs/operations.md)", entry,
                              entry.meter_id or "(unreadable)", entry.reference or "(unreadable)")
                pending.add(seq, entry.reference.encode(), entry.meter_id)
        return pending

    def __len__(self) -> int:
        return len(self._queue)

    def find(self, key: bytes) -> int | None:
        return self._seq_by_ref.get(key)

    def add(self, seq: int, key: bytes, meter_id: str) -> None:
        """A committed entry (call after its transaction committed). An empty ``key`` or
        ``meter_id`` (unreadable in a damaged entry) is left out of its index."""
        if key:
            self._seq_by_ref[key] = seq
        self._queue.append((seq, key, meter_id))

    def put_chunk(self, txn: Txn, store: Store, limit: int) -> int:
        """Write the oldest ``limit`` pending entries' index keys and the new *W* into ``txn``;
        returns how many. Nothing changes here until :meth:`written` (the commit may fail)."""
        count = min(limit, len(self._queue))
        if not count:
            return 0
        put, refs, index = txn.put, store.refs, store.meter_journal
        seq = self.indexed
        for seq, key, meter_id in islice(self._queue, count):
            if key:
                put(key, pack_u64(seq), db=refs)
            if meter_id:
                put(meter_key(meter_id, seq), b"", db=index)
        put(INDEXED_KEY, pack_u64(seq), db=store.meta)
        return count

    def written(self, count: int) -> None:
        """The transaction holding the oldest ``count`` entries' keys committed."""
        queue, seq_by_ref = self._queue, self._seq_by_ref
        for _ in range(count):
            seq, key, _meter = queue.popleft()
            if seq_by_ref.get(key) == seq:
                del seq_by_ref[key]
            self.indexed = seq
