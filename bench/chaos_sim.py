"""The simulator process of ``wattkeeper bench chaos``: the real ``simulators.park``, on stdin.

Theory of operation
-------------------
``python -m bench.chaos_sim METERS GATEWAYS PROFILE SEED`` opens
``open_sim_park(ParkPlan.uniform(...))`` on ephemeral ports (gateways ``gw1``..``gwG``, units
1..METERS/GATEWAYS each, meter ids ``M-0001``...) with every meter *frozen* (showing 0 W, so its
register stands still), and prints one line ``{"ready": {"gw1": PORT, ...}}``. It then reads one
command a line from stdin and answers each with exactly one JSON line on stdout, in order:

``freeze`` / ``thaw``
    every meter shows 0 W (its register stops) / its load curve again. The bench freezes the
    park at both ends of a run, so the registers the server reads first and last are known
    exactly (``registers``), and true consumption is their difference.
``registers``
    ``{meter id: register_wh}`` as the server decodes it: each meter's current registers run
    through the profile's own decoder (float32 kWh -> integer Wh), so "true" is what a
    correct server would have read, to the Wh.
``overload GATEWAY UNIT WATTS SECONDS``
    inject ``overload:power=WATTS,for=SECONDS``; answers with its ``applied_ns`` (the
    ``monotonic_ns`` at which the park applied it).
``garble GATEWAY UNIT VALUE SECONDS``
    inject ``garble:value=VALUE,for=SECONDS`` (VALUE in kWh, or ``flip:BIT``: the meter's true
    float32 register with bit BIT flipped, computed now).
``swap GATEWAY UNIT ADD_KWH``
    swap the meter for one whose register is ADD_KWH higher, synchronously; answers with
    ``final_wh`` and ``start_wh`` (decoded as above, at the same instant), what an operator
    would read off the old and the new meter.
``down GATEWAY SECONDS``
    inject ``down:for=SECONDS``.
``clear``
    end every fault injected so far.
``log``
    ``coil_writes`` (``[monotonic_ns, gateway, unit, on]`` of every unit ever overloaded, and
    every write at all with ``all``), ``overloads`` (``[gateway, unit, applied_ns, end_ns]``,
    ``end_ns`` null while active), ``requests`` (answered by every gateway so far).

End of stdin ends the process. ``time.monotonic_ns()`` is one clock for every process of a
Linux host, so the bench compares these stamps with its own.
"""

from __future__ import annotations

import json
import struct
import sys
import time
from typing import Any

import trio

from bench.lines import stdin_lines
from server.collector import run_collector_hygiene
from simulators.faults import parse_fault
from simulators.meter_model import SimMeter
from simulators.park import ActiveFault, ParkPlan, SimPark, open_sim_park

__all__ = ["main", "server_view_wh"]


def server_view_wh(meter: SimMeter, t_s: float) -> int:
    """The register as a server decodes what the meter shows at ``t_s`` (Wh)."""
    profile = meter.profile
    blocks = [meter.read_registers(b.function, b.address, b.count, t_s) for b in profile.read_plan]
    return int(profile.decode(blocks, 0).register_wh)


def flip_bit(value: float, bit: int) -> float:
    """``value`` as a float32 with one bit flipped (a bit error on the wire)."""
    (raw,) = struct.unpack(">I", struct.pack(">f", value))
    flipped: float = struct.unpack(">f", struct.pack(">I", raw ^ (1 << bit)))[0]
    return flipped


class _Overloads:
    """Overloads injected: ``[gateway, unit, applied_ns, end_ns]`` each."""

    def __init__(self) -> None:
        self.entries: list[list[Any]] = []
        self.targets: set[tuple[str, int]] = set()

    async def watch(self, entry: list[Any], active: ActiveFault,
                    applied: trio.Event) -> None:
        while not active.applied:
            if active.finished:
                applied.set()
                return
            await trio.sleep(0)
        entry[2] = time.monotonic_ns()
        applied.set()
        while not active.finished:
            await trio.sleep(0.005)
        entry[3] = time.monotonic_ns()


class _Worker:
    def __init__(self, park: SimPark, nursery: trio.Nursery) -> None:
        self.park = park
        self.nursery = nursery
        self.overloads = _Overloads()

    def freeze(self, frozen: bool) -> None:
        now = self.park.clock.now()
        for _, meter in self.park.meters():
            meter.set_overload(0.0 if frozen else None, now)

    def registers(self) -> dict[str, int]:
        now = self.park.clock.now()
        return {meter.meter_id: server_view_wh(meter, now) for _, meter in self.park.meters()}

    async def handle(self, words: list[str]) -> dict[str, Any]:
        command = words[0]
        park = self.park
        if command in ("freeze", "thaw"):
            self.freeze(command == "freeze")
            return {"ok": True}
        if command == "registers":
            return {"registers": self.registers()}
        if command == "overload":
            gateway, unit, watts, seconds = words[1], int(words[2]), words[3], words[4]
            fault = parse_fault(f"{gateway}/{unit}:overload:power={watts},for={seconds}s")
            entry: list[Any] = [gateway, unit, None, None]
            applied = trio.Event()
            active = park.inject(fault)
            self.overloads.entries.append(entry)
            self.overloads.targets.add((gateway, unit))
            self.nursery.start_soon(self.overloads.watch, entry, active, applied)
            await applied.wait()
            return {"applied_ns": entry[2]}
        if command == "garble":
            gateway, unit, value, seconds = words[1], int(words[2]), words[3], words[4]
            meter = park.meter(gateway, unit)
            if value.startswith("flip:"):
                truth = meter.values(park.clock.now())["import_energy"]
                kwh = flip_bit(truth, int(value[5:]))
            else:
                kwh = float(value)
            park.inject(parse_fault(f"{gateway}/{unit}:garble:value={kwh!r},for={seconds}s"))
            return {"value_kwh": kwh}
        if command == "swap":
            gateway, unit, add_kwh = words[1], int(words[2]), float(words[3])
            meter = park.meter(gateway, unit)
            now = park.clock.now()
            final_wh = server_view_wh(meter, now)
            meter.swap(add_kwh * meter.profile.energy_factor, now)
            return {"final_wh": final_wh, "start_wh": server_view_wh(meter, now)}
        if command == "down":
            park.inject(parse_fault(f"{words[1]}:down:for={words[2]}s"))
            return {"ok": True}
        if command == "clear":
            return {"cleared": park.clear()}
        if command == "log":
            every = len(words) > 1 and words[1] == "all"
            targets = self.overloads.targets
            writes = [
                [write.monotonic_ns, write.gateway, write.unit, write.on]
                for write in park.coil_log
                if every or (write.gateway, write.unit) in targets
            ]
            requests = sum(stats.requests for stats in park.statistics().values())
            return {"coil_writes": writes, "overloads": self.overloads.entries,
                    "requests": requests}
        return {"error": f"unknown command {command!r}"}


async def _serve(meters: int, gateways: int, profile: str, seed: int) -> None:
    plan = ParkPlan.uniform(meters=meters, gateways=gateways, port=0, seed=seed, profile=profile)
    async with open_sim_park(plan) as park, trio.open_nursery() as nursery:
        worker = _Worker(park, nursery)
        worker.freeze(True)
        await nursery.start(run_collector_hygiene)  # as `wattkeeper sim` (server/simulate.py)
        print(json.dumps({"ready": park.ports}), flush=True)
        async for line in stdin_lines():
            words = line.decode().split()
            try:
                answer = await worker.handle(words)
            except (ValueError, KeyError, IndexError) as error:
                answer = {"error": f"{' '.join(words)!r}: {error}"}
            print(json.dumps(answer), flush=True)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``METERS GATEWAYS PROFILE SEED`` (module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    meters, gateways, profile, seed = int(args[0]), int(args[1]), args[2], int(args[3])
    trio.run(_serve, meters, gateways, profile, seed)


if __name__ == "__main__":
    main()
