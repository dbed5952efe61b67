"""Building a changed copy of a ``MeterState`` without ``attrs.evolve``.

Theory of operation
-------------------
``MeterState`` is a slotted, non-frozen attrs class used as a value (see ``policies.records``):
nobody assigns to its attributes, a change is a new instance. ``attrs.evolve`` introspects the
class on every call (~11 µs here), so the hot path calls the constructor positionally and the
slower paths use :func:`replace_state`, which does the same with keyword "changes". ``None``
means "keep": no ``MeterState`` field is optional, so it cannot be confused with a value.
"""

from __future__ import annotations

from policies.records import AlarmState, CreditState, MeterState, ProtectionState, RelayState


def replace_state(
    s: MeterState,
    *,
    balance: int | None = None,
    residue: int | None = None,
    register_wh: int | None = None,
    reading_ms: int | None = None,
    reading_mono_ms: int | None = None,
    power_w: float | None = None,
    month: int | None = None,
    month_wh: int | None = None,
    bucket_start_ms: int | None = None,
    bucket_wh: int | None = None,
    bucket_minor: int | None = None,
    journal_seq: int | None = None,
    online: bool | None = None,
    relay: RelayState | None = None,
    protection: ProtectionState | None = None,
    credit: CreditState | None = None,
    alarms: AlarmState | None = None,
    month_minor: int | None = None,
) -> MeterState:
    """A new ``MeterState`` equal to ``s`` except for the fields given."""
    return MeterState(
        s.balance if balance is None else balance,
        s.residue if residue is None else residue,
        s.register_wh if register_wh is None else register_wh,
        s.reading_ms if reading_ms is None else reading_ms,
        s.reading_mono_ms if reading_mono_ms is None else reading_mono_ms,
        s.power_w if power_w is None else power_w,
        s.month if month is None else month,
        s.month_wh if month_wh is None else month_wh,
        s.bucket_start_ms if bucket_start_ms is None else bucket_start_ms,
        s.bucket_wh if bucket_wh is None else bucket_wh,
        s.bucket_minor if bucket_minor is None else bucket_minor,
        s.journal_seq if journal_seq is None else journal_seq,
        s.online if online is None else online,
        s.relay if relay is None else relay,
        s.protection if protection is None else protection,
        s.credit if credit is None else credit,
        s.alarms if alarms is None else alarms,
        s.month_minor if month_minor is None else month_minor,
    )
