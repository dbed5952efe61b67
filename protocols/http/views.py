"""Park records as JSON objects, in the hub protocol's shapes (docs/protocol.md).

The REST API answers with the same fields as the hub's ``meter`` message and ``audit`` entry, so
a client can use either. Money goes out as decimal strings (``policies.money``), times as ISO
8601 UTC with milliseconds and a ``Z``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from policies.money import format_amount
from protocols.http.backend import AuditEntryLike, MeterViewLike


def iso_ms(ts_ms: int) -> str | None:
    """``1790000000123`` -> ``"2026-09-21T14:13:20.123Z"``; a time never set (< 0) -> None."""
    if ts_ms < 0:
        return None
    moment = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def meter_json(view: MeterViewLike, decimals: int = 2) -> dict[str, Any]:
    """The hub's ``meter`` message for one meter view."""
    return {
        "type": "meter",
        "meter": view.meter_id,
        "tenant": view.tenant,
        "gateway": view.gateway,
        "balance": format_amount(view.balance, decimals),
        "power_w": round(view.power_w, 1),
        "energy_kwh": round(max(view.energy_wh, 0) / 1000, 3),
        "relay": "closed" if view.relay_closed else "open",
        "relay_reason": view.relay_reason,
        "alarm": view.alarm,
        "online": view.online,
        "faulted": view.faulted,
        "ts": iso_ms(view.ts_ms),
    }


def audit_json(entry: AuditEntryLike) -> dict[str, Any]:
    """One audit entry as the hub's ``audit`` message and ``audit_page`` carry it."""
    return {
        "ts": iso_ms(entry.ts_ms),
        "user": entry.user,
        "role": entry.role,
        "channel": entry.channel,
        "address": entry.address,
        "command": entry.command,
        "meter_id": entry.meter_id,
        "target": entry.target,
        "reference": entry.reference,
        "detail": entry.detail,
        "result": entry.result,
        "code": entry.code,
        "message": entry.message,
    }
