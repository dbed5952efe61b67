"""The load generator counts real replies (and notices exception replies)."""

from __future__ import annotations

from simulators.loadgen import measure_polls, measure_sim_polls_per_s
from simulators.park import ParkPlan, open_sim_park

from .sim_thread import SimParkThread


async def test_measures_polls_against_a_running_park() -> None:
    async with open_sim_park(ParkPlan.uniform(meters=20, gateways=2, port=0)) as park:
        rate = await measure_sim_polls_per_s(
            list(park.ports.values()), units_per_port=10, seconds=0.5, window=16
        )
        assert rate > 500  # far more on an idle machine; this only proves it counts replies
        requests = sum(s.requests for s in park.statistics().values())
        assert requests >= rate * 0.5


def test_exception_replies_are_counted_apart() -> None:
    with SimParkThread(ParkPlan.uniform(meters=2, port=0)) as park:
        # Units 1..4 behind a gateway that has only 1..2: half the replies are 0x0B exceptions.
        result = measure_polls("127.0.0.1", [park.ports["gw1"]], units_per_port=4,
                               seconds=0.3, window=8, warmup_s=0.05)
    assert result.replies > 0
    assert 0.3 < result.exceptions / result.replies < 0.7
