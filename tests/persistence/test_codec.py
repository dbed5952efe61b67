"""Encodings of meter states and journal entries, and the key layout."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persistence.codec import (
    ENTRY_FORMAT,
    STATE_FORMAT,
    CodecError,
    decode_entry,
    decode_interval,
    decode_outcome,
    decode_state,
    encode_entry,
    encode_interval,
    encode_outcome,
    encode_state,
)
from persistence.entries import KINDS, JournalEntry, ReferenceConflict, conflict_message, to_message
from persistence.keys import (
    MAX_KEY_BYTES,
    check_meter_id,
    check_reference,
    meter_key,
    meter_prefix,
    pack_u64,
    split_meter_key,
    unpack_u64,
)
from policies.records import (
    ALARM_KINDS,
    EMPTY_ALARMS,
    EMPTY_CREDIT,
    EMPTY_PROTECTION,
    EMPTY_RELAY,
    RELAY_REASONS,
    ActiveAlarm,
    AdjustmentApplied,
    AlarmState,
    CreditState,
    MeterState,
    ProtectionState,
    RelayState,
    TopUpApplied,
)

# msgpack stores integers up to 64 bits; money and registers are far inside that.
i64 = st.integers(-(2**63), 2**63 - 1)
u32 = st.integers(0, 2**32 - 1)
ms = st.integers(-1, 2**50)
small_ms = st.lists(st.integers(0, 2**50), max_size=5).map(tuple)

relays = st.builds(
    RelayState,
    closed=st.booleans(),
    reason=st.none() | st.sampled_from(RELAY_REASONS),
    manual_open=st.booleans(),
    manual_reason=st.text(max_size=20),
    locked_out=st.booleans(),
    switch_ms=small_ms,
)
protections = st.builds(ProtectionState, over_since_ms=ms, trip_ms=small_ms)
credits = st.builds(
    CreditState, emergency_in_use=st.booleans(), emergency_available=st.booleans(), debt=i64
)
active_alarms = st.builds(
    ActiveAlarm,
    alarm_id=st.text(min_size=1, max_size=20),
    kind=st.sampled_from(ALARM_KINDS),
    level=st.integers(0, 5),
    raised_ms=ms,
    acknowledged=st.booleans(),
    detail=st.text(max_size=30),
)
alarm_states = st.builds(
    AlarmState,
    active=st.lists(active_alarms, max_size=4).map(tuple),
    low_level=st.integers(0, 5),
    next_number=st.integers(1, 2**31),
)
states = st.builds(
    MeterState,
    balance=i64,
    residue=st.integers(0, 10**6 - 1),
    register_wh=st.integers(-1, 2**53),
    reading_ms=ms,
    power_w=st.floats(allow_nan=False),
    month=st.integers(0, 300_000),
    month_wh=u32,
    bucket_start_ms=ms,
    bucket_wh=u32,
    bucket_minor=i64,
    journal_seq=st.integers(0, 2**63 - 1),
    online=st.booleans(),
    # Defaults are stored as nil: draw them often, and from equal-but-distinct instances too.
    relay=st.sampled_from([EMPTY_RELAY, RelayState()]) | relays,
    protection=st.sampled_from([EMPTY_PROTECTION, ProtectionState()]) | protections,
    credit=st.sampled_from([EMPTY_CREDIT, CreditState()]) | credits,
    alarms=st.sampled_from([EMPTY_ALARMS, AlarmState()]) | alarm_states,
)
entries = st.builds(
    JournalEntry,
    kind=st.sampled_from(sorted(KINDS)),
    meter_id=st.text(min_size=1, max_size=30),
    amount=i64,
    reference=st.text(min_size=1, max_size=60),
    ts_ms=st.integers(0, 2**53),
    detail=st.text(max_size=40),
)


# --- meter states -----------------------------------------------------------------------------


@given(states)
def test_state_round_trips(state: MeterState) -> None:
    decoded = decode_state(encode_state(state))
    assert decoded == state
    # Frozen sub-records hold tuples; a list would compare unequal and break sharing.
    assert type(decoded.relay.switch_ms) is tuple
    assert type(decoded.protection.trip_ms) is tuple
    assert type(decoded.alarms.active) is tuple


def test_default_sub_records_decode_to_the_shared_constants() -> None:
    state = MeterState.opening(10_000)
    decoded = decode_state(encode_state(state))
    assert decoded == state
    assert decoded.relay is EMPTY_RELAY
    assert decoded.protection is EMPTY_PROTECTION
    assert decoded.credit is EMPTY_CREDIT
    assert decoded.alarms is EMPTY_ALARMS


def test_equal_sub_records_are_shared_between_decoded_states() -> None:
    cut = RelayState(closed=False, reason="zero_balance", switch_ms=(1, 2))
    alarms = AlarmState((ActiveAlarm("M-1/1", "zero_balance", 0, 5),), 2, 2)
    first = decode_state(encode_state(MeterState(balance=0, relay=cut, alarms=alarms)))
    second = decode_state(encode_state(MeterState(balance=-5, relay=cut, alarms=alarms)))
    assert first.relay == cut
    assert first.relay is second.relay
    assert first.alarms is second.alarms


@settings(max_examples=50)
@given(states, st.data())
def test_truncated_state_is_a_codec_error(state: MeterState, data: st.DataObject) -> None:
    encoded = encode_state(state)
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(CodecError, match="not a meter state snapshot"):
        decode_state(encoded[:cut])


def test_unknown_state_format_is_refused_by_name() -> None:
    fields = list(msgpack.unpackb(encode_state(MeterState.opening(1))))
    fields[0] = STATE_FORMAT + 1
    with pytest.raises(CodecError, match=f"meter state format {STATE_FORMAT + 1} is not readable"):
        decode_state(msgpack.packb(fields))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in msgpack
        msgpack.packb(None),
        msgpack.packb(1),
        msgpack.packb({1: 1}),  # a map decodes to a dict: indexing it must not leak KeyError
        msgpack.packb([STATE_FORMAT, 1, 2]),
        encode_state(MeterState.opening(1)) + b"\x00",  # trailing bytes
        encode_entry(JournalEntry("topup", "M-1", 1, "r", 0)),  # an entry is not a state
    ],
)
def test_garbage_is_not_a_state(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_state(data)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode_state(data)
    with contextlib.suppress(CodecError):
        decode_entry(data)


# --- journal entries --------------------------------------------------------------------------


@given(entries)
def test_entry_round_trips(entry: JournalEntry) -> None:
    assert decode_entry(encode_entry(entry)) == entry


@settings(max_examples=50)
@given(entries, st.data())
def test_truncated_entry_is_a_codec_error(entry: JournalEntry, data: st.DataObject) -> None:
    encoded = encode_entry(entry)
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(CodecError, match="not a journal entry"):
        decode_entry(encoded[:cut])


def test_unknown_entry_format_is_refused_by_name() -> None:
    data = msgpack.packb([ENTRY_FORMAT + 1, "topup", "M-1", 1, "r", 0, ""])
    with pytest.raises(CodecError, match=f"journal entry format {ENTRY_FORMAT + 1}"):
        decode_entry(data)


@pytest.mark.parametrize(
    "data", [b"", msgpack.packb({0: 1}), encode_state(MeterState.opening(1))]
)
def test_garbage_is_not_an_entry(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_entry(data)


@given(i64, u32, i64)
def test_outcomes_and_intervals_round_trip(outcome: int, wh: int, minor: int) -> None:
    assert decode_outcome(encode_outcome(outcome)) == outcome
    assert decode_interval(encode_interval(wh, minor, "peak")) == (wh, minor, "peak")


def test_garbage_is_not_an_outcome() -> None:
    with pytest.raises(CodecError, match="not a stored outcome"):
        decode_outcome(msgpack.packb("12.50"))


# --- what an entry means to a meter -----------------------------------------------------------


def test_to_message_turns_a_topup_into_top_up_applied() -> None:
    entry = JournalEntry("topup", "M-1", 500, "ref-1", 1_000)
    assert to_message(7, entry) == TopUpApplied(7, 500, "ref-1", 1_000)


@pytest.mark.parametrize(
    ("kind", "detail", "reason"),
    [("adjustment", "arrears", "arrears"), ("apportionment", "", "apportionment"),
     ("quota_approval", "line 3", "line 3")],
)
def test_to_message_turns_other_kinds_into_adjustments(kind: str, detail: str, reason: str) -> None:
    entry = JournalEntry(kind, "M-1", -250, "ref-2", 2_000, detail)
    assert to_message(8, entry) == AdjustmentApplied(8, -250, reason, 2_000)


def test_conflicts_ignore_time_and_detail_but_not_money() -> None:
    first = JournalEntry("topup", "M-1", 500, "r", 1, "a")
    assert not first.conflicts_with(JournalEntry("topup", "M-1", 500, "r", 99, "b"))
    assert first.conflicts_with(JournalEntry("topup", "M-1", 501, "r", 1, "a"))
    assert first.conflicts_with(JournalEntry("topup", "M-2", 500, "r", 1, "a"))
    assert first.conflicts_with(JournalEntry("adjustment", "M-1", 500, "r", 1, "a"))
    message = conflict_message(first, JournalEntry("topup", "M-2", 700, "r", 1))
    assert "'r'" in message and "M-1" in message and "M-2" in message and "700" in message
    assert issubclass(ReferenceConflict, ValueError)


# --- keys -------------------------------------------------------------------------------------


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_packed_integers_sort_like_numbers(a: int, b: int) -> None:
    assert (pack_u64(a) < pack_u64(b)) == (a < b)
    assert unpack_u64(pack_u64(a)) == a


meter_ids = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=20)


@given(meter_ids, meter_ids, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_one_meters_keys_are_contiguous(a: str, b: str, n: int, m: int) -> None:
    """No key of another meter sorts between two keys of one meter (M-1 vs M-10)."""
    assert split_meter_key(meter_key(a, n)) == (a, n)
    low, high = sorted([meter_key(a, 0), meter_key(a, 2**64 - 1)])
    other = meter_key(b, m)
    assert other.startswith(meter_prefix(a)) == (a == b)
    if a != b:
        assert not low <= other <= high


def test_meter_ids_and_references_are_checked() -> None:
    check_meter_id("M-0001")
    for bad in ["", "M\0-1", "x" * MAX_KEY_BYTES]:
        with pytest.raises(ValueError, match="meter id"):
            check_meter_id(bad)
    assert check_reference("a1f3") == b"a1f3"
    for bad_reference in ["", "r" * (MAX_KEY_BYTES + 1)]:
        with pytest.raises(ValueError, match="reference"):
            check_reference(bad_reference)
