"""The server process of ``wattkeeper bench chaos``: a real park with its field, on stdin.

Theory of operation
-------------------
``python -m bench.chaos_server PARK.toml [WALL_OFFSET_MS]`` loads the config, opens
``server.app.open_park(config)`` with the field (the Modbus buses poll the simulator process)
and a ``ParkClock`` whose wall the bench steps (``WALL_OFFSET_MS`` is where earlier steps
left the host's wall clock: a restarted server reads the same stepped clock), and prints one
JSON line
``{"event": "ready", "pid", "writer_pid", "faulted": [...], "start_s"}``. It then reads one
JSON command a line from stdin, each ``{"id": N, "op": ..., ...}``, runs each in a task of
its own (top-ups are concurrent, as from many payment clients) and answers ``{"id": N, ...}``
when it is done, in whatever order they finish:

``topup`` (``meter``, ``amount`` minor units, ``ref``)
    ``Ledger.top_up`` at the park's wall clock: ``{"ok": true, "balance", "duplicate",
    "status"}`` or ``{"ok": false, "code", "message"}``.
``replace`` (``meter``, ``ref``, ``start_wh``, ``final_wh``)
    ``Ledger.replace_meter``, answered the same way.
``step`` (``delta_ms``)
    step the park's wall clock (an NTP step); the control clock is not touched.
``writer`` / ``state`` / ``registers``
    the journal writer's pid; how many meters have a reading and which are faulted; every
    meter's ``[register_wh, faulted]``.
``snapshot``
    snapshot every changed meter now and wait until it is on disk.
``restore`` (``meter``, ``hex``)
    write a backed-up snapshot through the park's writer and reset the meter.
``stop``
    stop cleanly (the park's own shutdown: last snapshots, journal flushed), print
    ``{"event": "stopped"}`` and exit 0. End of stdin does the same.

Events the bench did not ask for are lines too: ``{"event": "writer_exit", "pid",
"mono_ns"}`` / ``{"event": "writer_start", ...}`` when the journal writer process dies or a
new one appears (watched every 50 ms), and ``{"event": "crashed", "error"}`` if the park
itself raises (the process then exits 3). Logs go to stderr, which the bench keeps in a file.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import trio

from bench import chaos_adapt as adapt
from bench.lines import stdin_lines
from policies.records import NO_READING
from server.app import Park
from server.clock import ParkClock
from server.config import load_config

__all__ = ["main"]

WRITER_WATCH_S = 0.05
EXIT_CRASHED = 3


def emit(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def _watch_writer(park: Park) -> None:
    """Report the writer process's deaths and births (module docstring)."""
    known = adapt.writer_pid(park)
    reported_dead = False
    while True:
        await trio.sleep(WRITER_WATCH_S)
        pid = adapt.writer_pid(park)
        if pid != known and pid:
            if not reported_dead and known:
                emit({"event": "writer_exit", "pid": known, "mono_ns": time.monotonic_ns()})
            emit({"event": "writer_start", "pid": pid, "mono_ns": time.monotonic_ns()})
            known, reported_dead = pid, False
        elif known and not reported_dead and not _alive(known):
            emit({"event": "writer_exit", "pid": known, "mono_ns": time.monotonic_ns()})
            reported_dead = True


class _Commands:
    def __init__(self, park: Park, clock: ParkClock, stop: trio.CancelScope) -> None:
        self.park = park
        self.clock = clock
        self.stop = stop

    async def run(self, request: dict[str, Any]) -> None:
        answer: dict[str, Any]
        try:
            answer = await self.handle(request)
        except Exception as error:  # the park's answer, whatever it is, goes to the client
            answer = {"ok": False, "code": adapt.error_code(error), "message": str(error)[:300],
                      "outcome_known": bool(getattr(error, "outcome_known", True))}
        answer["id"] = request.get("id")
        emit(answer)

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        park = self.park
        if op == "topup":
            ack = await park.ledger.top_up(request["meter"], int(request["amount"]),
                                           request["ref"], self.clock.wall_ms())
            return adapt.ack_fields(ack)
        if op == "replace":
            return await adapt.replace_meter(
                park, request["meter"], request["ref"], self.clock.wall_ms(),
                start_wh=int(request["start_wh"]), final_wh=int(request["final_wh"]))
        if op == "step":
            self.clock.step_wall(int(request["delta_ms"]))
            return {"ok": True, "wall_ms": self.clock.wall_ms()}
        if op == "writer":
            return {"ok": True, "pid": adapt.writer_pid(park)}
        if op == "state":
            readings = sum(1 for actor in park.registry if actor.state.reading_ms != NO_READING)
            cycles = sum(bus.statistics().cycles for bus in park.field.buses) if park.field else 0
            return {"ok": True, "readings": readings, "faulted": adapt.faulted_meters(park),
                    "cycles": cycles, "mono_ns": time.monotonic_ns()}
        if op == "registers":
            return {"ok": True, "registers": {
                actor.meter_id: [actor.state.register_wh, actor.faulted]
                for actor in park.registry
            }}
        if op == "snapshot":
            return {"ok": True, "written": await park.snapshot_now()}
        if op == "restore":
            return await adapt.restore_snapshot(park, request["meter"],
                                                bytes.fromhex(request["hex"]))
        if op == "stop":
            self.stop.cancel()
            return {"ok": True}
        return {"ok": False, "code": "bad_request", "message": f"unknown op {op!r}"}


async def _serve(config_path: Path, wall_offset_ms: int) -> None:
    config = load_config(config_path)
    clock = ParkClock()
    if wall_offset_ms:
        clock.step_wall(wall_offset_ms)
    started = time.perf_counter()
    async with adapt.open_bench_park(config, clock) as park:
        emit({"event": "ready", "pid": _own_pid(), "writer_pid": adapt.writer_pid(park),
              "faulted": adapt.faulted_meters(park),
              "start_s": round(time.perf_counter() - started, 3)})
        async with trio.open_nursery() as nursery:
            commands = _Commands(park, clock, nursery.cancel_scope)
            nursery.start_soon(_watch_writer, park)
            async for line in stdin_lines():
                nursery.start_soon(commands.run, json.loads(line))
            nursery.cancel_scope.cancel()


def _own_pid() -> int:
    import os

    return os.getpid()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        trio.run(_serve, Path(args[0]), int(args[1]) if len(args) > 1 else 0)
    except BaseException as error:  # any end but a clean stop is reported
        emit({"event": "crashed", "error": _describe(error)})
        logging.getLogger(__name__).error("park exited", exc_info=error)
        return EXIT_CRASHED
    emit({"event": "stopped"})
    return 0


def _describe(error: BaseException) -> str:
    """The first leaf of a (possibly nested) exception group, in one line."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"[:500]


if __name__ == "__main__":
    sys.exit(main())
