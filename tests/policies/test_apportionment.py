"""Sharing costs exactly (``policies.apportionment``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from policies.apportionment import (
    FeederLoss,
    Totals,
    feeder_loss,
    loss_ratio_exceeded,
    share,
    split,
)


def test_a_feeders_loss_is_priced_at_the_main_meters_price() -> None:
    # 10,000 kWh delivered for 8,000.00; the meters under it count 9,400 kWh.
    loss = feeder_loss("tx1", Totals(10_000_000, 800_000), [Totals(6_000_000), Totals(3_400_000)])
    assert (loss.loss_wh, loss.loss_minor) == (600_000, 48_000)  # 600 kWh at 0.80: 480.00
    assert round(loss.ratio, 4) == 0.06
    assert loss_ratio_exceeded(loss, 500) and not loss_ratio_exceeded(loss, 600)


def test_more_under_the_feeder_than_through_it_is_no_credit() -> None:
    loss = FeederLoss("tx1", 1_000, 1_200, 100)
    assert loss.loss_wh == -200 and loss.loss_minor == 0


def test_shares_by_hand() -> None:
    # 100.00 by 60/40; 100.00 by three equal weights: 33.34, 33.33, 33.33 (first tie wins).
    assert split(10_000, [6_000, 4_000]) == [6_000, 4_000]
    assert split(10_000, [1, 1, 1]) == [3_334, 3_333, 3_333]
    shares = share(48_000, 600_000, ["acme", "beta"], [1_200, 800])
    assert [(s.tenant, s.minor, s.wh) for s in shares] == [("acme", 28_800, 360_000),
                                                          ("beta", 19_200, 240_000)]
    assert share(48_000, 600_000, ["acme", "beta"], [0, 0]) == []


@given(st.integers(0, 10**12), st.lists(st.integers(0, 10**6), min_size=1, max_size=50))
def test_a_split_adds_up_and_is_fair_to_one_unit(total: int, weights: list[int]) -> None:
    parts = split(total, weights)
    weight_sum = sum(weights)
    if weight_sum == 0:
        assert parts == [0] * len(weights)
        return
    assert sum(parts) == total
    for part, weight in zip(parts, weights, strict=True):
        exact = total * weight / weight_sum
        assert abs(part - exact) < 1 + 1e-6 * max(1, exact)
