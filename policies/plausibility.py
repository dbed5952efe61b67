"""Is a value from the field physically possible? Checked before anything is charged or tripped.

Theory of operation
-------------------
A reading comes from a register that a bit error, a misaligned read or a swapped meter can turn
into any finite number (3e38 kWh is a valid float32). Charging such a value moves real money,
and storing it can overflow the journal's integers, so every reading is judged against what the
meter could physically have done since the last *good* reading (``MeterState.register_wh`` at
``reading_mono_ms``), measured on the control clock (never the wall clock, which can step):

* the register must lie in ``0 .. policy.max_register_wh`` (the profile's range);
* it must not go backwards (a meter that was replaced or reset is an operator's
  ``ReplaceMeter``, not a silent new baseline);
* it may advance at most ``max_power_w`` x (elapsed + ``STEP_SLACK_MS``) x ``STEP_MARGIN``,
  plus the register's own resolution (a float32 kWh register near 10^7 kWh moves in 1 kWh
  quanta). The slack covers reply timestamps: a poll is stamped when its reply is handled, so
  one reply delayed in a queue makes the next interval look shorter than it was.

A reading that fails is not charged and does not move the baseline; the caller raises a
latched ``tamper`` alarm naming the check. Because the allowance grows with the time since the
last good reading, the next plausible reading charges everything consumed since then, once.

Power gets the same treatment for protection: beyond ``max_power_w`` x
``meter_policy.POWER_MARGIN`` (either
sign) a value is noise, neither an overload nor the end of one; a plausible value above the
overload limit still has to be sustained for the overload delay (``policies.protection``).

Labels. The wall clock only labels a reading (tariff band, history bucket). A label is taken
as it comes while it moves with the control clock; when the wall clock has stepped (forward,
back, or a reading stamped in the future), the label is slewed: it advances by the elapsed
control time +/- ``LABEL_SLEW`` of it, towards the wall clock, so labels never go backwards,
never jump, and converge on the wall clock again after a step (a 1 h step in ~10 h of polls).
"""

from __future__ import annotations

from typing import Final

from policies.meter_policy import STEP_SLACK_MS, MeterPolicy

LABEL_SLEW_DIVISOR: Final = 10
"""Labels may run up to 1/10 faster or slower than the control clock while catching up."""
LABEL_JITTER_MS: Final = 2
"""The wall and control clocks are read a few µs apart and rounded to whole ms each."""

REGISTER_OUT_OF_RANGE: Final = "register_out_of_range"
REGISTER_ROLLBACK: Final = "register_rollback"
IMPLAUSIBLE_REGISTER: Final = "implausible_register"
IMPLAUSIBLE_POWER: Final = "implausible_power"
REGISTER_DETAILS: Final = frozenset({REGISTER_OUT_OF_RANGE, REGISTER_ROLLBACK,
                                     IMPLAUSIBLE_REGISTER})
"""Tamper details an operator's ``ReplaceMeter`` resolves."""


def register_in_range(register_wh: int, policy: MeterPolicy) -> bool:
    return 0 <= register_wh <= policy.max_register_wh


def register_resolution_wh(register_wh: int) -> int:
    """At least two float32 ulps of a kWh register at this magnitude, in Wh (>= 1).

    A float32 has a 24-bit mantissa, so its ulp is ~2^-23 of the value; ``>> 22`` is two of
    them. Integer Wh registers are finer than this, so the slack only ever loosens their bound
    by a few parts in ten million."""
    return (register_wh >> 22) + 1


def step_allowance_wh(elapsed_ms: int, register_wh: int, policy: MeterPolicy) -> float:
    """The largest register step a meter can make in ``elapsed_ms`` of control time."""
    return (elapsed_ms + STEP_SLACK_MS) * policy.step_wh_per_ms + register_resolution_wh(
        register_wh)


def register_problem(
    last_wh: int, register_wh: int, elapsed_ms: int, policy: MeterPolicy
) -> str | None:
    """Why ``register_wh`` cannot follow the good reading ``last_wh`` taken ``elapsed_ms``
    earlier (a tamper detail), or None if it can."""
    if not register_in_range(register_wh, policy):
        return REGISTER_OUT_OF_RANGE
    step = register_wh - last_wh
    if step < 0:
        return REGISTER_ROLLBACK
    if step > step_allowance_wh(elapsed_ms, register_wh, policy):
        return IMPLAUSIBLE_REGISTER
    return None


def power_plausible(power_w: float, policy: MeterPolicy) -> bool:
    """Within +/- ``max_power_w`` x ``meter_policy.POWER_MARGIN``."""
    return -policy.power_ceiling_w <= power_w <= policy.power_ceiling_w


def slewed_label(last_label_ms: int, label_ms: int, elapsed_ms: int) -> int:
    """The wall label to use for a reading ``elapsed_ms`` (> 0) of control time after the one
    labelled ``last_label_ms``: ``label_ms`` itself while the clocks agree, else slewed
    towards it (see the module docstring). Always > ``last_label_ms``."""
    slew = elapsed_ms // LABEL_SLEW_DIVISOR + LABEL_JITTER_MS
    low = last_label_ms + max(1, elapsed_ms - slew)
    high = last_label_ms + elapsed_ms + slew
    if label_ms < low:
        return low
    if label_ms > high:
        return high
    return label_ms
