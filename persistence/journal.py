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

Storage down. If the writer process dies (killed, a disk error, a bug) the link starts another
(``persistence.writer_link``, with backoff: ``persistence.restarts``). Until the new one is
READY the journal is *unavailable*: ``record``, ``put_*_nowait`` and ``flush`` raise
:class:`StorageUnavailable` at once ("nothing was done: retry with the same id"), and every
caller that was waiting gets one saying the outcome is unknown (the dead writer may have
committed it). Nothing is acknowledged that was not committed, and a retry with the same
reference is safe: if the entry was committed the retry is answered as its duplicate.
``available`` and ``set_on_availability`` tell the park, which raises its ``storage`` alarm.

Redelivery. The dead writer may have committed a transaction whose result never reached us.
When the next writer is READY with a ``last_seq`` beyond the last entry delivered here, the
missing entries are read from the store and handed to ``on_committed``, in seq order, before
the journal is available again, so every committed entry reaches the meters exactly once. The
callers of those entries were already told "outcome unknown"; their retry finds the entry as a
duplicate. Outcomes (acknowledged balances) that were queued but not committed are kept here
and sent again to the new writer; snapshots and history queued to the dead one are lost (the
callers re-queue what they still need: a meter's next change lists it for a snapshot again).

Audit entries (``put_audit_nowait``, from ``persistence.audit_log``) are background work too,
but they are records of what was done, so they are kept like outcomes: each is held here until
a result's ``audit_last`` (the writer's highest audit number taken care of) reaches it, and
what a dead writer had not taken care of is sent again to the next one (a put of the same key
and bytes: harmless if the dead writer had committed it after all). While storage is down
``put_audit_nowait`` refuses (StorageUnavailable) like the other ``put_*_nowait``.
``prune_audit_nowait`` queues one retention run (``persistence.writer``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from persistence.codec import HistoryItem, encode_entry
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
from persistence.outbox import NoticeItem
from persistence.recovery import entries_after
from persistence.restarts import RestartPolicy, Restarts
from persistence.store import StorageFull, StorageUnavailable, Store, free_space
from persistence.writer import JournalBroken, WriterCounters
from persistence.writer_link import WriterLink
from persistence.writer_process import MIN_FREE_BYTES

MAX_PENDING_AUDIT = 100_000
"""Audit entries kept for a resend at most (a writer that stalls that long loses the oldest)."""

__all__ = [
    "Journal",
    "JournalBroken",
    "JournalEntry",
    "JournalStatistics",
    "OnAvailability",
    "OnCommitted",
    "Recorded",
    "ReferenceConflict",
    "RestartPolicy",
    "StorageFull",
    "StorageUnavailable",
    "open_journal",
    "to_message",
]

log = logging.getLogger(__name__)

OnCommitted = Callable[[list[tuple[int, JournalEntry]]], None]
OnAvailability = Callable[[bool, str], None]
"""``(available, detail)``: storage went down (why, and when the next restart is) or came back."""


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
    available: bool = True
    writer_restarts: int = 0
    """Times the writer process died (or failed to start) and was started again."""
    redelivered: int = 0
    """Entries a dead writer committed without telling us, delivered after its restart."""
    audit_written: int = 0
    audit_pruned: int = 0
    audit_pending: int = 0
    """Audit entries sent to the writer and not yet taken care of (kept for a resend)."""
    notices_written: int = 0
    """Notices added to the outbox (``persistence.outbox``)."""


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
        restart_policy: RestartPolicy | None = None,
        min_free_bytes: int = MIN_FREE_BYTES,
        days_zone: str | None = None,
    ) -> None:
        self._store = store
        self._restarts = Restarts(restart_policy)
        self._link = WriterLink(store, self._complete, self._ready, self._down,
                                chunk_puts=chunk_puts, max_records=max_records,
                                restarts=self._restarts, min_free_bytes=min_free_bytes,
                                days_zone=days_zone)
        self._on_committed = on_committed
        self._on_availability: OnAvailability | None = None
        self._counters = WriterCounters(map_size=store.map_size)
        self._earlier = WriterCounters()  # what the writers before this one did
        self._last_seq = 0
        self._tokens = 0
        self._waiting: dict[int, _Waiting] = {}  # by token
        self._in_flight: dict[str, _Waiting] = {}  # by reference
        self._markers: dict[int, trio.Event] = {}
        self._outcomes: dict[str, tuple[int, int]] = {}  # reference -> (seq, balance) uncommitted
        self._audit: deque[tuple[int, bytes]] = deque()  # (number, encoded) not taken care of
        self._audit_lost = 0
        self._unreported_lost = 0
        self._callback_errors = 0
        self._available = False
        self._ever_ready = False
        self._cause = "the journal writer is starting"
        self._too_often = False
        self._deaths = 0
        self._redelivered = 0
        self._closed = False

    def set_on_committed(self, on_committed: OnCommitted | None) -> None:
        """Register the callback that receives committed entries in seq order (trio thread).

        Entries committed while no callback is registered are not delivered (recovery finds
        them in the journal)."""
        self._on_committed = on_committed

    def set_on_availability(self, on_availability: OnAvailability | None) -> None:
        """Register ``callback(available, detail)``, called on the trio thread whenever the
        journal becomes unavailable or available again, and once more while it is down when
        the writer starts restarting too often. Not called on registration: read
        :attr:`available` for the state at that moment."""
        self._on_availability = on_availability

    @property
    def available(self) -> bool:
        """True while a writer is running and records are accepted."""
        return self._available and not self._closed

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def writer_pid(self) -> int:
        """The writer process's pid (the last one started, which may be dead)."""
        return self._link.pid

    # -- money -----------------------------------------------------------------------------

    async def record(self, entry: JournalEntry) -> Recorded:
        """Durably record ``entry`` once; see the module docstring for duplicates and for
        :class:`StorageUnavailable`."""
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
        pending = self._outcomes.get(entry.reference)
        outcome = first.outcome if pending is None else pending[1]
        return attrs.evolve(first, outcome=outcome, duplicate=True)

    def record_outcome_nowait(self, recorded: Recorded, balance_after: int) -> None:
        """Store the answer given for ``recorded`` so a repeat of its reference gets the same
        one. While storage is down it is kept and sent to the next writer."""
        if recorded.duplicate:
            raise ValueError("the outcome belongs to the first recording, not to a repeat")
        if self._closed:
            raise JournalBroken("the journal is closed")
        reference = recorded.entry.reference
        self._outcomes[reference] = (recorded.seq, balance_after)
        if self._available:
            self._link.send_outcome(recorded.seq, reference, balance_after)

    # -- snapshots and history ---------------------------------------------------------------

    def put_snapshots_nowait(self, items: list[tuple[str, bytes]]) -> None:
        """Queue ``(meter_id, encoded state)`` pairs; the list is taken over, do not reuse it.

        Raises StorageUnavailable (nothing queued) while storage is down."""
        if items:
            self._check_usable()
            self._link.send_background("snapshots", items)

    def put_history_nowait(self, items: list[HistoryItem]) -> None:
        """Queue ``(meter_id, start_ms, wh, minor, band)`` intervals; the list is taken over.

        Raises StorageUnavailable (nothing queued) while storage is down."""
        if items:
            self._check_usable()
            self._link.send_background("history", items)

    def put_notices_nowait(self, items: list[NoticeItem]) -> None:
        """Queue tenant notices for the outbox (``persistence.outbox.encode_notice``); the list
        is taken over. A notice already in the outbox is not written again, so the caller
        sends a batch again when it cannot tell whether it was written (``flush`` failed).

        Raises StorageUnavailable (nothing queued) while storage is down."""
        if items:
            self._check_usable()
            self._link.send_background("notices", items)

    # -- the audit log -------------------------------------------------------------------------

    def put_audit_nowait(self, number: int, encoded: bytes) -> None:
        """Queue audit entry ``number`` (``audit.encode_audit``); numbers must increase.

        Kept until the writer has taken care of it, and sent again to a restarted writer (module
        docstring). Raises StorageUnavailable (nothing queued) while storage is down."""
        self._check_usable()
        pending = self._audit
        if len(pending) >= MAX_PENDING_AUDIT:
            pending.popleft()
            self._audit_lost += 1
            if self._audit_lost == 1 or self._audit_lost % 10_000 == 0:
                log.error("the journal writer is not writing audit entries: %d lost so far "
                          "(the oldest unwritten go first)", self._audit_lost)
        pending.append((number, encoded))
        self._link.send_background("audit", [(number, encoded)])

    def prune_audit_nowait(self, before_ms: int) -> None:
        """Queue a retention run: audit entries older than ``before_ms`` (wall ms) are deleted,
        in small chunks between other writes. Raises StorageUnavailable while storage is down."""
        self._check_usable()
        self._link.send_background("audit_prune", [int(before_ms)])

    @property
    def audit_written_through(self) -> int:
        """The highest audit number the writer has taken care of (written, or dropped with the
        data directory full): an entry up to it is on disk if it is anywhere."""
        return self._counters.audit_last

    def _forget_written_audit(self) -> None:
        pending, last = self._audit, self._counters.audit_last
        while pending and pending[0][0] <= last:
            pending.popleft()

    async def flush(self) -> None:
        """Wait until everything queued before this call is committed.

        Raises StorageFull if snapshot or history writes were dropped (data directory full)
        since the last flush, and StorageUnavailable if storage is down or the writer died
        before it had written everything.
        """
        self._check_usable(closing_ok=True)
        deaths = self._deaths
        waiting = list(self._waiting.values())
        marker = trio.Event()
        token = self._next_token()
        self._markers[token] = marker
        self._link.send_marker(token)
        await marker.wait()
        for request in waiting:  # a record may be in a later transaction (max_records)
            await request.done.wait()
        if self._deaths != deaths:
            raise StorageUnavailable(
                "the journal writer stopped before everything queued was written: snapshots "
                "and history queued before it are lost (meters are snapshotted again when they "
                "next change)", self._cause)
        if self._unreported_lost:
            lost, self._unreported_lost = self._unreported_lost, 0
            path = self._store.path
            raise StorageFull(
                f"the data directory {path} is full: {lost} snapshot/history writes were "
                f"dropped, money records are kept while they fit ({free_space(path)}); raise "
                f"max_map_size if the disk has room, else free space there or move data_dir"
            )

    # -- introspection -----------------------------------------------------------------------

    def statistics(self) -> JournalStatistics:
        counters = _combined(self._earlier, self._counters)
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
            available=self.available,
            writer_restarts=self._restarts.total,
            redelivered=self._redelivered,
            audit_written=counters.audit_written,
            audit_pruned=counters.audit_pruned,
            audit_pending=len(self._audit),
            notices_written=counters.notices_written,
        )

    # -- results from the writer process (trio thread, in commit order) ----------------------

    def _complete(self, result: list[Any]) -> None:
        """One transaction's result: deliver committed entries, then wake the callers."""
        _, committed, duplicates, failed, outcomes, markers, dropped, counters = result
        self._counters = WriterCounters(*counters)
        if self._audit:
            self._forget_written_audit()
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
            pending = pending_outcomes.get(reference)
            if pending is not None and pending[1] == outcome:
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

    # -- the writer's life (trio thread, from the link) ----------------------------------------

    def _ready(self, ready: list[Any]) -> None:
        """A writer is READY: catch up on what a dead one committed, then accept work."""
        last_seq = int(ready[1])
        self._earlier = _combined(self._earlier, self._counters)
        self._counters = WriterCounters(*ready[2])
        if not self._ever_ready:
            # Everything on disk before the first writer was never ours to deliver
            # (recovery reads it).
            self._ever_ready = True
            self._last_seq = last_seq
        elif last_seq > self._last_seq:
            self._redeliver(last_seq)
        elif last_seq < self._last_seq:  # a journal never shrinks; say so, go on
            log.error("the restarted journal writer found seq %d, but %d was delivered",
                      last_seq, self._last_seq)
        for reference, (seq, balance) in self._outcomes.items():
            self._link.send_outcome(seq, reference, balance)
        self._forget_written_audit()  # what the dead writer committed is on disk
        pending = list(self._audit)
        for start in range(0, len(pending), 1000):  # frames of a bounded size (writer_link)
            self._link.send_background("audit", pending[start:start + 1000])
        restarts = self._restarts.total
        if restarts:
            log.warning("storage available again: the journal writer is running (pid %d) "
                        "after %d restart(s)", self._link.pid, restarts)
        self._too_often = False
        self._set_available(True, f"the journal writer is running (pid {self._link.pid})")

    def _redeliver(self, last_seq: int) -> None:
        """Entries ``self._last_seq < seq <= last_seq`` were committed by a writer that died
        before it could tell us: deliver them now, before anything new is recorded."""
        after = self._last_seq
        entries: list[tuple[int, JournalEntry]] = []
        try:
            for seq, entry in entries_after(self._store, after):
                if seq > last_seq:
                    break
                entries.append((seq, entry))
        except Exception:
            # Durable anyway: the next server start applies them through recovery.
            log.exception("entries %d..%d committed by the journal writer that died could not "
                          "be read back; they are applied at the next start", after + 1,
                          last_seq)
        self._last_seq = last_seq
        if entries:
            self._redelivered += len(entries)
            log.warning("%d journal entries (seq %d..%d) committed just before the writer died "
                        "are delivered now", len(entries), entries[0][0], entries[-1][0])
            self._deliver(entries)

    def _down(self, detail: str, retry_in: float | None) -> None:
        """The writer stopped or did not start: answer everyone waiting, refuse new work."""
        self._deaths += 1
        self._cause = detail
        lost = StorageUnavailable(
            "storage failed while this was being recorded, so its outcome is unknown: retry "
            "with the same id, which is safe (an id is applied at most once)", detail,
            outcome_known=False)
        for request in self._waiting.values():
            request.error = lost
            request.done.set()
        self._waiting.clear()
        self._in_flight.clear()
        for marker in self._markers.values():
            marker.set()
        self._markers.clear()
        if retry_in is None:
            log.error("storage unavailable while closing: %s", detail)
            self._available = False
            return
        restarts = self._restarts
        note = f"restarting it in {retry_in:.1f} s"
        if restarts.too_often:
            note = (f"it is restarting too often ({restarts.recent} restarts in the last "
                    f"{restarts.policy.period_s:.0f} s): trying again every "
                    f"{restarts.policy.max_delay_s:.1f} s until it stays up")
        availability = f"{detail}; {note}"
        if self._available or (not self._ever_ready and self._deaths == 1):
            log.error("storage unavailable, money commands are refused: %s", availability)
            self._set_available(False, availability)
        elif restarts.too_often and not self._too_often:
            log.error("storage still unavailable: %s", availability)
            self._notify(False, availability)
        else:
            log.warning("storage still unavailable: %s", availability)
        self._too_often = restarts.too_often

    def _set_available(self, available: bool, detail: str) -> None:
        if available != self._available:
            self._available = available
            self._notify(available, detail)

    def _notify(self, available: bool, detail: str) -> None:
        if self._on_availability is None or self._closed:
            return
        try:
            self._on_availability(available, detail)
        except Exception:
            self._callback_errors += 1
            log.exception("on_availability failed")

    def _check_usable(self, *, closing_ok: bool = False) -> None:
        if self._closed and not closing_ok:
            raise JournalBroken("the journal is closed")
        if not self._available:
            raise StorageUnavailable(
                "storage is unavailable, so nothing was done: retry with the same id in a few "
                "seconds (the server log and the park's storage alarm say why)", self._cause)

    def _next_token(self) -> int:
        self._tokens += 1
        return self._tokens

    # -- lifetime ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Refuse new records, write everything queued, stop the writer process.

        With storage down there is nothing to write (every caller was answered): it stops
        at once, and never raises for storage."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._available:
                await self.flush()
        except StorageUnavailable as error:
            log.error("the journal closed with writes lost: %s", error)
        finally:
            self._link.close()


def _combined(earlier: WriterCounters, current: WriterCounters) -> WriterCounters:
    """Totals over writer processes: counts add up, maxima stay maxima, gauges are current."""
    return WriterCounters(
        commits=earlier.commits + current.commits,
        record_commits=earlier.record_commits + current.record_commits,
        entries=earlier.entries + current.entries,
        duplicates=earlier.duplicates + current.duplicates,
        largest_batch=max(earlier.largest_batch, current.largest_batch),
        snapshots_written=earlier.snapshots_written + current.snapshots_written,
        history_written=earlier.history_written + current.history_written,
        outcomes_written=earlier.outcomes_written + current.outcomes_written,
        dropped_puts=earlier.dropped_puts + current.dropped_puts,
        commit_seconds=earlier.commit_seconds + current.commit_seconds,
        longest_commit_s=max(earlier.longest_commit_s, current.longest_commit_s),
        map_size=current.map_size,
        map_grows=earlier.map_grows + current.map_grows,
        pending_records=current.pending_records,
        pending_background_puts=current.pending_background_puts,
        index_lag=current.index_lag,
        indexed_entries=earlier.indexed_entries + current.indexed_entries,
        audit_written=earlier.audit_written + current.audit_written,
        audit_pruned=earlier.audit_pruned + current.audit_pruned,
        audit_last=current.audit_last,
        days_written=earlier.days_written + current.days_written,
        days_complete=current.days_complete,
        notices_written=earlier.notices_written + current.notices_written,
    )


@asynccontextmanager
async def open_journal(
    store: Store,
    *,
    on_committed: OnCommitted | None = None,
    chunk_puts: int = 1000,
    max_records: int = 2000,
    restart_policy: RestartPolicy | None = None,
    min_free_bytes: int = MIN_FREE_BYTES,
    days_zone: str | None = None,
) -> AsyncIterator[Journal]:
    """Start the writer process; on exit, write everything queued and stop it.

    Returns once the first writer is READY or has failed to start: in the second case the
    journal is unavailable (and keeps restarting its writer) rather than the open failing, so
    a park runs its meters with storage down. ``min_free_bytes``: a writer does not start on a
    filesystem with less free (``persistence.writer_process``). ``days_zone``: the park's time
    zone, whose local days the day records follow (``persistence.days``; None: keep theirs)."""
    journal = Journal(store, on_committed=on_committed, chunk_puts=chunk_puts,
                      max_records=max_records, restart_policy=restart_policy,
                      min_free_bytes=min_free_bytes, days_zone=days_zone)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal._link.run)
        try:
            yield journal
        finally:
            with trio.CancelScope(shield=True):
                await journal.aclose()
