"""The money journal, trio side: idempotent ``record``, ordered delivery, ``*_nowait`` writes.

Theory of operation
-------------------
``record(entry)`` returns only once the entry is in a committed, fsynced LMDB transaction. The
transactions are made by one writer thread (``persistence.writer``) that commits everything
queued since its last commit together (group commit), so thousands of concurrent callers share
one flush instead of paying one each.

After each commit the writer hands the batch back to the trio thread
(``TrioToken.run_sync_soon``, which runs callbacks in the order they were posted). There the
journal first calls ``on_committed(entries)`` with the new ``(seq, entry)`` pairs in sequence
order, and only then wakes the callers. The ledger uses the callback to deliver money events to
meter actors in exact journal order, which is what makes "snapshot + newer entries" recovery
exact; waking callers afterwards means a caller's event is already on its way to the meter when
``record`` returns.

Idempotency: the reference is the key. While a reference is in flight, a second ``record`` of
it waits for the first and returns that recording (``duplicate=True``); once committed, the
writer finds it in ``refs`` inside its write transaction and answers with the first recording
without writing anything. Both paths raise :class:`ReferenceConflict` when the second call moves
different money (kind, meter or amount). ``record_outcome_nowait`` stores the caller's answer
(the balance after the top-up) next to the reference, so a repeat gets the same answer even
after a restart; until that write commits, the journal answers repeats from memory.

Snapshots and history are ``*_nowait``: they are queued to the same writer, which writes them in
small chunks between money records (see ``persistence.writer``). ``flush()`` waits until
everything queued before it is committed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio

from persistence.codec import encode_entry
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
from persistence.writer import (
    Background,
    BatchResult,
    FlushMarker,
    JournalBroken,
    RecordRequest,
    Writer,
)

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
    """Records answered from ``refs`` (reference seen in an earlier transaction)."""
    average_batch: float
    """Entries per transaction that committed any entry: the group-commit factor."""
    largest_batch: int
    in_flight: int
    pending_records: int
    pending_background_puts: int
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
class _Waiting(RecordRequest):
    done: trio.Event = attrs.Factory(trio.Event)


@attrs.define(eq=False)
class _FlushWaiter(FlushMarker):
    done: trio.Event = attrs.Factory(trio.Event)


class Journal:
    """Create with :func:`open_journal`."""

    def __init__(
        self,
        store: Store,
        token: trio.lowlevel.TrioToken,
        *,
        on_committed: OnCommitted | None = None,
        chunk_puts: int = 1000,
        max_records: int = 2000,
    ) -> None:
        self._store = store
        self._token = token
        self._writer = Writer(store, self._post, chunk_puts=chunk_puts, max_records=max_records)
        self._on_committed = on_committed
        self._in_flight: dict[str, _Waiting] = {}
        self._outcomes: dict[str, int] = {}  # queued outcomes not yet committed
        self._unreported_lost = 0
        self._callback_errors = 0
        self._closed = False

    def set_on_committed(self, on_committed: OnCommitted | None) -> None:
        """Register the callback that receives committed entries in seq order (trio thread).

        Entries committed while no callback is registered are not delivered (recovery finds
        them in the journal)."""
        self._on_committed = on_committed

    @property
    def last_seq(self) -> int:
        return self._writer.last_seq

    # -- money -----------------------------------------------------------------------------

    async def record(self, entry: JournalEntry) -> Recorded:
        """Durably record ``entry`` once; see the module docstring for duplicates."""
        if entry.kind not in KINDS:
            raise ValueError(f"unknown journal entry kind {entry.kind!r}; one of {sorted(KINDS)}")
        if not isinstance(entry.amount, int) or isinstance(entry.amount, bool):
            raise ValueError(f"amount must be an int of minor units, got {entry.amount!r}")
        check_meter_id(entry.meter_id)
        key = check_reference(entry.reference)
        if self._closed:
            raise JournalBroken("the journal is closed")
        first = self._in_flight.get(entry.reference)
        if first is not None:
            if first.entry.conflicts_with(entry):
                raise ReferenceConflict(conflict_message(first.entry, entry))
            await first.done.wait()
            return self._repeat(first, entry)
        request = _Waiting(entry, key, encode_entry(entry))
        self._writer.submit_record(request)
        self._in_flight[entry.reference] = request
        await request.done.wait()
        if request.error is None and request.first is None:
            return Recorded(request.seq, entry)
        return self._repeat(request, entry)

    def _repeat(self, request: RecordRequest, entry: JournalEntry) -> Recorded:
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

    def record_outcome_nowait(self, reference: str, balance_after: int) -> None:
        """Store the answer given for ``reference`` so a repeat gets the same one."""
        check_reference(reference)
        self._outcomes[reference] = balance_after
        self._writer.submit_outcome(reference, balance_after)

    # -- snapshots and history ---------------------------------------------------------------

    def put_snapshots_nowait(self, items: list[tuple[str, bytes]]) -> None:
        """Queue ``(meter_id, encoded state)`` pairs; the list is taken over, do not reuse it."""
        if items:
            self._writer.submit_background(Background("snapshots", items))

    def put_history_nowait(self, items: list[tuple[str, int, int, int]]) -> None:
        """Queue ``(meter_id, start_ms, wh, minor)`` intervals; the list is taken over."""
        if items:
            self._writer.submit_background(Background("history", items))

    async def flush(self) -> None:
        """Wait until everything queued before this call is committed.

        Raises StorageFull if snapshot or history writes were dropped (data directory full)
        since the last flush, and JournalBroken if the writer stopped.
        """
        waiting = list(self._in_flight.values())
        marker = _FlushWaiter()
        self._writer.submit_background(marker)
        await marker.done.wait()
        for request in waiting:  # a record may be in a later transaction (max_records)
            await request.done.wait()
        if self._writer.failure is not None:
            failure = self._writer.failure
            raise JournalBroken(f"the journal writer stopped after an error: {failure}")
        if self._unreported_lost:
            lost, self._unreported_lost = self._unreported_lost, 0
            raise StorageFull(
                f"the data directory {self._store.path} is full: {lost} snapshot/history writes "
                f"were dropped (money records are kept while they fit); free space or raise "
                f"max_map_size"
            )

    # -- introspection -----------------------------------------------------------------------

    def statistics(self) -> JournalStatistics:
        counters = self._writer.counters
        pending_records, pending_background = self._writer.pending()
        return JournalStatistics(
            commits=counters.commits,
            entries=counters.entries,
            duplicates=counters.duplicates,
            average_batch=counters.entries / counters.record_commits
            if counters.record_commits
            else 0.0,
            largest_batch=counters.largest_batch,
            in_flight=len(self._in_flight),
            pending_records=pending_records,
            pending_background_puts=pending_background,
            last_seq=self._writer.last_seq,
            snapshots_written=counters.snapshots_written,
            history_written=counters.history_written,
            outcomes_written=counters.outcomes_written,
            dropped_puts=counters.dropped_puts,
            map_size=self._store.map_size,
            map_grows=self._store.map_grows,
            average_commit_ms=counters.commit_seconds * 1000 / counters.commits
            if counters.commits
            else 0.0,
            longest_commit_ms=counters.longest_commit_s * 1000,
            callback_errors=self._callback_errors,
        )

    # -- writer thread -> trio thread --------------------------------------------------------

    def _post(self, result: BatchResult) -> None:
        """Called on the writer thread after each transaction."""
        # RunFinishedError: nobody is left to wake; the data is committed all the same.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._complete, result)

    def _complete(self, result: BatchResult) -> None:
        """On the trio thread, in commit order: deliver, then wake the callers."""
        if result.committed and self._on_committed is not None:
            try:
                self._on_committed([(request.seq, request.entry) for request in result.committed])
            except Exception:
                # Raising here would crash trio itself (TrioInternalError); the entries are
                # durable and recovery will apply them, so log loudly and keep answering.
                self._callback_errors += 1
                log.exception("on_committed failed for seq %d..%d",
                              result.committed[0].seq, result.committed[-1].seq)
        in_flight = self._in_flight
        for group in (result.committed, result.settled):
            for request in group:
                if in_flight.get(request.entry.reference) is request:
                    del in_flight[request.entry.reference]
                assert isinstance(request, _Waiting)
                request.done.set()
        outcomes = self._outcomes
        for reference, outcome in result.outcomes:
            if outcomes.get(reference) == outcome:
                del outcomes[reference]
        self._unreported_lost += result.dropped
        for marker in result.markers:
            assert isinstance(marker, _FlushWaiter)
            marker.done.set()

    # -- lifetime ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Refuse new records, write everything queued, stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._writer.failure is None:
                await self.flush()
        finally:
            self._writer.close()
            await trio.to_thread.run_sync(self._writer.join)
            # The writer's last results were posted before it exited; let them run.
            for request in list(self._in_flight.values()):
                await request.done.wait()


@asynccontextmanager
async def open_journal(
    store: Store,
    *,
    on_committed: OnCommitted | None = None,
    chunk_puts: int = 1000,
    max_records: int = 2000,
) -> AsyncIterator[Journal]:
    """Start the writer thread; on exit, write everything queued and stop it."""
    journal = Journal(
        store,
        trio.lowlevel.current_trio_token(),
        on_committed=on_committed,
        chunk_puts=chunk_puts,
        max_records=max_records,
    )
    journal._writer.start()
    try:
        yield journal
    finally:
        with trio.CancelScope(shield=True):
            await journal.aclose()
