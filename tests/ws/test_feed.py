"""The stream across the process boundary: views survive the trip, the mirror follows alarms."""

from __future__ import annotations

import math
from typing import Any

import msgpack

from protocols.stream.feed import AuditLine, Mirror, encode_state, encode_tick
from protocols.stream.views import AlarmView, GatewayView, MeterView, ParkView


def unpack(data: bytes) -> Any:  # as server.hub_link.Link reads them
    return msgpack.unpackb(data, use_list=False, raw=False)


M0 = MeterView("M-0", "acme", "gw1", 10_000, 1_500.5, 12_345, True, None, "none", True, False,
               1_700_000_000_000)
M1 = MeterView("M-1", "beta", "gw2", -250, math.nan, 0, False, "manual:maintenance",
               "zero_balance", False, True, 1_700_000_000_001)
PARK = ParkView(2, 1, 1, 1, 1_500.5, 9_750, 1, 2, 1, 1_700_000_000_002)
GW = GatewayView("gw1", True, 1, 1, 10, 2, 1_700_000_000_003)
LOW = AlarmView("M-0/a1", "M-0", "low_balance", 1, "active", False, "below 50.00", 5, "acme",
                "gw1")
STORAGE = AlarmView("park/storage", "", "storage", 0, "active", False, "disk full", 6)


def test_state_and_ticks_round_trip_every_field() -> None:
    mirror = Mirror()
    assert mirror.apply(unpack(encode_state([M0, M1], PARK, [GW], [LOW]))) is None
    assert mirror.current()["M-0"] == M0 and mirror.current()["M-1"].relay_reason == M1.relay_reason
    assert math.isnan(mirror.current()["M-1"].power_w)
    assert (mirror.park_view(), tuple(mirror.gateway_views())) == (PARK, (GW,))
    entry = AuditLine(7, "op", "operator", "hub", "127.0.0.1:5", "topup", "M-0", "", "t1",
                      "amount 1.00", "accepted", "", "")
    changed = MeterView("M-0", "acme", "gw1", 10_100, 0.0, 12_400, True, None, "none", True,
                        False, 1_700_000_000_100)
    tick = mirror.apply(unpack(encode_tick([changed], None, [], [STORAGE], [entry], 9, 1.5)))
    assert tick is not None
    assert (list(tick.meters), tick.park, list(tick.alarms), list(tick.audit)) == (
        [changed], None, [STORAGE], [entry])
    assert (tick.ts_ms, tick.taken_s) == (9, 1.5)
    assert mirror.current()["M-0"] == changed and mirror.park_view() == PARK


def test_the_mirror_keeps_active_alarms_from_events_idempotently() -> None:
    mirror = Mirror()
    mirror.apply(unpack(encode_state([M0], PARK, [], [LOW])))
    acked = AlarmView("M-0/a1", "M-0", "low_balance", 1, "acknowledged", True, "", 8)
    for _ in range(2):  # an event already in the state message, or seen twice: no change
        mirror.apply(unpack(encode_tick([], None, [], [LOW, STORAGE, acked], [], 0, 0.0)))
        assert [(a.alarm_id, a.acknowledged) for a in mirror.active_alarms()] == [
            ("M-0/a1", True), ("park/storage", False)]
    assert [a.alarm_id for a in mirror.active_alarms(frozenset({"M-9"}))] == ["park/storage"]
    cleared = AlarmView("M-0/a1", "M-0", "low_balance", 1, "cleared", False, "", 9)
    mirror.apply(unpack(encode_tick([], None, [], [cleared, cleared], [], 0, 0.0)))
    assert [a.alarm_id for a in mirror.active_alarms()] == ["park/storage"]
