"""Scenario files: parsing, and running them against a (tiny, fake) system under test."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from protocols.modbus.client import open_modbus_tcp
from protocols.modbus.profiles import load_profile
from simulators.park import ParkPlan, SimPark, open_sim_park
from simulators.scenario import (
    Outcome,
    ScenarioError,
    builtin_scenarios,
    load_scenario,
    parse_scenario,
    run_scenario,
)

SDM630 = load_profile("sdm630")

QUICK_OVERLOAD = {
    "name": "quick overload",
    "faults": [{"at": "100ms", "target": "gw1/3", "kind": "overload", "power": 45_000,
                "for": "600ms"}],
    "expect": [
        {"target": "gw1/3", "expect": "coil_open", "after": "100ms", "within": "800ms"},
        {"target": "gw1/2", "expect": "no_coil_write", "within": "900ms"},
        {"target": "gw1/2", "expect": "polled", "within": "900ms"},
        {"target": "gw1", "expect": "no_coil_open", "within": "50ms"},
    ],
}


async def trip_on_overload(park: SimPark, limit_w: float = 30_000.0) -> None:
    """The simplest system under test: poll gw1 every 50 ms, open any relay above the limit."""
    async with open_modbus_tcp("127.0.0.1", park.ports["gw1"], window=8) as client:
        tripped: set[int] = set()
        while True:
            for unit in park.gateways["gw1"].meters:
                reply = await client.read(unit, 4, 0, 74)
                if SDM630.decode([reply.payload], 0).power_w > limit_w and unit not in tripped:
                    await client.write_coil(unit, 0, False)
                    tripped.add(unit)
            await trio.sleep(0.05)


def test_builtin_scenarios_parse() -> None:
    found = builtin_scenarios()
    assert {"overload", "gateway_outage", "rollback_and_tamper"} <= set(found)
    for path in found.values():
        scenario = load_scenario(path)
        assert scenario.expectations and scenario.faults
        assert scenario.duration_s >= max(e.deadline_s for e in scenario.expectations)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "nothing to run"),
        ({"bogus": 1, "expect": []}, "unknown key"),
        ({"faults": [{"kind": "overload", "target": "gw1/3"}]}, "overload needs power"),
        ({"faults": [{"spec": "gw1/3:silent:for=5"}]}, "add a unit"),
        ({"faults": [{"kind": "silent", "target": "gw1/3", "for": 5}]},
         r"faults\[0\]\.for: expected a duration with a unit"),
        ({"faults": [{"kind": "silent", "target": "gw1/3", "fro": "5s"}]},
         r'faults\[0\]\.fro: unknown key \(did you mean "for"\?\)'),
        ({"faults": [{"kind": "silnet", "target": "gw1/3"}]},
         r"faults\[0\]\.kind: unknown fault kind 'silnet' \(did you mean \"silent\"\?\)"),
        ({"expect": [{"target": "gw1/3", "expect": "coil_open"}]},
         r'expect\[0\]: missing required key "within"'),
        ({"expect": [{"target": "gw1/3", "expect": "explode", "within": "1s"}]},
         r"expect\[0\]\.expect: must be one of"),
        ({"expect": [{"target": "gw1/x", "expect": "polled", "within": "1s"}]},
         "unit must be a number"),
        ({"expect": [{"target": "gw1/3", "expect": "polled", "within": "soon"}]},
         r"expect\[0\]\.within: expected a duration like"),
    ],
)
def test_bad_scenarios_name_the_entry(data: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError, match=message) as caught:
        parse_scenario(data, source="bad.toml")
    assert str(caught.value).startswith("bad.toml")


def test_a_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(broken)


SCENARIO_WITH_MISTAKES = """\
name = "mistakes"

[[faults]]
spec = "gw1/3:silent:for=5s"

[[expect]]
target = "gw1/3"
expect = "polled"
within = "5 seconds"

[[expect]]
target = "gw1/2"
expect = "no_coil_open"
withn = "5s"
"""


def test_a_scenario_file_names_every_problem_with_its_line(tmp_path: Path) -> None:
    """The park config's toolkit (protocols.toml): file:line: key: message, all at once."""
    path = tmp_path / "mistakes.toml"
    path.write_text(SCENARIO_WITH_MISTAKES, encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).splitlines() == [
        f'{path}:9: expect[0].within: expected a duration like "500ms", "2s", "5m" or "1h" '
        '(units: ms, s, m, h), got "5 seconds"',
        f'{path}:11: expect[1]: missing required key "within"',
        f'{path}:14: expect[1].withn: unknown key (did you mean "within"?)',
    ]


def test_scenario_durations_are_the_one_grammar() -> None:
    scenario = parse_scenario({
        "duration": "1.5 s",
        "faults": [{"spec": "gw1/3:silent:at=.5s,for=250ms"}],
        "expect": [{"target": "gw1/3", "expect": "polled", "after": "0s", "within": "1s"}],
    })
    assert scenario.duration_s == 1.5
    assert (scenario.faults[0].at_s, scenario.faults[0].for_s) == (0.5, 0.25)


async def test_scenario_passes_when_the_system_under_test_trips() -> None:
    scenario = parse_scenario(QUICK_OVERLOAD)
    lines: list[str] = []
    async with open_sim_park(ParkPlan.uniform(meters=4, port=0)) as park, \
            trio.open_nursery() as nursery:
        nursery.start_soon(trip_on_overload, park)
        outcomes = await run_scenario(park, scenario, report=lines.append)
        nursery.cancel_scope.cancel()
    assert [o.passed for o in outcomes] == [True] * 4, lines
    assert sum(line.startswith("PASS") for line in lines) == 4
    assert lines[-1].endswith("-> PASS")
    assert park.active_faults() == []


async def test_no_coil_open_tolerates_closing_writes_but_not_opening_ones() -> None:
    scenario = parse_scenario({"expect": [
        {"target": "gw1/1", "expect": "no_coil_open", "within": "300ms"},
        {"target": "gw1/2", "expect": "no_coil_open", "within": "300ms"},
    ]})
    outcomes: list[Outcome] = []

    async def judge(park: SimPark) -> None:
        outcomes.extend(await run_scenario(park, scenario, report=lambda line: None))

    async with open_sim_park(ParkPlan.uniform(meters=2, port=0)) as park, \
            open_modbus_tcp("127.0.0.1", park.ports["gw1"]) as client, \
            trio.open_nursery() as nursery:
        nursery.start_soon(judge, park)
        await trio.sleep(0.05)
        await client.write_coil(1, 0, True)
        await client.write_coil(2, 0, False)
    # Reported as decided: the opening write fails gw1/2 at once, gw1/1 passes at window end.
    assert {o.expectation.unit: o.passed for o in outcomes} == {1: True, 2: False}


async def test_scenario_fails_when_nothing_trips() -> None:
    scenario = parse_scenario(QUICK_OVERLOAD)
    lines: list[str] = []
    async with open_sim_park(ParkPlan.uniform(meters=4, port=0)) as park:
        outcomes = await run_scenario(park, scenario, report=lines.append)
    by_kind = {o.expectation.kind: o.passed for o in outcomes}
    assert by_kind == {
        "coil_open": False, "no_coil_write": True, "polled": False, "no_coil_open": True
    }
    assert any(line.startswith("FAIL  coil opened (write 0) on gw1/3") for line in lines)
    assert lines[-1].endswith("-> FAIL")


async def test_scenario_targets_are_checked_against_the_park() -> None:
    scenario = parse_scenario(
        {"expect": [{"target": "gw2/1", "expect": "polled", "within": "1s"}]}
    )
    async with open_sim_park(ParkPlan.uniform(meters=2, port=0)) as park:
        with pytest.raises(ScenarioError, match="not in the simulated park"):
            await run_scenario(park, scenario, report=lambda line: None)
