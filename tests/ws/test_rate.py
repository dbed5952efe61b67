"""The per-meter rate limit the hub keeps for all its clients."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from protocols.stream.views import MeterView
from protocols.ws.rate import MeterRate


def view(meter_id: str, balance: int) -> MeterView:
    return MeterView(meter_id, "t", "g", balance, 0.0, 0, True, None, "none", True, False, 0)


def test_a_meter_goes_at_most_rate_hz_and_its_latest_view_follows() -> None:
    rate = MeterRate(10.0)
    assert rate.admit([view("M-1", 1), view("M-2", 1)], now=1.0) == [
        view("M-1", 1), view("M-2", 1)]
    assert rate.admit([view("M-1", 2)], now=1.05) == []  # 50 ms later: held
    assert rate.admit([view("M-1", 3), view("M-2", 2)], now=1.08) == []
    # Its interval is up at the next tick (a little early is fine: the slack is 1 ms).
    assert rate.admit([], now=1.0995) == [view("M-1", 3), view("M-2", 2)]
    assert rate.release_due(now=2.0) == [] and not rate.held


def test_the_timer_releases_what_no_tick_comes_for() -> None:
    rate = MeterRate(2.0)
    rate.admit([view("M-1", 1)], now=0.0)
    rate.admit([view("M-1", 2)], now=0.1)
    assert rate.release_due(now=0.3) == []
    assert rate.release_due(now=0.5) == [view("M-1", 2)]


@given(st.lists(st.tuples(st.sampled_from(["A", "B", "C"]),
                          st.floats(min_value=0.0, max_value=0.2)), max_size=60))
def test_no_meter_goes_more_often_than_its_rate_and_none_is_lost(
        changes: list[tuple[str, float]]) -> None:
    rate = MeterRate(10.0)
    now, sent, latest = 0.0, {}, {}
    out: dict[str, list[float]] = {}
    for number, (meter_id, step) in enumerate(changes):
        now += step
        latest[meter_id] = number
        for v in rate.admit([view(meter_id, number)], now):
            out.setdefault(v.meter_id, []).append(now)
            sent[v.meter_id] = v.balance
    for v in rate.release_due(now + 1.0):
        sent[v.meter_id] = v.balance
    assert sent == latest  # every meter's last change went out
    for times in out.values():
        assert all(b - a >= 0.1 - 0.001 for a, b in itertools.pairwise(times))
