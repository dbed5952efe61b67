"""Simulated time: wall time by default, sped up on request."""

from __future__ import annotations

import pytest
import trio

from simulators.clock import SimClock
from simulators.park import ParkPlan, open_sim_park


def test_clock_maps_its_source_with_a_speed() -> None:
    now = [100.0]
    clock = SimClock(speed=60.0, start_s=1_700_000_000.0, source=lambda: now[0])
    assert clock.now() == 1_700_000_000.0
    now[0] = 101.5
    assert clock.now() == 1_700_000_090.0
    with pytest.raises(ValueError, match="speed"):
        SimClock(speed=0.0)


async def test_a_sped_up_park_integrates_simulated_time() -> None:
    plan = ParkPlan.uniform(meters=1, port=0)
    async with open_sim_park(plan, speed=3600.0, start_s=1_700_000_000.0) as park:
        meter = park.meter("gw1", 1)
        before = meter.register_wh(park.clock.now())
        await trio.sleep(0.1)  # ~6 simulated minutes
        elapsed_s = park.clock.now() - 1_700_000_000.0
        added = meter.register_wh(park.clock.now()) - before
        assert elapsed_s >= 360.0
        assert 0.0 < added <= 12_000.0 * elapsed_s / 3600  # at most 1.2 x 10 kW rated
        assert "speed 3600x" in park.describe()
