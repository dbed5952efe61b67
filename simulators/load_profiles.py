"""Deterministic synthetic load: power as a pure function of (seed, meter index, time).

Theory of operation
-------------------
A simulated park has thousands of meters that are polled about once a second. Anything that
keeps per-meter state between polls (random walks, timers) costs memory and CPU for every
meter all the time, and makes a run depend on *when* it was polled. Here the load is instead a
pure function ``load_w(seed, index, t_s, rated_w)``: the same arguments always give the same
watts, in any process, in any order, so a meter costs nothing between polls and a run can be
replayed exactly (tests, bug reports, "what did meter 17 draw at 14:00:05").

The shape is a sum of simple deterministic parts:

* an **archetype** chosen by hashing (seed, index): two-shift factory (heavy 06-14 and 14-22,
  idle nights), three-shift (24 h at a near-constant level with shift changes), workshop
  (08-18 with a lunch dip), canteen/dormitory (meal and evening peaks), always-on (pumps,
  servers, refrigeration);
* **weekends** lower for the day-work archetypes;
* **start-up spikes** at the start of every shift: motor inrush and compressors starting in
  turn, up to ``SPIKE_FACTOR`` x the running level, decaying over ``SPIKE_S`` seconds; they
  stay below ``1.2 x rated_w`` so a sensibly rated meter does not trip on them;
* **noise**: value noise (a hash per 10 s knot, linear interpolation between knots) of a few
  percent, so curves look like measurements, not staircases, and the integral is smooth.

Water and gas meters (:func:`water_fraction`, :func:`gas_fraction`; :data:`LOAD_CURVES` picks
by meter kind) draw differently from machines, as the same kind of pure function:

* **water** comes in short **bursts** (a tap, a shower, a cistern filling): each minute of
  local time holds at most one draw, with a chance that follows the hour of day (morning and
  evening peaks, dead nights), lasting 5-55 s at 30-90 % of the rated flow;
* **gas** heating **cycles** on and off: each meter has its own cycle of 10-20 minutes whose
  on-share follows the hour (mornings and evenings) and the season (winter months heat, summer
  months only warm water), burning at 70-90 % of the rated flow while on.

Hashing is a 64-bit integer mix (splitmix64 finaliser) of the inputs: a few multiplications,
no ``random.Random`` objects. Time is seconds (float) of a simulated clock, interpreted as
seconds since the Unix epoch in UTC plus ``utc_offset_s`` for the time of day (a park in
Asia/Shanghai passes 8 h).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Final

__all__ = [
    "ARCHETYPES",
    "LOAD_CURVES",
    "archetype_of",
    "gas_fraction",
    "hash01",
    "load_fraction",
    "load_w",
    "water_fraction",
]

DAY_S: Final = 86_400
HOUR_S: Final = 3_600
WEEK_S: Final = 7 * DAY_S
NOISE_KNOT_S: Final = 10.0
NOISE_AMPLITUDE: Final = 0.04
SPIKE_S: Final = 20.0
SPIKE_FACTOR: Final = 0.5
"""At a shift start the load is up to (1 + SPIKE_FACTOR) x the running level, decaying."""
MAX_FRACTION: Final = 1.2
"""Load never exceeds this fraction of ``rated_w`` (spikes included)."""

ARCHETYPES: Final = ("two_shift", "three_shift", "workshop", "canteen", "always_on")

_MASK: Final = (1 << 64) - 1

# Hourly base levels (fraction of rated) for each archetype, hour 0..23, weekdays.
_LEVELS: Final[dict[str, tuple[float, ...]]] = {
    # 06-14 and 14-22 heavy (second shift a bit lighter), idle nights.
    "two_shift": (0.05,) * 6 + (0.75,) * 8 + (0.65,) * 8 + (0.05,) * 2,
    # Around the clock, night shift lighter.
    "three_shift": (0.55,) * 6 + (0.8,) * 8 + (0.75,) * 8 + (0.55,) * 2,
    # Day work with a lunch dip.
    "workshop": (0.03,) * 8 + (0.6,) * 4 + (0.25,) + (0.6,) * 5 + (0.1,) * 2 + (0.03,) * 4,
    # Meals (06-08, 11-13, 17-19) and an evening peak (19-22: dormitories).
    "canteen": (0.1,) * 6
    + (0.7,) * 2
    + (0.2,) * 3
    + (0.9,) * 2
    + (0.2,) * 4
    + (0.8,) * 2
    + (0.6,) * 3
    + (0.15,) * 2,
    # Pumps, servers, refrigeration.
    "always_on": (0.5,) * 24,
}

_WEEKEND: Final = {
    "two_shift": 0.3,
    "three_shift": 0.8,
    "workshop": 0.1,
    "canteen": 0.6,
    "always_on": 1.0,
}

# Shift starts (hour of day) where start-up spikes happen.
_SHIFT_STARTS: Final[dict[str, tuple[int, ...]]] = {
    "two_shift": (6, 14),
    "three_shift": (6, 14, 22),
    "workshop": (8, 13),
    "canteen": (6, 11, 17),
    "always_on": (),
}


def _mix(value: int) -> int:
    """splitmix64 finaliser: a well-spread 64-bit hash of a 64-bit integer."""
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & _MASK
    return value ^ (value >> 31)


def hash01(seed: int, index: int, salt: int) -> float:
    """A uniform float in [0, 1) that depends only on its arguments."""
    key = (seed * 0x9E3779B97F4A7C15 + index * 0xC2B2AE3D27D4EB4F + salt) & _MASK
    return _mix(key) / 18446744073709551616.0


def archetype_of(seed: int, index: int) -> str:
    """The meter's load archetype (two-shift factories are the most common)."""
    draw = hash01(seed, index, 1)
    if draw < 0.4:
        return "two_shift"
    if draw < 0.55:
        return "three_shift"
    if draw < 0.8:
        return "workshop"
    if draw < 0.9:
        return "canteen"
    return "always_on"


def _noise(seed: int, index: int, t_s: float) -> float:
    """Value noise in [-1, 1): hashed knots every NOISE_KNOT_S, linearly interpolated."""
    position = t_s / NOISE_KNOT_S
    knot = math.floor(position)
    frac = position - knot
    a = hash01(seed, index, 1_000_003 + knot)
    b = hash01(seed, index, 1_000_004 + knot)
    return 2.0 * (a + (b - a) * frac) - 1.0


def load_fraction(seed: int, index: int, t_s: float, utc_offset_s: int = 0) -> float:
    """Load as a fraction of rated power, in [0, MAX_FRACTION]."""
    kind = archetype_of(seed, index)
    local = t_s + utc_offset_s
    # Each meter's shift clock is offset by up to 5 minutes so a park does not start in unison.
    local -= 300.0 * hash01(seed, index, 2)
    second_of_day = local % DAY_S
    hour = int(second_of_day // HOUR_S)
    level = _LEVELS[kind][hour]
    # 1970-01-01 was a Thursday: day 0 -> weekday 3 (Mon = 0); Saturday = 5, Sunday = 6.
    weekday = (int(local // DAY_S) + 3) % 7
    if weekday >= 5:
        level *= _WEEKEND[kind]
    # Per-meter scale (machines differ in size within their rating).
    level *= 0.7 + 0.3 * hash01(seed, index, 3)
    for start in _SHIFT_STARTS[kind]:
        since = second_of_day - start * HOUR_S
        if 0.0 <= since < SPIKE_S:
            level *= 1.0 + SPIKE_FACTOR * (1.0 - since / SPIKE_S)
            break
    level *= 1.0 + NOISE_AMPLITUDE * _noise(seed, index, local)
    return min(max(level, 0.0), MAX_FRACTION)


def load_w(seed: int, index: int, t_s: float, rated_w: float, utc_offset_s: int = 0) -> float:
    """Active power in W of meter ``index`` at simulated time ``t_s`` (pure; module docstring)."""
    return rated_w * load_fraction(seed, index, t_s, utc_offset_s)


# --- water and gas ----------------------------------------------------------------------------

DRAW_SLOT_S: Final = 60.0
"""A water meter has at most one draw per minute of local time."""

# Chance that a minute holds a draw, hour 0..23: washing in the morning, meals, evenings.
_WATER_DRAWS: Final = (
    (0.01,) * 5 + (0.15, 0.5, 0.6, 0.3) + (0.2,) * 2 + (0.35, 0.3) + (0.15,) * 4
    + (0.3, 0.45, 0.55, 0.5, 0.35) + (0.1, 0.03)
)
# Heating on-share of the cycle, hour 0..23, in a winter month.
_GAS_DUTY: Final = (0.25,) * 5 + (0.6, 0.85, 0.8) + (0.45,) * 9 + (0.7, 0.8, 0.8, 0.7, 0.6) \
    + (0.35, 0.3)
# Share of the winter heating by month (January first): summer only warms water.
_GAS_SEASON: Final = (1.0, 0.95, 0.75, 0.5, 0.25, 0.1, 0.08, 0.08, 0.2, 0.45, 0.75, 0.95)


def water_fraction(seed: int, index: int, t_s: float, utc_offset_s: int = 0) -> float:
    """Water flow as a fraction of the rated flow: short draws (module docstring)."""
    local = t_s + utc_offset_s
    slot = math.floor(local / DRAW_SLOT_S)
    hour = int(local % DAY_S // HOUR_S)
    if hash01(seed, index, 2_000_003 + slot) >= _WATER_DRAWS[hour]:
        return 0.0
    length = 5.0 + 50.0 * hash01(seed, index, 3_000_017 + slot)
    start = (DRAW_SLOT_S - length) * hash01(seed, index, 4_000_037 + slot)
    if not start <= local - slot * DRAW_SLOT_S < start + length:
        return 0.0
    return 0.3 + 0.6 * hash01(seed, index, 5_000_011 + slot)


def gas_fraction(seed: int, index: int, t_s: float, utc_offset_s: int = 0) -> float:
    """Gas flow as a fraction of the rated flow: a heating cycle (module docstring)."""
    local = t_s + utc_offset_s
    hour = int(local % DAY_S // HOUR_S)
    # Every meter its own cycle length and offset, so a park's heaters do not fire in unison.
    cycle_s = 600.0 + 600.0 * hash01(seed, index, 6_000_001)
    position = (local + cycle_s * hash01(seed, index, 6_000_002)) % cycle_s
    month = dt.datetime.fromtimestamp(local, dt.UTC).month
    duty = _GAS_DUTY[hour] * _GAS_SEASON[month - 1]
    if position >= duty * cycle_s:
        return 0.0
    return (0.7 + 0.2 * hash01(seed, index, 6_000_003)) * (
        1.0 + NOISE_AMPLITUDE * _noise(seed, index, local))


LOAD_CURVES: Final = {
    "electricity": load_fraction,
    "water": water_fraction,
    "gas": gas_fraction,
}
"""Meter kind -> its load curve ``(seed, index, t_s, utc_offset_s) -> fraction of rated``."""
