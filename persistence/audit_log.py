"""The park's audit log: entries numbered here, written by the journal writer, read from LMDB.

Theory of operation
-------------------
:class:`LmdbAuditLog` implements ``persistence.audit.AuditLog`` for a running park. The trio
thread never writes LMDB (``persistence.writer``): ``append_nowait`` gives the entry the next
audit number (one past the highest on disk at start, so numbers continue across restarts),
encodes it (``audit.encode_audit``) and queues it to the journal's writer process as background
work (``Journal.put_audit_nowait``). While storage is down that raises StorageUnavailable and
the entry is not numbered; the caller (``server.operations``) logs it, and the command's own
answer already says storage is down.

An entry is readable at once, before its transaction commits: the log keeps the entries the
writer has not yet taken care of (its ``tail``, a contiguous run of the highest numbers) and a
page is that tail's part below the cursor followed by what LMDB holds below it. Once the
journal reports a number written (``Journal.audit_written_through``) its entry is read from
LMDB like the rest and leaves the tail. A record that cannot be decoded is shown as a
``damaged`` entry in its place (``audit.damaged_entry``) and logged once.

Retention: :func:`run_audit_retention` asks the writer, at start and every hour, to delete
entries older than the configured ``[audit] keep`` (``Journal.prune_audit_nowait``); the writer
does it in small chunks between money records.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

import trio

from persistence.audit import (
    MAX_PAGE,
    AuditEntry,
    AuditPage,
    damaged_entry,
    encode_audit,
    last_audit_number,
    parse_cursor,
    read_audit,
)
from persistence.damage import Damage
from persistence.store import Store, StoreError

log = logging.getLogger(__name__)

DAY_MS: Final = 86_400_000
DEFAULT_KEEP_MS: Final = 400 * DAY_MS
RETENTION_EVERY_S: Final = 3600.0
RETENTION_RETRY_S: Final = 60.0
"""After a run could not be queued (storage down), try again this soon."""
MAX_TAIL: Final = 100_000


class AuditJournal(Protocol):
    """What the log needs of ``persistence.journal.Journal``."""

    def put_audit_nowait(self, number: int, encoded: bytes) -> None: ...

    def prune_audit_nowait(self, before_ms: int) -> None: ...

    @property
    def audit_written_through(self) -> int: ...


class LmdbAuditLog:
    """The audit log of a park, in its data directory (module docstring)."""

    def __init__(self, store: Store, journal: AuditJournal) -> None:
        self._store = store
        self._journal = journal
        self._next = last_audit_number(store) + 1
        self._tail: deque[tuple[int, AuditEntry]] = deque()
        self._reported: set[int] = set()  # damaged records already logged

    @property
    def last_number(self) -> int:
        """The number of the newest entry appended (or found on disk at start)."""
        return self._next - 1

    def append_nowait(self, entry: AuditEntry) -> None:
        """Number and queue ``entry``; StorageUnavailable (nothing kept) while storage is down."""
        number = self._next
        self._journal.put_audit_nowait(number, encode_audit(entry))
        self._next = number + 1
        tail = self._tail
        tail.append((number, entry))
        if len(tail) > MAX_TAIL:  # the journal bounds what it keeps the same way
            tail.popleft()
        self._forget_written()

    def page(self, before: str | None, limit: int) -> AuditPage:
        """Newest first, entries below the cursor ``before``; ValueError for a bad cursor."""
        below = parse_cursor(before)
        limit = max(1, min(limit, MAX_PAGE))
        self._forget_written()
        numbered: list[tuple[int, AuditEntry]] = [
            (number, entry) for number, entry in reversed(self._tail)
            if below is None or number < below][:limit]
        older = False
        if len(numbered) < limit:
            disk_below = below
            if self._tail:
                lowest = self._tail[0][0]
                disk_below = lowest if below is None else min(below, lowest)
            records, older = read_audit(self._store, disk_below, limit - len(numbered))
            for number, record in records:
                if isinstance(record, Damage):
                    self._report(number, record)
                    numbered.append((number, damaged_entry(number, record)))
                else:
                    numbered.append((number, record))
        else:
            older = self._older_than(numbered[-1][0])
        entries = tuple(entry for _, entry in numbered)
        cursor = str(numbered[-1][0]) if numbered and older else None
        return AuditPage(entries, cursor)

    def _older_than(self, number: int) -> bool:
        if self._tail and self._tail[0][0] < number:
            return True
        records, _ = read_audit(self._store, number, 1)
        return bool(records)

    def _forget_written(self) -> None:
        tail, written = self._tail, self._journal.audit_written_through
        while tail and tail[0][0] <= written:
            tail.popleft()

    def _report(self, number: int, damage: Damage) -> None:
        if number not in self._reported and len(self._reported) < 10_000:
            self._reported.add(number)
            log.error("a damaged audit record was shown as such: %s (restore the data "
                      "directory from a backup to get it back; `wattkeeper check` lists all)",
                      damage)


async def run_audit_retention(
    journal: AuditJournal,
    wall_ms: Callable[[], int],
    keep_ms: int = DEFAULT_KEEP_MS,
    *,
    every_s: float = RETENTION_EVERY_S,
    retry_s: float = RETENTION_RETRY_S,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Delete audit entries older than ``keep_ms``: at start, then every ``every_s``."""
    task_status.started()
    while True:
        try:
            journal.prune_audit_nowait(wall_ms() - keep_ms)
        except StoreError as error:  # storage down (or closing): the next run catches up
            log.warning("audit retention postponed: %s", error)
            await trio.sleep(retry_s)
            continue
        await trio.sleep(every_s)
