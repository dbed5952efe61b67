"""The bench side of ``bench chaos``'s two worker processes: start, ask, kill, restart.

Theory of operation
-------------------
:class:`SimHandle` drives ``bench.chaos_sim`` in lock step (one command line, one JSON answer).

:class:`ServerHandle` drives *generations* of ``bench.chaos_server`` on one data directory:
each start is a new process (a :class:`Generation`) whose stdout a reader task turns into
answers (matched by request id) and events (writer deaths and births, a crash). A request
whose generation ends before answering raises :class:`ServerGone`: the client cannot know what
happened, which is exactly the case the history checker must handle. Every end of a
generation is recorded as planned (the bench killed or stopped it) or not; an unplanned end is
restarted by the handle's own supervisor task, so one failure does not end the run, and is
counted (``unplanned_exits``). The bench's stderr stays readable: each generation's logs go
to a file of its own in the run directory.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from bench.lines import LineReader

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 30.0
RESTART_ATTEMPTS: Final = 20


class ServerGone(Exception):
    """The server process ended before it answered: the outcome is unknown."""


class ServerDown(Exception):
    """No server process is running (between a kill and its restart); nothing was sent."""


class StartFailed(Exception):
    """The server process exited (or hung) before it was ready."""


async def _open(command: list[str], log_path: Path) -> trio.Process:
    with log_path.open("ab") as log:
        return await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            cwd=PROJECT_ROOT,
        )


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log file, for a one-line report."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# --- the simulator ------------------------------------------------------------------------------


class SimHandle:
    def __init__(self, process: trio.Process, ports: dict[str, int], log_path: Path) -> None:
        self._process = process
        assert process.stdout is not None
        self._reader = LineReader(process.stdout)
        self._lock = trio.Lock()
        self.ports = ports
        self.log_path = log_path

    @classmethod
    async def start(cls, meters: int, gateways: int, profile: str, seed: int,
                    run_dir: Path) -> SimHandle:
        log_path = run_dir / "sim.log"
        process = await _open([sys.executable, "-m", "bench.chaos_sim", str(meters),
                               str(gateways), profile, str(seed)], log_path)
        assert process.stdout is not None
        line = await LineReader(process.stdout).readline()
        if line is None:
            process.kill()
            raise RuntimeError(f"the simulator did not start: {tail(log_path)}")
        handle = cls(process, json.loads(line)["ready"], log_path)
        return handle

    async def ask(self, *words: object) -> dict[str, Any]:
        # Shielded: the simulator answers at once, and a question abandoned half way would
        # leave its answer to be read as the next question's.
        with trio.CancelScope(shield=True):
            async with self._lock:
                assert self._process.stdin is not None
                await self._process.stdin.send_all((" ".join(map(str, words)) + "\n").encode())
                line = await self._reader.readline()
        if line is None:
            raise RuntimeError(f"the simulator exited: {tail(self.log_path)}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"simulator: {answer['error']}")
        return answer

    @property
    def pid(self) -> int:
        return self._process.pid

    async def close(self) -> None:
        if self._process.returncode is None:
            self._process.kill()
        await self._process.wait()


# --- the server ---------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Slot:
    done: trio.Event = attrs.Factory(trio.Event)
    answer: dict[str, Any] | None = None


@attrs.define(eq=False)
class Generation:
    """One server process on the data directory."""

    number: int
    process: trio.Process
    log_path: Path
    started_ns: int
    ready_ns: int = 0
    ready: dict[str, Any] = attrs.Factory(dict)
    planned_exit: bool = False
    end_ns: int = 0
    returncode: int | None = None
    crashed: str = ""
    pending: dict[int, _Slot] = attrs.Factory(dict)
    is_ready: trio.Event = attrs.Factory(trio.Event)
    ended: trio.Event = attrs.Factory(trio.Event)
    send_lock: trio.Lock = attrs.Factory(trio.Lock)

    @property
    def pid(self) -> int:
        return self.process.pid


@attrs.frozen
class Exit:
    """A generation's end, as the bench saw it."""

    generation: int
    mono_ns: int
    planned: bool
    returncode: int | None
    detail: str


@attrs.frozen
class WriterEvent:
    generation: int
    kind: str  # "writer_exit" | "writer_start"
    pid: int
    mono_ns: int


class ServerHandle:
    """Generations of the server worker (module docstring). Run :meth:`supervise` in a task."""

    def __init__(self, config_path: Path, run_dir: Path,
                 on_line: Callable[[str], None] | None = None) -> None:
        self._config_path = config_path
        self._run_dir = run_dir
        self._on_line = on_line or (lambda text: None)
        self._numbers = itertools.count(1)
        self._ids = itertools.count(1)
        self._lock = trio.Lock()
        self._up = trio.Event()
        self._unplanned = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.current: Generation | None = None
        self.generations: list[Generation] = []
        self.exits: list[Exit] = []
        self.writer_events: list[WriterEvent] = []
        self.wanted = True
        self.wall_offset_ms = 0
        """Where the bench's clock steps have left the host's wall clock (each new
        generation starts there)."""

    # -- lifetime -------------------------------------------------------------------------

    async def supervise(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                        ) -> None:
        """Own the generations' reader tasks; restart after an unplanned end."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await self._unplanned.wait()
                self._unplanned = trio.Event()
                await trio.sleep(0.2)  # let the dead process's writer go (store lock)
                async with self._lock:
                    if self.current is not None or not self.wanted:
                        continue
                    for _attempt in range(RESTART_ATTEMPTS):
                        try:
                            await self._start_locked()
                            break
                        except StartFailed as error:
                            self._on_line(f"restart after an unplanned exit failed: {error}")
                            await trio.sleep(0.5)

    async def start(self) -> Generation:
        """Start a generation (the previous one must have ended); StartFailed if it dies first."""
        async with self._lock:
            self.wanted = True
            return await self._start_locked()

    async def _start_locked(self) -> Generation:
        assert self._nursery is not None, "run supervise() first"
        assert self.current is None, "a server generation is still running"
        number = next(self._numbers)
        log_path = self._run_dir / f"server-{number:03d}.log"
        process = await _open([sys.executable, "-m", "bench.chaos_server",
                               str(self._config_path), str(self.wall_offset_ms)], log_path)
        generation = Generation(number, process, log_path, time.monotonic_ns())
        self.generations.append(generation)
        self.current = generation
        self._nursery.start_soon(self._read, generation)
        with trio.move_on_after(START_TIMEOUT_S):
            async with trio.open_nursery() as race:
                async def until(event: trio.Event) -> None:
                    await event.wait()
                    race.cancel_scope.cancel()
                race.start_soon(until, generation.is_ready)
                race.start_soon(until, generation.ended)
        if not generation.is_ready.is_set():
            if not generation.ended.is_set():
                generation.process.kill()
                await generation.ended.wait()
            why = generation.crashed or f"exit {generation.returncode}"
            raise StartFailed(f"generation {number} ({why}): {tail(log_path, 3)}")
        self._up.set()
        return generation

    async def kill(self) -> int:
        """SIGKILL the running generation (planned); returns the kill's monotonic_ns."""
        async with self._lock:
            generation = self._planned_end()
            kill_ns = time.monotonic_ns()
            os.kill(generation.pid, signal.SIGKILL)
            await generation.ended.wait()
            return kill_ns

    async def stop(self) -> int:
        """Stop the running generation cleanly (planned); returns when it has exited."""
        async with self._lock:
            generation = self._planned_end()
            stop_ns = time.monotonic_ns()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._send(generation, {"id": next(self._ids), "op": "stop"})
            with trio.move_on_after(STOP_TIMEOUT_S) as timeout:
                await generation.ended.wait()
            if timeout.cancelled_caught:
                generation.process.kill()
                await generation.ended.wait()
            return stop_ns

    def _planned_end(self) -> Generation:
        generation = self.current
        if generation is None:
            raise ServerDown("no server is running")
        self.wanted = False
        generation.planned_exit = True
        self._up = trio.Event()
        return generation

    async def close(self) -> None:
        """End whatever runs (at the end of the run, after a clean stop, or on an error)."""
        self.wanted = False
        generation = self.current
        if generation is not None:
            generation.planned_exit = True
            generation.process.kill()
            await generation.ended.wait()

    # -- requests -------------------------------------------------------------------------

    async def wait_up(self) -> Generation:
        while True:
            generation = self.current
            if generation is not None and generation.is_ready.is_set():
                return generation
            await self._up.wait()

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """One command to the running generation; ServerDown if none, ServerGone if it ends
        before answering."""
        generation = self.current
        if generation is None or not generation.is_ready.is_set() or generation.planned_exit:
            raise ServerDown("no server is running")
        request_id = next(self._ids)
        slot = _Slot()
        generation.pending[request_id] = slot
        try:
            await self._send(generation, {"id": request_id, "op": op, **fields})
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            generation.pending.pop(request_id, None)
            raise ServerGone(f"generation {generation.number} is gone") from None
        await slot.done.wait()
        if slot.answer is None:
            raise ServerGone(f"generation {generation.number} ended before answering")
        return slot.answer

    @staticmethod
    async def _send(generation: Generation, message: dict[str, Any]) -> None:
        stdin = generation.process.stdin
        assert stdin is not None
        async with generation.send_lock:  # one writer at a time on the pipe
            await stdin.send_all((json.dumps(message) + "\n").encode())

    # -- the reader -----------------------------------------------------------------------

    async def _read(self, generation: Generation) -> None:
        assert generation.process.stdout is not None
        reader = LineReader(generation.process.stdout)
        try:
            while True:
                line = await reader.readline()
                if line is None:
                    break
                self._dispatch(generation, json.loads(line))
        finally:
            with trio.CancelScope(shield=True):
                if generation.process.returncode is None and not generation.ended.is_set():
                    # Cancelled (the bench is ending) rather than end of output: do not wait
                    # for a process that has no reason to exit.
                    with trio.move_on_after(0.5):
                        generation.returncode = await generation.process.wait()
                    if generation.process.returncode is None:
                        generation.planned_exit = True
                        generation.process.kill()
                generation.returncode = await generation.process.wait()
                self._ended(generation)

    def _dispatch(self, generation: Generation, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event is None:
            slot = generation.pending.pop(message.get("id", -1), None)
            if slot is not None:
                slot.answer = message
                slot.done.set()
        elif event == "ready":
            generation.ready = message
            generation.ready_ns = time.monotonic_ns()
            generation.is_ready.set()
        elif event in ("writer_exit", "writer_start"):
            self.writer_events.append(
                WriterEvent(generation.number, event, int(message["pid"]),
                            int(message["mono_ns"])))
        elif event == "crashed":
            generation.crashed = str(message.get("error", ""))

    def _ended(self, generation: Generation) -> None:
        generation.end_ns = time.monotonic_ns()
        for slot in generation.pending.values():
            slot.done.set()  # answer None: ServerGone
        generation.pending.clear()
        if self.current is generation:
            self.current = None
            self._up = trio.Event() if self._up.is_set() else self._up
        planned = generation.planned_exit
        detail = generation.crashed or f"exit {generation.returncode}"
        if not planned:
            detail = f"{detail}; log: {tail(generation.log_path, 2)}"
        self.exits.append(Exit(generation.number, generation.end_ns, planned,
                               generation.returncode, detail))
        generation.ended.set()
        if not planned:
            self._on_line(f"server generation {generation.number} exited unplanned: {detail}")
            if generation.is_ready.is_set():
                # A failed start is its starter's to handle; a running park that fell over
                # is restarted here, so the run goes on.
                self._unplanned.set()
