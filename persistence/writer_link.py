"""The trio side of the journal writer process: start it, supervise it, stream work to it.

Theory of operation
-------------------
``run`` keeps one writer process at a time running: ``python -m persistence.writer_process`` on
the open store's directory, passed the descriptor that holds the directory's lock (see
``persistence.store``), so every writer, the first or a restarted one, shares the lock. For each
process it waits for the READY frame, hands it to ``on_ready``, then runs two tasks until the
process exits:

* the sender waits until something is queued, then writes everything queued, in frames of
  at most ``FRAME_WEIGHT`` items: one pipe write per scheduler round for a round's top-ups
  however many, and a big snapshot in slices that each pack in a fraction of a millisecond.
  Every ``EARLY_WRITE`` requests queued within a round are written at once from the caller's
  stack instead (see ``_write_now``), so the writer starts its next transaction while the
  round is still running;
* the receiver reads result frames and hands each to ``on_result`` on the trio thread, in
  commit order (the pipe is ordered).

The ``send_*`` methods never block and never wait: they append to the outbox.

Supervision. If the process exits any other way than after ``close`` (killed, a disk error, a
bug), or a new one fails to start, the link drops everything queued for it (none of it can be
known to be written; the journal answers those callers), calls ``on_down(detail, retry_in)``,
waits as ``persistence.restarts`` says and starts another, for as long as it takes. The
failure never leaves ``run``: a dead writer must not tear down the server's task tree, whose
first job (readings, relays) needs no storage. For the same reason ``run`` reports itself
started after the *first attempt*, READY or not: a park starts even while its disk is full.

Every process is started with ``Popen`` on the trio thread (``_start``); see there for why.

Once started, ``run`` is shielded from cancellation and returns only after ``close``: whoever
starts it must call ``close``, as ``open_journal`` does on every exit path. ``close`` lets a
running writer write what is queued and exit; a writer still starting, or a restart still
waiting, is abandoned at once (nothing had been sent to it), so closing never waits for storage
that is down.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from persistence.restarts import Restarts
from persistence.store import Store
from persistence.writer_process import (
    BACKGROUND,
    BROKEN,
    MARKER,
    MIN_FREE_BYTES,
    OUTCOME,
    READY,
    RECORD,
    RESULT,
    FrameReader,
    frame,
)

log = logging.getLogger(__name__)

OnResult = Callable[[list[Any]], None]
OnReady = Callable[[list[Any]], None]
"""Called with the READY frame of each writer, before anything is sent to it."""
OnDown = Callable[[str, "float | None"], None]
"""Called with why a writer stopped (or did not start) and the seconds until the next attempt
(None: closing, no restart)."""
FRAME_WEIGHT = 2_000
"""Requests (or snapshot/history items) per pipe frame: ~0.3 ms of msgpack packing."""
EARLY_WRITE = 32
"""Queued requests that are written at once, without waiting for the sender task."""


class WriterLink:
    def __init__(
        self,
        store: Store,
        on_result: OnResult,
        on_ready: OnReady,
        on_down: OnDown,
        *,
        chunk_puts: int = 1000,
        max_records: int = 2000,
        restarts: Restarts | None = None,
        min_free_bytes: int = MIN_FREE_BYTES,
        days_zone: str | None = None,
    ) -> None:
        self._store = store
        self._on_result = on_result
        self._on_ready = on_ready
        self._on_down = on_down
        self.restarts = restarts or Restarts()
        self._command = [
            sys.executable, "-m", "persistence.writer_process", str(store.path.resolve()),
            "--map-size", str(store.map_size), "--max-map-size", str(store.max_map_size),
            "--chunk-puts", str(chunk_puts), "--max-records", str(max_records),
            "--min-free-bytes", str(min_free_bytes),
            *(("--days-zone", days_zone) if days_zone else ()),
        ]
        self._outbox: list[list[Any]] = []
        self._wake = trio.Event()
        self._stdin_fd = -1  # set while the sender may be bypassed (see _queue)
        self._sending = False
        self._leftover = b""
        self._closing = False
        self._close_requested = trio.Event()
        self._abandon: trio.CancelScope | None = None  # while starting or waiting to restart
        self.ready: list[Any] = []
        """The last READY frame: ``[READY, last_seq, counters]``."""
        self.pid = 0
        """The pid of the writer process last started (for operators and tests)."""

    # -- called from the journal (trio thread, never blocks) ---------------------------------

    def send_record(self, token: int, meter_id: str, key: bytes, encoded: bytes) -> None:
        self._queue([RECORD, token, meter_id, key, encoded])

    def send_outcome(self, seq: int, reference: str, outcome: int) -> None:
        self._queue([OUTCOME, seq, reference, outcome])

    def send_background(self, kind: str, items: list[Any]) -> None:
        self._queue([BACKGROUND, kind, items])

    def send_marker(self, token: int) -> None:
        self._queue([MARKER, token])

    @property
    def unsent(self) -> int:
        return len(self._outbox)

    def close(self) -> None:
        """Write what is queued, then let the process finish and exit; stop restarting."""
        self._closing = True
        self._wake.set()
        self._close_requested.set()
        if self._abandon is not None:
            self._abandon.cancel()

    def _queue(self, message: list[Any]) -> None:
        outbox = self._outbox
        outbox.append(message)
        if len(outbox) >= EARLY_WRITE and not self._sending and not self._leftover:
            self._write_now()
        self._wake.set()

    def _write_now(self) -> None:
        """Write the outbox from the caller's stack (a non-blocking pipe write).

        Pipelining: when a commit's results come back, its callers all run in one scheduler
        round and queue their next records; left to the sender task (scheduled after that
        round) they would reach the writer together, and writer and trio thread would take
        turns idling. Writing every ``EARLY_WRITE`` records lets the writer start the next
        transaction while the rest of the round is still running.
        """
        fd = self._stdin_fd
        if fd < 0:
            return
        data = frame(self._take_frame())
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # the process is gone; the receiver reports why
        self._leftover = data[written:]

    # -- the process -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run writer processes, one after another, until ``close`` (module docstring)."""
        announced = False

        def announce() -> None:
            nonlocal announced
            if not announced:
                announced = True
                task_status.started()

        # Shielded: when the server is cancelled (Ctrl-C, a crashed sibling) the journal's
        # shielded close still needs this task to write what is queued and read the answers.
        with trio.CancelScope(shield=True):
            while not self._closing:
                try:
                    detail = await self._run_process(announce)
                except Exception as error:
                    # A bug on this side (reading or handling a frame): the process is killed
                    # on the way out, and this counts as its death; the park goes on.
                    log.exception("the link to the journal writer failed")
                    detail = f"the link to the journal writer failed: {error!r}"
                self._forget_queued()
                if self._closing:
                    if detail:
                        self._on_down(detail, None)
                    break
                # Unless closing, a writer only stops by failing, so ``detail`` is set.
                detail = detail or "the journal writer process stopped"
                retry_in = self.restarts.next_delay(trio.current_time())
                self._on_down(detail, retry_in)
                announce()  # the first attempt failed: the journal starts unavailable
                with trio.CancelScope() as self._abandon:
                    with trio.move_on_after(retry_in):
                        await self._close_requested.wait()
                self._abandon = None
        announce()  # closed before or during the first attempt

    async def _run_process(self, announce: Callable[[], None]) -> str:
        """Start one writer and serve it until it exits: why it stopped ("" after ``close``).

        Calls ``announce`` once the writer is READY (and its READY handled)."""
        try:
            process = self._start()
        except OSError as error:
            return f"the journal writer process could not be started: {error}"
        assert process.stdin is not None and process.stdout is not None
        self.pid = process.pid
        stdin = trio.lowlevel.FdStream(os.dup(process.stdin.fileno()))
        stdout = trio.lowlevel.FdStream(os.dup(process.stdout.fileno()))
        process.stdin.close()
        process.stdout.close()
        reader = FrameReader()
        try:
            first: list[Any] | None = None
            with trio.CancelScope() as starting:
                self._abandon = starting
                if self._closing:
                    starting.cancel()
                try:
                    first = await self._first_frame(stdout, reader)
                finally:
                    self._abandon = None
            if first is None or first[0] != READY:
                if starting.cancelled_caught:
                    return ""  # closed while it was starting: nothing was sent to it
                if first is None:
                    code = await trio.to_thread.run_sync(process.wait)
                    return f"the journal writer process exited at start-up with code {code}"
                return f"the journal writer could not start: {first[1]}"
            self.ready = first
            self._on_ready(first)
            announce()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send, stdin)
                detail = await self._receive(stdout, reader)
                nursery.cancel_scope.cancel()
            # Its stdout is closed: the process is exiting (or gone).
            code = await trio.to_thread.run_sync(process.wait)
            if detail or code != 0 or not self._closing:
                return detail or f"the journal writer process exited with code {code}"
            return ""
        finally:
            with trio.CancelScope(shield=True):
                await stdin.aclose()
                await stdout.aclose()
                if process.poll() is None:
                    process.kill()
                    await trio.to_thread.run_sync(process.wait)

    def _start(self) -> subprocess.Popen[bytes]:
        command = [*self._command, "--parent-pid", str(os.getpid())]
        lock_fd = self._store.lock_fd
        # Popen on this thread, not trio.lowlevel.open_process: that forks from a worker
        # thread, and the child's PR_SET_PDEATHSIG fires when the *thread* that forked it
        # exits (trio retires idle workers after seconds), killing a healthy writer. A restart
        # runs in the same task, so it is on the trio thread too.
        return subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=(lock_fd,) if lock_fd >= 0 else (),
            cwd=_PROJECT_ROOT,
            # Its own session: Ctrl-C in the server's terminal signals the whole foreground
            # process group, and a writer interrupted mid-shutdown would lose the final flush.
            # It stops when its stdin closes, or dies with the server (PR_SET_PDEATHSIG).
            start_new_session=True,
        )

    def _forget_queued(self) -> None:
        """The writer is gone: what was queued for it must not reach the next one (a half-sent
        frame would garble its pipe, and its callers are answered already)."""
        self._outbox.clear()
        self._leftover = b""
        self._wake = trio.Event()

    async def _first_frame(
        self, stdout: trio.abc.ReceiveStream, reader: FrameReader
    ) -> list[Any] | None:
        """READY or BROKEN; None if the process exited without a word."""
        while True:
            data = await stdout.receive_some(65_536)
            if not data:
                return None
            for message in reader.feed(data):
                return list(message)  # nothing else is sent before READY is answered

    async def _send(self, stdin: trio.lowlevel.FdStream) -> None:
        self._stdin_fd = stdin.fileno()
        try:
            await self._send_queued(stdin)
        finally:
            self._stdin_fd = -1

    async def _send_queued(self, stdin: trio.lowlevel.FdStream) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._outbox or self._leftover:
                self._sending = True
                try:
                    if self._leftover:
                        data, self._leftover = self._leftover, b""
                    else:
                        data = frame(self._take_frame())
                    await stdin.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the process is gone; the receiver reports why
                finally:
                    self._sending = False
            if self._closing and not self._outbox and not self._leftover:
                await stdin.aclose()
                return

    def _take_frame(self) -> list[list[Any]]:
        """The oldest requests, up to ``FRAME_WEIGHT`` items (a snapshot chunk weighs its size).

        Bounded because packing is on the trio thread: a 100k-meter snapshot queued while the
        pipe was full packed as one frame stalled the loop for ~20 ms (measured)."""
        outbox = self._outbox
        weight = 0
        end = 0
        for message in outbox:
            end += 1
            weight += len(message[2]) if message[0] == BACKGROUND else 1
            if weight >= FRAME_WEIGHT:
                break
        taken = outbox[:end]
        del outbox[:end]
        return taken

    async def _receive(self, stdout: trio.abc.ReceiveStream, reader: FrameReader) -> str:
        """Deliver results until end-of-file; the process's error message, if it sent one."""
        on_result = self._on_result
        while True:
            data = await stdout.receive_some(1 << 20)
            if not data:
                return ""
            for message in reader.feed(data):
                if message[0] == RESULT:
                    on_result(message)
                elif message[0] == BROKEN:
                    return str(message[1])


# The package root: ``python -m persistence.writer_process`` must import from any cwd.
_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
