"""The simulator's garble and swap faults: what a client reads, and what the meter really did."""

from __future__ import annotations

import pytest
import trio

from simulators.faults import FaultSpecError, parse_fault
from simulators.park import ParkPlan, open_sim_park


def test_garble_and_swap_specs_round_trip() -> None:
    for spec in ("gw1/3:garble:value=3e+38,for=3s", "gw1/3:garble:value=-1234.5,for=800ms",
                 "gw1/3:swap:add=5000"):
        fault = parse_fault(spec)
        assert parse_fault(fault.spec()) == fault
    assert parse_fault("gw1/3:garble").value_kwh == 3e38
    assert parse_fault("gw1/3:swap:add=5000").add_kwh == 5000.0


@pytest.mark.parametrize(("spec", "words"), [
    ("gw1/3:garble:value=nan", "finite float32"),
    ("gw1/3:garble:value=1e39", "finite float32"),
    ("gw1/3:garble:value=lots", "not a number"),
    ("gw1/3:swap", "swap needs add"),
    ("gw1/3:swap:add=5000,for=2s", "does not take for"),
    ("gw1:garble", "needs a unit"),
])
def test_bad_garble_and_swap_specs_say_what_is_wrong(spec: str, words: str) -> None:
    with pytest.raises(FaultSpecError, match=words):
        parse_fault(spec)


async def test_a_garbled_register_shows_garbage_while_the_truth_counts_on() -> None:
    async with open_sim_park(ParkPlan.uniform(meters=2, gateways=1, port=0)) as park:
        meter, other = park.meter("gw1", 1), park.meter("gw1", 2)
        before = meter.register_wh(park.clock.now())
        other_before = other.values(park.clock.now())["import_energy"]
        park.inject(parse_fault("gw1/1:garble:value=3e38,for=1.5s"))
        await trio.sleep(0.05)
        assert meter.values(park.clock.now())["import_energy"] == 3e38
        assert other.values(park.clock.now())["import_energy"] >= other_before  # untouched
        await trio.sleep(1.6)
        shown = meter.values(park.clock.now())["import_energy"]
        assert shown * 1000 == pytest.approx(meter.register_wh(park.clock.now()))
        assert meter.register_wh(park.clock.now()) > before  # it kept counting underneath


async def test_a_swap_jumps_the_register_and_it_stays() -> None:
    async with open_sim_park(ParkPlan.uniform(meters=1, gateways=1, port=0)) as park:
        meter = park.meter("gw1", 1)
        before = meter.register_wh(park.clock.now())
        park.inject(parse_fault("gw1/1:swap:add=5000"))
        await trio.sleep(0.05)
        after = meter.register_wh(park.clock.now())
        assert 5_000_000 - 1e-6 <= after - before < 5_000_000 + 100  # + a few Wh used
        assert park.active_faults() == []  # instant: nothing left to revert
        await trio.sleep(1.1)
        assert meter.register_wh(park.clock.now()) >= after


def test_swap_reports_both_registers_at_one_instant() -> None:
    plan = ParkPlan.uniform(meters=1, gateways=1, port=0)
    from simulators.park import SimPark

    meter = SimPark(plan).meter("gw1", 1)
    final, start = meter.swap(2_000_000.0, 10.0)
    assert start - final == 2_000_000.0
    assert meter.register_wh(10.0) == start
