"""The pure parts of the OPC UA adapter: units, exact amounts from Doubles, node ids."""

from __future__ import annotations

import pytest
from asyncua import ua
from hypothesis import given
from hypothesis import strategies as st

from protocols.opcua.history import history_target
from protocols.opcua.methods import Refused, amount_of
from protocols.opcua.model import meter_id_of
from protocols.opcua.values import KILOWATT_HOUR, WATT, currency_unit


def test_unit_ids_are_the_unece_codes_packed_as_opc_ua_says() -> None:
    assert WATT.unit_id == 5723220  # "WTT"
    assert KILOWATT_HOUR.unit_id == 4937544  # "KWH"
    assert currency_unit("CNY").unit_id == -1


@given(st.integers(min_value=1, max_value=10**11))
def test_a_double_written_with_cents_is_that_many_cents(minor: int) -> None:
    assert amount_of(ua.Variant(minor / 100, ua.VariantType.Double), 2) == minor


@pytest.mark.parametrize(("value", "words"), [
    (0.1 + 0.2, "decimal places"),
    (0.001, "decimal places"),
    (0.0, "> 0"),
    (-5.0, "> 0"),
    (float("nan"), "finite"),
    (float("inf"), "finite"),
    (1e20, "exponent"),
])
def test_amounts_that_are_not_exact_cents_are_refused(value: float, words: str) -> None:
    with pytest.raises(Refused) as refused:
        amount_of(ua.Variant(value, ua.VariantType.Double), 2)
    assert words in str(refused.value)
    assert refused.value.status == ua.StatusCodes.BadInvalidArgument


@pytest.mark.parametrize("variant", [ua.Variant("10.00"), ua.Variant(10, ua.VariantType.Int32),
                                     ua.Variant(True)])
def test_an_amount_must_be_a_double(variant: ua.Variant) -> None:
    with pytest.raises(Refused) as refused:
        amount_of(variant, 2)
    assert "must be a Double" in str(refused.value)


def test_node_ids_name_their_meter() -> None:
    assert meter_id_of(ua.NodeId("meter:M-0001", 2)) == "M-0001"
    assert meter_id_of(ua.NodeId("meter:M.1:Balance", 2)) == "M.1:Balance"  # ids are verbatim
    assert meter_id_of(ua.NodeId("meter.Balance:M-0001", 2)) is None
    assert meter_id_of(ua.NodeId("gateway:gw1", 2)) is None
    assert meter_id_of(ua.NodeId(85, 0)) is None
    assert history_target(ua.NodeId("meter.EnergyKWh:M.1:x", 2), 2) == ("M.1:x", "EnergyKWh")
    assert history_target(ua.NodeId("meter.Alarm:M-1", 2), 2) is None
    assert history_target(ua.NodeId("meter.Balance:M-1", 3), 2) is None
