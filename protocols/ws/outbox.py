"""One client's outgoing messages: answers, a snapshot, events, and coalesced updates.

Theory of operation
-------------------
The hub hands every client its share of each stream tick without waiting for anything: the
updates go into this client's :class:`Outbox`, and the client's own sender task takes them
out (:meth:`Outbox.take`) and writes them. Nothing here does I/O or reads a clock, so a
slow client can cost only its own memory, bounded as follows.

Four queues, sent in this order:

1. **answers** (welcome, ack, error, pong, audit_page): in order, never coalesced;
2. the **snapshot** of a new subscription (an iterator the hub builds lazily, so 10,000
   meters are encoded a chunk at a time by the sender, not all at once on the control
   thread), ending with ``snapshot_done``; while it runs, events wait;
3. **events** (alarm, audit): in order, never coalesced;
4. **updates** (meter, park, gateway): keyed, *latest value wins* — a newer update of a key
   replaces the pending one, keeping its place, so a slow client gets fewer, fresher updates.
   How often a meter may change is the hub's business (``protocols.ws.rate``, once for every
   client); what reaches the outbox goes with the next frame.

Updates are bounded by the subscription (one per key). Answers and events are not bounded by
anything the client controls, so their queued size counts against ``max_backlog_bytes``:
past it the outbox is **stalled** (:attr:`stalled`) and the hub drops the client. A client
that reads nothing at all is caught by its sender instead: its write blocks past the stall
timeout.

``take`` returns encoded messages; :meth:`frames` turns them into frames: one per message,
or, for a ``batch`` subscription, ``batch`` frames of up to ``batch_bytes`` each.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Final

from protocols.ws.protocol import batch_frame

SNAPSHOT_CHUNK: Final = 256
"""Snapshot messages per take: bounds how long one take runs on the trio thread."""
ANSWERS_PER_TAKE: Final = 256
EVENTS_PER_TAKE: Final = 1024


class Outbox:
    def __init__(self, *, max_backlog_bytes: int, batch_bytes: int = 60_000) -> None:
        self.batch = False
        self.max_backlog_bytes = max_backlog_bytes
        self.batch_bytes = batch_bytes
        self.answers: deque[str] = deque()
        self.events: deque[str] = deque()
        self.updates: dict[str, str] = {}
        self.snapshot: Iterator[str] | None = None
        self.backlog_bytes = 0
        self.stalled = False
        self.offered = 0  # updates offered (each replaced one is "coalesced")
        self.released = 0  # updates taken for sending

    # -- filling (the hub, on the trio thread, never blocking) --------------------------------

    def answer(self, message: str) -> None:
        self.answers.append(message)
        self._grow(len(message))

    def event(self, message: str) -> None:
        self.events.append(message)
        self._grow(len(message))

    def update(self, key: str, message: str) -> None:
        """Latest value wins (the hub's fan-out loop writes ``updates`` directly for speed,
        counting ``offered`` itself)."""
        self.updates[key] = message
        self.offered += 1

    def start_snapshot(self, messages: Iterator[str], *, batch: bool) -> None:
        """A new subscription: what was pending for the old one goes (the snapshot is the
        current state of everything that matters now)."""
        self.snapshot = messages
        self.batch = batch
        self.updates.clear()
        for message in self.events:
            self.backlog_bytes -= len(message)
        self.events.clear()

    def _grow(self, size: int) -> None:
        self.backlog_bytes += size
        if self.backlog_bytes > self.max_backlog_bytes:
            self.stalled = True

    # -- draining (the client's sender task) ---------------------------------------------------

    def has_work(self) -> bool:
        return bool(self.answers or self.snapshot is not None or self.events or self.updates)

    def take(self) -> list[str]:
        """The messages to send now, in order (empty: nothing until more is added)."""
        taken: list[str] = []
        answers = self.answers
        while answers and len(taken) < ANSWERS_PER_TAKE:
            message = answers.popleft()
            self.backlog_bytes -= len(message)
            taken.append(message)
        if self.snapshot is not None:
            for message in self.snapshot:
                taken.append(message)
                if len(taken) >= SNAPSHOT_CHUNK:
                    return taken
            self.snapshot = None
            # The snapshot was sent just now: updates already pending are newer than it.
        events = self.events
        count = 0
        while events and count < EVENTS_PER_TAKE:
            message = events.popleft()
            self.backlog_bytes -= len(message)
            taken.append(message)
            count += 1
        if self.updates:
            taken.extend(self.updates.values())
            self.released += len(self.updates)
            self.updates = {}
        return taken

    def frames(self, messages: list[str]) -> Iterator[str]:
        """Frames for ``messages``: one each, or ``batch`` frames of about ``batch_bytes``."""
        if not self.batch:
            yield from messages
            return
        chunk: list[str] = []
        size = 0
        for message in messages:
            if chunk and size + len(message) > self.batch_bytes:
                yield batch_frame(chunk)
                chunk, size = [], 0
            chunk.append(message)
            size += len(message) + 1
        if chunk:
            yield batch_frame(chunk)
