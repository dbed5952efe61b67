"""Per-meter policy configuration: the parameters the pure rules are applied with.

Built once from the park config (``server.config``) and shared, never mutated. Meters with the
same parameters may share one instance, which keeps memory per meter small.
"""

from __future__ import annotations

import math
from typing import Final

import attrs

from policies.tariff_records import Tariff


@attrs.frozen
class FriendlyPeriod:
    """Local-time window in which a zero balance does not cut supply (no cut-offs at night).

    ``start_min``/``end_min`` are minutes of the local day; a window may wrap midnight
    (22:00-06:00). ``on_holidays``/``on_weekends`` make whole such days friendly.
    """

    start_min: int = 0
    end_min: int = 0
    on_holidays: bool = False
    on_weekends: bool = False


@attrs.frozen
class MeterPolicy:
    """Everything the policies need to know about one meter besides its state.

    Money in minor units, time in ms, power in W.

    * ``alarm_levels``: low-balance thresholds, highest first (level 1 = the highest one);
      an alarm level clears only when the balance rises ``alarm_hysteresis`` above it.
    * ``emergency_credit``: how far below zero a tenant may go once before cut-off.
    * ``debt_recovery_percent``: share of each top-up taken to repay emergency debt.
    * after an overload trip the relay recloses by itself ``overload_reclose_ms`` later, unless
      ``lockout_trips`` trips within ``lockout_window_ms`` locked it open until an operator
      resets it.
    * anti-chatter: at most ``max_switches`` automatic relay switches per
      ``switch_window_ms``; past that, automatic closing waits (opening for safety never waits).
    * ``interval_ms``: length of a history interval (15 minutes by default).
    * plausibility (``policies.plausibility``): ``max_power_w`` is the most the meter can
      physically deliver (W; for water and gas the flow in L/h), from its profile or the
      meter's config; ``max_register_wh`` the largest value its register can show. A register
      step beyond ``max_power_w`` x the elapsed control time (with a margin), a register out of
      range or going backwards, and a power beyond ``max_power_w`` x a margin are not charged
      or acted on. ``inf`` (the default for policies built by hand) bounds nothing.
    """

    tariff: Tariff
    overload_w: float = 0.0
    overload_delay_ms: int = 2000
    overload_reclose_ms: int = 60_000
    alarm_levels: tuple[int, ...] = ()
    alarm_hysteresis: int = 100
    emergency_credit: int = 0
    friendly: tuple[FriendlyPeriod, ...] = ()
    debt_recovery_percent: int = 0
    lockout_trips: int = 3
    lockout_window_ms: int = 3_600_000
    max_switches: int = 6
    switch_window_ms: int = 60_000
    offline_opens_relay: bool = False
    interval_ms: int = 900_000
    decimals: int = 2
    max_power_w: float = math.inf
    max_register_wh: int = 10**15
    # Derived once for the reading hot path (``policies.meter.quiet_reading``): a balance above
    # ``quiet_balance`` is above every alarm level and zero; power up to ``quiet_power_w`` can
    # not start an overload (infinite when overload protection is off).
    quiet_balance: int = attrs.field(
        init=False, eq=False, repr=False,
        default=attrs.Factory(lambda self: max((0, *self.alarm_levels)), takes_self=True))
    # Power beyond +/- ``power_ceiling_w`` is noise (``policies.plausibility``).
    power_ceiling_w: float = attrs.field(
        init=False, eq=False, repr=False,
        default=attrs.Factory(lambda self: self.max_power_w * POWER_MARGIN, takes_self=True))
    quiet_power_floor_w: float = attrs.field(
        init=False, eq=False, repr=False,
        default=attrs.Factory(lambda self: -self.power_ceiling_w, takes_self=True))
    quiet_power_w: float = attrs.field(
        init=False, eq=False, repr=False,
        default=attrs.Factory(
            lambda self: min(self.overload_w if self.overload_w > 0 else math.inf,
                             self.power_ceiling_w), takes_self=True))
    # Wh a register may advance per ms of control time, margin included (plausibility), and
    # the step any elapsed time allows (the slack alone): the quiet path's first test.
    step_wh_per_ms: float = attrs.field(
        init=False, eq=False, repr=False,
        default=attrs.Factory(
            lambda self: self.max_power_w * STEP_MARGIN / 3_600_000, takes_self=True))
    quiet_step_wh: float = attrs.field(
        init=False, eq=False, repr=False,
        default=attrs.Factory(lambda self: STEP_SLACK_MS * self.step_wh_per_ms,
                              takes_self=True))


STEP_SLACK_MS: Final = 1_000
"""Added to the elapsed time of a step: a poll is stamped when its reply is handled, so one
reply delayed in a queue makes the next interval look shorter than it was."""
STEP_MARGIN: Final = 1.25
"""A register step may be 25 % above ``max_power_w`` x elapsed: rated maxima are nominal."""
POWER_MARGIN: Final = 1.5
"""A power reading up to 50 % above ``max_power_w`` is a (faulty) load, beyond it noise."""
