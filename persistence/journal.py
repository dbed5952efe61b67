"""The money journal, trio side: idempotent ``record``, ordered delivery, ``*_nowait`` writes.

Theory of operation
-------------------
``record(entry)`` returns only once the entry is in a committed, fsynced LMDB transaction. The
transactions are made by one writer *process* (``persistence.writer_process``, reached through
``persistence.writer_link``; why a process: ``persistence.writer``) that commits everything
queued since its last commit together (group commit), so thousands of concurrent callers share
one flush instead of paying one each.

After each commit the writer sends the batch's result back down its pipe, in commit order.
There the journal first calls ``on_committed(entries)`` with the new ``(seq, entry)`` pairs in
sequence order, and only then wakes the callers. The ledger uses the callback to deliver money
events to meter actors in exact journal order, which is what makes "snapshot + newer entries"
recovery exact; waking callers afterwards means a caller's event has already reached the
meter when ``record`` returns (the ledger applies it inside the callback).

Idempotency: the reference is the key. While a reference is in flight, a second ``record`` of
it waits for the first and returns that recording (``duplicate=True``); once committed, the
writer finds it (in its in-memory view of the journal's unindexed tail, else in ``refs``:
``persistence.index``) inside its write transaction and answers with the first recording
without writing anything. Both paths raise :class:`ReferenceConflict` when the second call moves
different money (kind, meter or amount). ``record_outcome_nowait`` stores the caller's answer
(the balance after the top-up) next to the reference, so a repeat gets the same answer even
after a restart; until that write commits, the journal answers repeats from memory.

Snapshots and history are ``*_nowait``: they are queued to the same writer, which writes them in
small chunks between money records (see ``persistence.writer``). ``flush()`` waits until
everything queued before it is committed.

If the writer process dies (killed, a disk error), every waiting caller gets
:class:`JournalBroken` and so does every later call: nothing is acknowledged that was not
committed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from persistence.codec import encode_entry
from persistence.damage import Damage, DamagedRecord, read_entry
from persistence.entries import (
    KINDS,
    JournalEntry,
    Recorded,
    ReferenceConflict,
    conflict_message,
    to_message,
)
from persistence.keys import check_meter_id, check_reference
from persistence.store import StorageFull, Store
from persistence.writer import JournalBroken, WriterCounters
from persistence.writer_link import WriterLink

__all__ = [
    "Journal",
    "JournalBroken",
    "JournalEntry",
    "JournalStatistics",
    "OnCommitted",
    "Recorded",
    "ReferenceConflict",
    "open_journal",
    "to_message",
]

log = logging.getLogger(__name__)

OnCommitted = Callable[[list[tuple[int, JournalEntry]]], None]


@attrs.frozen
class JournalStatistics:
    commits: int
    """Write transactions, including those that only carried snapshots or history."""
    entries: int
    """Journal entries committed since the journal was opened."""
    duplicates: int
    """Records answered with an earlier recording of their reference."""
    average_batch: float
    """Entries per transaction that committed any entry: the group-commit factor."""
    largest_batch: int
    in_flight: int
    pending_records: int
    pending_background_puts: int
    index_lag: int
    """Committed entries not yet in ``refs``/``meter_journal`` (``persistence.index``)."""
    last_seq: int
    snapshots_written: int
    history_written: int
    outcomes_written: int
    dropped_puts: int
    map_size: int
    map_grows: int
    average_commit_ms: float
    longest_commit_ms: float
    callback_errors: int


@attrs.define(eq=False)
class _Waiting:
    """One ``record`` call waiting for the writer; it fills ``seq``, ``first`` or ``error``."""

    entry: JournalEntry
    seq: int = 0
    first: Recorded | None = None
    error: Exception | None = None
    done: trio.Event = attrs.Factory(trio.Event)


class Journal:
    """Create with :func:`open_journal`."""

    def __init__(
        self,
        store: Store,
        *,
        on_committed: OnCommitted | None = None,
        chunk_puts: int = 1000,
        max_records: int = 2000,
    ) -> None:
        self._store = store
        self._link = WriterLink(store, self._complete, self._broken,
                                chunk_puts=chunk_puts, max_records=max_records)
        self._on_committed = on_committed
        self._counters = WriterCounters(map_size=store.map_size)
        self._last_seq = 0
        self._tokens = 0
        self._waiting: dict[int, _Waiting] = {}  # by token
        self._in_flight: dict[str, _Waiting] = {}  # by reference
        self._markers: dict[int, trio.Event] = {}
        self._outcomes: dict[str, int] = {}  # queued outcomes not yet committed
        self._unreported_lost = 0
        self._callback_errors = 0
        self._failure: JournalBroken | None = None
        self._closed = False

    def set_on_committed(self, on_committed: OnCommitted | None) -> None:
        """Register the callback that receives committed entries in seq order (trio thread).

        Entries committed while no callback is registered are not delivered (recovery finds
        them in the journal)."""
        self._on_committed = on_committed

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def writer_pid(self) -> int:
        return self._link.pid

    # -- money -----------------------------------------------------------------------------

    async def record(self, entry: JournalEntry) -> Recorded:
        """Durably record ``entry`` once; see the module docstring for duplicates."""
        if entry.kind not in KINDS:
            raise ValueError(f"unknown journal entry kind {entry.kind!r}; one of {sorted(KINDS)}")
        if not isinstance(entry.amount, int) or isinstance(entry.amount, bool):
            raise ValueError(f"amount must be an int of minor units, got {entry.amount!r}")
        check_meter_id(entry.meter_id)
        key = check_reference(entry.reference)
        self._check_usable()
        first = self._in_flight.get(entry.reference)
        if first is not None:
            if first.entry.conflicts_with(entry):
                raise ReferenceConflict(conflict_message(first.entry, entry))
            await first.done.wait()
            return self._repeat(first, entry)
        request = _Waiting(entry)
        token = self._next_token()
        self._link.send_record(token, entry.meter_id, key, encode_entry(entry))
        self._waiting[token] = request
        self._in_flight[entry.reference] = request
        await request.done.wait()
        if request.error is None and request.first is None:
            return Recorded(request.seq, entry)
        return self._repeat(request, entry)

    def _repeat(self, request: _Waiting, entry: JournalEntry) -> Recorded:
        if request.error is not None:
            raise request.error
        if request.first is not None:
            first = request.first
        else:
            first = Recorded(request.seq, request.entry, None, duplicate=True)
        if first.entry.conflicts_with(entry):
            raise ReferenceConflict(conflict_message(first.entry, entry))
        outcome = self._outcomes.get(entry.reference, first.outcome)
        return attrs.evolve(first, outcome=outcome, duplicate=True)

    def record_outcome_nowait(self, recorded: Recorded, balance_after: int) -> None:
        """Store the answer given for ``recorded`` so a repeat of its reference gets the same
        one."""
        if recorded.duplicate:
            raise ValueError("the outcome belongs to the first recording, not to a repeat")
        self._check_usable()
        reference = recorded.entry.reference
        self._outcomes[reference] = balance_after
        self._link.send_outcome(recorded.seq, reference, balance_after)

    # -- snapshots and history ---------------------------------------------------------------

    def put_snapshots_nowait(self, items: list[tuple[str, bytes]]) -> None:
        """Queue ``(meter_id, encoded state)`` pairs; the list is taken over, do not reuse it."""
        if items:
            self._check_usable()
            self._link.send_background("snapshots", items)

    def put_history_nowait(self, items: list[tuple[str, int, int, int, str]]) -> None:
        """Queue ``(meter_id, start_ms, wh, minor, band)`` intervals; the list is taken over."""
        if items:
            self._check_usable()
            self._link.send_background("history", items)

    async def flush(self) -> None:
        """Wait until everything queued before this call is committed.

        Raises StorageFull if snapshot or history writes were dropped (data directory full)
        since the last flush, and JournalBroken if the writer stopped.
        """
        self._check_usable(closing_ok=True)
        waiting = list(self._waiting.values())
        marker = trio.Event()
        token = self._next_token()
        self._markers[token] = marker
        self._link.send_marker(token)
        await marker.wait()
        for request in waiting:  # a record may be in a later transaction (max_records)
            await request.done.wait()
        if self._failure is not None:
            raise self._failure
        if self._unreported_lost:
            lost, self._unreported_lost = self._unreported_lost, 0
            raise StorageFull(
                f"the data directory {self._store.path} is full: {lost} snapshot/history writes "
                f"were dropped (money records are kept while they fit); free space or raise "
                f"max_map_size"
            )

    # -- introspection -----------------------------------------------------------------------

    def statistics(self) -> JournalStatistics:
        counters = self._counters
        return JournalStatistics(
            commits=counters.commits,
            entries=counters.entries,
            duplicates=counters.duplicates,
            average_batch=counters.entries / counters.record_commits
            if counters.record_commits
            else 0.0,
            largest_batch=counters.largest_batch,
            in_flight=len(self._in_flight),
            pending_records=counters.pending_records + self._link.unsent,
            pending_background_puts=counters.pending_background_puts,
            index_lag=counters.index_lag,
            last_seq=self._last_seq,
            snapshots_written=counters.snapshots_written,
            history_written=counters.history_written,
            outcomes_written=counters.outcomes_written,
            dropped_puts=counters.dropped_puts,
            map_size=counters.map_size,
            map_grows=counters.map_grows,
            average_commit_ms=counters.commit_seconds * 1000 / counters.commits
            if counters.commits
            else 0.0,
            longest_commit_ms=counters.longest_commit_s * 1000,
            callback_errors=self._callback_errors,
        )

    # -- results from the writer process (trio thread, in commit order) ----------------------

    def _started(self) -> None:
        ready = self._link.ready
        self._last_seq = ready[1]
        self._counters = WriterCounters(*ready[2])

    def _complete(self, result: list[Any]) -> None:
        """One transaction's result: deliver committed entries, then wake the callers."""
        _, committed, duplicates, failed, outcomes, markers, dropped, counters = result
        self._counters = WriterCounters(*counters)
        waiting = self._waiting
        done: list[_Waiting] = []
        if committed:
            entries = []
            for token, seq in committed:
                request = waiting.pop(token)
                request.seq = seq
                entries.append((seq, request.entry))
                done.append(request)
            self._last_seq = committed[-1][1]
            self._deliver(entries)
        for token, first_seq, raw, outcome in duplicates:
            request = waiting.pop(token)
            first = read_entry(first_seq, raw)
            if isinstance(first, Damage):  # the first recording is damaged: refuse this one
                request.error = DamagedRecord(first)
            else:
                request.first = Recorded(first_seq, first, outcome, duplicate=True)
            done.append(request)
        for token, message in failed:
            request = waiting.pop(token)
            request.error = StorageFull(message)
            done.append(request)
        in_flight = self._in_flight
        for request in done:
            if in_flight.get(request.entry.reference) is request:
                del in_flight[request.entry.reference]
            request.done.set()
        pending_outcomes = self._outcomes
        for reference, outcome in outcomes:
            if pending_outcomes.get(reference) == outcome:
                del pending_outcomes[reference]
        self._unreported_lost += dropped
        for token in markers:
            self._markers.pop(token).set()

    def _deliver(self, entries: list[tuple[int, JournalEntry]]) -> None:
        if self._on_committed is None:
            return
        try:
            self._on_committed(entries)
        except Exception:
            # The entries are durable and recovery will apply them; a bug in a consumer must
            # not stop the journal answering, so log loudly and go on.
            self._callback_errors += 1
            log.exception("on_committed failed for seq %d..%d", entries[0][0], entries[-1][0])

    def _broken(self, detail: str) -> None:
        """The writer process is gone: answer everyone, refuse everything from now on."""
        log.error("journal writer stopped: %s", detail)
        self._failure = JournalBroken(f"the journal writer stopped after an error: {detail}")
        for request in self._waiting.values():
            request.error = self._failure
            request.done.set()
        self._waiting.clear()
        self._in_flight.clear()
        for marker in self._markers.values():
            marker.set()
        self._markers.clear()

    def _check_usable(self, *, closing_ok: bool = False) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed and not closing_ok:
            raise JournalBroken("the journal is closed")

    def _next_token(self) -> int:
        self._tokens += 1
        return self._tokens

    # -- lifetime ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Refuse new records, write everything queued, stop the writer process."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._failure is None:
                await self.flush()
        finally:
            self._link.close()


@asynccontextmanager
async def open_journal(
    store: Store,
    *,
    on_committed: OnCommitted | None = None,
    chunk_puts: int = 1000,
    max_records: int = 2000,
) -> AsyncIterator[Journal]:
    """Start the writer process; on exit, write everything queued and stop it."""
    journal = Journal(store, on_committed=on_committed, chunk_puts=chunk_puts,
                      max_records=max_records)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal._link.run)
        journal._started()
        try:
            yield journal
        finally:
            with trio.CancelScope(shield=True):
                await journal.aclose()
