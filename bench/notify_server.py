"""The park side of ``bench notify``: ``python -m bench.notify_server CONFIG START_S MODE``.

A park (no field: this process feeds the readings) with the delivery process, fed once a second
with a reading of every burst meter. Each burst meter draws 21.6 kW (6 Wh a second, plausible
for an sdm630), all from the same opening balance, so they all cross each low-balance level in
the same round: 10,000 notices at once. Registers are a function of the wall time since
``START_S``, so a restarted server (``MODE`` = ``resume``) goes on where the killed one was.

``probe`` on stdin measures control decisions for 5 s: every 10 ms one probe meter (opening
balance 0.01, a tenant without contacts) gets a charging reading, which opens its relay; the
time from handing the reading to the dispatcher to the relay command is one decision. It prints
``{"event": "probe", "p99_ms": ...}``. Lines on stdout are JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Final

import trio

from bench.results import percentile
from policies.records import Reading, RelayCommand
from server.app import open_park
from server.config import load_config

WH_PER_S: Final = 6
POWER_W: Final = WH_PER_S * 3600.0
BASE_WH: Final = 1_000_000
PROBE_EVERY_S: Final = 0.01
PROBE_WINDOW_S: Final = 5.0
SLICES: Final = 10


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def register_at(start_s: float, now_s: float) -> int:
    return BASE_WH + int(max(0.0, now_s - start_s) * WH_PER_S)


async def main(config_path: Path, start_s: float, mode: str) -> None:
    config = load_config(config_path)
    burst = [m.id for m in config.meters if not m.id.startswith("P-")]
    probes = [m.id for m in config.meters if m.id.startswith("P-")]
    async with open_park(config, with_field=False) as park:
        registry = park.registry
        burst_keys = [registry.get(m).key for m in burst]
        probe_keys = [registry.get(m).key for m in probes]
        sent_ns: dict[str, int] = {}
        latencies: list[float] = []
        original = park.router.relay_sink

        def relay_sink(actor: Any, command: RelayCommand) -> None:
            started = sent_ns.pop(actor.meter_id, None)
            if started is not None and not command.closed:
                latencies.append((time.perf_counter_ns() - started) / 1e6)
            original(actor, command)

        park.router.relay_sink = relay_sink
        now = time.time()
        for key in probe_keys:  # baselines: the next reading charges
            registry.deliver_reading_nowait(key, Reading(int(now * 1000), BASE_WH, 0.0))
        say(event="ready", mode=mode, meters=len(burst))

        async def feed() -> None:
            # Every meter once a second, in ten slices, as pollers spread over the second do.
            slices = [burst_keys[i::SLICES] for i in range(SLICES)]
            while True:
                began = trio.current_time()
                now_s = time.time()
                reading = Reading(int(now_s * 1000), register_at(start_s, now_s), POWER_W)
                for index, keys in enumerate(slices):
                    for key in keys:
                        registry.deliver_reading_nowait(key, reading)
                    await trio.sleep_until(began + (index + 1) / SLICES)
                stats = park.notifier.statistics if park.notifier else None
                say(event="round", at=now_s, raised=stats.raised if stats else 0,
                    written=stats.written if stats else 0)

        async def probe(first: int) -> None:
            latencies.clear()
            index = first
            ends = trio.current_time() + PROBE_WINDOW_S
            while trio.current_time() < ends and index < len(probe_keys):
                meter = probes[index]
                sent_ns[meter] = time.perf_counter_ns()
                registry.deliver_reading_nowait(
                    probe_keys[index], Reading(int(time.time() * 1000), BASE_WH + 100, 100.0))
                index += 1
                await trio.sleep(PROBE_EVERY_S)
            await trio.sleep(0.2)
            say(event="probe", p99_ms=round(percentile(latencies, 0.99), 3),
                samples=len(latencies))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            probe_at = 0
            stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
            buffer = b""
            while True:
                data = await stdin.receive_some()
                if not data:
                    break
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip() == b"probe":
                        nursery.start_soon(probe, probe_at)
                        probe_at += int(PROBE_WINDOW_S / PROBE_EVERY_S)
                    elif line.strip() == b"stop":
                        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
