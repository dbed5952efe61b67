"""How a meter looks to the outside: the contract's ``meter`` fields, built in one place.

The websocket hub, the HTTP API, the terminal console and the demo all show meters; they all
use ``meter_view`` so the fields and their formatting (decimal strings for money, ISO-8601 UTC
timestamps, the contract's words for relay and alarm) cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from actors.meter import MeterActor
from policies.alarms import summary_alarm
from policies.money import format_amount
from policies.records import NO_READING


def iso_utc(ts_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def meter_view(actor: MeterActor, tenant: str) -> dict[str, Any]:
    state = actor.state
    relay = state.relay
    decimals = actor.policy.decimals
    online = state.online and not actor.faulted
    alarm = "offline" if actor.faulted else summary_alarm(state)
    has_reading = state.reading_ms != NO_READING
    return {
        "type": "meter",
        "meter": actor.meter_id,
        "tenant": tenant,
        "balance": format_amount(state.balance, decimals),
        "power_w": state.power_w,
        "energy_kwh": state.register_wh / 1000 if has_reading else 0.0,
        "relay": "closed" if relay.closed else "open",
        "relay_reason": relay.reason,
        "alarm": alarm,
        "online": online,
        "ts": iso_utc(state.reading_ms) if has_reading else None,
    }
