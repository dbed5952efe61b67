"""The simulator process of ``wattkeeper bench modbus``: the real ``simulators.park``, on stdin.

Theory of operation
-------------------
``python -m bench.sim_worker METERS GATEWAYS PROFILE SEED`` opens
``open_sim_park(ParkPlan.uniform(...))`` with ephemeral ports (gateways ``gw1``..``gwG``,
units 1..METERS/GATEWAYS each) and prints one line ``ready {"gw1": PORT, ...}``. It then
reads one command a line from stdin and answers on stdout:

``overload GATEWAY UNIT WATTS``
    inject ``GATEWAY/UNIT:overload:power=WATTS`` (no answer). Two ``time.monotonic_ns()``
    stamps are kept: just before :meth:`SimPark.inject` (the bench's conservative "overload
    appeared" time: it cannot be later than the fault) and once the fault task has applied it
    (seen at this task's next checkpoint; the gap says how far apart the two can be).
``clear``
    end every fault injected so far (no answer).
``log SINCE_NS``
    one JSON line: ``coil_writes`` (``[monotonic_ns, gateway, unit, on, sim_s]`` from the
    park's coil log, written at or after ``SINCE_NS``), ``overloads`` (``[gateway, unit,
    before_ns, applied_ns]``), ``requests`` (requests answered by every gateway so far),
    ``loop_lag_ms`` (``[p99, max]`` since ``SINCE_NS`` of how late a 1 ms sleep in the
    simulator's loop woke: how long a request or fault could wait for the simulator itself).

End of stdin ends the process. The clock is ``time.monotonic_ns()``, which is the same clock
in every process of a Linux host, so the bench can subtract its own stamps from these.
"""

from __future__ import annotations

import json
import sys
import time

import trio

from bench.lines import stdin_lines
from server.collector import run_collector_hygiene
from simulators.faults import parse_fault
from simulators.park import ActiveFault, ParkPlan, SimPark, open_sim_park

__all__ = ["main"]


class _Overloads:
    """Overloads injected so far, with the stamps described in the module docstring."""

    def __init__(self) -> None:
        self.entries: list[list[object]] = []

    async def stamp_applied(self, entry: list[object], active: ActiveFault) -> None:
        while not active.applied:
            await trio.sleep(0)
        entry.append(time.monotonic_ns())


class _LoopLag:
    """How late the simulator's loop wakes from a 1 ms sleep, stamped (``monotonic_ns``)."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, float]] = []

    async def watch(self) -> None:
        clock = time.perf_counter
        while True:
            before = clock()
            await trio.sleep(0.001)
            self.samples.append((time.monotonic_ns(), (clock() - before - 0.001) * 1000))

    def since(self, since_ns: int) -> list[float]:
        """[p99, max] of the lags since ``since_ns`` (ms)."""
        lags = sorted(lag for stamp, lag in self.samples if stamp >= since_ns)
        if not lags:
            return [0.0, 0.0]
        return [round(lags[int(len(lags) * 0.99)], 3), round(lags[-1], 3)]


def _log(park: SimPark, overloads: _Overloads, lag: _LoopLag, since_ns: int) -> str:
    writes = [
        [write.monotonic_ns, write.gateway, write.unit, write.on, write.sim_s]
        for write in park.coil_log.since(since_ns)
    ]
    requests = sum(stats.requests for stats in park.statistics().values())
    return json.dumps({
        "coil_writes": writes,
        "overloads": overloads.entries,
        "requests": requests,
        "loop_lag_ms": lag.since(since_ns),
    })


async def _serve(meters: int, gateways: int, profile: str, seed: int) -> None:
    plan = ParkPlan.uniform(meters=meters, gateways=gateways, port=0, seed=seed, profile=profile)
    overloads = _Overloads()
    lag = _LoopLag()
    async with open_sim_park(plan) as park, trio.open_nursery() as nursery:
        nursery.start_soon(lag.watch)
        await nursery.start(run_collector_hygiene)  # as `wattkeeper sim` (server/simulate.py)
        print("ready " + json.dumps(park.ports), flush=True)
        async for line in stdin_lines():
            words = line.decode().split()
            if words[0] == "overload":
                gateway, unit, watts = words[1], int(words[2]), words[3]
                fault = parse_fault(f"{gateway}/{unit}:overload:power={watts}")
                entry: list[object] = [gateway, unit, time.monotonic_ns()]
                active = park.inject(fault)
                overloads.entries.append(entry)
                nursery.start_soon(overloads.stamp_applied, entry, active)
            elif words[0] == "clear":
                park.clear()
            elif words[0] == "log":
                since_ns = int(words[1]) if len(words) > 1 else 0
                print(_log(park, overloads, lag, since_ns), flush=True)
            else:
                print(json.dumps({"error": f"unknown command {words[0]!r}"}), flush=True)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``METERS GATEWAYS PROFILE SEED`` (module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    meters, gateways, profile, seed = int(args[0]), int(args[1]), args[2], int(args[3])
    trio.run(_serve, meters, gateways, profile, seed)


if __name__ == "__main__":
    main()
