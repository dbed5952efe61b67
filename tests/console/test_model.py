"""The console's park model and the meter table's filter and order (no terminal, no network)."""

from __future__ import annotations

import math

import pytest

from protocols.console.model import (
    SORT_COLUMNS,
    MalformedMessage,
    MeterQuery,
    ParkModel,
    meter_row,
    sort_key,
)
from protocols.console.table import meter_cells
from tests.console.fake_hub import meter_message


def _alarm(alarm: str, state: str = "active", level: int = 2,
           ts: str = "2026-11-22T10:00:00Z") -> dict[str, object]:
    return {"type": "alarm", "alarm": alarm, "meter": alarm.split("/")[0], "kind": "low_balance",
            "level": level, "state": state, "acknowledged": state == "acknowledged", "ts": ts}


def test_meters_are_kept_latest_value_wins_and_changes_are_taken_once() -> None:
    model = ParkModel()
    assert model.apply(meter_message("M-1", balance="10.00"))
    assert model.apply(meter_message("M-1", balance="9.50"))
    assert model.apply(meter_message("M-2"))
    assert model.meters["M-1"].balance == "9.50"
    changes = model.take_changes()
    assert changes.meters == {"M-1", "M-2"} and not changes.park and changes.any
    assert not model.take_changes().any
    # The same value again is not a change (the table is not touched).
    model.apply(meter_message("M-2"))
    assert not model.take_changes().any


def test_a_malformed_meter_message_leaves_the_model_unchanged() -> None:
    model = ParkModel()
    model.apply(meter_message("M-1", balance="10.00"))
    model.take_changes()
    for bad in ({"balance": 10}, {"balance": "ten"}, {"online": "yes"}, {"power_w": True},
                {"meter": None}):
        with pytest.raises(MalformedMessage):
            model.apply({**meter_message("M-1"), **bad})
    assert model.meters["M-1"].balance == "10.00"
    assert not model.take_changes().any


def test_a_meter_without_a_finite_power_reading_is_kept() -> None:
    model = ParkModel()
    model.apply({**meter_message("M-1"), "power_w": None})
    model.apply(meter_message("M-2", power_w=5.0))
    assert math.isnan(model.meters["M-1"].power_w)
    rows = sorted(model.meters.values(), key=sort_key("power"))
    assert [row.meter for row in rows] == ["M-2", "M-1"]  # no reading: last
    assert meter_cells(model.meters["M-1"])[4] == "-"


def test_unknown_message_types_are_left_to_the_caller() -> None:
    model = ParkModel()
    assert not model.apply({"type": "welcome", "user": "op"})
    assert not model.apply({"type": "pong", "id": "1"})


def test_cleared_alarms_leave_the_list_and_the_order_is_unacknowledged_then_severe() -> None:
    model = ParkModel()
    model.apply(_alarm("M-1/1", level=1))
    model.apply(_alarm("M-2/1", level=3))
    model.apply(_alarm("M-3/1", state="acknowledged", level=3))
    model.apply(_alarm("M-4/1", level=3, ts="2026-11-22T11:00:00Z"))
    assert [a.alarm for a in model.active_alarms()] == ["M-4/1", "M-2/1", "M-1/1", "M-3/1"]
    model.take_changes()
    model.apply(_alarm("M-2/1", state="cleared"))
    assert "M-2/1" not in model.alarms and model.take_changes().alarms
    model.apply(_alarm("M-9/9", state="cleared"))  # never seen: nothing to do
    assert not model.take_changes().alarms


def test_a_snapshot_drops_what_it_does_not_mention() -> None:
    model = ParkModel()
    model.apply(meter_message("M-1"))
    model.apply(meter_message("M-2"))
    model.apply(_alarm("M-1/1"))
    model.apply({"type": "gateway", "gateway": "gw9", "online": True, "meters": 1,
                 "polls": 1, "failures": 0})
    model.take_changes()
    model.begin_snapshot()   # after a reconnect: M-2, the alarm and gw9 went while we were away
    model.apply(meter_message("M-1"))
    model.end_snapshot()
    assert list(model.meters) == ["M-1"] and not model.alarms and not model.gateways
    changes = model.take_changes()
    assert changes.meters_removed == {"M-2"} and changes.alarms and changes.gateways
    assert not changes.meters  # M-1 did not change


def test_park_totals_and_load_history() -> None:
    model = ParkModel()
    park = {"type": "park", "meters": 2, "meters_on": 1, "meters_off": 1, "meters_offline": 0,
            "load_w": 1500.0, "balance_sum": "30.00", "alarms_active": 1, "gateways": 1,
            "gateways_online": 1, "ts": "2026-11-22T10:00:00Z"}
    for load in range(200):
        model.apply({**park, "load_w": float(load)})
    assert model.park is not None and model.park.load_w == 199.0
    assert len(model.load_history) == 120 and model.load_history[-1] == 199.0
    assert model.take_changes().park


def test_an_ack_shows_the_new_balance_and_relay_at_once() -> None:
    model = ParkModel()
    model.apply(meter_message("M-1", balance="10.00", relay="open", relay_reason="zero_balance"))
    model.take_changes()
    model.apply_balance("M-1", "110.00", "closed", None)
    row = model.meters["M-1"]
    assert (row.balance, row.relay, row.relay_reason) == ("110.00", "closed", None)
    assert model.take_changes().meters == {"M-1"}
    model.apply_balance("M-404", "1.00", None, None)  # not subscribed: nothing to show
    assert "M-404" not in model.meters


ROWS = [
    meter_row(meter_message("M-0001", tenant="acme", gateway="gw1", balance="5.00")),
    meter_row(meter_message("M-0002", tenant="acme", gateway="gw2", balance="-1.00",
                            relay="open", relay_reason="zero_balance", alarm="zero_balance")),
    meter_row(meter_message("M-0003", tenant="bolt", gateway="gw1", balance="100.00",
                            online=False, alarm="offline")),
    meter_row(meter_message("X-0004", tenant="acme-east", gateway="gw2", balance="20.00")),
]


@pytest.mark.parametrize(("text", "expected"), [
    ("", ["M-0001", "M-0002", "M-0003", "X-0004"]),
    ("acme", ["M-0001", "M-0002", "X-0004"]),          # words match anywhere
    ("ACME gw2", ["M-0002", "X-0004"]),                # every word must match
    ("tenant:acme", ["M-0001", "M-0002"]),             # exact with a key
    ("t:acme*", ["M-0001", "M-0002", "X-0004"]),       # a prefix
    ("gateway:gw1", ["M-0001", "M-0003"]),
    ("gw:GW2 relay:open", ["M-0002"]),
    ("relay:closed", ["M-0001", "M-0003", "X-0004"]),
    ("alarm:any", ["M-0002", "M-0003"]),
    ("alarm:none", ["M-0001", "X-0004"]),
    ("alarm:offline", ["M-0003"]),
    ("online:no", ["M-0003"]),
    ("meter:M-*", ["M-0001", "M-0002", "M-0003"]),
    ("m-000", ["M-0001", "M-0002", "M-0003"]),
])
def test_filters(text: str, expected: list[str]) -> None:
    assert [row.meter for row in MeterQuery.parse(text).select(ROWS)] == expected


@pytest.mark.parametrize(("text", "words"), [
    ("colour:red", "unknown filter 'colour'"),
    ("relay:maybe", "relay: is open or closed"),
    ("online:perhaps", "online: is yes or no"),
    ("tenant:", "tenant: needs a value, e.g. tenant:acme"),
])
def test_a_bad_filter_says_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        MeterQuery.parse(text)


def test_sort_orders() -> None:
    def order(column: str) -> list[str]:
        return [row.meter for row in sorted(ROWS, key=sort_key(column))]

    assert order("balance") == ["M-0002", "M-0001", "X-0004", "M-0003"]  # numbers, not text
    assert order("tenant") == ["M-0001", "M-0002", "X-0004", "M-0003"]
    assert order("alarm")[:2] == ["M-0003", "M-0002"]  # alarms first
    assert order("online")[0] == "M-0003"              # offline first
    assert set(SORT_COLUMNS) >= {"meter", "balance", "power", "relay", "updated"}
    with pytest.raises(ValueError, match="cannot sort by 'colour'"):
        sort_key("colour")
