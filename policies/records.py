"""The records the pure core speaks: inputs a meter receives, its state, the effects it emits.

Conventions
-----------
* Money is ``int`` minor units; energy is ``int`` Wh; time is ``int`` milliseconds, always
  passed in by the caller (policies never read a clock). Two clocks reach the policies:
  ``ts_ms``, the wall clock (ms since the Unix epoch, UTC), which only *labels*: history
  buckets, tariff bands, friendly periods, alarm times; and ``mono_ms``, the park's control
  clock (monotonic, continued across restarts by the server), which *orders* readings and
  measures every delay: plausibility, overload, reclose, anti-chatter. A wall-clock step
  therefore moves labels, never a decision (``policies.charging`` slews labels back in line).
* Records are values. Most are ``@attrs.frozen``. The two records built once per reading,
  :class:`Reading` and :class:`MeterState`, are slotted ``@attrs.define`` classes *used as
  values*: frozen attrs pays ~0.2 µs per field in ``__init__`` (3.8 µs vs 0.67 µs for 20 fields
  measured on the 2-core target), which alone would cap the reading path below 100k/s.
  Nothing assigns to their attributes after construction; a property test checks that every
  policy leaves its input state untouched (see docs/decisions.md).
* Relay reasons and alarm kinds are the contract's words (CONTRACT.md section 3).
"""

from __future__ import annotations

from typing import Final

import attrs

# --- vocabulary -------------------------------------------------------------------------

RELAY_REASONS: Final = ("manual", "overload", "quota", "zero_balance", "offline")
"""Relay reasons, highest priority first (manual > overload > quota > balance)."""

ALARM_KINDS: Final = ("low_balance", "zero_balance", "quota", "overload", "offline", "tamper")
"""Alarm kinds, least to most severe for the meter's summary field (``alarm``)."""

ALARM_SEVERITY: Final = {kind: rank for rank, kind in enumerate(ALARM_KINDS, start=1)}


# --- inputs (messages a meter actor receives) --------------------------------------------
# Every input carries its wall label ``ts_ms`` and, from the server, its control-clock time
# ``mono_ms``; -1 there means "one clock only: use ts_ms" (tests, tools).


@attrs.define(slots=True, weakref_slot=False)
class Reading:
    """One poll of one meter, converted from registers at the Modbus edge.

    ``register_wh`` is the cumulative import register in Wh (an integer, so charging is exact).
    ``mono_ms`` is the control-clock time of the poll; ``NO_MONO`` (-1) means the caller has
    one clock only (tools, tests, replays) and ``ts_ms`` serves as both.
    """

    ts_ms: int
    register_wh: int
    power_w: float
    voltage_v: float = 0.0
    current_a: float = 0.0
    tamper: bool = False
    mono_ms: int = -1


@attrs.frozen
class TopUpApplied:
    """A top-up that is already durable in the journal (``seq``), to be applied once."""

    seq: int
    amount: int
    reference: str
    ts_ms: int
    mono_ms: int = -1


@attrs.frozen
class AdjustmentApplied:
    """A journaled signed correction by an admin (or an apportionment charge)."""

    seq: int
    amount: int
    reason: str
    ts_ms: int
    mono_ms: int = -1


@attrs.frozen
class SetManualRelay:
    """Operator command: ``action`` is "open" (cut with reason manual) or "auto".

    Operator commands are journaled (``seq`` > 0) like money, so a meter opened for maintenance
    stays open across a restart; ``seq`` 0 is an unjournaled command (tests, tools)."""

    action: str
    reason: str
    ts_ms: int
    mono_ms: int = -1
    seq: int = 0


@attrs.frozen
class ResetLockout:
    """Operator command: clear an overload lockout (journaled: ``seq``, as SetManualRelay)."""

    ts_ms: int
    mono_ms: int = -1
    seq: int = 0


@attrs.frozen
class AcknowledgeAlarm:
    """Operator command: the alarm was seen (journaled: ``seq``, as SetManualRelay)."""

    alarm_id: str
    ts_ms: int
    mono_ms: int = -1
    seq: int = 0


@attrs.frozen
class ReplaceMeter:
    """Journaled operator command: the physical meter was replaced (or its register reset).

    ``final_wh`` is the old meter's last register, charged from the last good reading when
    given (``NO_READING`` when unknown: the gap since the last good reading is then not
    charged); ``start_wh`` is the new meter's register, the baseline of the next delta."""

    seq: int
    start_wh: int
    final_wh: int
    reason: str
    ts_ms: int
    mono_ms: int = -1


@attrs.frozen
class QuotaSupply:
    """From the meter's quota group (``actors.quota``): its budget is spent (``blocked``) or
    has room again (an approved extension, a new month). Not journaled: the group decides it
    again from its members' month totals and its journaled approvals at every start."""

    blocked: bool
    ts_ms: int
    mono_ms: int = -1
    detail: str = ""


@attrs.frozen
class ConnectivityChanged:
    """From the bus actor: the unit stopped (or resumed) answering."""

    online: bool
    ts_ms: int
    detail: str = ""
    mono_ms: int = -1


@attrs.frozen
class CommFault:
    """From the bus: the unit answered with an exception or garbage (timeouts are the offline
    rule's business: ``ConnectivityChanged``). ``detail`` says what came back."""

    detail: str
    ts_ms: int
    mono_ms: int = -1


@attrs.frozen
class CommRestored:
    """From the bus: a good reading after a ``CommFault``."""

    ts_ms: int
    mono_ms: int = -1


@attrs.frozen
class RelayFeedback:
    """From the bus actor: the coil read back after a write (``closed`` as observed)."""

    closed: bool
    ts_ms: int
    mono_ms: int = -1


# --- state ------------------------------------------------------------------------------


@attrs.frozen
class ActiveAlarm:
    alarm_id: str
    kind: str
    level: int
    raised_ms: int
    acknowledged: bool = False
    detail: str = ""


@attrs.frozen
class RelayState:
    """What the meter wants its relay to be, and why.

    ``closed`` is the commanded position; ``reason`` is None when closed. ``manual_open`` and
    ``locked_out`` are sticky operator-facing conditions; ``switch_ms`` holds recent switching
    times for the anti-chatter limit; ``quota_open`` is set while the meter's quota group has
    spent its budget (``QuotaSupply``).
    """

    closed: bool = True
    reason: str | None = None
    manual_open: bool = False
    manual_reason: str = ""
    locked_out: bool = False
    switch_ms: tuple[int, ...] = ()
    quota_open: bool = False


@attrs.frozen
class ProtectionState:
    """Overload detection: since when power has been above the limit, and recent trips."""

    over_since_ms: int = -1
    trip_ms: tuple[int, ...] = ()


@attrs.frozen
class CreditState:
    """Emergency credit: taken once per debit episode, re-armed by a top-up."""

    emergency_in_use: bool = False
    emergency_available: bool = True
    debt: int = 0


@attrs.frozen
class AlarmState:
    """Active alarms and the low-balance level currently in force (0 = none)."""

    active: tuple[ActiveAlarm, ...] = ()
    low_level: int = 0
    next_number: int = 1


EMPTY_RELAY: Final = RelayState()
EMPTY_PROTECTION: Final = ProtectionState()
EMPTY_CREDIT: Final = CreditState()
EMPTY_ALARMS: Final = AlarmState()

NO_READING: Final = -1
NO_MONO: Final = -1


@attrs.define(slots=True, weakref_slot=False)
class MeterState:
    """Everything a meter remembers; rebuilt from snapshot + journal after a crash.

    ``register_wh``/``reading_ms`` are the baseline of the next delta (``NO_READING`` before
    the first accepted reading): the last *good* reading's register and wall label;
    ``reading_mono_ms`` is its control-clock time, from which the next reading's elapsed time
    (plausibility) is measured. ``residue`` is the sub-minor charge carry (money.py).
    ``journal_seq`` is the highest journal sequence number applied to this state.
    ``bucket_*`` accumulate the current interval (for history) until it closes.
    ``month``/``month_wh``/``month_minor`` are the local calendar month (``tariff.month_key``)
    of the last charge and the energy and money charged in it (tiers and quota groups).
    """

    balance: int
    residue: int = 0
    register_wh: int = NO_READING
    reading_ms: int = NO_READING
    reading_mono_ms: int = NO_READING
    power_w: float = 0.0
    month: int = 0
    month_wh: int = 0
    bucket_start_ms: int = NO_READING
    bucket_wh: int = 0
    bucket_minor: int = 0
    journal_seq: int = 0
    online: bool = True
    relay: RelayState = EMPTY_RELAY
    protection: ProtectionState = EMPTY_PROTECTION
    credit: CreditState = EMPTY_CREDIT
    alarms: AlarmState = EMPTY_ALARMS
    month_minor: int = 0

    @classmethod
    def opening(cls, balance: int) -> MeterState:
        return cls(balance=balance)


# --- effects (what a policy asks the world to do) ----------------------------------------


@attrs.frozen
class RelayCommand:
    """Switch the physical relay: ``closed`` True = supply connected."""

    closed: bool
    reason: str | None
    ts_ms: int


@attrs.frozen
class AlarmRaised:
    alarm_id: str
    kind: str
    level: int
    ts_ms: int
    detail: str = ""


@attrs.frozen
class AlarmCleared:
    alarm_id: str
    kind: str
    ts_ms: int


@attrs.frozen
class AlarmAcknowledged:
    alarm_id: str
    kind: str
    ts_ms: int


@attrs.frozen
class IntervalClosed:
    """One finished history interval of one meter: energy and money charged in it, and the
    tariff band it lies in (config keeps intervals from straddling a band boundary); and
    where the meter stood at its end: the import register and the balance after its charges
    (what a SCADA trend of ``EnergyKWh`` and ``Balance`` shows; -1 and 0 in records written
    before they were kept)."""

    start_ms: int
    wh: int
    minor: int
    band: str
    register_wh: int = -1
    balance: int = 0


@attrs.frozen
class CommandRejected:
    """An operator command the policy refused (e.g. ack of an unknown alarm)."""

    code: str
    message: str


Effect = (
    RelayCommand | AlarmRaised | AlarmCleared | AlarmAcknowledged | IntervalClosed | CommandRejected
)
NO_EFFECTS: Final[tuple[Effect, ...]] = ()
