"""The park stream across a process boundary: ticks as msgpack, and the hub's mirror of them.

Theory of operation
-------------------
When the hub runs in a process of its own (``[hub] isolation = "process"``,
``server.hub_process``), the server sends it one :func:`encode_state` message (the park as it
is) and then one :func:`encode_tick` message per stream tick (what changed). The views travel
as plain tuples in field order: msgpack packs and unpacks tuples of scalars an order of
magnitude faster than it could walk attrs records, and the server's side of the pipe is on the
control loop's thread.

In the hub's process a :class:`Mirror` applies them. It is the hub's ``ParkState`` there (the
latest view of every meter, the park totals, the gateways and the active alarms, for
snapshots), and it turns each tick message back into the :class:`StreamTick` the hub takes
in-process, so the hub cannot tell where it runs.

Active alarms are not sent with each tick: the mirror keeps them from the alarm events (a
raise adds one, a clear removes it, an acknowledgement marks it), starting from the state
message's list. Applying an event twice changes nothing, so an event that was still queued in
the server's stream when the state message was taken does no harm when it arrives after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
import msgpack

from protocols.stream.views import (
    AlarmView,
    AuditRecord,
    GatewayView,
    MeterView,
    ParkView,
    StreamTick,
)

STATE: Final = "S"
TICK: Final = "T"

_METER_FIELDS: Final = tuple(field.name for field in attrs.fields(MeterView))
_PARK_FIELDS: Final = tuple(field.name for field in attrs.fields(ParkView))
_GATEWAY_FIELDS: Final = tuple(field.name for field in attrs.fields(GatewayView))
_ALARM_FIELDS: Final = tuple(field.name for field in attrs.fields(AlarmView))


@attrs.frozen
class AuditLine:
    """An audit entry as the hub's process receives it (``AuditRecord``)."""

    ts_ms: int
    user: str
    role: str
    channel: str
    address: str
    command: str
    meter_id: str
    target: str
    reference: str
    detail: str
    result: str
    code: str
    message: str


_AUDIT_FIELDS: Final = tuple(field.name for field in attrs.fields(AuditLine))


def _meter(v: MeterView) -> tuple[Any, ...]:
    return (v.meter_id, v.tenant, v.gateway, v.balance, v.power_w, v.energy_wh,
            v.relay_closed, v.relay_reason, v.alarm, v.online, v.faulted, v.ts_ms)


def _fields(record: object, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in names)


def pack(message: object) -> bytes:
    data: bytes = msgpack.packb(message, use_bin_type=True)
    return data


def encode_state(meters: Iterable[MeterView], park: ParkView, gateways: Iterable[GatewayView],
                 alarms: Iterable[AlarmView]) -> bytes:
    """The whole park: the first message a new hub process gets."""
    return pack((STATE, [_meter(v) for v in meters], _fields(park, _PARK_FIELDS),
                 [_fields(g, _GATEWAY_FIELDS) for g in gateways],
                 [_fields(a, _ALARM_FIELDS) for a in alarms]))


def encode_tick(meters: Iterable[MeterView], park: ParkView | None,
                gateways: Iterable[GatewayView], alarms: Iterable[AlarmView],
                audit: Iterable[AuditRecord], ts_ms: int, taken_s: float) -> bytes:
    """What changed (possibly several stream ticks' worth, merged: latest view wins)."""
    return pack((TICK, [_meter(v) for v in meters],
                 None if park is None else _fields(park, _PARK_FIELDS),
                 [_fields(g, _GATEWAY_FIELDS) for g in gateways],
                 [_fields(a, _ALARM_FIELDS) for a in alarms],
                 [_fields(e, _AUDIT_FIELDS) for e in audit], ts_ms, taken_s))


class Mirror:
    """The park as the hub's process knows it (module docstring); a ``ParkState``."""

    def __init__(self) -> None:
        self._views: dict[str, MeterView] = {}
        self._park = ParkView(0, 0, 0, 0, 0.0, 0, 0, 0, 0, 0)
        self._gateways: dict[str, GatewayView] = {}
        self._alarms: dict[str, AlarmView] = {}

    # -- ParkState ----------------------------------------------------------------------------

    def current(self) -> Mapping[str, MeterView]:
        return self._views

    def park_view(self) -> ParkView:
        return self._park

    def gateway_views(self) -> Sequence[GatewayView]:
        return tuple(self._gateways.values())

    def active_alarms(self, meter_ids: frozenset[str] | None = None) -> Sequence[AlarmView]:
        meters = [a for a in self._alarms.values() if a.meter_id and (
            meter_ids is None or a.meter_id in meter_ids)]
        return meters + [a for a in self._alarms.values() if not a.meter_id]

    # -- applying messages --------------------------------------------------------------------

    def apply(self, message: Sequence[Any]) -> StreamTick | None:
        """Apply a decoded message; a tick message gives the hub's ``StreamTick``."""
        kind = message[0]
        if kind == STATE:
            _, meters, park, gateways, alarms = message
            self._views = {row[0]: MeterView(*row) for row in meters}
            self._park = ParkView(*park)
            self._gateways = {row[0]: GatewayView(*row) for row in gateways}
            self._alarms = {row[0]: AlarmView(*row) for row in alarms}
            return None
        if kind != TICK:
            raise ValueError(f"not a stream message: {kind!r}")
        _, rows, park_row, gateway_rows, alarm_rows, audit_rows, ts_ms, taken_s = message
        views = self._views
        changed = []
        for row in rows:
            view = MeterView(*row)
            views[view.meter_id] = view
            changed.append(view)
        park = None
        if park_row is not None:
            park = self._park = ParkView(*park_row)
        gateways = [GatewayView(*row) for row in gateway_rows]
        for gateway in gateways:
            self._gateways[gateway.gateway_id] = gateway
        alarms = [AlarmView(*row) for row in alarm_rows]
        for alarm in alarms:
            self._follow(alarm)
        audit = [AuditLine(*row) for row in audit_rows]
        return StreamTick(changed, park, gateways, alarms, audit, ts_ms, taken_s)

    def _follow(self, event: AlarmView) -> None:
        if event.state == "cleared":
            self._alarms.pop(event.alarm_id, None)
        elif event.state == "acknowledged":
            active = self._alarms.get(event.alarm_id)
            if active is not None:
                self._alarms[event.alarm_id] = attrs.evolve(active, acknowledged=True)
        else:
            self._alarms[event.alarm_id] = event
