"""What each OPC UA variable shows of the park's views, as plain Python values.

One table per kind of object (meter, park totals, gateway): a variable's browse name, its
data type, its unit (for the ``EngineeringUnits`` property) and how its value is read from the
view. The address space (``protocols.opcua.model``) is built from these tables and reads
through them, so a variable added here is browsable, readable and subscribable at once.

Money is exact inside the park (integer minor units); OPC UA's ``Balance`` is a Double in
currency units, as the contract says, because that is what SCADA trends and HMIs display. The
conversion is the last step, here, and the methods convert back exactly
(``protocols.opcua.methods``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import attrs


@attrs.frozen
class Unit:
    """An ``EUInformation``: UNECE common code (as OPC UA packs it) and display name."""

    code: str
    display: str
    description: str

    @property
    def unit_id(self) -> int:
        """OPC UA's ``UnitId``: the common code's letters packed into an integer (Part 8)."""
        number = 0
        for char in self.code:
            number = (number << 8) | ord(char)
        return number if self.code else -1


WATT: Final = Unit("WTT", "W", "watt")
KILOWATT_HOUR: Final = Unit("KWH", "kWh", "kilowatt hour")


def currency_unit(currency: str) -> Unit:
    """No UNECE code exists for a currency: ``UnitId`` -1, the ISO code as display name."""
    return Unit("", currency, f"{currency} (currency units, 2 decimals on the wire)")


@attrs.frozen
class Variable:
    name: str
    kind: str  # "Double" | "Boolean" | "String" | "UInt32"
    read: Callable[[Any, int], Any]
    """``read(view, scale)``: the value, where ``scale`` is 10 ** the currency's decimals."""
    unit: Unit | None = None  # None: no EngineeringUnits; the currency: filled in by the model
    money: bool = False
    historized: bool = False
    description: str = ""


METER_VARIABLES: Final[tuple[Variable, ...]] = (
    Variable("Balance", "Double", lambda v, scale: v.balance / scale, money=True,
             historized=True, description="prepaid balance, currency units"),
    Variable("PowerW", "Double", lambda v, _: float(v.power_w), WATT, historized=True,
             description="active power of the last reading"),
    Variable("EnergyKWh", "Double", lambda v, _: v.energy_wh / 1000, KILOWATT_HOUR,
             historized=True, description="cumulative import register"),
    Variable("RelayClosed", "Boolean", lambda v, _: bool(v.relay_closed),
             description="true while the supply is connected"),
    Variable("RelayReason", "String", lambda v, _: v.relay_reason or "",
             description="why the relay is open (balance, overload, manual, lockout...)"),
    Variable("Alarm", "String", lambda v, _: v.alarm,
             description="none, or the most severe active alarm kind (as the hub says)"),
    Variable("Online", "Boolean", lambda v, _: bool(v.online and not v.faulted),
             description="the meter answers and its actor runs"),
)

PARK_VARIABLES: Final[tuple[Variable, ...]] = (
    Variable("LoadW", "Double", lambda p, _: float(p.load_w), WATT,
             description="sum of the meters' active power"),
    Variable("BalanceSum", "Double", lambda p, scale: p.balance_sum / scale, money=True,
             description="sum of the prepaid balances"),
    Variable("MeterCount", "UInt32", lambda p, _: p.meters,
             description="meters in the park"),
    Variable("MetersCut", "UInt32", lambda p, _: p.meters_off,
             description="meters whose relay is open"),
    Variable("MetersOffline", "UInt32", lambda p, _: p.meters_offline),
    Variable("ActiveAlarms", "UInt32", lambda p, _: p.alarms_active),
)

GATEWAY_VARIABLES: Final[tuple[Variable, ...]] = (
    Variable("Online", "Boolean", lambda g, _: bool(g.online)),
    Variable("MeterCount", "UInt32", lambda g, _: g.meters),
    Variable("MetersOnline", "UInt32", lambda g, _: g.meters_online),
    Variable("Polls", "UInt32", lambda g, _: g.polls),
    Variable("Failures", "UInt32", lambda g, _: g.failures,
             description="timeouts, exception replies and garbage"),
)
