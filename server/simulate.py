"""``wattkeeper sim``: the Modbus gateway simulator on its own, and the park the demo simulates.

Theory of operation
-------------------
The command turns its options into a :class:`~simulators.park.ParkPlan` (``--config``:
:func:`plan_from_config`, exactly the gateways and meters of a park config, at the addresses
and with the transport the config gives; ``--meters N --gateways G --port P --host H``:
gateways ``gw1``.. on ports P, P+1, ... with units 1..N/G, speaking ``--transport``; neither:
the park a ``--scenario`` file asks for), checks every ``--fault`` spec and the scenario file
*before* anything listens, runs the park in ``trio.run`` and prints where each gateway
listens. It then runs until Ctrl-C or ``--seconds`` (printing a summary when it stops), or,
with ``--scenario``, for the scenario's duration, printing one PASS/FAIL line per
expectation and exiting 1 if any failed.

Everything a user can get wrong (a bad fault spec, an unknown profile, a port in use, a
scenario file with an error) becomes :class:`server.errors.UserError` with the reason in words.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from protocols.modbus.profiles import ProfileError, load_profile
from server.collector import run_collector_hygiene
from server.config import ConfigError, ParkConfig, load_config
from server.errors import UserError, interrupted_only
from simulators.faults import Fault, FaultSpecError, parse_fault
from simulators.gateway import PortInUse
from simulators.park import (
    OVERLOAD_HEADROOM,
    GatewayPlan,
    MeterPlan,
    ParkPlan,
    SimPark,
    open_sim_park,
    run_sim_park,
    utc_offset_of,
)
from simulators.scenario import Scenario, ScenarioError, load_scenario, run_scenario

__all__ = ["open_simulated_park", "plan_from_args", "plan_from_config", "run_simulator_command"]

MAX_LISTED_GATEWAYS = 20
FEEDER_LOSS_PERCENT = 4.0
"""What a simulated feeder's main meter shows beyond the meters under it (its loss)."""


def plan_from_config(config: ParkConfig, *, seed: int = 1) -> ParkPlan:
    """Exactly the gateways and meters of a park config, so ``wattkeeper serve`` and ``wattkeeper
    demo`` find every meter where the config says. Meters are rated below their overload limit
    (``OVERLOAD_HEADROOM``): only injected overloads trip. The plan carries the config's
    profiles (shipped ones plus its ``profile_files``), so a custom profile is simulated from
    the very file the server polls with. A feeder's main meter (``[[feeders]]``) shows the sum
    of the meters under it plus ``FEEDER_LOSS_PERCENT``.

    It lives here, next to the command, because ``simulators`` must not import ``server``."""
    by_gateway: dict[str, list[MeterPlan]] = {gateway.id: [] for gateway in config.gateways}
    feeds = {feeder.main: feeder.meters for feeder in config.feeders}
    for meter in config.meters:
        rated = meter.overload_w / OVERLOAD_HEADROOM if meter.overload_w > 0 else None
        by_gateway[meter.gateway].append(MeterPlan(
            meter.unit, meter.profile, meter.relay_coil, meter.id, rated,
            feeds=feeds.get(meter.id, ()), loss_percent=FEEDER_LOSS_PERCENT))
    gateways = tuple(
        GatewayPlan(
            gateway.id, gateway.host, gateway.port, tuple(by_gateway[gateway.id]),
            gateway.transport,
        )
        for gateway in config.gateways
    )
    return ParkPlan(
        gateways,
        seed=seed,
        utc_offset_s=utc_offset_of(config.server.timezone),
        profiles=config.profiles,
    )


@asynccontextmanager
async def open_simulated_park(
    config: ParkConfig, *, seed: int = 1, speed: float = 1.0
) -> AsyncIterator[SimPark]:
    """Simulate exactly the meters of ``config``, each gateway at its configured address."""
    async with open_sim_park(plan_from_config(config, seed=seed), speed=speed) as park:
        yield park


def plan_from_args(args: argparse.Namespace, scenario: Scenario | None) -> ParkPlan:
    """The park the command line asks for (module docstring); UserError if it makes no sense."""
    try:
        if args.config is not None:
            if args.meters is not None:
                raise UserError("give either --config or --meters, not both")
            if args.transport is not None:
                raise UserError(
                    "--transport goes with --meters; with --config each gateway's "
                    "`transport` key decides"
                )
            config = load_config(Path(args.config))
            return plan_from_config(config, seed=args.seed)
        if args.meters is not None:
            meters, gateways, profile = args.meters, args.gateways, args.profile
        elif scenario is not None:
            meters, gateways = scenario.park.meters, scenario.park.gateways
            profile = scenario.park.profile
        else:
            raise UserError(
                "nothing to simulate: give --meters N (with --gateways G, --port P) "
                "or --config PARK.toml"
            )
        if not 0 <= args.port <= 65_535:
            raise UserError(f"--port {args.port} is not a TCP port")
        return ParkPlan.uniform(
            meters=meters,
            gateways=gateways,
            port=args.port,
            host=args.host,
            seed=args.seed,
            profile=profile,
            transport=args.transport or "tcp",
        )
    except ConfigError:
        raise  # the CLI prints it as it is (it names the key and the line)
    except ProfileError as error:
        raise UserError(f"--profile: {error}") from None
    except ValueError as error:  # counts that cannot be a park (ParkPlan.uniform says why)
        raise UserError(str(error)) from None


def _faults(specs: Sequence[str]) -> list[Fault]:
    try:
        return [parse_fault(spec) for spec in specs]
    except FaultSpecError as error:
        raise UserError(str(error)) from None


def _listing(park: SimPark) -> str:
    lines = [f"wattkeeper sim: {park.describe()}"]
    for number, (gateway_id, gateway) in enumerate(park.gateways.items()):
        if number == MAX_LISTED_GATEWAYS:
            lines.append(f"  ... and {len(park.gateways) - number} more gateways")
            break
        units = sorted(gateway.meters)
        span = f"units {units[0]}-{units[-1]}" if len(units) > 1 else f"unit {units[0]}"
        if units != list(range(units[0], units[-1] + 1)):
            span = "units " + ",".join(str(unit) for unit in units)
        framing = "  (RTU over TCP)" if gateway.transport == "rtu-over-tcp" else ""
        lines.append(f"  {gateway_id:<10} {gateway.host}:{gateway.port:<6} {span}{framing}")
    return "\n".join(lines)


def _summary(park: SimPark) -> str:
    stats = park.statistics().values()
    requests = sum(s.requests for s in stats)
    connections = sum(s.connections for s in stats)
    errors = sum(s.frame_errors for s in stats)
    return (
        f"wattkeeper sim: stopped; {requests:,} requests answered over {connections} "
        f"connections, {park.coil_log.total} coil writes, {errors} clients dropped for garbage"
    )


async def _run(
    park: SimPark, faults: Sequence[Fault], scenario: Scenario | None, seconds: float | None
) -> int:
    async with run_sim_park(park), trio.open_nursery() as housekeeping:
        # Full collections over the park's objects stalled the simulator's loop for 30-50 ms
        # at full polling rate (bench modbus), and a stall shows up as meter latency in what
        # a HIL run measures: the same hygiene as the server (server.collector).
        await housekeeping.start(run_collector_hygiene)
        try:
            return await _drive(park, faults, scenario, seconds)
        finally:
            housekeeping.cancel_scope.cancel()


async def _drive(
    park: SimPark, faults: Sequence[Fault], scenario: Scenario | None, seconds: float | None
) -> int:
    print(_listing(park), flush=True)
    for fault in faults:
        park.inject(fault)
        print(f"  fault {fault.spec()}", flush=True)
    if scenario is not None:
        try:
            outcomes = await run_scenario(
                park, scenario, report=lambda line: print(line, flush=True)
            )
        except (ScenarioError, FaultSpecError) as error:
            raise UserError(str(error)) from None
        return 0 if all(outcome.passed for outcome in outcomes) else 1
    print("Press Ctrl-C to stop." if seconds is None else f"Running for {seconds:g}s.",
          flush=True)
    await trio.sleep(seconds if seconds is not None else float("inf"))
    return 0


def _only_leaf(error: BaseException) -> BaseException:
    """The single exception inside nested nursery groups (or the error itself)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def run_simulator_command(args: argparse.Namespace) -> int:
    """``wattkeeper sim`` (see the module docstring); returns the exit status."""
    scenario = None
    if args.scenario is not None:
        try:
            scenario = load_scenario(args.scenario)
        except ScenarioError as error:
            raise UserError(str(error)) from None
    faults = _faults(args.fault)
    try:
        load_profile(args.profile)
    except ProfileError as error:
        raise UserError(f"--profile: {error}") from None
    if args.seconds is not None and not args.seconds > 0:
        raise UserError(f"--seconds must be > 0, got {args.seconds:g}")
    park = SimPark(plan_from_args(args, scenario))
    try:
        for fault in faults:
            park.check_target(fault)
    except FaultSpecError as error:
        raise UserError(str(error)) from None
    try:
        status: int = trio.run(_run, park, faults, scenario, args.seconds)
    except KeyboardInterrupt:
        status = 0
    except BaseExceptionGroup as group:
        leaf = _only_leaf(group)
        if interrupted_only(group):
            status = 0
        elif isinstance(leaf, PortInUse):
            raise UserError(f"{leaf} (choose another --port, or stop what is using it)") from None
        elif isinstance(leaf, UserError):
            raise leaf from None
        else:
            raise
    except PortInUse as error:
        raise UserError(f"{error} (choose another --port, or stop what is using it)") from None
    if scenario is None:
        print(_summary(park), flush=True)
    return status
