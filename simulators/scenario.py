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

Reading a file uses the park config's toolkit (``protocols.toml``): every problem at once, each
``file:line: key.path: message``, an unknown key with a "did you mean" (a fault's parameters
are the ones its kind takes), and durations in the one grammar of ``protocols.toml.values``.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, cast

import attrs
import trio

from protocols.toml.limits import TomlNestingError, parse_toml
from protocols.toml.problems import DocumentError, Problem, Problems
from protocols.toml.toolkit import Table
from protocols.toml.values import show
from simulators.faults import (
    Fault,
    FaultSpecError,
    fault_from_fields,
    fault_parameters,
    parse_fault,
)
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


class ScenarioError(DocumentError):
    """A scenario that cannot be used: every problem, one per line, naming the file, the line
    (when read from one) and the key, as a park config's errors do."""


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


def _target(value: str) -> tuple[str, int | None]:
    if not value:
        raise ValueError('expected "GATEWAY/UNIT" or "GATEWAY", e.g. "gw1/3"')
    gateway, slash, unit = value.partition("/")
    if not slash:
        return gateway, None
    if not unit.isdigit():
        raise ValueError(f'the unit must be a number, e.g. "gw1/3"; got {show(value)}')
    return gateway, int(unit)


def _read_park(t: Table) -> ScenarioPark:
    park = ScenarioPark(
        meters=t.integer("meters", 4),
        gateways=t.integer("gateways", 1),
        profile=t.string("profile", "sdm630"),
        seed=t.integer("seed", 1),
    )
    t.finish()
    return park


def _read_fault(t: Table) -> Fault | None:
    """A ``[[faults]]`` entry, as a spec string or as fields; None when it is wrong (said)."""
    if t.has("spec"):
        if len(t.data) > 1:
            t.asked.update(t.data)
            t.problems.add(t.path, "give either spec or kind/target/..., not both")
            return None
        spec = t.string("spec")
        if "spec" in t.failed:
            return None
        try:
            return parse_fault(spec)
        except FaultSpecError as error:
            t.fail("spec", str(error))
            return None
    kind, target = t.string("kind"), t.string("target")
    allowed = fault_parameters(kind)
    # An unknown kind is said once, by fault_from_fields: its parameters are not judged.
    params = {
        key: t.raw(key)
        for key in t.data
        if key not in ("kind", "target") and (allowed is None or key in allowed)
    }
    t.asked.update(allowed or ())  # what a misspelt parameter may have meant
    t.finish()
    if {"kind", "target"} & t.failed:
        return None
    try:
        return fault_from_fields(kind, target, params)
    except FaultSpecError as error:
        if error.key is None:
            t.problems.add(t.path, str(error))
        else:
            t.fail(error.key, error.reason)
        return None


def _read_expectation(t: Table) -> Expectation | None:
    kind = t.string("expect", choices=EXPECTATIONS)
    target = t.string("target")
    after_s = t.duration_s("after", "0s")
    within_s = t.duration_s("within")
    t.finish()
    gateway, unit = "", None
    if "target" not in t.failed:
        try:
            gateway, unit = _target(target)
        except ValueError as error:
            t.fail("target", str(error))
    if t.failed:
        return None
    return Expectation(cast(ExpectationKind, kind), gateway, unit, after_s, within_s)


def parse_scenario(
    data: Mapping[str, Any], *, source: str = "<scenario>", text: str | None = None
) -> Scenario:
    """A :class:`Scenario` from a parsed TOML document. Every problem is reported at once in a
    :class:`ScenarioError`, each naming ``source``, the key path (``expect[1].within``) and,
    given the ``text`` the document was parsed from, the line; an unknown key gets a "did you
    mean"."""
    problems = Problems()
    root = Table(problems, (), data)
    name = root.string("name", Path(source).stem)
    description = root.string("description", "")
    park = _read_park(root.table("park"))
    faults = [_read_fault(entry) for entry in root.tables("faults")]
    expectations = [_read_expectation(entry) for entry in root.tables("expect")]
    duration_s = root.duration_s("duration") if root.has("duration") else 0.0
    root.finish()
    if not problems.items and not faults and not expectations:
        problems.add((), "no [[faults]] and no [[expect]]: nothing to run")
    if problems.items:
        raise ScenarioError(problems.located(text, source))
    good_faults = tuple(fault for fault in faults if fault is not None)
    good_expectations = tuple(e for e in expectations if e is not None)
    ends = [e.deadline_s for e in good_expectations] + [
        f.at_s + (f.for_s or 0.0) for f in good_faults
    ]
    return Scenario(name, description, good_faults, good_expectations,
                    max(duration_s, *ends), park, source)


def load_scenario(path: Path | str) -> Scenario:
    """A scenario from a file; problems name the file, the line and the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read scenario: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {error.start})") from None
    try:
        data = parse_toml(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{path}: not valid TOML: {error}") from None
    except TomlNestingError as error:
        raise ScenarioError([Problem(str(path), error.line, "", str(error))]) from None
    return parse_scenario(data, source=str(path), text=text)


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
