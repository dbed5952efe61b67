"""The LMDB write transactions: group commit, chunked background writes, map growth.

Theory of operation
-------------------
LMDB allows one write transaction at a time and a synced commit costs a disk flush (~0.2 ms
here; ~4.8k commits/s). So there is exactly one writer, and each of its transactions carries
*everything* that queued up while the previous one was being flushed: that is group commit.
Under load batches grow by themselves, and the flush cost is shared.

The writer runs in a process of its own (``persistence.writer_process``), not a thread: py-lmdb
releases the GIL around every put, get and commit, so a writer thread and the trio thread take
the GIL from each other thousands of times a second, and each hand-back can wait a switch
interval. Measured at 100 concurrent top-up callers: commits took 7-9 ms instead of ~1 ms, the
control loop stalled up to 20 ms while snapshots were written, and top-ups topped out near
6k/s. This module is only the transaction logic: queues in, :class:`BatchResult` out, no
threads, no I/O other than LMDB, so it is tested synchronously.

Each transaction is built from three queues and the index backlog, in this order:

1. background work (snapshots, history, audit entries, audit pruning), FIFO, at most
   ``chunk_puts`` puts. A 100k-meter snapshot is thus split over many small transactions, so
   a money record queued behind it waits for one chunk, not for the whole snapshot. Flush
   markers travel in this queue and complete when the transaction containing everything
   before them is committed;
2. stored outcomes of earlier records (``outcomes``, keyed by seq), all of them;
3. journal records, at most ``max_records``, appended to ``journal``. The reference is looked
   up first in the not-yet-indexed tail (in memory), then in ``refs``, inside the write
   transaction: that lookup is authoritative (this is the only writer). A known reference is
   answered with its first recording and writes nothing;
4. a chunk of the index backlog (``persistence.index``): ``refs`` and ``meter_journal`` keys of
   entries committed earlier, sized to keep the transaction near ``index_budget_s``.

Records and outcomes only append, so a money transaction writes a few adjacent pages however
many records it carries; the scattered index pages are paid in the background.

The audit log (``persistence.audit``) is background work of two kinds. ``"audit"`` items are
``(number, encoded entry)`` puts into ``audit``; numbers come from the trio side in order, and
``counters.audit_last`` (the highest number this writer has *taken care of*: committed, or
dropped when the map was full) lets the journal forget what it keeps for a resend. An
``"audit_prune"`` item carries a cutoff (wall ms): the transaction deletes entries older than
that from the oldest end, looking at no more records than the chunk's remaining budget; if it
may have stopped early it queues itself again at the *end* of the background queue, so a
retention run over millions of old entries is many small transactions with everything else in
between, never one long one. Numbers follow time, so the walk stops at the first entry that is
young enough. A damaged record's time cannot be read: it goes with the first readable entry
after it that is old enough (numbers follow time, so it is older still), and stays otherwise.

Each history interval also sets its slot in its meter's day record (``persistence.days``), in
the same transaction, so the two never disagree. The writer is told the park's time zone; if
the day records are in another zone, or the directory has none yet, it empties ``days`` and
queues a ``"days_rebuild"`` item that walks the history from a key position, ``chunk_puts``
intervals a transaction, queuing itself again at the end of the queue like an audit prune,
and records in ``meta`` how far it got (a restarted writer goes on from there) and when the
records are complete. Intervals written meanwhile set their slots too: a slot is set, not
added to, so the walk passing over them again changes nothing.

Taking background work *before* records matters for ``flush``: a record queued before a marker
is always in the same transaction as that marker or an earlier one.

When a put or the commit hits ``MapFullError`` the transaction is aborted (LMDB then has
written nothing of it), the map is doubled and the same batch is retried. At ``max_map_size``
the background chunk is dropped first (snapshots are an optimisation; history is reported as
lost), then the index chunk is left out (the tail stays in memory and on disk; indexing stops
until a restart) and the money records retried alone; if even they do not fit they fail with
:class:`StorageFull`. Either way nothing is half-written.

Any other LMDB error from a transaction (``mdb_txn_commit: Input/output error`` is what a full
disk or a file-size limit looks like) is raised as a :class:`StoreError` whose message names the
data directory, the free bytes on its filesystem and what to do; the writer process sends it to
the server and exits, and the server starts a fresh one (``persistence.writer_link``). LMDB
has written nothing of the failed transaction.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from typing import Any

import attrs
import lmdb

from persistence.audit import audit_time, last_audit_number
from persistence.codec import (
    CodecError,
    HistoryItem,
    decode_interval,
    decode_outcome,
    encode_interval,
    encode_outcome,
)
from persistence.days import DAYS_KEY, DaysState, DayUpdates, LocalDays, usable_interval
from persistence.index import PendingIndex
from persistence.keys import MAX_KEY_BYTES, meter_key, pack_u64, split_meter_key, unpack_u64
from persistence.lmdb_types import Txn
from persistence.outbox import NoticeItem, put_notices
from persistence.store import StorageFull, Store, StoreError, write_failed_message

log = logging.getLogger(__name__)

INDEX_BUDGET_S = 0.004
"""Target duration of a transaction that carries index work; a top-up may wait behind one."""
MIN_INDEX_CHUNK = 16
MAX_INDEX_CHUNK = 4096
MAX_INDEX_LAG = 200_000
"""Past this backlog, index chunks ride with money records too (bounded writer memory)."""


class JournalBroken(StoreError):
    """The journal is closed; nothing more can be recorded. (A writer that died is restarted:
    while it is down the journal raises ``StorageUnavailable`` instead.)"""


@attrs.define(eq=False)
class RecordRequest:
    """One journal record to write. The writer fills ``seq``, or ``first``, or ``error``.

    ``token`` is the caller's handle for the answer; ``key`` the reference (UTF-8) and
    ``encoded`` the entry as ``codec.encode_entry`` made it."""

    token: int
    meter_id: str
    key: bytes
    encoded: bytes
    seq: int = 0
    first: tuple[int, bytes, int | None] | None = None
    """For a reference seen in an earlier transaction: (seq, stored entry, outcome)."""
    error: StorageFull | None = None


@attrs.define(eq=False)
class Background:
    """Snapshot or history items waiting for the writer; ``offset`` = how many are written."""

    kind: str  # "snapshots" | "history" | "audit" | "audit_prune" | "days_rebuild" | "notices"
    items: (list[tuple[str, bytes]] | list[HistoryItem] | list[tuple[int, bytes]] | list[int]
            | list[bytes])
    offset: int = 0


@attrs.define(eq=False)
class BatchResult:
    """What one transaction did, in commit order. ``markers`` are flush-marker tokens."""

    committed: list[RecordRequest] = attrs.Factory(list)  # seq order
    settled: list[RecordRequest] = attrs.Factory(list)  # duplicates and failures
    outcomes: list[tuple[str, int]] = attrs.Factory(list)  # (reference, outcome) stored
    markers: list[int] = attrs.Factory(list)
    dropped: int = 0


HistoryPut = tuple[bytes, bytes, str, int, int, int, str]
"""An interval's key and value, and what its day record needs: meter, start, Wh, minor, band."""


@attrs.define
class _Batch:
    snapshots: list[tuple[bytes, bytes]]
    history: list[HistoryPut]
    outcomes: list[tuple[int, str, int]]
    records: list[RecordRequest]
    markers: list[int]
    index: int = 0
    audit: list[tuple[bytes, bytes]] = attrs.Factory(list)
    audit_high: int = 0
    """The highest audit number taken into this batch (0: none)."""
    prune: tuple[int, int] | None = None
    """``(cutoff_ms, at most this many records looked at)``: an audit retention chunk."""
    rebuild: tuple[bytes, int] | None = None
    """``(history key to go on from, at most this many intervals)``: a day records chunk."""
    notices: list[NoticeItem] = attrs.Factory(list)

    @property
    def background_puts(self) -> int:
        return len(self.snapshots) + len(self.history) + len(self.audit) + len(self.notices)


@attrs.define
class WriterCounters:
    """What the writer did so far; sent to the trio side with every result."""

    commits: int = 0
    record_commits: int = 0
    entries: int = 0
    duplicates: int = 0
    largest_batch: int = 0
    snapshots_written: int = 0
    history_written: int = 0
    outcomes_written: int = 0
    dropped_puts: int = 0
    commit_seconds: float = 0.0
    longest_commit_s: float = 0.0
    map_size: int = 0
    map_grows: int = 0
    pending_records: int = 0
    pending_background_puts: int = 0
    index_lag: int = 0
    """Committed entries whose ``refs``/``meter_journal`` keys are not written yet."""
    indexed_entries: int = 0
    audit_written: int = 0
    audit_pruned: int = 0
    audit_last: int = 0
    """The highest audit number taken care of (committed, or dropped with the map full)."""
    days_written: int = 0
    days_complete: bool = False
    """Every interval of the history is in the day records (``persistence.days``)."""
    notices_written: int = 0
    """Notices added to the outbox (a repeat of a stored notice is not counted)."""


class Writer:
    """The queues and the transactions. Submit work, then ``write(take())`` while ``busy``."""

    def __init__(
        self,
        store: Store,
        *,
        chunk_puts: int = 1000,
        max_records: int = 2000,
        index_budget_s: float = INDEX_BUDGET_S,
        days_zone: str | None = None,
    ) -> None:
        """``days_zone``: the park's time zone, whose local days the day records follow
        (None: whichever zone they are in already, UTC for a directory without any)."""
        self.store = store
        self.last_seq = store.last_seq()
        self.index = PendingIndex.load(store)
        self.counters = WriterCounters(map_size=store.map_size, index_lag=len(self.index),
                                       audit_last=last_audit_number(store))
        self._chunk_puts = chunk_puts
        self._max_records = max_records
        self._index_budget_s = index_budget_s
        self._index_chunk = MIN_INDEX_CHUNK
        self._index_stopped = False
        self._records: deque[RecordRequest] = deque()
        self._outcomes: deque[tuple[int, str, int]] = deque()
        self._background: deque[Background | int] = deque()
        self._days = self._start_days(days_zone)

    def _start_days(self, zone: str | None) -> LocalDays:
        """The day records' zone; a rebuild queued when they are not complete in it."""
        store = self.store
        with store.read() as txn:
            state = DaysState.decode(txn.get(DAYS_KEY, db=store.meta))
            no_history = not txn.stat(store.history)["entries"]
        zone = zone or (state.zone if state is not None else "UTC")
        days = LocalDays(zone)  # (an unknown zone fails here, before anything is written)
        if state is None or state.zone != zone:
            state = DaysState(zone, no_history)  # (nothing to build from: complete already)
            txn = store.begin_write()
            try:
                txn.drop(store.days, delete=False)
                txn.put(DAYS_KEY, state.encode(), db=store.meta)
                txn.commit()
            except BaseException:
                _abort(txn)
                raise
            if not no_history:
                log.info("day records: building them in %s from the history", zone)
        if not state.complete:
            self._background.append(Background("days_rebuild", [state.position]))
        self.counters.days_complete = state.complete
        return days

    def submit_record(self, request: RecordRequest) -> None:
        self._records.append(request)

    def submit_outcome(self, seq: int, reference: str, outcome: int) -> None:
        """The balance acknowledged for entry ``seq`` (recorded under ``reference``)."""
        self._outcomes.append((seq, reference, outcome))

    def submit_background(self, work: Background) -> None:
        self._background.append(work)

    def submit_marker(self, token: int) -> None:
        self._background.append(token)

    @property
    def busy(self) -> bool:
        """Queued work that must be written (the index backlog is not: see ``indexing``)."""
        return bool(self._records or self._outcomes or self._background)

    @property
    def indexing(self) -> bool:
        """Index work is left; worth a transaction while nothing else is queued."""
        return bool(self.index) and not self._index_stopped

    def pending(self) -> tuple[int, int]:
        """(records, background puts) still queued."""
        background = sum(
            len(work.items) - work.offset for work in self._background
            if isinstance(work, Background)
        )
        return len(self._records), background

    def take(self) -> _Batch:
        batch = _Batch([], [], [], [], [])
        budget = self._chunk_puts
        queue = self._background
        while queue and (budget > 0 or isinstance(queue[0], int)):
            head = queue[0]
            if isinstance(head, int):
                queue.popleft()
                batch.markers.append(head)
                continue
            if head.kind == "audit_prune":
                queue.popleft()
                cutoff = head.items[0]
                if batch.prune is None and isinstance(cutoff, int):
                    batch.prune = (cutoff, budget)
                    budget = 0
                continue  # a second prune queued behind the first is the same work
            if head.kind == "days_rebuild":
                queue.popleft()
                position = head.items[0]
                if batch.rebuild is None and isinstance(position, bytes):
                    batch.rebuild = (position, budget)
                    budget = 0
                continue
            end = min(head.offset + budget, len(head.items))
            chunk = head.items[head.offset : end]
            budget -= end - head.offset
            head.offset = end
            if end == len(head.items):
                queue.popleft()
            if head.kind == "snapshots":
                batch.snapshots.extend(_snapshot_puts(chunk))  # type: ignore[arg-type]
            elif head.kind == "audit":
                puts, high = _audit_puts(chunk)  # type: ignore[arg-type]
                batch.audit.extend(puts)
                batch.audit_high = max(batch.audit_high, high)
            elif head.kind == "notices":
                batch.notices.extend(_notice_items(chunk))
            else:
                batch.history.extend(_history_puts(chunk))  # type: ignore[arg-type]
        outcomes = self._outcomes
        while outcomes:
            batch.outcomes.append(outcomes.popleft())
        records = self._records
        for _ in range(min(len(records), self._max_records)):
            batch.records.append(records.popleft())
        if self.indexing and (not batch.records or len(self.index) > MAX_INDEX_LAG):
            batch.index = self._index_chunk
        return batch

    def write(self, batch: _Batch) -> BatchResult:
        result = BatchResult(markers=batch.markers)
        while True:
            try:
                self._transact(batch, result)
                break
            except lmdb.MapFullError:
                pass
            except lmdb.Error as error:
                raise StoreError(write_failed_message(self.store.path, error)) from error
            try:
                new_size = self.store.grow_map()
                log.info("LMDB map grown to %d bytes", new_size)
                continue
            except StorageFull as full:
                if batch.background_puts or batch.prune is not None:
                    lost = batch.background_puts
                    log.error("%s (%d snapshot/history/audit puts dropped)", full, lost)
                    self.counters.dropped_puts += lost
                    result.dropped += lost
                    if batch.notices:
                        log.error("%d tenant notices are not in the outbox (the data "
                                  "directory is full)", len(batch.notices))
                    batch.snapshots, batch.history, batch.audit = [], [], []
                    batch.notices = []
                    batch.prune = None  # tried again at the next retention run
                    if batch.rebuild is not None:  # tried again after everything else
                        self._background.append(Background("days_rebuild", [batch.rebuild[0]]))
                        batch.rebuild = None
                    continue
                if batch.index:
                    log.error("%s (indexing stops until a restart; %d entries wait in the "
                              "journal's tail)", full, len(self.index))
                    self._index_stopped = True
                    batch.index = 0
                    continue
                for request in batch.records:
                    request.error = full
                result.committed.clear()
                result.settled = list(batch.records)
                result.outcomes.clear()
                break
        counters = self.counters
        counters.audit_last = max(counters.audit_last, batch.audit_high)
        counters.map_size = self.store.map_size
        counters.map_grows = self.store.map_grows
        counters.pending_records, counters.pending_background_puts = self.pending()
        counters.index_lag = len(self.index)
        return result

    def _transact(self, batch: _Batch, result: BatchResult) -> None:
        store = self.store
        started = time.perf_counter()
        txn = store.begin_write()
        try:
            # Outcomes first: a repeat of the same reference in this batch must see them.
            outcomes = self._put_outcomes(txn, batch.outcomes)
            committed, settled = self._put_records(txn, batch.records)
            indexed = self.index.put_chunk(txn, store, batch.index)
            put = txn.put
            for key, value in batch.snapshots:
                put(key, value, db=store.snapshots)
            days_db = store.days
            days = DayUpdates(self._days, lambda key: txn.get(key, db=days_db))
            for key, value, meter_id, start_ms, wh, minor, band in batch.history:
                put(key, value, db=store.history)
                days.add(meter_id, start_ms, wh, minor, band)
            rebuilt = None if batch.rebuild is None else _rebuild_days(
                txn, store, days, *batch.rebuild)
            for key, value in days.encoded():
                put(key, value, db=days_db)
            if rebuilt is not None:
                put(DAYS_KEY, DaysState(self._days.timezone, *rebuilt).encode(), db=store.meta)
            for key, value in batch.audit:
                put(key, value, db=store.audit)
            pruned, more = (0, False) if batch.prune is None else _prune_audit(
                txn, store, *batch.prune)
            noticed = 0
            if batch.notices and store.outbox is not None and store.outbox_seq is not None:
                noticed = put_notices(txn, store.outbox, store.outbox_seq, store.meta,
                                      batch.notices)
            txn.commit()
        except BaseException:
            _abort(txn)
            raise
        elapsed = time.perf_counter() - started
        index = self.index
        index.written(indexed)
        for seq, request in committed:
            request.seq = seq
            index.add(seq, request.key, request.meter_id)
        if committed:
            self.last_seq = committed[-1][0]
        if indexed:
            self._resize_index_chunk(elapsed)
        result.committed = [request for _, request in committed]
        result.settled = settled
        result.outcomes = outcomes
        counters = self.counters
        counters.commits += 1
        counters.record_commits += bool(committed)
        counters.entries += len(committed)
        counters.duplicates += len(settled)
        counters.largest_batch = max(counters.largest_batch, len(committed))
        counters.snapshots_written += len(batch.snapshots)
        counters.history_written += len(batch.history)
        counters.days_written += len(days)
        if rebuilt is not None:
            complete, position = rebuilt
            counters.days_complete = complete
            if complete:
                log.info("day records: complete (%s)", self._days.timezone)
            else:  # more to do: after whatever else is queued, like a prune
                self._background.append(Background("days_rebuild", [position]))
        counters.audit_written += len(batch.audit)
        counters.notices_written += noticed
        counters.audit_pruned += pruned
        if more and batch.prune is not None:
            # Perhaps more to prune: after whatever else is queued (module docstring).
            self._background.append(Background("audit_prune", [batch.prune[0]]))
        counters.outcomes_written += len(outcomes)
        counters.indexed_entries += indexed
        counters.commit_seconds += elapsed
        counters.longest_commit_s = max(counters.longest_commit_s, elapsed)

    def _resize_index_chunk(self, elapsed: float) -> None:
        """Keep transactions that carry index work near the budget (see persistence.index)."""
        if elapsed < self._index_budget_s / 2:
            self._index_chunk = min(self._index_chunk * 2, MAX_INDEX_CHUNK)
        elif elapsed > self._index_budget_s:
            self._index_chunk = max(self._index_chunk // 2, MIN_INDEX_CHUNK)

    def _put_records(
        self, txn: Txn, records: list[RecordRequest]
    ) -> tuple[list[tuple[int, RecordRequest]], list[RecordRequest]]:
        store = self.store
        refs, journal = store.refs, store.journal
        pending = self.index
        seq = self.last_seq
        batch_refs: dict[bytes, int] = {}  # this transaction's own (not in the index yet)
        committed: list[tuple[int, RecordRequest]] = []
        settled: list[RecordRequest] = []
        for request in records:
            key = request.key
            first_seq = batch_refs.get(key) or pending.find(key)
            if first_seq is None:
                known = txn.get(key, db=refs)
                first_seq = None if known is None else unpack_u64(known)
            if first_seq is not None:
                raw = txn.get(pack_u64(first_seq), db=journal)
                assert raw is not None, f"refs points at missing journal entry {first_seq}"
                stored = txn.get(pack_u64(first_seq), db=store.outcomes)
                outcome = None if stored is None else decode_outcome(stored)
                request.first = (first_seq, raw, outcome)
                settled.append(request)
                continue
            seq += 1
            batch_refs[key] = seq
            txn.put(pack_u64(seq), request.encoded, append=True, db=journal)
            committed.append((seq, request))
        return committed, settled

    def _put_outcomes(
        self, txn: Txn, outcomes: list[tuple[int, str, int]]
    ) -> list[tuple[str, int]]:
        written = []
        db = self.store.outcomes
        for seq, reference, outcome in outcomes:
            if not 0 < seq <= self.last_seq:
                log.warning("outcome for unknown entry %d (%r) not stored", seq, reference)
                continue
            txn.put(pack_u64(seq), encode_outcome(outcome), db=db)
            written.append((reference, outcome))
        return written


def _snapshot_puts(chunk: list[tuple[str, bytes]]) -> list[tuple[bytes, bytes]]:
    puts = []
    for meter_id, data in chunk:
        key = meter_id.encode()
        if 0 < len(key) <= MAX_KEY_BYTES:
            puts.append((key, data))
        else:
            log.error("snapshot with an unusable meter id %r skipped", meter_id[:40])
    return puts


def _history_puts(chunk: list[HistoryItem]) -> list[HistoryPut]:
    puts = []
    for item in chunk:
        meter_id, start_ms, wh, minor, band, *end = item  # (tools may leave the end out)
        register_wh, balance = end if end else (-1, 0)
        if not usable_interval(start_ms, wh, minor, band):
            log.error("history interval %r of meter %r is not (start, Wh, minor units, band): "
                      "skipped", item[1:5], str(meter_id)[:40])
            continue
        key = meter_key(meter_id, start_ms)
        if 9 < len(key) <= MAX_KEY_BYTES and "\0" not in meter_id:
            puts.append((key, encode_interval(wh, minor, band, register_wh, balance),
                         meter_id, start_ms, wh, minor, band))
        else:
            log.error("history interval with an unusable meter id %r skipped", meter_id[:40])
    return puts


def _notice_items(chunk: list[Any]) -> list[NoticeItem]:
    """Notices as they came through the pipe (msgpack may have made the pairs lists)."""
    return [(bytes(key), bytes(body)) for key, body in chunk]


def _audit_puts(chunk: list[tuple[int, bytes]]) -> tuple[list[tuple[bytes, bytes]], int]:
    """The puts of audit entries and the highest number among them."""
    puts = []
    high = 0
    for number, encoded in chunk:
        if type(number) is int and 0 < number < 1 << 64 and isinstance(encoded, bytes):
            puts.append((pack_u64(number), encoded))
            high = max(high, number)
        else:
            log.error("audit entry with an unusable number %r skipped", number)
    return puts, high


def _rebuild_days(txn: Txn, store: Store, days: DayUpdates, position: bytes,
                  budget: int) -> tuple[bool, bytes]:
    """Put up to ``budget`` history intervals from key ``position`` on into their day records:
    ``(the history is done, the key to go on from)``. A damaged interval is left out (``wattkeeper
    check`` names it)."""
    cursor = txn.cursor(db=store.history)
    if not cursor.set_range(position):
        return True, b""
    for looked, (key, value) in enumerate(cursor.iternext()):
        if looked >= max(budget, 1):
            return False, key
        try:
            meter_id, start_ms = split_meter_key(key)
            wh, minor, band = decode_interval(value)
        except (CodecError, ValueError, UnicodeDecodeError, TypeError):
            continue
        if not usable_interval(start_ms, wh, minor, band):
            continue
        days.add(meter_id, start_ms, wh, minor, band)
    return True, b""


def _prune_audit(txn: Txn, store: Store, cutoff_ms: int, budget: int) -> tuple[int, bool]:
    """Delete audit entries older than ``cutoff_ms`` from the oldest end, looking at no more
    than ``budget`` records: ``(deleted, perhaps more to delete)``. See the module docstring."""
    doomed: list[bytes] = []
    unknown: list[bytes] = []  # damaged records since the last readable one
    stopped = False
    for looked, (key, value) in enumerate(txn.cursor(db=store.audit).iternext()):
        if looked >= max(budget, 1):
            break
        ts_ms = audit_time(value)
        if ts_ms is None:
            unknown.append(key)
        elif ts_ms < cutoff_ms:
            doomed.extend(unknown)
            unknown.clear()
            doomed.append(key)
        else:
            stopped = True
            break
    else:
        stopped = True  # the end of the log
    for key in doomed:
        txn.delete(key, db=store.audit)
    return len(doomed), bool(doomed) and not stopped


def _abort(txn: Txn) -> None:
    # A failed commit has already aborted the transaction; aborting again may complain.
    with contextlib.suppress(lmdb.Error):
        txn.abort()
