"""The checks that make a decoded record usable (``persistence.damage``)."""

from __future__ import annotations

import math

import attrs
import pytest

from persistence.codec import CodecError, encode_state
from persistence.damage import _INT_FIELDS, checked_state, entry_problem, state_problem
from persistence.entries import JournalEntry
from policies.records import (
    ActiveAlarm,
    AlarmState,
    CreditState,
    MeterState,
    ProtectionState,
    RelayState,
)

FULL = MeterState(
    balance=12_345, residue=17, register_wh=5_000, reading_ms=1_790_000_000_000,
    reading_mono_ms=99, power_w=123.5, month=202611, month_wh=40, bucket_start_ms=1_789_999_100_000,
    bucket_wh=3, bucket_minor=2, journal_seq=8, online=False,
    relay=RelayState(False, "zero_balance", False, "", False, (1, 2)),
    protection=ProtectionState(4, (5,)), credit=CreditState(True, False, 300),
    alarms=AlarmState((ActiveAlarm("7", "low_balance", 1, 9),), 1, 8),
)


def test_every_integer_field_of_a_state_is_checked() -> None:
    ints = {field.name for field in attrs.fields(MeterState) if field.type in ("int", int)}
    assert set(_INT_FIELDS) == ints


def test_a_usable_state_passes_and_round_trips() -> None:
    assert state_problem(FULL) is None and state_problem(MeterState.opening(0)) is None
    assert checked_state(encode_state(FULL)) == FULL


@pytest.mark.parametrize(("change", "problem"), [
    ({"balance": "1.00"}, "balance is '1.00', not a 64-bit integer"),
    ({"balance": 1.0}, "balance is 1.0, not a 64-bit integer"),
    ({"register_wh": True}, "register_wh is True, not a 64-bit integer"),
    ({"reading_mono_ms": 2**63}, "reading_mono_ms is 9223372036854775808, not a 64-bit integer"),
    ({"journal_seq": -1}, "journal_seq is -1"),
    ({"power_w": math.inf}, "power_w is inf, not a finite number"),
    ({"online": 1}, "online is 1, not a boolean"),
    ({"relay": RelayState(closed="yes")}, "relay state"),
    ({"protection": ProtectionState(trip_ms=("x",))}, "protection state"),
    ({"credit": CreditState(debt=2**64 - 1)}, "credit state"),
    ({"alarms": AlarmState((ActiveAlarm("1", "tamper", "high", 0),))}, "alarm state"),
])
def test_impossible_values_are_named(change: dict[str, object], problem: str) -> None:
    found = state_problem(attrs.evolve(FULL, **change))  # type: ignore[arg-type]
    assert found is not None and found.startswith(problem)
    with pytest.raises(CodecError, match=r"^not a usable meter state: "):
        checked_state(encode_state(attrs.evolve(FULL, **change)))  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["amount", "ts_ms", "start_wh", "final_wh", "mono_ms"])
def test_every_integer_field_of_an_entry_is_checked(field: str) -> None:
    entry = JournalEntry("replace_meter", "M-1", 0, "swap-1", 1_790_000_000_000, "swap",
                         start_wh=7, final_wh=5, mono_ms=9)
    assert entry_problem(entry) is None
    bad = attrs.evolve(entry, **{field: 2**64})
    assert entry_problem(bad) == f"{field} {2**64} is not a 64-bit integer"
