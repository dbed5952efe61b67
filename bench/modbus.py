"""``wattkeeper bench modbus``: the server's polling path against plain pymodbus, on loopback.

Theory of operation
-------------------
The simulator is the real one (``simulators.park``, ``ParkPlan.uniform``: gateways ``gw1``..,
units 1..N each) in a *subprocess* (``bench/sim_worker.py``), pinned to a core of its own when
the machine has two or more (this process gets the others), so its CPU is never counted as
ours. It is driven over stdin/stdout lines: inject an overload, dump the coil log. Every
latency is a difference of ``time.monotonic_ns()`` stamps, one clock for every process on
Linux. Then, in order:

1. ``sim_polls_per_s`` — what the simulator alone answers: ``simulators.loadgen`` (precomputed
   request frames, a window of 64 in flight per gateway, replies only framed and counted) runs
   in this process, against the simulator subprocess, before anything else of ours starts.
2. Our path — a real park: ``ParkConfig.from_toml_text`` (one ``[[gateways]]`` per simulated
   gateway, one ``[[meters]]`` per unit) and ``server.app.open_park(config, with_field=True)``:
   one ``GatewayBus`` per gateway -> ``MeterBusListener`` -> meter actors (dispatcher,
   policies, effect router) with the journal writer, the snapshotter and the history flusher
   running, and relay commands actor -> router -> bus -> coil write. "Full rate": the config
   accepts no poll interval below 10 ms, so every gateway polls every 10 ms; a cycle of 100
   units takes far longer, and a bus starts the next cycle as soon as the last one ends
   (``protocols/modbus/bus.py``), so polling is back to back. The achieved rate and the
   measured cycle time are reported, not assumed.

   * ``polls_per_s`` = completed polls over the phase, where a poll is complete when its
     meter actor has applied the reading: polls the buses completed (``BusStatistics.polls``:
     the whole read plan answered and decoded into a ``Reading``), minus readings dropped at
     the run queue's limit (``ParkRegistry.dropped_readings``), minus the growth of the run
     queue over the phase. At full rate the buses can outrun the actors; then the queue fills
     up and readings are dropped, and counting bus polls would credit work never done.
     ``bus_polls_per_s`` and ``cpu_us_per_bus_poll`` report the bus-side count too.
     ``cpu_us_per_poll`` = ``time.process_time()`` over the phase / those polls.
     ``process_time`` counts *every* thread of this process: the trio thread (buses, actors,
     policies, snapshots). The journal writer is a process of its own (history, snapshots to
     LMDB) and is not counted.
   * ``p99_command_ms`` — while polling runs, operator commands (``SetManualRelay`` "open",
     then "auto" later, to random meters, through ``registry.ask``) make the meter actors
     emit ``RelayCommand`` effects. The router's relay sink is wrapped to stamp the moment an
     actor emits one; the latency is that stamp -> the matching coil write in the simulator's
     coil log (same unit, same position, the first one after the stamp). Commands the
     registry refuses (``Overloaded``: run queue at its limit) emit nothing and are counted
     apart (``commands_refused``).
   * ``p99_trip_full_rate_ms`` — overloads (``gwX/U:overload:power=45000``, above the
     meters' ``overload_w`` of 30 kW) are injected on distinct meters while polling runs. Raw
     trip latency = overload injected at the simulator (stamped just before the fault is
     injected, so never late) -> the "open" coil write for that unit; reported: raw minus
     ``overload_delay`` minus the measured mean cycle of that meter's gateway (the configured
     10 ms is not what happens at full rate). After the phase (its counters already read)
     polling goes on until every overloaded meter has tripped, at most ``--drain-seconds``; a
     trip still missing then counts as infinitely late (null if that reaches the 99th
     percentile).

2b. ``p99_trip_ms`` — the issue's figure: raw minus ``overload_delay`` minus the *configured*
   poll interval. That subtraction only means something where the configured interval is what
   the park does, so trips get a park of their own (same simulator, its phase-2 faults
   cleared, other meters) polled every ``--trip-poll-interval`` (100 ms: 20k polls/s, about
   half of what it polls flat out here); the achieved cycle is reported next to it
   (``trip_cycle_ms``). At full rate (above) a new power figure waits up to a whole, uneven
   cycle under back-pressure, and that wait, not the control path, is most of the spread.
   The breakdowns (injection -> actor decided; actor -> coil) and the simulator's own loop lag
   are printed to stderr.
3. Baseline — one pymodbus ``AsyncModbusTcpClient`` per gateway, each reading its units one
   after another with the same read plan (no decoding: the baseline is flattered, not
   handicapped), under ``asyncio.run`` in its own phase; CPU per poll measured the same way
   (``process_time`` over the phase / completed polls). With the two processes pinned to
   their cores the baseline's *rate* varies from run to run (2.4k-6k polls/s seen on the 2-core
   target with neither process saturated: 20 clients each waiting for every reply are bound by
   wake-up latency, not CPU); its CPU per poll is steadier (140-165 µs).

With ``--json`` the last line printed is one JSON object; progress and breakdowns go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import psutil
import trio

from actors.meter import MeterActor
from actors.registry import Overloaded
from bench.parks import HOST, park_toml
from bench.results import print_result
from policies.records import RelayCommand, SetManualRelay
from protocols.modbus.bus import GatewayBus
from protocols.modbus.profiles import load_profile
from server.app import Park, open_park
from server.config import ParkConfig
from simulators.faults import parse_duration
from simulators.loadgen import measure_polls

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
OVERLOAD_INJECTED_W: Final = 45_000
MIN_POLL_INTERVAL: Final = "10ms"
"""The smallest ``poll_interval`` the config accepts (server/config.py)."""
WINDOW: Final = 16
"""Requests in flight per gateway. A relay write waits at the gateway behind the requests
already there, so at full rate its latency grows with the window; measured here, 16 polls as
fast as 32 at the same CPU per poll, and halves the simulator's queue (loop lag p99 3-5 ms
instead of 8-10, command p99 5-11 ms instead of 10-26)."""
TRIP_POLL_INTERVAL: Final = "100ms"
"""The trip phase's poll interval: 2,000 meters at 20k polls/s, about half of what the park
polls flat out here, so every cycle starts on time."""
TRIP_PHASE_S: Final = 5.0
"""Overloads of the trip phase are injected evenly over this long."""
WARMUP_S: Final = 2.0
"""Connect, write every meter's commanded coil once (start_field), settle the cycles."""


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


# --- the simulator subprocess -------------------------------------------------------------------


class SimulatorProcess:
    """``bench/sim_worker.py`` in a subprocess, on its own core when there are two or more."""

    def __init__(
        self, meters: int, gateways: int, profile: str, seed: int, cpu: int | None
    ) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.sim_worker", str(meters), str(gateways), profile,
             str(seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=PROJECT_ROOT,
        )
        if cpu is not None:
            os.sched_setaffinity(self._process.pid, {cpu})
        words = self._read_line().split(" ", 1)
        if words[0] != "ready":
            self.close()
            raise RuntimeError(f"simulator did not start: {' '.join(words)!r}")
        self.ports: dict[str, int] = json.loads(words[1])

    def _read_line(self) -> str:
        assert self._process.stdout is not None
        return self._process.stdout.readline().strip()

    def _send(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def cpu_s(self) -> float:
        """CPU seconds the simulator has used so far (to tell who limits a phase)."""
        times = psutil.Process(self._process.pid).cpu_times()
        return float(times.user + times.system)

    def overload(self, gateway: str, unit: int, watts: float) -> None:
        self._send(f"overload {gateway} {unit} {watts:g}")

    def clear_faults(self) -> None:
        self._send("clear")

    def log(self, since_ns: int) -> dict[str, Any]:
        self._send(f"log {since_ns}")
        log: dict[str, Any] = json.loads(self._read_line())
        return log

    def close(self) -> None:
        self._process.kill()
        self._process.wait()


def pin_cpus() -> tuple[int | None, set[int] | None]:
    """(the simulator's core, ours) if there are two or more cores to split; else no pinning."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(available) < 2:
        return None, None
    return available[-1], set(available[:-1])


# --- phase 2: our path, a real park -------------------------------------------------------------


@attrs.define
class Emitted:
    """Relay commands as meter actors emitted them: (meter key, closed, monotonic_ns)."""

    commands: list[tuple[int, bool, int]] = attrs.Factory(list)


def stamp_relay_commands(park: Park) -> Emitted:
    """Wrap the router's relay sink: stamp each command the moment an actor emits it."""
    emitted = Emitted()
    forward = park.router.relay_sink
    record = emitted.commands.append

    def stamped(actor: MeterActor, command: RelayCommand) -> None:
        record((actor.key, command.closed, time.monotonic_ns()))
        forward(actor, command)

    park.router.relay_sink = stamped
    return emitted


@attrs.frozen
class Counters:
    """What the phase figures are differences of, read at its start and at its deadline."""

    perf_s: float
    cpu_s: float
    sim_cpu_s: float
    bus_polls: int
    queue_depth: int
    dropped: int
    cycles: tuple[int, ...]

    @classmethod
    def read(cls, park: Park, sim: SimulatorProcess) -> Counters:
        assert park.field is not None
        statistics = [bus.statistics() for bus in park.field.buses]
        return cls(
            perf_s=time.perf_counter(),
            cpu_s=time.process_time(),
            sim_cpu_s=sim.cpu_s(),
            bus_polls=sum(s.polls for s in statistics),
            queue_depth=park.dispatcher.queue_depth,
            dropped=park.registry.dropped_readings,
            cycles=tuple(s.cycles for s in statistics),
        )

    def cycle_ms_since(self, first: Counters, buses: Sequence[GatewayBus]) -> dict[str, float]:
        """Each gateway's mean poll-cycle period between ``first`` and these counters."""
        elapsed_ms = (self.perf_s - first.perf_s) * 1000
        return {
            bus.gateway.gateway_id: elapsed_ms / max(1, end - start)
            for bus, start, end in zip(buses, first.cycles, self.cycles, strict=True)
        }


@asynccontextmanager
async def bench_park(
    sim: SimulatorProcess, per_gateway: int, args: argparse.Namespace, poll_interval: str
) -> AsyncIterator[tuple[Park, dict[int, tuple[str, int]], Emitted]]:
    """A real park over the simulator, warmed up: (park, meter key -> (gateway, unit), the
    relay commands its actors emit)."""
    with tempfile.TemporaryDirectory(prefix="wattkeeper-bench-") as data_dir:
        toml = park_toml(Path(data_dir), sim.ports, per_gateway, profile=args.profile,
                         window=args.window, poll_interval=poll_interval,
                         overload_delay_ms=args.overload_delay_ms, opening_balance="1000000.00")
        config = ParkConfig.from_toml_text(toml, "bench-modbus.toml")
        async with open_park(config, with_field=True) as park:
            assert park.field is not None
            location = {park.registry.get(meter.id).key: (meter.gateway, meter.unit)
                        for meter in config.meters}
            emitted = stamp_relay_commands(park)
            await trio.sleep(WARMUP_S)
            yield park, location, emitted


async def measure_park(
    sim: SimulatorProcess, per_gateway: int, args: argparse.Namespace, overload_keys: list[int]
) -> dict[str, Any]:
    """Phase 2 at full rate: throughput, CPU, commands (and trips at full rate)."""
    async with bench_park(sim, per_gateway, args, args.poll_interval) as (park, location, emitted):
        assert park.field is not None
        result = await _run_phase(park, sim, location, emitted, args, overload_keys)
        statistics = [bus.statistics() for bus in park.field.buses]
    result["failures"] = sum(
        s.failed_timeout + s.failed_exception + s.failed_garbage for s in statistics
    )
    result["emitted"] = emitted.commands
    result["location"] = location
    return result


async def measure_trips(
    sim: SimulatorProcess, per_gateway: int, args: argparse.Namespace, overload_keys: list[int]
) -> dict[str, Any]:
    """Phase 2b: overload trips at a poll interval the park sustains (module docstring)."""
    sim.clear_faults()  # phase 2's overloads end; their meters are not used here
    async with bench_park(sim, per_gateway, args, args.trip_poll_interval) as (
        park, location, emitted,
    ):
        assert park.field is not None
        phase_start_ns = time.monotonic_ns()
        first = Counters.read(park, sim)
        injected_ns: dict[int, int] = {}
        every = TRIP_PHASE_S / max(1, len(overload_keys))
        next_at = trio.current_time()
        for key in overload_keys:
            await trio.sleep_until(next_at)
            injected_ns[key] = time.monotonic_ns()
            sim.overload(*location[key], OVERLOAD_INJECTED_W)
            next_at += every
        await trio.sleep(1.0)  # the last overload's trip falls in the cycles counted
        last = Counters.read(park, sim)
        drained = await _drain_trips(emitted, injected_ns, args.drain_seconds)
        elapsed = last.perf_s - first.perf_s
        cycle_ms = last.cycle_ms_since(first, park.field.buses)
    return {
        "phase_start_ns": phase_start_ns,
        "emitted": emitted.commands,
        "location": location,
        "cycle_ms": cycle_ms,
        "busy": (last.cpu_s - first.cpu_s) / elapsed,
        "polls_per_s": (last.bus_polls - first.bus_polls) / elapsed,
        "drain_s": drained,
    }


async def _run_phase(
    park: Park,
    sim: SimulatorProcess,
    location: dict[int, tuple[str, int]],
    emitted: Emitted,
    args: argparse.Namespace,
    overload_keys: list[int],
) -> dict[str, Any]:
    assert park.field is not None
    buses = park.field.buses
    rng = random.Random(7)
    keys = sorted(location)
    command_keys = sorted(set(keys) - set(overload_keys))
    manual_open: set[int] = set()
    rejected = overloaded = 0

    async def command(actor: MeterActor, action: str) -> None:
        nonlocal rejected, overloaded
        try:
            outcome: Any = await park.registry.ask(
                actor, SetManualRelay(action, "bench", park.clock_ms())
            )
        except Overloaded:
            overloaded += 1  # the run queue is at its limit: the server refuses commands
            return
        if outcome.rejection is not None:
            rejected += 1

    phase_start_ns = time.monotonic_ns()
    first = Counters.read(park, sim)
    now = trio.current_time()
    deadline = now + args.seconds
    # Overloads over the first 70 % of the phase, so the last trip completes inside it.
    overload_every = args.seconds * 0.7 / max(1, len(overload_keys))
    next_overload, next_command = now + 0.1, now
    pending_overloads = list(overload_keys)
    injected_ns: dict[int, int] = {}
    sent_commands = 0
    async with trio.open_nursery() as nursery:
        while trio.current_time() < deadline:
            now = trio.current_time()
            if pending_overloads and now >= next_overload:
                key = pending_overloads.pop()
                injected_ns[key] = time.monotonic_ns()
                sim.overload(*location[key], OVERLOAD_INJECTED_W)
                next_overload += overload_every
            if now >= next_command:
                key = rng.choice(command_keys)
                action = "auto" if key in manual_open else "open"
                manual_open.symmetric_difference_update({key})
                nursery.start_soon(command, park.registry.by_key(key), action)
                sent_commands += 1
                next_command += 1 / args.commands_per_s
            wake = min(next_command, deadline)
            if pending_overloads:
                wake = min(wake, next_overload)
            await trio.sleep_until(wake)
        last = Counters.read(park, sim)
        unanswered = len(nursery.child_tasks)
        nursery.cancel_scope.cancel()  # commands still queued behind readings: not waited for
    drained = await _drain_trips(emitted, injected_ns, args.drain_seconds)
    elapsed = last.perf_s - first.perf_s
    bus_polls = last.bus_polls - first.bus_polls
    # Readings a meter actor applied during the phase: polled, minus dropped at the run queue's
    # limit, minus what is still queued at the end beyond what was queued at the start.
    applied = bus_polls - (last.dropped - first.dropped) - (last.queue_depth - first.queue_depth)
    cycle_ms = last.cycle_ms_since(first, buses)
    cpu = last.cpu_s - first.cpu_s
    return {
        "phase_start_ns": phase_start_ns,
        "polls_per_s": applied / elapsed,
        "bus_polls_per_s": bus_polls / elapsed,
        "cpu_us_per_poll": cpu / max(1, applied) * 1e6,
        "cpu_us_per_bus_poll": cpu / max(1, bus_polls) * 1e6,
        "cycle_ms": cycle_ms,
        "busy": cpu / elapsed,
        "sim_busy": (last.sim_cpu_s - first.sim_cpu_s) / elapsed,
        "queue_depth": (first.queue_depth, last.queue_depth),
        "dropped_readings": last.dropped - first.dropped,
        "overload_keys": set(overload_keys),
        "commands_sent": sent_commands,
        "commands_rejected": rejected,
        "commands_overloaded": overloaded,
        "commands_unanswered": unanswered,
        "drain_s": drained,
    }


async def _drain_trips(emitted: Emitted, injected_ns: dict[int, int], limit_s: float) -> float:
    """Keep polling after the phase until every overloaded meter has tripped (or ``limit_s``).

    The phase counters are already read; this only lets late trips finish so that they are
    measured rather than left out. Returns the seconds it took.
    """
    started = trio.current_time()
    waiting = dict(injected_ns)
    seen = 0
    while waiting and trio.current_time() < started + limit_s:
        commands = emitted.commands
        for key, closed, emitted_ns in commands[seen:]:
            if not closed and emitted_ns >= waiting.get(key, emitted_ns + 1):
                del waiting[key]
        seen = len(commands)
        await trio.sleep(0.05)
    await trio.sleep(0.2)  # the last coil writes land at the simulator
    return trio.current_time() - started


def _writes_by_unit(writes: list[list[Any]]) -> dict[tuple[str, int], list[tuple[int, bool]]]:
    by_unit: dict[tuple[str, int], list[tuple[int, bool]]] = {}
    for written_ns, gateway, unit, on, *_sim_s in writes:
        by_unit.setdefault((gateway, unit), []).append((written_ns, on))
    return by_unit


def _first_write(
    by_unit: dict[tuple[str, int], list[tuple[int, bool]]],
    target: tuple[str, int],
    after_ns: int,
    on: bool,
) -> int | None:
    for written_ns, written_on in by_unit.get(target, ()):
        if written_ns >= after_ns and written_on == on:
            return written_ns
    return None


def command_latencies(ours: dict[str, Any], writes: list[list[Any]]) -> list[float]:
    """Actor emitted a relay command -> the first matching coil write after it, in ms."""
    by_unit = _writes_by_unit(writes)
    latencies = []
    for key, closed, emitted_ns in ours["emitted"]:
        if key in ours["overload_keys"] or emitted_ns < ours["phase_start_ns"]:
            continue
        written_ns = _first_write(by_unit, ours["location"][key], emitted_ns, closed)
        if written_ns is not None:
            latencies.append((written_ns - emitted_ns) / 1e6)
    return latencies


@attrs.frozen
class Trip:
    raw_ms: float
    """Overload injected -> relay coil opened at the simulator."""
    decided_ms: float
    """Overload injected -> the meter actor emitted the open command."""
    control_ms: float
    """Actor emitted -> coil opened."""
    interval_ms: float
    reported_ms: float
    """raw - overload delay - poll interval (the p99_trip figures)."""


def trips(
    ours: dict[str, Any],
    log: dict[str, Any],
    overload_delay_ms: int,
    interval_ms: dict[str, float],
) -> list[Trip]:
    """The trips of the overloads injected in the phase ``ours``; ``interval_ms`` per gateway
    is what is subtracted as the poll interval."""
    by_unit = _writes_by_unit(log["coil_writes"])
    key_of = {target: key for key, target in ours["location"].items()}
    emitted: dict[int, list[int]] = {}
    for key, closed, emitted_ns in ours["emitted"]:
        if not closed:
            emitted.setdefault(key, []).append(emitted_ns)
    found = []
    for gateway, unit, injected_ns, *_applied in log["overloads"]:
        if injected_ns < ours["phase_start_ns"]:
            continue  # another phase's
        interval = interval_ms[gateway]
        written_ns = _first_write(by_unit, (gateway, unit), injected_ns, False)
        decided = [ns for ns in emitted.get(key_of[(gateway, unit)], ()) if ns >= injected_ns]
        if written_ns is None or not decided:
            found.append(Trip(math.inf, math.inf, math.inf, interval, math.inf))
            continue
        raw_ms = (written_ns - injected_ns) / 1e6
        found.append(
            Trip(
                raw_ms=raw_ms,
                decided_ms=(decided[0] - injected_ns) / 1e6,
                control_ms=(written_ns - decided[0]) / 1e6,
                interval_ms=interval,
                reported_ms=raw_ms - overload_delay_ms - interval,
            )
        )
    return found


def describe_trips(found: list[Trip], phase: str, drain_s: float, overload_delay_ms: int,
                   interval: str) -> str:
    """The breakdown line for stderr."""
    matched = [trip for trip in found if math.isfinite(trip.raw_ms)]

    def p50_p99(values: list[float], digits: int) -> str:
        return (f"{percentile(values, 0.5):.{digits}f}/"
                f"{percentile(values, 0.99):.{digits}f}")

    return (
        f"trips {phase}: {len(matched)}/{len(found)} matched (after {drain_s:.1f} s of "
        f"draining); p50/p99 raw {p50_p99([t.raw_ms for t in found], 0)} ms = injection -> "
        f"actor decided {p50_p99([t.decided_ms for t in found], 0)} ms + actor -> coil "
        f"{p50_p99([t.control_ms for t in found], 2)} ms; overload delay {overload_delay_ms} ms,"
        f" poll interval subtracted {interval}; reported p50/p99 "
        f"{p50_p99([t.reported_ms for t in found], 1)} ms"
    )


# --- phase 3: the pymodbus baseline --------------------------------------------------------------


async def measure_pymodbus(
    ports: Sequence[int], per_gateway: int, profile: str, seconds: float
) -> dict[str, float]:
    from pymodbus.client import AsyncModbusTcpClient  # only the baseline needs it

    read_plan = load_profile(profile).read_plan
    plan = [(block.function, block.address, block.count) for block in read_plan]
    clients = [AsyncModbusTcpClient(HOST, port=port, timeout=3, retries=0) for port in ports]
    for client in clients:
        await client.connect()
    polls = 0
    running = True

    async def poll_gateway(client: AsyncModbusTcpClient) -> None:
        nonlocal polls
        readers = {
            1: client.read_coils,
            2: client.read_discrete_inputs,
            3: client.read_holding_registers,
            4: client.read_input_registers,
        }
        while running:
            for unit in range(1, per_gateway + 1):
                for function, address, count in plan:
                    await readers[function](address, count=count, device_id=unit)
                polls += 1

    tasks = [asyncio.create_task(poll_gateway(client)) for client in clients]
    await asyncio.sleep(WARMUP_S / 2)
    cpu_start, polls_start, started = time.process_time(), polls, time.perf_counter()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu_start
    done = polls - polls_start
    elapsed = time.perf_counter() - started
    running = False
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        client.close()
    return {"polls_per_s": done / elapsed, "cpu_us_per_poll": cpu / max(1, done) * 1e6}


# --- the run -------------------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    """Rounded, or None (JSON null) when there is no figure: no samples, or unmatched ones."""
    return round(value, 3) if math.isfinite(value) else None


def target_report(result: dict[str, Any]) -> list[str]:
    """One line per target of the issue: the figure, the target, met or missed."""
    baseline_cpu = result["baseline_cpu_us_per_poll"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    command, trip = result["p99_command_ms"], result["p99_trip_ms"]
    return [
        f"target cpu_us_per_poll <= baseline/5 ({baseline_cpu / 5:.1f}): "
        f"{result['cpu_us_per_poll']} -> {verdict(result['cpu_us_per_poll'] <= baseline_cpu / 5)}",
        f"target polls_per_s >= baseline ({result['baseline_polls_per_s']}): "
        f"{result['polls_per_s']} -> "
        f"{verdict(result['polls_per_s'] >= result['baseline_polls_per_s'])}",
        f"target p99_command_ms <= 10: {command} -> "
        f"{verdict(command is not None and command <= 10)}",
        f"target p99_trip_ms <= 20: {trip} -> {verdict(trip is not None and trip <= 20)}",
        f"target sim_polls_per_s >= 20000: {result['sim_polls_per_s']} -> "
        f"{verdict(result['sim_polls_per_s'] >= 20_000)}",
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wattkeeper bench modbus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--meters", type=int, default=2_000)
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--profile", default="sdm630")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of our phase and of the baseline phase")
    parser.add_argument("--sim-seconds", type=float, default=3.0,
                        help="length of the simulator-alone phase")
    parser.add_argument("--poll-interval", default=MIN_POLL_INTERVAL,
                        help="gateways' poll_interval (default: the smallest the config "
                        "accepts, i.e. full rate)")
    parser.add_argument("--window", type=int, default=WINDOW,
                        help="requests in flight per gateway (config `window`, 1..64)")
    parser.add_argument("--commands-per-s", type=float, default=50.0,
                        help="operator relay commands a second during our phase")
    parser.add_argument("--overloads", type=int, default=100,
                        help="overloads injected (one per meter) during our phase")
    parser.add_argument("--overload-delay-ms", type=int, default=500,
                        help="the meters' overload_delay")
    parser.add_argument("--trip-poll-interval", default=TRIP_POLL_INTERVAL,
                        help="the gateways' poll_interval in the trip phase (one the park "
                             "sustains)")
    parser.add_argument("--drain-seconds", type=float, default=20.0,
                        help="after our phase, wait at most this long for late trips")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the simulator and this process to separate cores")
    parser.add_argument("--json", action="store_true", help="end with one JSON object line")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    # `wattkeeper bench modbus -- --seconds 5` forwards the "--" too.
    args = parser.parse_args([arg for arg in argv if arg != "--"])
    if args.gateways < 1 or args.meters < args.gateways:
        parser.error("need at least one gateway and one meter per gateway")
    if args.seconds <= 0 or args.commands_per_s <= 0:
        parser.error("--seconds and --commands-per-s must be > 0")
    try:
        parse_duration(args.trip_poll_interval)
    except ValueError as error:
        parser.error(f"--trip-poll-interval: {error}")
    per_gateway = args.meters // args.gateways
    meters = per_gateway * args.gateways
    load_profile(args.profile)  # an unknown profile fails here, with the profile's message

    sim_cpu, our_cpus = (None, None) if args.no_pin else pin_cpus()
    if our_cpus is not None:
        os.sched_setaffinity(0, our_cpus)
    sim = SimulatorProcess(meters, args.gateways, args.profile, args.seed, sim_cpu)
    ports = list(sim.ports.values())
    try:
        sim_result = measure_polls(
            HOST, ports, units_per_port=per_gateway, profile=args.profile,
            seconds=args.sim_seconds, window=64,
        )
        print(f"simulator alone: {sim_result.polls_per_s:,.0f} polls/s "
              f"({sim_result.exceptions} exception replies)", file=sys.stderr)
        # Distinct meters for the two phases: a tripped meter stays open for the reclose time.
        sample = random.Random(args.seed).sample(range(meters), 2 * min(args.overloads,
                                                                        meters // 4))
        full_rate_keys, trip_keys = sample[:len(sample) // 2], sample[len(sample) // 2:]
        ours = trio.run(measure_park, sim, per_gateway, args, full_rate_keys)
        cycles = list(ours["cycle_ms"].values())
        print(
            f"our park: {ours['polls_per_s']:,.0f} polls/s applied by meter actors "
            f"({ours['bus_polls_per_s']:,.0f} polls/s completed by the buses, "
            f"{ours['dropped_readings']:,} readings dropped at the run queue's limit, queue "
            f"{ours['queue_depth'][0]:,} -> {ours['queue_depth'][1]:,}), "
            f"{ours['cpu_us_per_poll']:.1f} µs CPU/applied poll "
            f"({ours['cpu_us_per_bus_poll']:.1f} per bus poll), cycle "
            f"{min(cycles):.0f}-{max(cycles):.0f} ms (poll_interval {args.poll_interval}), "
            f"{ours['failures']} failed polls; CPU busy: {ours['busy']:.0%} ours, "
            f"{ours['sim_busy']:.0%} simulator",
            file=sys.stderr,
        )
        log = sim.log(ours["phase_start_ns"])
        tripping = trio.run(measure_trips, sim, per_gateway, args, trip_keys)
        trip_log = sim.log(tripping["phase_start_ns"])
        trip_cycles = list(tripping["cycle_ms"].values())
        print(
            f"trip phase: poll_interval {args.trip_poll_interval}, cycle "
            f"{min(trip_cycles):.0f}-{max(trip_cycles):.0f} ms, "
            f"{tripping['polls_per_s']:,.0f} polls/s, CPU busy {tripping['busy']:.0%}",
            file=sys.stderr,
        )
        baseline = asyncio.run(measure_pymodbus(ports, per_gateway, args.profile, args.seconds))
        print(
            f"pymodbus: {baseline['polls_per_s']:,.0f} polls/s, "
            f"{baseline['cpu_us_per_poll']:.1f} µs CPU/poll",
            file=sys.stderr,
        )
    finally:
        sim.close()

    commands = command_latencies(ours, log["coil_writes"])
    full_rate = trips(ours, log, args.overload_delay_ms, ours["cycle_ms"])
    trip_interval_ms = parse_duration(args.trip_poll_interval) * 1000
    found = trips(tripping, trip_log, args.overload_delay_ms,
                  dict.fromkeys(tripping["cycle_ms"], trip_interval_ms))
    gaps = [(applied - injected) / 1e6 for _g, _u, injected, applied in trip_log["overloads"]]
    print(
        f"commands: {ours['commands_sent']} sent, {ours['commands_rejected']} rejected, "
        f"{ours['commands_overloaded']} refused (overloaded), "
        f"{ours['commands_unanswered']} unanswered at the end, "
        f"{len(commands)} relay commands matched to coil writes; p50/p99/max "
        f"{percentile(commands, 0.5):.2f}/{percentile(commands, 0.99):.2f}/"
        f"{max(commands, default=math.nan):.2f} ms",
        file=sys.stderr,
    )
    print(describe_trips(full_rate, "at full rate", ours["drain_s"], args.overload_delay_ms,
                         f"= measured mean cycle {sum(cycles) / len(cycles):.0f} ms"),
          file=sys.stderr)
    print(describe_trips(found, f"at poll_interval {args.trip_poll_interval}",
                         tripping["drain_s"], args.overload_delay_ms,
                         f"= configured {trip_interval_ms:.0f} ms"), file=sys.stderr)
    print(f"simulator: loop lag p99/max {log['loop_lag_ms'][0]:.1f}/{log['loop_lag_ms'][1]:.1f}"
          f" ms at full rate, {trip_log['loop_lag_ms'][0]:.1f}/{trip_log['loop_lag_ms'][1]:.1f}"
          f" ms in the trip phase; injection stamp -> fault applied at most "
          f"{max(gaps, default=0):.2f} ms", file=sys.stderr)
    matched = [trip for trip in found if math.isfinite(trip.raw_ms)]
    result = {
        "meters": meters,
        "gateways": args.gateways,
        "polls_per_s": round(ours["polls_per_s"]),
        "baseline_polls_per_s": round(baseline["polls_per_s"]),
        "cpu_us_per_poll": round(ours["cpu_us_per_poll"], 2),
        "baseline_cpu_us_per_poll": round(baseline["cpu_us_per_poll"], 2),
        "p99_command_ms": _finite(percentile(commands, 0.99)),
        "p99_trip_ms": _finite(percentile([t.reported_ms for t in found], 0.99)),
        "trip_poll_interval": args.trip_poll_interval,
        "trip_cycle_ms": round(sum(trip_cycles) / len(trip_cycles), 1),
        "p99_trip_full_rate_ms": _finite(
            percentile([t.reported_ms for t in full_rate], 0.99)),
        "sim_polls_per_s": round(sim_result.polls_per_s),
        "bus_polls_per_s": round(ours["bus_polls_per_s"]),
        "cpu_us_per_bus_poll": round(ours["cpu_us_per_bus_poll"], 2),
        "dropped_readings": ours["dropped_readings"],
        "commands_refused": ours["commands_overloaded"],
        "trips_matched": len(matched),
        "trips_injected": len(found),
        "cycle_ms": round(sum(cycles) / len(cycles), 1),
        "poll_interval": args.poll_interval,
        "window": args.window,
        "profile": args.profile,
    }
    print_result(result, as_json=args.json, verdicts=target_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
