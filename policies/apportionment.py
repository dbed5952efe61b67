"""Sharing what the park pays for and no tenant's meter counts: transformer and feeder loss,
and common-area meters (lighting, pumps, shared workshops).

Theory of operation
-------------------
The park pays the utility for what its main meters deliver. For one period:

* a feeder's **loss** is its main meter's energy less the energy of the meters directly under
  it (a sub-feeder's main meter is one of those; its own loss is its own feeder's). Its cost is
  the main meter's charge in proportion: ``main_minor * loss_wh / main_wh``, the price the park
  paid per kWh that period. A negative loss (sub-meters adding up to more than the main: a
  wrong CT ratio, a meter reading high) is reported, never shared as a credit.
* a **common** pool's cost is what its common-area meters were charged.

A pool's cost is shared among its tenants by weight (:func:`share`): their consumption in the
period (for a loss pool, on the meters of the feeder's subtree), their floor area, or fixed
weights. Shares are whole minor units that add up to the cost exactly: each tenant gets the
floor of its exact share, and the minor units left go to the largest remainders, ties in the
pool's tenant order (Hamilton's method), so the split is deterministic and never loses or
invents a cent. A pool whose weights are all zero (nobody consumed) shares nothing and says so.

Everything here is a pure function of the period's totals; reading them (the day records)
and posting the shares (journaled adjustments) are ``server.apportion``'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs


@attrs.frozen
class Totals:
    """A meter's energy and money charged in the period."""

    wh: int = 0
    minor: int = 0


@attrs.frozen
class FeederLoss:
    feeder: str
    main_wh: int
    sub_wh: int
    main_minor: int

    @property
    def loss_wh(self) -> int:
        return self.main_wh - self.sub_wh

    @property
    def loss_minor(self) -> int:
        """The cost of the loss at the main meter's price of the period (0 for no loss)."""
        if self.loss_wh <= 0 or self.main_wh <= 0:
            return 0
        return self.main_minor * self.loss_wh // self.main_wh

    @property
    def ratio(self) -> float:
        """Loss as a share of the main meter's energy (0.0 when it delivered nothing)."""
        return self.loss_wh / self.main_wh if self.main_wh > 0 else 0.0


def feeder_loss(feeder: str, main: Totals, under: Sequence[Totals]) -> FeederLoss:
    """A feeder's loss from its main meter's totals and those of the meters under it."""
    return FeederLoss(feeder, main.wh, sum(t.wh for t in under), main.minor)


@attrs.frozen
class Share:
    tenant: str
    weight: int
    minor: int
    wh: int
    """The energy this share stands for (the pool's energy split like its cost)."""


def split(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` in whole units by ``weights``, exactly (largest remainder; ties by order)."""
    if total < 0:
        raise ValueError(f"cannot share a negative amount {total}")
    weight_sum = sum(weights)
    if weight_sum <= 0 or any(weight < 0 for weight in weights):
        return [0] * len(weights)
    floors = [total * weight // weight_sum for weight in weights]
    remainders = [total * weight % weight_sum for weight in weights]
    left = total - sum(floors)
    order = sorted(range(len(weights)), key=lambda index: (-remainders[index], index))
    for index in order[:left]:
        floors[index] += 1
    return floors


def share(cost_minor: int, energy_wh: int, tenants: Sequence[str],
          weights: Sequence[int]) -> list[Share]:
    """Each tenant's share of a pool (see the module docstring); empty when no weight."""
    if len(tenants) != len(weights):
        raise ValueError(f"{len(tenants)} tenants for {len(weights)} weights")
    if sum(weights) <= 0 or cost_minor <= 0:
        return []
    money = split(cost_minor, weights)
    energy = split(max(energy_wh, 0), weights)
    return [Share(tenant, weight, minor, wh)
            for tenant, weight, minor, wh in zip(tenants, weights, money, energy, strict=True)]


def loss_ratio_exceeded(loss: FeederLoss, alarm_hundredths_percent: int,
                        min_main_wh: int = 1_000) -> bool:
    """Whether a loss is above its alarm threshold (``6.5 %`` -> 650), for a main meter that
    delivered at least ``min_main_wh`` (a quiet hour's noise is no evidence of theft)."""
    if alarm_hundredths_percent <= 0 or loss.main_wh < min_main_wh:
        return False
    return loss.loss_wh * 10_000 > alarm_hundredths_percent * loss.main_wh
