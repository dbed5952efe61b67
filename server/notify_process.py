"""The delivery process, from the server's side: start it, wake it, restart it.

The server raises notices and writes them to the outbox (``server.notices``); the delivery
process (``server.notify_worker``) sends them. :class:`NotifyProcess` starts the process with
the settings, tells it when a batch of notices is committed (:meth:`wake`: one small message,
dropped when the pipe is busy, since the process also polls), forwards an admin's "try again"
for a dead letter, and keeps the process's latest figures for ``/metrics`` and the console.

A process that dies is started again after a pause that doubles from 1 s to 30 s while it
keeps dying quickly, like the hub's; meanwhile notices wait in the outbox and control goes on.
A process that refuses to start (a template with a typo) stops the server at start with its
words, because every notice would fail the same way.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from server.config import ParkConfig
from server.edge_link import INIT, LOG, READY, REFUSED, STATS, Link, LinkClosed
from server.notify_worker import REVIVE, WAKE, DeliverySettings

log = logging.getLogger(__name__)

REPO: Final = Path(__file__).resolve().parents[1]
START_TIMEOUT_S: Final = 30.0
FIRST_RESTART_DELAY_S: Final = 1.0
MAX_RESTART_DELAY_S: Final = 30.0
STEADY_AFTER_S: Final = 60.0


class DeliveryNotStarted(Exception):
    """The delivery process refused to start (its words are the message)."""


@attrs.frozen
class DeliveryFigures:
    taken: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    pending: int = 0
    in_flight: int = 0
    by_channel: dict[str, int] = attrs.Factory(dict)
    running: bool = False
    restarts: int = 0


def delivery_settings(config: ParkConfig) -> DeliverySettings:
    return DeliverySettings(
        data_dir=str(config.server.data_dir),
        timezone=config.calendar.timezone,
        notify=config.notify,
        tenants={t.id: t for t in config.tenants.values() if t.contacts},
        log_level=logging.getLogger().getEffectiveLevel(),
    )


def wanted(config: ParkConfig) -> bool:
    """Whether a delivery process has anything to do: a channel and a tenant to reach."""
    return bool(config.notify.channels) and any(t.contacts for t in config.tenants.values())


class NotifyProcess:
    def __init__(self, config: ParkConfig) -> None:
        self._settings = delivery_settings(config)
        self._link: Link | None = None
        self._woken = False
        self.pid: int | None = None
        self.restarts = 0
        self._figures = DeliveryFigures()
        self._revives: list[str] = []
        self._nudge: trio.Event | None = None

    def figures(self) -> DeliveryFigures:
        return attrs.evolve(self._figures, running=self._link is not None,
                            restarts=self.restarts)

    def wake(self, written: int = 1) -> None:
        """Notices were committed to the outbox (``Notifier.on_written``)."""
        self._woken = True
        if self._nudge is not None:
            self._nudge.set()

    def revive(self, notice_id: str) -> bool:
        """Ask the process to try ``notice_id``'s dead deliveries again (all: ``""``); False
        when it is not running."""
        link = self._link
        if link is None:
            return False
        self._revives.append(notice_id)
        if self._nudge is not None:
            self._nudge.set()
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        process, link = await self._start()
        task_status.started()
        delay = FIRST_RESTART_DELAY_S
        while True:
            began = trio.current_time()
            why = await self._serve(process, link)
            if trio.current_time() - began > STEADY_AFTER_S:
                delay = FIRST_RESTART_DELAY_S
            while True:
                log.error("the delivery process ended (%s); notices wait in the outbox, it "
                          "restarts in %g s", why, delay)
                await trio.sleep(delay)
                delay = min(MAX_RESTART_DELAY_S, delay * 2)
                self.restarts += 1
                try:
                    process, link = await self._start()
                    break
                except (DeliveryNotStarted, LinkClosed, trio.TooSlowError, OSError) as error:
                    why = f"its restart failed: {error}"

    async def _start(self) -> tuple[trio.Process, Link]:
        ours, theirs = socket.socketpair()
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "server.notify_worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
        finally:
            theirs.close()
        link = Link(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        try:
            await link.send((INIT, pickle.dumps(self._settings)))
            with trio.fail_after(START_TIMEOUT_S):
                answer = await link.receive()
                while answer[0] in (LOG, STATS):
                    self._on_message(answer)
                    answer = await link.receive()
            if answer[0] == REFUSED:
                raise DeliveryNotStarted(f"the delivery process refused to start: {answer[2]}")
            if answer[0] != READY:
                raise LinkClosed(f"it said {answer[0]!r} instead of ready")
        except BaseException:
            await self._stop(process, link)
            raise
        self.pid = process.pid
        self._link = link
        log.info("the delivery process runs (pid %d)", process.pid)
        return process, link

    async def _stop(self, process: trio.Process, link: Link) -> None:
        self._link = None
        self.pid = None
        with trio.CancelScope(shield=True):
            await link.aclose()
            with trio.move_on_after(3):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def _serve(self, process: trio.Process, link: Link) -> str:
        why = "its pipe closed"
        try:
            async with trio.open_nursery() as nursery:
                async def watch() -> None:
                    nonlocal why
                    code = await process.wait()
                    why = f"exit status {code}"
                    nursery.cancel_scope.cancel()

                async def receive() -> None:
                    try:
                        while True:
                            self._on_message(await link.receive())
                    except LinkClosed:
                        nursery.cancel_scope.cancel()

                async def send() -> None:
                    try:
                        while True:
                            self._nudge = trio.Event()
                            if not (self._revives or self._woken):
                                await self._nudge.wait()
                            while self._revives:
                                await link.send((REVIVE, self._revives.pop(0)))
                            if self._woken:
                                self._woken = False
                                await link.send((WAKE,))
                    except LinkClosed:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                nursery.start_soon(receive)
                nursery.start_soon(send)
        finally:
            await self._stop(process, link)
        return why

    def _on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == STATS:
            _, taken, delivered, retried, dead, pending, in_flight, by_channel = message
            self._figures = DeliveryFigures(taken, delivered, retried, dead, pending,
                                            in_flight, dict(by_channel))
        elif kind == LOG:
            _, level, name, text = message
            logging.getLogger(name).log(level, "%s", text)
