"""What the benchmarks that run a whole park share: readings for every meter as the field
would deliver them, probes of the control path's latency, memory, and helper processes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import psutil
import trio

from bench.results import percentile
from policies.records import Reading
from server.app import Park

PROBES_PER_S = 200
SLICES_PER_S = 50


class Probe:
    """A pseudo-actor on the dispatcher: records how long each probe waited to be handled."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []

    def receive(self, message: object) -> None:
        assert isinstance(message, int)
        self.latencies_ms.append((time.perf_counter_ns() - message) / 1e6)


async def feed_readings(park: Park, probe: Probe, rate_hz: float = 1.0) -> None:
    """Every meter ``rate_hz`` readings a second, in slices (batches of 100, as gateways'
    bursts would arrive); a slice that starts late does not shift the ones after it. The
    probes go in a task of their own, so a late probe does not slow the readings."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_probes, park, probe)
        await feed_every_meter(park, rate_hz)


async def feed_every_meter(park: Park, rate_hz: float = 1.0) -> None:
    """A reading for every meter ``rate_hz`` times a second, as the Modbus side would
    deliver them: the register grows, the power wanders."""
    registry = park.registry
    clock = park.clock
    keys = list(range(len(registry)))
    slices = max(1, round(SLICES_PER_S / rate_hz)) if rate_hz < 1 else SLICES_PER_S
    per_slice = -(-len(keys) // slices)
    slice_s = 1 / (slices * rate_hz)
    register = [1_000_000 + 7 * key for key in keys]
    started = trio.current_time()
    slice_number = 0
    while True:
        start = (slice_number % slices) * per_slice
        chosen = keys[start:start + per_slice]
        wall, mono = clock.wall_ms(), clock.mono_ms()
        readings = []
        for key in chosen:
            register[key] += 3
            readings.append(Reading(wall, register[key], 10_000.0 + (key + slice_number) % 97,
                                    mono_ms=mono))
        for offset in range(0, len(chosen), 100):
            registry.deliver_readings_nowait(chosen[offset:offset + 100],
                                             readings[offset:offset + 100])
        slice_number += 1
        await trio.sleep_until(started + slice_number * slice_s)


async def send_probes(park: Park, probe: Probe) -> None:
    """PROBES_PER_S probes through the dispatcher's run queue, behind the readings."""
    started = trio.current_time()
    number = 0
    while True:
        park.dispatcher.send_nowait(probe, time.perf_counter_ns())
        number += 1
        await trio.sleep_until(started + number / PROBES_PER_S)


async def phase(probe: Probe, seconds: float) -> float:
    """The control path's p99 over the next ``seconds``."""
    probe.latencies_ms.clear()
    await trio.sleep(seconds)
    return percentile(probe.latencies_ms, 0.99)


def rss_anon(pids: Iterable[int | None]) -> int:
    """Anonymous resident memory of these processes: the park's LMDB map grows the resident
    size as history is written, and that is file cache, not what a service costs."""
    return sum(_rss_anon(pid) for pid in pids if pid is not None)


def _rss_anon(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    rss: int = psutil.Process(pid).memory_info().rss  # (a kernel without RssAnon)
    return rss


class LineProcess:
    """A helper process of a benchmark, spoken to in lines on its stdin and stdout."""

    def __init__(self, process: trio.Process, what: str) -> None:
        self.process = process
        assert process.stdout is not None and process.stdin is not None
        self._stdout = process.stdout
        self._stdin = process.stdin
        self._what = what
        self._buffer = b""

    async def line(self) -> str:
        while b"\n" not in self._buffer:
            data = await self._stdout.receive_some()
            if not data:
                raise RuntimeError(f"the {self._what} process ended early (see its stderr)")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    async def send(self, command: str) -> None:
        await self._stdin.send_all(command.encode() + b"\n")

    async def json_line(self, timeout: float = 60.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            result: dict[str, Any] = json.loads(await self.line())
            return result

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
