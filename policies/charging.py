"""Charging readings: cumulative import register -> energy delta -> money, and history buckets.

Theory of operation
-------------------
A meter reports its cumulative import register (Wh). The charge for a reading is the register
delta since the previous accepted reading, priced over the interval between the two readings
(``policies.tariff``) and turned into minor units with ``money.charge``, which carries the
sub-minor ``residue`` from one reading to the next. Hence the charged minor units over any
sequence of readings equal the floor of the exact cost of the whole, and the charged energy
equals the register change exactly.

Cases, in order:

* stale: the reading's control time is not after the last good reading's (a duplicate or a
  reordered poll) - ignored, state unchanged. Order is the control clock's (``mono_ms``), never
  the wall clock's, so a wall-clock step cannot make every later reading look stale;
* first reading (``reading_ms == NO_READING``) - baseline only, nothing charged (if its register
  is in range);
* implausible (``policies.plausibility``: out of range, backwards, or a bigger step than the
  meter could have made since the last good reading) - a latched tamper alarm naming the check,
  nothing charged, the baseline kept: the next plausible reading charges from it;
* otherwise the delta is charged, over the interval between the two readings' wall labels
  (the new one slewed if the wall clock stepped: ``plausibility.slewed_label``).

History: energy and money are also accumulated per bucket of ``policy.interval_ms`` aligned to
the epoch. When a reading reaches or passes the end of the current bucket, the delta is split
over bucket boundaries by time (the tariff's floor-of-cumulative rule, so the pieces sum
exactly), and an ``IntervalClosed`` is emitted for each finished bucket that had energy; the
minor units charged in the pieces add up to exactly what the balance lost. Each closed bucket
carries the name of its tariff band, so reports can give energy and money per band (peak,
flat, valley...); buckets never straddle a band because the config requires band boundaries
and the time zone's offsets to be whole multiples of the interval.

The common case - same bucket, one tariff segment, one tier - is a handful of comparisons, one
``money.charge`` and one positional ``MeterState`` construction.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies import alarms as alarm_rules
from policies import plausibility
from policies.meter_policy import MeterPolicy
from policies.money import charge
from policies.records import (
    NO_EFFECTS,
    NO_READING,
    Effect,
    IntervalClosed,
    MeterState,
    Reading,
)
from policies.state import replace_state
from policies.tariff import band_name_at, fast_price, month_at, price_interval

ChargeResult = tuple[MeterState, tuple[Effect, ...]]


def bucket_of(ts_ms: int, interval_ms: int) -> int:
    """Start of the history bucket containing ``ts_ms``."""
    return ts_ms - ts_ms % interval_ms


def closed_interval(policy: MeterPolicy, start_ms: int, wh: int, minor: int, register_wh: int,
                    balance: int) -> IntervalClosed:
    """The history record of a finished bucket, labelled with the band at its start (the park
    config refuses intervals that straddle a band boundary: ``tariff.interval_misalignment``),
    with the register and the balance at its end."""
    return IntervalClosed(start_ms, wh, minor, band_name_at(policy.tariff, start_ms),
                          register_wh, balance)


def charge_reading(state: MeterState, reading: Reading, policy: MeterPolicy) -> ChargeResult:
    """Apply one reading's register to the balance (see the module docstring)."""
    ts = reading.ts_ms
    mono = reading.mono_ms
    if mono < 0:
        mono = ts
    mono0 = state.reading_mono_ms
    if mono <= mono0:
        return state, NO_EFFECTS
    t0 = state.reading_ms
    r0 = state.register_wh
    if t0 == NO_READING or r0 == NO_READING:
        if not plausibility.register_in_range(reading.register_wh, policy):
            return implausible(state, reading.ts_ms, plausibility.REGISTER_OUT_OF_RANGE)
        return _baseline(state, reading.register_wh, ts, mono, reading.power_w, policy, ())
    elapsed = mono - mono0
    problem = plausibility.register_problem(r0, reading.register_wh, elapsed, policy)
    if problem is not None:
        return implausible(state, reading.ts_ms, problem)
    label = plausibility.slewed_label(t0, ts, elapsed)
    wh = reading.register_wh - r0
    bucket_start = state.bucket_start_ms
    if bucket_start >= 0 and label < bucket_start + policy.interval_ms:
        price = fast_price(policy.tariff, t0, label, state.month, state.month_wh, wh)
        if price >= 0:
            minor, residue = charge(wh, price, state.residue)
            return MeterState(
                state.balance - minor,
                residue,
                reading.register_wh,
                label,
                mono,
                reading.power_w,
                state.month,
                state.month_wh + wh,
                bucket_start,
                state.bucket_wh + wh,
                state.bucket_minor + minor,
                state.journal_seq,
                state.online,
                state.relay,
                state.protection,
                state.credit,
                state.alarms,
                state.month_minor + minor,
            ), NO_EFFECTS
    return charge_split(state, reading.register_wh, label, mono, reading.power_w, policy, wh)


def charge_split(
    state: MeterState,
    register_wh: int,
    label: int,
    mono: int,
    power_w: float,
    policy: MeterPolicy,
    wh: int,
) -> ChargeResult:
    """Charge ``wh`` over the labels ``state.reading_ms``..``label`` in pieces (tariff segments,
    history buckets), closing every finished bucket; ``register_wh``/``label``/``mono``
    become the new baseline."""
    interval = policy.interval_ms
    t0 = state.reading_ms
    current = state.bucket_start_ms
    if current < 0:
        current = bucket_of(t0, interval)
    next_boundary = bucket_of(current, interval) + interval
    cuts: Sequence[int] = range(next_boundary, label, interval) if next_boundary < label else ()
    priced = price_interval(policy.tariff, t0, label, wh, state.month, state.month_wh, cuts)

    effects: list[Effect] = []
    residue = state.residue
    total = 0
    bucket_wh = state.bucket_wh
    bucket_minor = state.bucket_minor
    register = state.register_wh  # where the register stood at the end of each piece
    month_minor = state.month_minor if priced.month == state.month else 0
    for piece in priced.pieces:
        start = bucket_of(piece.start_ms, interval)
        if start > current:
            if bucket_wh or bucket_minor:
                effects.append(closed_interval(policy, current, bucket_wh, bucket_minor,
                                               register, state.balance - total))
            current, bucket_wh, bucket_minor = start, 0, 0
        minor, residue = charge(piece.wh, piece.price, residue)
        total += minor
        if piece.month == priced.month:
            month_minor += minor
        register += piece.wh
        bucket_wh += piece.wh
        bucket_minor += minor
    last = bucket_of(label, interval)
    if last > current:
        if bucket_wh or bucket_minor:
            effects.append(closed_interval(policy, current, bucket_wh, bucket_minor,
                                           register, state.balance - total))
        current, bucket_wh, bucket_minor = last, 0, 0
    new = MeterState(
        state.balance - total,
        residue,
        register_wh,
        label,
        mono,
        power_w,
        priced.month,
        priced.month_wh,
        current,
        bucket_wh,
        bucket_minor,
        state.journal_seq,
        state.online,
        state.relay,
        state.protection,
        state.credit,
        state.alarms,
        month_minor,
    )
    return new, tuple(effects) if effects else NO_EFFECTS


def _baseline(
    state: MeterState,
    register_wh: int,
    label: int,
    mono: int,
    power_w: float,
    policy: MeterPolicy,
    effects: tuple[Effect, ...],
) -> ChargeResult:
    """Take the reading as the new baseline: nothing charged, time and buckets move on."""
    interval = policy.interval_ms
    if label < state.reading_ms:
        label = state.reading_ms  # labels never go backwards (bucket order)
    month = month_at(policy.tariff, label)
    month_wh = state.month_wh if month == state.month else 0
    current = state.bucket_start_ms
    bucket_wh, bucket_minor = state.bucket_wh, state.bucket_minor
    last = bucket_of(label, interval)
    if current < 0:
        current, bucket_wh, bucket_minor = last, 0, 0
    elif last > current:
        if bucket_wh or bucket_minor:
            effects = (*effects, closed_interval(policy, current, bucket_wh, bucket_minor,
                                                 state.register_wh, state.balance))
        current, bucket_wh, bucket_minor = last, 0, 0
    new = MeterState(
        state.balance,
        state.residue,
        register_wh,
        label,
        mono,
        power_w,
        month,
        month_wh,
        current,
        bucket_wh,
        bucket_minor,
        state.journal_seq,
        state.online,
        state.relay,
        state.protection,
        state.credit,
        state.alarms,
        state.month_minor if month == state.month else 0,
    )
    return new, effects


def implausible(state: MeterState, ts_ms: int, detail: str) -> ChargeResult:
    """A reading that cannot be charged: a latched tamper alarm (once per detail), nothing
    else changes; the baseline stays the last good reading."""
    alarms, raised = alarm_rules.raise_once(state.alarms, alarm_rules.TAMPER, ts_ms,
                                            detail=detail)
    if alarms is state.alarms:
        return state, NO_EFFECTS
    return replace_state(state, alarms=alarms), raised


def rebaseline(
    state: MeterState, register_wh: int, ts_ms: int, policy: MeterPolicy
) -> ChargeResult:
    """An operator's new register baseline (a replaced or reset meter): nothing charged; the
    time of the last good reading stays, so the next reading's allowance counts from it."""
    mono = state.reading_mono_ms if state.reading_mono_ms >= 0 else ts_ms
    label = state.reading_ms if state.reading_ms >= 0 else ts_ms
    return _baseline(state, register_wh, label, mono, state.power_w, policy, ())
