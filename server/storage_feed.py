"""What the runtime hands to storage (snapshots, history), and what waits while it refuses.

Theory of operation
-------------------
The snapshotter and the history buffer feed the journal writer with ``*_nowait`` puts. While
storage is down (the writer is restarting, the disk is full) the journal refuses them with a
``StoreError``; nothing here may let that reach the park's task tree. A refused snapshot chunk
makes :func:`offer_snapshots`'s put return False, and the snapshotter lists its meters again
for the next round (``actors.snapshots``); refused history intervals stay in the buffer, at most
``MAX_PENDING_HISTORY`` of them (the oldest are dropped, with a log line, beyond that: history
is report data, balances do not depend on it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import trio

from persistence.codec import HistoryItem
from persistence.journal import Journal
from persistence.store import StoreError
from policies.records import IntervalClosed

log = logging.getLogger(__name__)

MAX_PENDING_HISTORY: Final = 500_000
"""Closed intervals kept while storage cannot take them (~100 bytes each); oldest dropped."""


def offer_snapshots(journal: Journal) -> Callable[[list[tuple[str, bytes]]], bool]:
    """The snapshotter's put: False (nothing queued) while storage refuses work."""

    def put(items: list[tuple[str, bytes]]) -> bool:
        try:
            journal.put_snapshots_nowait(items)
        except StoreError:
            return False
        return True

    return put


class HistoryBuffer:
    """Collects closed intervals from the router; flushed to the journal writer in batches."""

    def __init__(self) -> None:
        self.pending: list[HistoryItem] = []

    def add(self, meter_id: str, interval: IntervalClosed) -> None:
        self.pending.append(
            (meter_id, interval.start_ms, interval.wh, interval.minor, interval.band,
             interval.register_wh, interval.balance))

    def flush(self, journal: Journal) -> None:
        """Hand the pending intervals to the journal; kept (bounded) while it refuses them."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            journal.put_history_nowait(batch)
        except StoreError:
            lost = len(batch) - MAX_PENDING_HISTORY
            if lost > 0:
                log.error("storage is down: %d history intervals dropped (oldest)", lost)
                del batch[:lost]
            self.pending = batch + self.pending


async def run_history_flusher(
    buffer: HistoryBuffer,
    journal: Journal,
    interval_s: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    while True:
        await trio.sleep(interval_s)
        buffer.flush(journal)
