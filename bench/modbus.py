"""``wattkeeper bench modbus``: our polling path against plain pymodbus, in one run on loopback.

Theory of operation
-------------------
The simulator runs in a *subprocess* (one core of its own; its CPU is not ours to count) and is
driven over its stdin/stdout with one-line commands: ``overload G U WATTS`` (start reporting
overload power, remembering when), ``log`` (print one JSON line with every coil write and
overload start, stamped with ``time.monotonic_ns()`` — the same clock in every process on
Linux, so latencies are measured across the process boundary). Then, in order:

1. ``sim_polls_per_s`` — what the simulator alone answers: a raw-socket load generator keeps
   ``window`` requests in flight per gateway with precomputed request bytes and only counts
   reply frames, so the simulator, not the client, is the limit.
2. Our path — one :class:`~protocols.modbus.bus.GatewayBus` per gateway (pipelined, window
   ``--window``, ``poll_interval_ms = 0``: every cycle starts as soon as the last one ended)
   feeding a listener that counts readings. ``cpu_us_per_poll`` is ``time.process_time()``
   over the phase / completed polls (a poll = every block of the profile's read plan, decoded
   into a ``Reading``). While it polls at full rate:

   * relay commands are emitted at a steady rate to random meters; ``p99_command_ms`` is
     command emitted -> coil written at the simulator;
   * overloads are injected on a few meters; the listener applies the simplest correct trip
     rule (power above ``OVERLOAD_W`` for ``OVERLOAD_DELAY_MS`` of reading time -> open the
     relay; the real meter actor replaces it when wired). ``p99_trip_ms`` is overload
     appearing at the simulator -> coil written, minus the overload delay and the poll
     interval (here the measured cycle time of the gateway: the time it can take to see it).
3. Baseline — one pymodbus ``AsyncModbusTcpClient`` per gateway reading its units one after
   another (the same read plan, no decoding: the baseline is flattered, not handicapped), under
   ``asyncio.run`` in its own phase.

With ``--json`` the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import selectors
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

import psutil
import trio

from policies.records import Reading
from protocols.modbus.bus import BusGateway, GatewayBus, UnitBinding
from protocols.modbus.codec import encode_read
from protocols.modbus.profiles import Profile, load_profile

HOST: Final = "127.0.0.1"
PROFILE_NAME: Final = "sdm120"
NORMAL_W: Final = 1_000.0
OVERLOAD_W: Final = 30_000.0
OVERLOAD_INJECTED_W: Final = 45_000.0
OVERLOAD_DELAY_MS: Final = 500
COMMANDS_PER_S: Final = 40
OVERLOADS: Final = 40
WARMUP_S: Final = 1.0


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


# --- the simulator subprocess -------------------------------------------------------------------

SIM_SCRIPT: Final = "from bench.modbus import simulator_main; simulator_main()"


class SimulatorProcess:
    """The simulator in a subprocess, driven by lines on its stdin (see module docstring)."""

    def __init__(self, meters: int, gateways: int, base_port: int) -> None:
        self.base_port = base_port
        self._process = subprocess.Popen(
            [sys.executable, "-c", SIM_SCRIPT, str(meters), str(gateways), str(base_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._read_line()
        if ready != "ready":
            raise RuntimeError(f"simulator did not start: {ready!r}")

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

    def overload(self, gateway: int, unit: int, watts: float) -> None:
        self._send(f"overload {gateway} {unit} {watts}")

    def log(self) -> dict[str, Any]:
        self._send("log")
        log: dict[str, Any] = json.loads(self._read_line())
        return log

    def close(self) -> None:
        self._process.kill()
        self._process.wait()


def free_base_port(count: int) -> int:
    """A base port with ``count`` free consecutive ports after it (checked, then released)."""
    for _ in range(50):
        base = random.randrange(20_000, 60_000 - count)
        probes: list[socket.socket] = []
        try:
            for offset in range(count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind((HOST, base + offset))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError("no free range of ports found")


def simulator_main() -> None:
    """Entry point of the simulator subprocess: ``METERS GATEWAYS BASE_PORT`` on argv."""
    meters, gateways, base_port = (int(arg) for arg in sys.argv[1:4])
    trio.run(_run_simulator, meters, gateways, base_port)


class _SimGateway:
    """A fast Modbus TCP gateway: replies cached per request, tid patched in."""

    def __init__(self, index: int, units: int) -> None:
        self.index = index
        self.registers: dict[int, dict[int, int]] = {}
        for unit in range(1, units + 1):
            registers: dict[int, int] = {}
            for address, value in ((0x00, 230.0), (0x06, 4.35), (0x0C, NORMAL_W), (0x46, 50.0)):
                _put_float(registers, address, value)
            _put_float(registers, 0x48, 1234.5)
            _put_float(registers, 0x34, NORMAL_W)
            self.registers[unit] = registers
        self.coils: dict[tuple[int, int], bool] = {}
        self.cache: dict[bytes, bytes] = {}
        self.coil_writes: list[tuple[int, int, int, bool, int]] = []

    def answer(self, frame: bytes) -> bytes:
        key = frame[6:12]
        cached = self.cache.get(key)
        if cached is not None:
            return frame[:2] + cached
        unit, function, address, value = struct.unpack(">BBHH", key)
        registers = self.registers.get(unit)
        if registers is None:
            return frame[:2] + struct.pack(">HHBBB", 0, 3, unit, function | 0x80, 0x0B)
        if function in (3, 4):
            words = [registers.get(address + i, 0) for i in range(value)]
            pdu = struct.pack(f">BB{value}H", function, 2 * value, *words)
        elif function == 1:
            bits = sum(1 << i for i in range(value) if self.coils.get((unit, address + i), True))
            nbytes = (value + 7) // 8
            pdu = bytes([1, nbytes]) + bits.to_bytes(nbytes, "little")
        elif function == 5:
            on = value == 0xFF00
            self.coils[(unit, address)] = on
            self.coil_writes.append((self.index, unit, address, on, time.monotonic_ns()))
            self._forget(unit)
            return frame[:2] + struct.pack(">HHB", 0, 6, unit) + frame[7:12]
        else:
            pdu = bytes([function | 0x80, 0x01])
        body = struct.pack(">HHB", 0, len(pdu) + 1, unit) + pdu
        self.cache[key] = body
        return frame[:2] + body

    def _forget(self, unit: int) -> None:
        for key in [key for key in self.cache if key[0] == unit]:
            del self.cache[key]

    def set_power(self, unit: int, watts: float) -> None:
        _put_float(self.registers[unit], 0x0C, watts)
        _put_float(self.registers[unit], 0x34, watts)
        self._forget(unit)

    async def serve(self, stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            try:
                while True:
                    data = await stream.receive_some(65_536)
                    if not data:
                        return
                    buffer = buffer + data if buffer else data
                    replies = []
                    position = 0
                    while len(buffer) - position >= 12:
                        end = position + 6 + int.from_bytes(buffer[position + 4 : position + 6])
                        if end > len(buffer):
                            break
                        replies.append(self.answer(buffer[position:end]))
                        position = end
                    buffer = buffer[position:]
                    await stream.send_all(b"".join(replies))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


def _put_float(registers: dict[int, int], address: int, value: float) -> None:
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    registers[address] = high
    registers[address + 1] = low


async def _run_simulator(meters: int, gateways: int, base_port: int) -> None:
    per_gateway = meters // gateways
    sims = [_SimGateway(index, per_gateway) for index in range(gateways)]
    overloads: list[tuple[int, int, int]] = []
    async with trio.open_nursery() as nursery:
        for index, sim in enumerate(sims):
            await nursery.start(trio.serve_tcp, sim.serve, base_port + index)
        print("ready", flush=True)
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        pending = b""
        while True:
            data = await stdin.receive_some(4096)
            if not data:
                nursery.cancel_scope.cancel()
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                words = line.decode().split()
                if words[0] == "overload":
                    gateway, unit = int(words[1]), int(words[2])
                    sims[gateway].set_power(unit, float(words[3]))
                    overloads.append((gateway, unit, time.monotonic_ns()))
                elif words[0] == "log":
                    writes = [write for sim in sims for write in sim.coil_writes]
                    print(json.dumps({"coil_writes": writes, "overloads": overloads}), flush=True)


# --- phase 1: what the simulator alone answers ---------------------------------------------------


def measure_simulator(
    base_port: int, gateways: int, per_gateway: int, profile: Profile, seconds: float
) -> float:
    """Polls/s the simulator answers to a raw-socket pipelining client (window 64/gateway)."""
    window = 64
    plan = [(block.function, block.address, block.count) for block in profile.read_plan]
    requests_per_poll = len(plan)
    selector = selectors.DefaultSelector()
    request_bytes: dict[socket.socket, bytes] = {}
    buffers: dict[socket.socket, bytes] = {}
    for index in range(gateways):
        sock = socket.create_connection((HOST, base_port + index))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        frames = [
            encode_read(n & 0xFFFF, 1 + (n // len(plan)) % per_gateway, *plan[n % len(plan)])
            for n in range(window * 4)
        ]
        request_bytes[sock] = b"".join(frames)
        frame_size = len(frames[0])
        sock.sendall(request_bytes[sock][: window * frame_size])
        buffers[sock] = b""
        selector.register(sock, selectors.EVENT_READ)
    replies = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for key, _ in selector.select(0.1):
            sock = key.fileobj  # type: ignore[assignment]  # we registered only sockets
            data = buffers[sock] + sock.recv(262_144)
            position, completed = 0, 0
            while len(data) - position >= 8:
                end = position + 6 + int.from_bytes(data[position + 4 : position + 6])
                if end > len(data):
                    break
                position = end
                completed += 1
            buffers[sock] = data[position:]
            replies += completed
            sock.sendall(request_bytes[sock][: completed * frame_size])
    elapsed = time.perf_counter() - started
    for key in list(selector.get_map().values()):
        selector.unregister(key.fileobj)
        key.fileobj.close()  # type: ignore[union-attr]  # always a socket here
    return replies / requests_per_poll / elapsed


# --- phase 2: our polling path ------------------------------------------------------------------


class TripListener:
    """Counts readings; trips a meter whose power stays above the limit for the delay.

    The simplest correct overload rule, standing in for the meter actor in this bench.
    """

    def __init__(self) -> None:
        self.readings = 0
        self.buses: dict[int, GatewayBus] = {}
        self.over_since: dict[int, int] = {}
        self.tripped: set[int] = set()

    def reading(self, meter_key: int, reading: Reading) -> None:
        self.readings += 1
        if reading.power_w <= OVERLOAD_W:
            return
        since = self.over_since.setdefault(meter_key, reading.ts_ms)
        if reading.ts_ms - since >= OVERLOAD_DELAY_MS and meter_key not in self.tripped:
            self.tripped.add(meter_key)
            self.buses[meter_key].command_relay_nowait(meter_key, False)

    def connectivity(self, meter_key: int, online: bool, ts_ms: int, detail: str) -> None:
        pass

    def relay_feedback(self, meter_key: int, closed: bool, ts_ms: int) -> None:
        pass

    def poll_failed(self, meter_key: int, kind: str, detail: str, ts_ms: int) -> None:
        pass


def meter_key(gateway: int, unit: int) -> int:
    return gateway * 10_000 + unit


async def measure_bus(
    sim: SimulatorProcess,
    gateways: int,
    per_gateway: int,
    profile: Profile,
    seconds: float,
    window: int,
) -> dict[str, Any]:
    listener = TripListener()
    buses: list[GatewayBus] = []
    overload_units = {(g % gateways, 1 + (g * 7) % per_gateway) for g in range(OVERLOADS)}
    commands: list[tuple[int, int, bool, int]] = []
    async with trio.open_nursery() as nursery:
        for index in range(gateways):
            gateway = BusGateway(
                gateway_id=f"gw{index}",
                host=HOST,
                port=sim.base_port + index,
                poll_interval_ms=0,
                timeout_ms=2_000,
                window=window,
                retries=1,
                offline_after=3,
                command_slots=1,
            )
            units = [
                UnitBinding(meter_key(index, unit), unit, profile, relay_coil=0)
                for unit in range(1, per_gateway + 1)
            ]
            bus = GatewayBus(gateway, units, listener)
            buses.append(bus)
            listener.buses.update({unit.meter_key: bus for unit in units})
            await nursery.start(bus.run)
        await trio.sleep(WARMUP_S)
        cpu_start, polls_start, started = (
            time.process_time(),
            listener.readings,
            time.perf_counter(),
        )
        sim_cpu_start = sim.cpu_s()
        deadline = trio.current_time() + seconds
        overloads = sorted(overload_units)
        overload_every = seconds * 0.6 / max(1, len(overloads))
        next_overload = trio.current_time() + 0.1
        next_command = trio.current_time()
        rng = random.Random(7)
        while trio.current_time() < deadline:
            now = trio.current_time()
            if overloads and now >= next_overload:
                sim.overload(*overloads.pop(), OVERLOAD_INJECTED_W)
                next_overload += overload_every
            if now >= next_command:
                while True:
                    gateway_index, unit = rng.randrange(gateways), rng.randrange(per_gateway) + 1
                    if (gateway_index, unit) not in overload_units:
                        break
                closed = rng.random() < 0.5
                commands.append((gateway_index, unit, closed, time.monotonic_ns()))
                buses[gateway_index].command_relay_nowait(meter_key(gateway_index, unit), closed)
                next_command += 1 / COMMANDS_PER_S
            await trio.sleep_until(min(next_command, next_overload, deadline))
        cpu = time.process_time() - cpu_start
        polls = listener.readings - polls_start
        elapsed = time.perf_counter() - started
        sim_busy = (sim.cpu_s() - sim_cpu_start) / elapsed
        statistics = [bus.statistics() for bus in buses]
        nursery.cancel_scope.cancel()
    failures = sum(s.failed_timeout + s.failed_exception + s.failed_garbage for s in statistics)
    polls_per_s = polls / elapsed
    return {
        "polls_per_s": polls_per_s,
        "cpu_us_per_poll": cpu / max(1, polls) * 1e6,
        "cycle_ms": per_gateway / (polls_per_s / gateways) * 1000,
        "failures": failures,
        "commands": commands,
        "tripped": len(listener.tripped),
        "busy": cpu / elapsed,
        "sim_busy": sim_busy,
    }


def command_latencies(
    commands: list[tuple[int, int, bool, int]], writes: list[list[Any]]
) -> list[float]:
    """Command emitted -> the first matching coil write at the simulator after it, in ms."""
    by_unit: dict[tuple[int, int], list[tuple[int, bool]]] = {}
    for gateway, unit, _coil, on, written_ns in writes:
        by_unit.setdefault((gateway, unit), []).append((written_ns, on))
    latencies = []
    for gateway, unit, closed, emitted_ns in commands:
        for written_ns, on in by_unit.get((gateway, unit), ()):
            if written_ns >= emitted_ns and on == closed:
                latencies.append((written_ns - emitted_ns) / 1e6)
                break
    return latencies


def trip_latencies(
    overloads: list[list[int]], writes: list[list[Any]], cycle_ms: float
) -> list[float]:
    """Overload start -> coil opened at the simulator, minus overload delay and poll interval."""
    latencies = []
    for gateway, unit, started_ns in overloads:
        for write_gateway, write_unit, _coil, on, written_ns in writes:
            if (
                (write_gateway, write_unit) == (gateway, unit)
                and not on
                and written_ns > started_ns
            ):
                raw_ms = (written_ns - started_ns) / 1e6
                latencies.append(raw_ms - OVERLOAD_DELAY_MS - cycle_ms)
                break
    return latencies


# --- phase 3: the pymodbus baseline --------------------------------------------------------------


async def measure_pymodbus(
    base_port: int, gateways: int, per_gateway: int, profile: Profile, seconds: float
) -> dict[str, float]:
    from pymodbus.client import AsyncModbusTcpClient  # only the baseline needs it

    plan = [(block.function, block.address, block.count) for block in profile.read_plan]
    clients = [
        AsyncModbusTcpClient(HOST, port=base_port + index, timeout=3, retries=0)
        for index in range(gateways)
    ]
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
    await asyncio.sleep(WARMUP_S)
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wattkeeper bench modbus", description=__doc__)
    parser.add_argument("--meters", type=int, default=2_000)
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--window", type=int, default=32, help="requests in flight per gateway")
    parser.add_argument("--json", action="store_true", help="end with one JSON object line")
    args = parser.parse_args(argv)
    if args.meters < args.gateways or args.gateways < 1:
        parser.error("need at least one gateway and one meter per gateway")
    per_gateway = args.meters // args.gateways
    meters = per_gateway * args.gateways
    profile = load_profile(PROFILE_NAME)

    sim = SimulatorProcess(meters, args.gateways, free_base_port(args.gateways))
    try:
        sim_rate = measure_simulator(
            sim.base_port, args.gateways, per_gateway, profile, min(3.0, args.seconds)
        )
        print(f"simulator alone: {sim_rate:,.0f} polls/s", file=sys.stderr)
        ours = trio.run(
            measure_bus, sim, args.gateways, per_gateway, profile, args.seconds, args.window
        )
        print(
            f"GatewayBus: {ours['polls_per_s']:,.0f} polls/s, "
            f"{ours['cpu_us_per_poll']:.1f} µs CPU/poll, cycle {ours['cycle_ms']:.0f} ms, "
            f"{ours['failures']} failed polls, {ours['tripped']} trips; CPU busy: "
            f"{ours['busy']:.0%} ours, {ours['sim_busy']:.0%} simulator",
            file=sys.stderr,
        )
        log = sim.log()
        baseline = asyncio.run(
            measure_pymodbus(sim.base_port, args.gateways, per_gateway, profile, args.seconds)
        )
        print(
            f"pymodbus: {baseline['polls_per_s']:,.0f} polls/s, "
            f"{baseline['cpu_us_per_poll']:.1f} µs CPU/poll",
            file=sys.stderr,
        )
    finally:
        sim.close()

    commands = command_latencies(ours["commands"], log["coil_writes"])
    trips = trip_latencies(log["overloads"], log["coil_writes"], ours["cycle_ms"])
    result = {
        "meters": meters,
        "gateways": args.gateways,
        "polls_per_s": round(ours["polls_per_s"]),
        "baseline_polls_per_s": round(baseline["polls_per_s"]),
        "cpu_us_per_poll": round(ours["cpu_us_per_poll"], 2),
        "baseline_cpu_us_per_poll": round(baseline["cpu_us_per_poll"], 2),
        "p99_command_ms": round(percentile(commands, 0.99), 3),
        "p99_trip_ms": round(percentile(trips, 0.99), 3),
        "sim_polls_per_s": round(sim_rate),
    }
    print(
        f"commands matched {len(commands)}/{len(ours['commands'])}, "
        f"trips matched {len(trips)}/{len(log['overloads'])}",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
