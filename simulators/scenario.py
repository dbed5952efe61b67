"""Hardware-in-the-loop scenarios: a timeline of faults and the outcomes expected from the server.

Theory of operation
-------------------
A scenario file (TOML, format in docs/simulator.md) lists faults with their start offsets and
expectations about what the *system under test* (a wattkeeper server polling the simulated
park) does about them, as seen on the wire:

* ``coil_open`` / ``coil_closed`` — a write of 0 / 1 to the target's relay coil arrives inside
  the expectation's window (any unit of the gateway if the target is a gateway);
* ``no_coil_open`` — no write of 0 to the target inside the window (a fault that must *not*
  cut a tenant off; writes of 1 are fine: a server may re-assert "connected" after a
  reconnect);
* ``no_coil_write`` — no coil write at all to the target inside the window (stricter);
* ``polled`` — the target is read at least once inside the window (the server reconnected
  after an outage, or kept polling through a fault).

Windows are ``[after, after + within]`` seconds after the scenario starts (wall time). Running
a scenario (:func:`run_scenario`) injects every fault into a running
:class:`~simulators.park.SimPark` at the start (each waits its own ``at``), then evaluates each
expectation as soon as it is decided (a positive one at the first matching write, every other
one when its window closes), reporting one PASS/FAIL line per expectation, and returns when
every window has closed and the scenario's ``duration`` has passed. Evidence comes from the
park's coil log (``time.monotonic_ns()`` stamps) and each meter's time of last read.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import attrs
import trio

from simulators.faults import Fault, FaultSpecError, fault_from_fields, parse_duration, parse_fault
from simulators.park import SimPark

__all__ = [
    "EXPECTATIONS",
    "Expectation",
    "Outcome",
    "Scenario",
    "ScenarioError",
    "ScenarioPark",
    "builtin_scenarios",
    "load_scenario",
    "parse_scenario",
    "run_scenario",
]

ExpectationKind = Literal["coil_open", "coil_closed", "no_coil_open", "no_coil_write", "polled"]
EXPECTATIONS: Final = ("coil_open", "coil_closed", "no_coil_open", "no_coil_write", "polled")
POLL_CHECK_S: Final = 0.05
"""How often a running scenario looks at the coil log for positive expectations."""

_TOP_KEYS: Final = frozenset({"name", "description", "duration", "park", "faults", "expect"})
_PARK_KEYS: Final = frozenset({"meters", "gateways", "profile", "seed"})
_FAULT_TIMING_KEYS: Final = frozenset({"at", "for"})
_EXPECT_KEYS: Final = frozenset({"target", "expect", "after", "within"})


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the entry."""


@attrs.frozen
class ScenarioPark:
    """The park a scenario needs when it is run without ``--config`` or ``--meters``."""

    meters: int = 4
    gateways: int = 1
    profile: str = "sdm630"
    seed: int = 1


@attrs.frozen
class Expectation:
    kind: ExpectationKind
    gateway: str
    unit: int | None
    after_s: float
    within_s: float

    @property
    def deadline_s(self) -> float:
        return self.after_s + self.within_s

    def describe(self) -> str:
        target = self.gateway if self.unit is None else f"{self.gateway}/{self.unit}"
        what = {
            "coil_open": "coil opened (write 0)",
            "coil_closed": "coil closed (write 1)",
            "no_coil_open": "relay not opened (no write 0)",
            "no_coil_write": "no coil write",
            "polled": "polled",
        }[self.kind]
        return f"{what} on {target} between {self.after_s:g}s and {self.deadline_s:g}s"


@attrs.frozen
class Outcome:
    expectation: Expectation
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.expectation.describe()}: {self.detail}"


@attrs.frozen
class Scenario:
    name: str
    description: str
    faults: tuple[Fault, ...]
    expectations: tuple[Expectation, ...]
    duration_s: float
    park: ScenarioPark = ScenarioPark()
    source: str = "<scenario>"


# --- reading ----------------------------------------------------------------------------------


def _duration(value: object, where: str) -> float:
    if not isinstance(value, str):
        raise ScenarioError(f'{where}: expected a duration with a unit, e.g. "5s", got {value!r}')
    try:
        return parse_duration(value, what=where.rsplit(".", 1)[-1])
    except FaultSpecError as error:
        raise ScenarioError(f"{where}: {error}") from None


def _target(value: object, where: str) -> tuple[str, int | None]:
    if not isinstance(value, str) or not value:
        raise ScenarioError(f'{where}.target: expected "GATEWAY/UNIT" or "GATEWAY", e.g. "gw1/3"')
    gateway, slash, unit = value.partition("/")
    if not slash:
        return gateway, None
    if not unit.isdigit():
        raise ScenarioError(f"{where}.target {value!r}: the unit must be a number, e.g. gw1/3")
    return gateway, int(unit)


def _int(table: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{where}.{key}: expected an integer, got {value!r}")
    return value


def _fault(entry: Mapping[str, Any], where: str) -> Fault:
    if "spec" in entry:
        extra = set(entry) - {"spec"}
        if extra:
            raise ScenarioError(f"{where}: give either spec or kind/target/..., not both")
        if not isinstance(entry["spec"], str):
            raise ScenarioError(f"{where}.spec: expected a fault spec string")
        try:
            return parse_fault(entry["spec"])
        except FaultSpecError as error:
            raise ScenarioError(f"{where}: {error}") from None
    kind = entry.get("kind")
    target = entry.get("target")
    if not isinstance(kind, str) or not isinstance(target, str):
        raise ScenarioError(f'{where}: needs kind and target, e.g. kind = "overload", '
                            'target = "gw1/3" (or spec = "gw1/3:overload:power=45000")')
    params = {key: value for key, value in entry.items() if key not in ("kind", "target")}
    try:
        return fault_from_fields(kind, target, params)
    except FaultSpecError as error:
        raise ScenarioError(f"{where}: {error}") from None


def _expectation(entry: Mapping[str, Any], where: str) -> Expectation:
    unknown = set(entry) - _EXPECT_KEYS
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(sorted(_EXPECT_KEYS))})")
    kind = entry.get("expect")
    if kind not in EXPECTATIONS:
        raise ScenarioError(f"{where}.expect: one of {', '.join(EXPECTATIONS)}, got {kind!r}")
    gateway, unit = _target(entry.get("target"), where)
    if "within" not in entry:
        raise ScenarioError(f'{where}.within: required (how long the window lasts, e.g. "3s")')
    after_s = _duration(entry["after"], f"{where}.after") if "after" in entry else 0.0
    return Expectation(kind, gateway, unit, after_s, _duration(entry["within"], f"{where}.within"))


def parse_scenario(data: Mapping[str, Any], *, source: str = "<scenario>") -> Scenario:
    """A :class:`Scenario` from a parsed TOML document; errors name ``source`` and the entry."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ScenarioError(f"{source}: unknown key(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(sorted(_TOP_KEYS))})")
    name = data.get("name", Path(source).stem)
    description = data.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise ScenarioError(f"{source}: name and description must be strings")
    park_table = data.get("park", {})
    if not isinstance(park_table, Mapping):
        raise ScenarioError(f"{source}: park must be a table")
    unknown = set(park_table) - _PARK_KEYS
    if unknown:
        raise ScenarioError(f"{source}: park: unknown key(s) {', '.join(sorted(unknown))}")
    profile = park_table.get("profile", "sdm630")
    if not isinstance(profile, str):
        raise ScenarioError(f"{source}: park.profile must be a profile name")
    park = ScenarioPark(
        meters=_int(park_table, "meters", f"{source}: park", 4),
        gateways=_int(park_table, "gateways", f"{source}: park", 1),
        profile=profile,
        seed=_int(park_table, "seed", f"{source}: park", 1),
    )
    faults_list = data.get("faults", [])
    expect_list = data.get("expect", [])
    if not isinstance(faults_list, list) or not isinstance(expect_list, list):
        raise ScenarioError(f"{source}: faults and expect are arrays of tables ([[faults]])")
    faults = []
    for number, entry in enumerate(faults_list, 1):
        if not isinstance(entry, Mapping):
            raise ScenarioError(f"{source}: faults #{number} must be a table")
        faults.append(_fault(entry, f"{source}: faults #{number}"))
    expectations = []
    for number, entry in enumerate(expect_list, 1):
        if not isinstance(entry, Mapping):
            raise ScenarioError(f"{source}: expect #{number} must be a table")
        expectations.append(_expectation(entry, f"{source}: expect #{number}"))
    if not faults and not expectations:
        raise ScenarioError(f"{source}: no [[faults]] and no [[expect]]: nothing to run")
    ends = [e.deadline_s for e in expectations] + [
        f.at_s + (f.for_s or 0.0) for f in faults
    ]
    duration_s = max(ends)
    if "duration" in data:
        duration_s = max(duration_s, _duration(data["duration"], f"{source}: duration"))
    return Scenario(name, description, tuple(faults), tuple(expectations), duration_s, park,
                    source)


def load_scenario(path: Path | str) -> Scenario:
    """A scenario from a file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read scenario: {error.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{path}: not valid TOML: {error}") from None
    return parse_scenario(data, source=str(path))


def builtin_scenarios() -> dict[str, Path]:
    """The scenario files shipped in the package, by file stem."""
    folder = Path(__file__).with_name("scenarios")
    return {path.stem: path for path in sorted(folder.glob("*.toml"))}


# --- running ----------------------------------------------------------------------------------


def _matching_write(
    park: SimPark, expectation: Expectation, start_ns: int, *, on: bool | None
) -> float | None:
    """Seconds after start of the first matching coil write in the window, else None."""
    low = start_ns + int(expectation.after_s * 1e9)
    high = start_ns + int(expectation.deadline_s * 1e9)
    for write in park.coil_log:
        if not low <= write.monotonic_ns <= high or write.gateway != expectation.gateway:
            continue
        if expectation.unit is not None and write.unit != expectation.unit:
            continue
        if on is None or write.on == on:
            return (write.monotonic_ns - start_ns) / 1e9
    return None


def _polled(park: SimPark, expectation: Expectation, sim_start: float) -> bool:
    window_start = sim_start + expectation.after_s * park.clock.speed
    gateway = park.gateways[expectation.gateway]
    meters = (
        gateway.meters.values()
        if expectation.unit is None
        else [gateway.meters[expectation.unit]]
    )
    return any(meter.last_read_s >= window_start for meter in meters)


def _check_targets(park: SimPark, scenario: Scenario) -> None:
    for fault in scenario.faults:
        park.check_target(fault)
    for expectation in scenario.expectations:
        gateway = park.gateways.get(expectation.gateway)
        if gateway is None or (
            expectation.unit is not None and expectation.unit not in gateway.meters
        ):
            raise ScenarioError(
                f"{scenario.source}: expectation target {expectation.describe()!r} is not in "
                f"the simulated park ({park.describe()})"
            )


async def run_scenario(
    park: SimPark, scenario: Scenario, *, report: Callable[[str], None] = print
) -> list[Outcome]:
    """Inject the faults, judge the expectations, report a line each (module docstring)."""
    _check_targets(park, scenario)
    start_ns = time.monotonic_ns()
    start = trio.current_time()
    sim_start = park.clock.now()
    report(f"scenario {scenario.name}: {len(scenario.faults)} faults, "
           f"{len(scenario.expectations)} expectations, {scenario.duration_s:g}s")
    injected = [park.inject(fault) for fault in scenario.faults]
    try:
        return await _judge_all(park, scenario, start_ns, start, sim_start, report)
    finally:
        # Faults without an end (for = none) end with their scenario.
        for active in injected:
            park.end_fault(active)


async def _judge_all(
    park: SimPark,
    scenario: Scenario,
    start_ns: int,
    start: float,
    sim_start: float,
    report: Callable[[str], None],
) -> list[Outcome]:
    pending = sorted(scenario.expectations, key=lambda e: e.deadline_s)
    outcomes: list[Outcome] = []

    def judge(expectation: Expectation, final: bool) -> Outcome | None:
        if expectation.kind in ("coil_open", "coil_closed"):
            seen = _matching_write(park, expectation, start_ns,
                                   on=expectation.kind == "coil_closed")
            if seen is not None:
                return Outcome(expectation, True, f"written at {seen:.2f}s")
            return Outcome(expectation, False, "no such write") if final else None
        if expectation.kind == "polled":
            if _polled(park, expectation, sim_start):
                return Outcome(expectation, True, "read in the window")
            return Outcome(expectation, False, "not read in the window") if final else None
        # no_coil_open / no_coil_write: a write fails it at once; passing needs the window closed.
        forbidden = False if expectation.kind == "no_coil_open" else None
        seen = _matching_write(park, expectation, start_ns, on=forbidden)
        if seen is not None:
            return Outcome(expectation, False, f"a coil write at {seen:.2f}s")
        return Outcome(expectation, True, "none written") if final else None

    while pending:
        elapsed = trio.current_time() - start
        still: list[Expectation] = []
        for expectation in pending:
            outcome = judge(expectation, final=elapsed >= expectation.deadline_s)
            if outcome is None:
                still.append(expectation)
            else:
                outcomes.append(outcome)
                report(outcome.line())
        pending = still
        if pending:
            await trio.sleep(POLL_CHECK_S)
    remaining = scenario.duration_s - (trio.current_time() - start)
    if remaining > 0:
        await trio.sleep(remaining)
    passed = sum(outcome.passed for outcome in outcomes)
    report(f"scenario {scenario.name}: {passed}/{len(outcomes)} expectations passed"
           f" -> {'PASS' if passed == len(outcomes) else 'FAIL'}")
    return outcomes
