"""The actor runtime: mailboxes and one dispatcher task, not one trio task per actor.

Theory of operation
-------------------
An actor here is an object with private state and a ``receive(message)`` method. The runtime
guarantees the actor semantics that matter — each actor sees its messages one at a time, in the
order they were sent, and a failure in one actor is handed to its supervisor without touching
any other — without paying for a trio task and a memory channel per actor (~30 µs a message and
~3 KB a meter, measured; see docs/decisions.md).

All mailboxes share one FIFO run queue of ``(actor, message)`` pairs owned by the dispatcher.
Because there is exactly one consumer and the queue is FIFO, per-actor order and
one-message-at-a-time follow for free, and an actor with nothing to do costs nothing at all.
``send_nowait`` is a deque append (plus waking the dispatcher when it sleeps), so it can be
called from any trio task or callback on the trio thread.

The dispatcher drains the queue in time slices: it handles messages until ``slice_s`` has
passed (checked every ``check_every`` messages, because reading the clock per message would cost
more than a cheap message), then yields to trio with a checkpoint. That bounds how long the
control loop can keep the websocket hub, Modbus buses and the journal waiting, while a burst is
still handled at full speed.

Batches: a producer that has several messages at once (a Modbus gateway's replies that arrived
together, for different meters) can queue them as one run-queue entry with ``offer_batch``.
The dispatcher hands them out in order, one ``receive`` each, with failures handled one by one
as usual; what is saved is the queue entry and the producer's call per message (~0.8 µs of
~4 µs per reading, measured). A producer may pass its own batch handler, a loop that does what
``receive`` would for its kind of message (``actors.meter.receive_readings`` writes the quiet
reading out in the loop: ~7 % of a reading, measured). Per-actor order still holds because
the batch sits in the one FIFO like its messages would. A batch is handled whole within a
slice, so producers keep batches to what arrived together (tens to a few hundred messages, well
under a millisecond).

Back-pressure: ``queue_depth`` (messages, a batch counted by its size) is public, so producers
decide what to do when the queue is deep: readings may be dropped (the next reading carries the
cumulative register, so nothing is lost), commands are refused with ``overloaded``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
import trio

log = logging.getLogger(__name__)


class Actor(Protocol):
    def receive(self, message: object) -> None: ...


FailureHandler = Callable[[Actor, object, Exception], None]
BatchHandler = Callable[[Sequence[Any], Sequence[Any], FailureHandler], None]
"""Hands ``messages[i]`` to ``actors[i]`` in order; each failure goes to the third argument."""


def receive_each(actors: Sequence[Actor], messages: Sequence[object],
                 fail: FailureHandler) -> None:
    """The default batch handler: one ``receive`` per message."""
    for actor, message in zip(actors, messages, strict=True):
        try:
            actor.receive(message)
        except Exception as exc:  # as in drain_slice: the rest of the batch goes on
            fail(actor, message, exc)


@attrs.frozen
class DispatcherStatistics:
    queue_depth: int
    messages: int
    failures: int
    slices: int
    longest_slice_ms: float


class Dispatcher:
    """One run queue, one consumer task: see the module docstring."""

    def __init__(
        self,
        on_failure: FailureHandler,
        *,
        slice_s: float = 0.001,
        check_every: int = 32,
    ) -> None:
        self._queue: deque[tuple[Actor, object]] = deque()
        self._batched = 0  # messages inside queued batches beyond their one queue entry each
        self._batch_runner = _BatchRunner(self)
        self._on_failure = on_failure
        self._slice_s = slice_s
        self._check_every = check_every
        self._wakeup = trio.Event()
        self._sleeping = False
        self._messages = 0
        self._failures = 0
        self._slices = 0
        self._longest_slice = 0.0

    @property
    def queue_depth(self) -> int:
        return len(self._queue) + self._batched

    def send_nowait(self, actor: Actor, message: object) -> None:
        """Put a message in ``actor``'s mailbox. Never blocks; safe from any trio task."""
        self.offer(actor, message, sys.maxsize)

    def offer(self, actor: Actor, message: object, max_depth: int) -> bool:
        """``send_nowait`` unless ``max_depth`` messages are queued already (then False)."""
        if len(self._queue) + self._batched >= max_depth:
            return False
        self._enqueue(actor, message)
        return True

    def offer_batch(
        self,
        actors: Sequence[Actor],
        messages: Sequence[object],
        max_depth: int,
        handle: BatchHandler = receive_each,
    ) -> bool:
        """Queue ``messages[i]`` for ``actors[i]``, all as one entry handed to ``handle`` (see
        the module docstring), unless ``max_depth`` messages are queued already (then False and
        nothing is queued). Two parallel sequences rather than pairs: no tuple per message."""
        if len(actors) != len(messages):
            raise ValueError(f"{len(actors)} actors for {len(messages)} messages")
        if len(self._queue) + self._batched >= max_depth:
            return False
        if actors:
            self._batched += len(actors) - 1
            self._enqueue(self._batch_runner, (handle, actors, messages))
        return True

    def _enqueue(self, actor: Actor, message: object) -> None:
        self._queue.append((actor, message))
        if self._sleeping:
            self._sleeping = False
            self._wakeup.set()

    def deliver_now(self, actor: Actor, message: object) -> None:
        """Hand ``message`` to ``actor`` at once, ahead of its mailbox, on the caller's stack.

        For messages whose order against what is already queued does not matter and whose
        sender is on the trio thread outside a time slice: committed journal entries (money
        adds up in any order; the journal delivers them in sequence order itself). It saves a
        queue round trip and a task wake-up per top-up. Failures go to the supervisor exactly
        as from the queue.
        """
        self._messages += 1
        try:
            actor.receive(message)
        except Exception as exc:
            self._fail(actor, message, exc)

    def _fail(self, actor: Actor, message: object, error: Exception) -> None:
        self._failures += 1
        try:
            self._on_failure(actor, message, error)
        except Exception:
            # The supervisor itself failed on this one: the dispatcher must still go on, or
            # every meter stops being protected for one meter's sake.
            log.critical("failure handler failed for %r", actor, exc_info=True)

    def statistics(self) -> DispatcherStatistics:
        return DispatcherStatistics(
            queue_depth=len(self._queue),
            messages=self._messages,
            failures=self._failures,
            slices=self._slices,
            longest_slice_ms=self._longest_slice * 1000.0,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver messages forever (cancel the surrounding scope to stop)."""
        task_status.started()
        while True:
            if not self._queue:
                self._wakeup = trio.Event()
                self._sleeping = True
                await self._wakeup.wait()
                continue
            self.drain_slice()
            await trio.lowlevel.checkpoint()

    def drain_slice(self) -> int:
        """Handle messages for one time slice; returns how many. Public for benchmarks/tests."""
        queue = self._queue
        popleft = queue.popleft
        clock = time.perf_counter
        started = clock()
        deadline = started + self._slice_s
        check_every = self._check_every
        batch_runner = self._batch_runner
        handled = 0
        while queue:
            for _ in range(check_every):
                if not queue:
                    break
                actor, message = popleft()
                handled += 1
                try:
                    actor.receive(message)
                except Exception as exc:  # one actor's failure must never stop the others
                    self._fail(actor, message, exc)
                if actor is batch_runner:
                    break  # a batch is many messages: look at the clock after each
            if clock() >= deadline:
                break
        elapsed = clock() - started
        self._messages += handled
        self._slices += 1
        if elapsed > self._longest_slice:
            self._longest_slice = elapsed
        return handled


class _BatchRunner:
    """The pseudo-actor a batch is queued with: hands each message to its actor in turn."""

    __slots__ = ("_dispatcher",)

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def receive(self, message: object) -> None:
        # (always queued by offer_batch)
        batch: tuple[BatchHandler, Sequence[Actor], Sequence[object]] = message  # type: ignore
        handle, actors, messages = batch
        dispatcher = self._dispatcher
        extra = len(actors) - 1
        dispatcher._batched -= extra
        dispatcher._messages += extra
        handle(actors, messages, dispatcher._fail)


class Reply:
    """A one-shot answer slot for a request sent to an actor; the sender awaits it."""

    __slots__ = ("_error", "_event", "_value")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: object = None
        self._error: Exception | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def set(self, value: object) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def fail(self, error: Exception) -> None:
        if not self._event.is_set():
            self._error = error
            self._event.set()

    def result(self) -> object:
        """The answer of a reply that is ``done`` (raises its error); no checkpoint."""
        if not self._event.is_set():
            raise RuntimeError("the reply is not done yet")
        if self._error is not None:
            raise self._error
        return self._value

    async def wait(self) -> object:
        await self._event.wait()
        return self.result()


@attrs.frozen
class Request:
    """A message whose sender waits for an answer (``reply``)."""

    message: object
    reply: Reply
