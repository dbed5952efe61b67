"""``wattkeeper bench chaos``: faults on the real field path, and a history checker.

Theory of operation
-------------------
Three processes, as in the field: the simulator (``bench.chaos_sim``: the real
``simulators.park``), the server (``bench.chaos_server``: ``open_park`` with the Modbus
buses, generations of it on one data directory) and this one, the client and fault injector.

1. *Start frozen.* The simulator starts with every meter showing 0 W, so registers stand
   still; the server starts; once it has read every meter, the registers it read are known
   exactly (the simulator decodes its own registers with the profile's decoder), and the
   meters are thawed. Charging starts from there.
2. *Rounds.* Each round injects one fault, cycling through ``FAULT_KINDS`` (so every kind
   comes ``rounds / 7`` times), and a few sustained overloads on fresh meters (above their
   ``overload_w`` for longer than their ``overload_delay``). Meanwhile ``--clients`` payment
   clients top up random meters with unique references, each waiting for its answer; an
   unknown outcome (the server died) or a retryable refusal (``unavailable``...) is retried
   with the same reference, and some acknowledged ones are deliberately repeated. Every
   attempt and its answer is recorded (``bench.chaos_check.Attempt``).
3. *End.* Top-ups stop, faults are cleared, the simulator freezes again, and the bench waits
   until the server has read every meter's final register; the server stops cleanly; the
   data directory is read back through the persistence APIs (``bench.chaos_adapt``); the
   checker (``bench.chaos_check``) reconciles money per meter against the client's history
   and the simulator's truth, and protection against the simulator's coil log.

The faults (docs/bench-chaos.md has what each should do to a correct server):

``server_kill``      SIGKILL of the server process; restarted on the same data directory.
``writer_kill``      SIGKILL of the journal writer process alone; the server must go on.
``garbled_register`` one meter's energy register shows a finite garbage float32 for a few
                     polls (3e38 kWh, bit flips, a negative value).
``meter_swap``       a meter's register jumps by thousands of kWh and stays; the bench then
                     does what an operator does: ``replace_meter`` with both registers.
``clock_step``       the server's wall clock steps an hour, forward and back alternately.
``gateway_down``     one gateway closes its port for a few seconds.
``corrupt_snapshot`` server stopped, one meter's snapshot overwritten with garbage, server
                     started (that meter must come up faulted, the others normally), then
                     restored from the backed-up bytes (by a restart, or live with a reset).

With ``--json`` the last line is one JSON object; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import psutil
import trio

from bench import chaos_adapt as adapt
from bench.chaos_check import (
    Attempt,
    CoilWrite,
    MeterFinal,
    MeterTruth,
    Overload,
    check_money,
    outcome_of_error,
    protection_gaps,
)
from bench.chaos_faults import INJECTORS
from bench.chaos_procs import ServerDown, ServerGone, ServerHandle, SimHandle, StartFailed
from bench.parks import PRICE, park_toml
from bench.results import print_result
from policies.money import parse_price
from server.config import ParkConfig, load_config
from simulators.faults import parse_duration

FAULT_KINDS: Final = (
    "server_kill", "writer_kill", "garbled_register", "meter_swap", "clock_step",
    "gateway_down", "corrupt_snapshot",
)
OPENING: Final = "100000.00"
OVERLOAD_INJECTED_W: Final = 40_000
RETRYABLE: Final = frozenset({"unavailable", "overloaded", "faulted"})
MAX_ATTEMPTS: Final = 4


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@attrs.define
class Run:
    """The run's state: what was done to whom, and what the client saw."""

    args: argparse.Namespace
    sim: SimHandle
    server: ServerHandle
    config: ParkConfig
    data_dir: Path
    rng: random.Random
    location: dict[str, tuple[str, int]]
    attempts: list[Attempt] = attrs.Factory(list)
    faults: Counter[str] = attrs.Factory(Counter)
    swaps: dict[str, list[tuple[int, int]]] = attrs.Factory(dict)
    planned_windows: list[tuple[int, int]] = attrs.Factory(list)
    killed_writers: set[int] = attrs.Factory(set)
    overloaded: set[str] = attrs.Factory(set)
    special: set[str] = attrs.Factory(set)
    violations: list[str] = attrs.Factory(list)
    quarantine_ok: int = 0
    swaps_replaced: int = 0
    clock_steps: int = 0
    restores: int = 0
    stopping: bool = False
    kinds: tuple[str, ...] = FAULT_KINDS
    down_gateway: str = ""
    cycle_samples: list[tuple[int, int, int]] = attrs.Factory(list)
    """(generation, cycles, mono_ns) from the server's bus statistics."""
    cpu_samples: list[tuple[int, float, float, int]] = attrs.Factory(list)
    """(generation, server CPU s, simulator CPU s, mono_ns)."""

    @property
    def meters(self) -> list[str]:
        return list(self.location)

    def violation(self, text: str) -> None:
        self.violations.append(text)
        say(f"  VIOLATION: {text}")

    # -- the server, through restarts -----------------------------------------------------

    async def start_server(self, why: str) -> int:
        """Start a generation, retrying a failed start; returns its ready time."""
        for attempt in range(1, 6):
            try:
                generation = await self.server.start()
                return generation.ready_ns
            except StartFailed as error:
                self.violation(f"server did not start ({why}, attempt {attempt}): {error}")
                await trio.sleep(0.5)
        raise RuntimeError("the server does not start any more; see the logs in the run dir")

    async def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        """A bench (operator) command; waits through restarts and retries unknown outcomes
        and ``unavailable`` a few times (the operator would)."""
        answer: dict[str, Any] = {"ok": False, "code": "never_sent"}
        for _ in range(40):
            try:
                await self.server.wait_up()
                answer = await self.server.request(op, **fields)
            except (ServerDown, ServerGone):
                await trio.sleep(0.25)
                continue
            if answer.get("ok") or answer.get("code") not in RETRYABLE | {"broken"}:
                return answer
            await trio.sleep(0.25)
        return answer

    # -- payment clients --------------------------------------------------------------------

    async def client(self, index: int) -> None:
        rng = random.Random(self.args.seed * 7919 + index)
        number = 0
        while not self.stopping:
            number += 1
            meter = rng.choice(self.meters)
            await self.top_up(f"c{index}-{number}", meter, rng.randint(100, 5000), rng)
            await trio.sleep(rng.uniform(0, 2 * self.args.client_pause))

    async def top_up(self, reference: str, meter: str, amount: int, rng: random.Random) -> None:
        tries = 0
        acked = False
        while tries < MAX_ATTEMPTS:
            try:
                await self.server.wait_up()
                answer = await self.server.request("topup", meter=meter, amount=amount,
                                                   ref=reference)
            except ServerDown:
                await trio.sleep(0.05)
                continue
            except ServerGone:
                tries += 1
                self.attempts.append(Attempt(reference, meter, amount, "unknown", "gone"))
                await trio.sleep(rng.uniform(0.05, 0.3))
                continue
            tries += 1
            if answer.get("ok"):
                self.attempts.append(Attempt(
                    reference, meter, amount, "acked", duplicate=bool(answer["duplicate"]),
                    status=str(answer["status"]), balance=answer["balance"]))
                acked = True
                break
            code = str(answer.get("code"))
            outcome = outcome_of_error(code, bool(answer.get("outcome_known", True)))
            self.attempts.append(Attempt(reference, meter, amount, outcome, code))
            if code not in RETRYABLE and outcome == "refused":
                break
            await trio.sleep(rng.uniform(0.2, 0.5))
        if acked and rng.random() < self.args.repeat_fraction:
            try:
                answer = await self.server.request("topup", meter=meter, amount=amount,
                                                   ref=reference)
            except (ServerDown, ServerGone):
                return
            if answer.get("ok"):
                self.attempts.append(Attempt(
                    reference, meter, amount, "acked", duplicate=bool(answer["duplicate"]),
                    status=str(answer["status"]), balance=answer["balance"],
                    repeat_of_ack=True))
            else:
                code = str(answer.get("code"))
                outcome = outcome_of_error(code, bool(answer.get("outcome_known", True)))
                self.attempts.append(Attempt(reference, meter, amount, outcome, code,
                                             repeat_of_ack=True))

    # -- choosing victims -----------------------------------------------------------------

    def pick(self, *, avoid_gateways: frozenset[str] = frozenset()) -> str:
        """A meter no fault has touched yet (none left: any meter not overloaded)."""
        fresh = [m for m in self.meters if m not in self.special and m not in self.overloaded
                 and self.location[m][0] not in avoid_gateways]
        if not fresh:
            fresh = [m for m in self.meters if m not in self.overloaded] or self.meters
        meter = self.rng.choice(fresh)
        self.special.add(meter)
        return meter

    def down_gateway_of(self, number: int) -> str:
        """The gateway round ``number`` takes down ("" if it is not a gateway_down round)."""
        if number < 1 or self.kinds[(number - 1) % len(self.kinds)] != "gateway_down":
            return ""
        earlier = sum(1 for r in range(1, number)
                      if self.kinds[(r - 1) % len(self.kinds)] == "gateway_down")
        gateways = list(self.sim.ports)
        return gateways[earlier % len(gateways)]

    async def inject_overloads(self, number: int) -> None:
        # An overload behind a gateway that is down cannot be tripped by anyone: keep them
        # apart (two rounds either side covers an overload's length and the reconnect).
        avoid = frozenset(self.down_gateway_of(r) for r in range(number - 2, number + 3))
        if avoid >= set(self.sim.ports):
            avoid = frozenset({self.down_gateway_of(number)})
        for _ in range(self.args.overloads_per_round):
            meter = self.pick(avoid_gateways=avoid)
            self.special.discard(meter)
            self.overloaded.add(meter)
            gateway, unit = self.location[meter]
            seconds = self.args.overload_delay_ms / 1000 + self.args.overload_extra_s
            await self.sim.ask("overload", gateway, unit, OVERLOAD_INJECTED_W, seconds)

    # -- rounds -----------------------------------------------------------------------------

    @property
    def poll_s(self) -> float:
        return parse_duration(self.args.poll_interval)

    async def sample_cycles(self) -> None:
        """Poll cycles completed and CPU used so far, to tell what the park sustained."""
        generation = self.server.current
        try:
            state = await self.server.request("state")
            server_cpu = _cpu_s(generation.pid) if generation is not None else None
        except (ServerDown, ServerGone):
            return
        if generation is not None and server_cpu is not None:
            self.cycle_samples.append((generation.number, int(state["cycles"]),
                                       int(state["mono_ns"])))
            self.cpu_samples.append((generation.number, server_cpu, _cpu_s(self.sim.pid) or 0.0,
                                     time.monotonic_ns()))

    async def rounds(self) -> None:
        for number in range(1, self.args.rounds + 1):
            kind = self.kinds[(number - 1) % len(self.kinds)]
            started = time.monotonic()
            self.down_gateway = self.down_gateway_of(number)
            await self.sample_cycles()
            await self.inject_overloads(number)
            what = await INJECTORS[kind](self, number)
            self.faults[kind] += 1
            await trio.sleep(max(0.0, started + self.args.round_s - time.monotonic()))
            acked = sum(1 for a in self.attempts if a.outcome == "acked")
            unplanned = sum(1 for e in self.server.exits if not e.planned)
            say(f"round {number}/{self.args.rounds} {kind}: {what} | top-ups acked {acked}, "
                f"unplanned exits {unplanned}")


async def _wait_all_read(run: Run, timeout_s: float) -> None:
    with trio.move_on_after(timeout_s):
        while True:
            state = await run.ask("state")
            if state.get("readings", 0) >= len(run.meters):
                return
            await trio.sleep(0.2)
    run.violation("not every meter was read before the run started")


async def _settle(run: Run, timeout_s: float) -> tuple[dict[str, int], int]:
    """Wait until the server has read every meter's frozen register; (truth, unsettled)."""
    unsettled = len(run.meters)
    truth: dict[str, int] = {}
    with trio.move_on_after(timeout_s):
        while True:
            truth = (await run.sim.ask("registers"))["registers"]
            seen = (await run.ask("registers")).get("registers", {})
            unsettled = sum(1 for meter, (register, faulted) in seen.items()
                            if not faulted and register != truth[meter])
            if not unsettled:
                break
            await trio.sleep(run.poll_s / 2)
    return truth, unsettled


def _cpu_s(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def _busy(samples: Sequence[tuple[int, float, float, int]]) -> tuple[float | None, float | None]:
    """Mean share of one core the server and the simulator used, within generations."""
    server = sim = elapsed = 0.0
    for (gen_a, server_a, sim_a, ns_a), (gen_b, server_b, sim_b, ns_b) in itertools.pairwise(
            samples):
        if gen_a == gen_b:
            server += server_b - server_a
            sim += sim_b - sim_a
            elapsed += (ns_b - ns_a) / 1e9
    if not elapsed:
        return None, None
    return round(server / elapsed, 2), round(sim / elapsed, 2)


def _mean_cycle_ms(samples: Sequence[tuple[int, int, int]], gateways: int) -> float | None:
    cycles = elapsed = 0
    for (gen_a, cycles_a, ns_a), (gen_b, cycles_b, ns_b) in itertools.pairwise(samples):
        if gen_a == gen_b and cycles_b > cycles_a:
            cycles += cycles_b - cycles_a
            elapsed += ns_b - ns_a
    return round(elapsed / 1e6 * gateways / cycles, 1) if cycles else None


async def run_bench(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    per_gateway = args.meters // args.gateways
    meters = per_gateway * args.gateways
    data_dir = run_dir / "data"
    began = time.monotonic()
    sim = await SimHandle.start(meters, args.gateways, args.profile, args.seed, run_dir)
    config_path = run_dir / "park.toml"
    config_path.write_text(park_toml(
        data_dir, sim.ports, per_gateway, profile=args.profile, window=args.window,
        poll_interval=args.poll_interval, overload_delay_ms=args.overload_delay_ms,
        opening_balance=OPENING))
    config = load_config(config_path)
    location = {meter.id: (meter.gateway, meter.unit) for meter in config.meters}
    server = ServerHandle(config_path, run_dir, on_line=lambda text: say(f"  {text}"))
    run = Run(args, sim, server, config, data_dir, random.Random(args.seed), location)
    run.kinds = tuple(args.faults)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.supervise)
            await run.start_server("first start")
            await _wait_all_read(run, 30.0)
            first = (await sim.ask("registers"))["registers"]
            # The baselines on disk before anything is consumed: a park that has run for a while
            # has them, and consumption before a first snapshot is no fault's doing.
            await run.ask("snapshot")
            await sim.ask("thaw")
            say(f"{meters} meters behind {args.gateways} gateways read; thawed; "
                f"{args.rounds} rounds of {', '.join(run.kinds)}")
            rounds_began = time.monotonic()
            async with trio.open_nursery() as clients:
                for index in range(args.clients):
                    clients.start_soon(run.client, index)
                await run.rounds()
                run.stopping = True
                with trio.move_on_after(60.0) as drained:
                    while True:  # the clients finish what they started (retries included)
                        await trio.sleep(0.1)
                        if not clients.child_tasks:
                            break
                if drained.cancelled_caught:
                    say("  clients did not finish within 60 s; cancelled")
                    clients.cancel_scope.cancel()
            rounds_s = time.monotonic() - rounds_began
            await sim.ask("clear")
            await sim.ask("freeze")
            truth, unsettled = await _settle(run, max(10.0, 8 * run.poll_s))
            if unsettled:
                run.violation(f"{unsettled} meters never showed their final register")
            await server.stop()
            log = await sim.ask("log")
            nursery.cancel_scope.cancel()
    finally:
        await server.close()
        await sim.close()

    final = adapt.read_final_state(data_dir, config)
    for text in final.undecodable:
        run.violation(f"final state unreadable: {text}")
    check_errors = adapt.check_data_dir(data_dir, config)
    for text in (check_errors or [])[:5]:
        run.violation(f"wattkeeper check: {text}")
    finals = {
        meter: MeterFinal(state.balance, state.bucket_minor, state.register_wh)
        for meter, state in final.states.items()
    }
    truths = {
        meter: MeterTruth(first[meter], truth[meter], tuple(run.swaps.get(meter, ())))
        for meter in run.meters
    }
    opening = {meter.id: meter.opening_balance for meter in config.meters}
    money = check_money(run.attempts, final.journal, finals, final.history_minor, opening,
                        truths, parse_price(PRICE))
    overloads = [Overload(g, u, applied, end if end is not None else time.monotonic_ns())
                 for g, u, applied, end in log["overloads"] if applied is not None]
    writes = [CoilWrite(ns, g, u, bool(on)) for ns, g, u, on in log["coil_writes"]]
    allowance_ms = args.overload_delay_ms + run.poll_s * 1000
    protection = protection_gaps(overloads, writes, run.planned_windows, allowance_ms)

    if args.keep is not None:
        _dump_details(args.keep / "details.json", run, first, truth, finals, log)
    server_busy, sim_busy = _busy(run.cpu_samples)
    server_exits = [e for e in server.exits if not e.planned]
    writer_exits = [w for w in server.writer_events
                    if w.kind == "writer_exit" and w.pid not in run.killed_writers]
    for text in money.examples + protection.examples:
        say(f"  {text}")
    for exit_ in server_exits:
        say(f"  unplanned server exit (generation {exit_.generation}): {exit_.detail[:300]}")
    for writer in writer_exits:
        say(f"  unplanned writer exit: pid {writer.pid} (generation {writer.generation})")
    return {
        "rounds": args.rounds,
        "faults": {kind: run.faults[kind] for kind in FAULT_KINDS},
        "acked_topups": money.acked_topups,
        "lost_topups": money.lost_topups,
        "double_applied": money.double_applied,
        "balance_mismatch_minor": money.balance_mismatch_minor,
        "mischarged_minor": money.mischarged_minor,
        "unplanned_exits": len(server_exits) + len(writer_exits),
        "max_protection_gap_ms": protection.max_gap_ms,
        "poll_interval_ms": round(run.poll_s * 1000),
        "meters": meters,
        "gateways": args.gateways,
        "topup_attempts": len(run.attempts),
        "refused_topups": money.refused,
        "unknown_topups": money.unknown_topups,
        "pending_topups": money.pending_topups,
        "phantom_topups": money.phantom_topups,
        "mismatched_meters": money.mismatched_meters,
        "mischarged_meters": money.mischarged_meters,
        "unchecked_meters": money.unchecked_meters,
        "unplanned_server_exits": len(server_exits),
        "unplanned_writer_exits": len(writer_exits),
        "server_starts": len(server.generations),
        "overloads": protection.overloads,
        "overloads_late": protection.late,
        "overloads_never_tripped": protection.never_tripped,
        "quarantine_ok": run.quarantine_ok,
        "swaps_replaced": run.swaps_replaced,
        "unsettled_meters": unsettled,
        "check_errors": None if check_errors is None else len(check_errors),
        "measured_cycle_ms": _mean_cycle_ms(run.cycle_samples, args.gateways),
        "server_cpu_busy": server_busy,
        "sim_cpu_busy": sim_busy,
        "rounds_s": round(rounds_s, 1),
        "run_s": round(time.monotonic() - began, 1),
        "violations": [text[:200] for text in run.violations[:20]],
    }


def _dump_details(path: Path, run: Run, first: dict[str, int], truth: dict[str, int],
                  finals: dict[str, MeterFinal], log: dict[str, Any]) -> None:
    """Everything the checker saw, for a person looking into a violation (``--keep``)."""
    details = {
        "attempts": [attrs.asdict(attempt) for attempt in run.attempts],
        "planned_windows": run.planned_windows,
        "exits": [attrs.asdict(exit_) for exit_ in run.server.exits],
        "writer_events": [attrs.asdict(event) for event in run.server.writer_events],
        "killed_writers": sorted(run.killed_writers),
        "generations": [[g.number, g.started_ns, g.ready_ns, g.end_ns, g.planned_exit]
                        for g in run.server.generations],
        "swaps": run.swaps,
        "first_wh": first,
        "final_wh": truth,
        "finals": {meter: attrs.asdict(final) for meter, final in finals.items()},
        "sim_log": log,
    }
    path.write_text(json.dumps(details))


def target_report(result: dict[str, Any]) -> list[str]:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines = []
    for key in ("lost_topups", "double_applied", "balance_mismatch_minor", "mischarged_minor",
                "unplanned_exits"):
        lines.append(f"target {key} = 0: {result[key]} -> {verdict(result[key] == 0)}")
    fewest = min(result["faults"].values())
    lines.append(f"target every fault kind >= 5 times over >= 50 rounds: {result['rounds']} "
                 f"rounds, fewest {fewest} -> {verdict(result['rounds'] >= 50 and fewest >= 5)}")
    limit = 2 * result["poll_interval_ms"]
    gap = result["max_protection_gap_ms"]
    lines.append(f"target max_protection_gap_ms <= 2 x poll interval ({limit}): {gap} -> "
                 f"{verdict(gap <= limit)}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wattkeeper bench chaos", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--meters", type=int, default=2_000)
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--round-s", type=float, default=3.0,
                        help="seconds per round, at least (a restart may make it longer)")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS),
                        help="the fault kinds to cycle through, comma-separated "
                             f"(default all: {','.join(FAULT_KINDS)})")
    parser.add_argument("--poll-interval", default="500ms", help="the gateways' poll_interval")
    parser.add_argument("--window", type=int, default=16,
                        help="requests in flight per gateway (as bench modbus; with 1, a cycle "
                             "of 100 units is 100 round trips: ~0.9 s measured)")
    parser.add_argument("--profile", default="sdm630")
    parser.add_argument("--clients", type=int, default=24,
                        help="concurrent payment clients (each has one top-up in flight)")
    parser.add_argument("--client-pause", type=float, default=0.1,
                        help="mean pause of a client between top-ups (s)")
    parser.add_argument("--repeat-fraction", type=float, default=0.05,
                        help="share of acknowledged top-ups repeated with the same reference")
    parser.add_argument("--overloads-per-round", type=int, default=2)
    parser.add_argument("--overload-delay-ms", type=int, default=1000,
                        help="the meters' overload_delay")
    parser.add_argument("--overload-extra-s", type=float, default=3.0,
                        help="an overload lasts its delay plus this long")
    parser.add_argument("--garble-polls", type=int, default=3,
                        help="a garbled register lasts this many poll intervals")
    parser.add_argument("--swap-kwh", type=float, default=5000.0)
    parser.add_argument("--clock-step-ms", type=int, default=3_600_000)
    parser.add_argument("--down-s", type=float, default=3.0, help="a gateway outage's length")
    parser.add_argument("--quarantine-s", type=float, default=1.0,
                        help="how long a corrupt meter stays faulted before it is restored")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="run in DIR and keep it (data directory, logs); default: a "
                             "temporary directory, removed after the run")
    parser.add_argument("--json", action="store_true", help="end with one JSON object line")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args([arg for arg in argv if arg != "--"])
    args.faults = [kind.strip() for kind in args.faults.split(",") if kind.strip()]
    unknown = sorted(set(args.faults) - set(FAULT_KINDS))
    if unknown or not args.faults:
        parser.error(f"--faults: unknown kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
    if args.gateways < 1 or args.meters < args.gateways:
        parser.error("need at least one gateway and one meter per gateway")
    if args.rounds < 1 or args.clients < 0:
        parser.error("--rounds must be >= 1 and --clients >= 0")
    try:
        parse_duration(args.poll_interval)
    except ValueError as error:
        parser.error(f"--poll-interval: {error}")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = trio.run(run_bench, args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="wattkeeper-chaos-") as run_dir:
            result = trio.run(run_bench, args, Path(run_dir))
    print_result(result, as_json=args.json, verdicts=target_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

