"""What clients see of the park: the records the stream publishes and every adapter encodes.

They live in ``protocols`` (not in ``server.stream``, which builds them and re-exports them)
because adapters under ``protocols/`` (the hub, OPC UA, HTTP) must not import the server: the
dependency rule is ``server -> protocols -> policies`` (tests/test_dependencies.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import attrs


@attrs.frozen
class MeterView:
    """One meter as every client sees it (hub ``meter`` message, HTTP, OPC UA)."""

    meter_id: str
    tenant: str
    gateway: str
    balance: int  # minor units
    power_w: float
    energy_wh: int
    relay_closed: bool
    relay_reason: str | None
    alarm: str  # policies.alarms.summary_alarm: "none" or the most severe active kind
    online: bool
    faulted: bool
    ts_ms: int  # wall label of the last reading (of the change when there was none yet)


@attrs.frozen
class AlarmView:
    """An alarm event, or an active alarm in a snapshot. Park alarms have ``meter_id ""``."""

    alarm_id: str
    meter_id: str
    kind: str
    level: int
    state: str  # "active" | "cleared" | "acknowledged"
    acknowledged: bool
    detail: str
    ts_ms: int
    tenant: str = ""
    gateway: str = ""


@attrs.frozen
class ParkView:
    """Park totals. ``meters_on``/``meters_off`` count relays closed/open; ``meters_offline``
    counts meters that do not answer or whose actor is faulted (they are also on or off)."""

    meters: int
    meters_on: int
    meters_off: int
    meters_offline: int
    load_w: float
    balance_sum: int  # minor units
    alarms_active: int
    gateways: int
    gateways_online: int
    ts_ms: int


@attrs.frozen
class GatewayView:
    gateway_id: str
    online: bool  # the bus is connected (without a field: any of its meters is online)
    meters: int
    meters_online: int
    polls: int
    failures: int  # timeouts + exception replies + garbage
    ts_ms: int


class AuditRecord(Protocol):
    """An audit entry as the stream passes it on (``persistence.audit.AuditEntry``)."""

    @property
    def ts_ms(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def command(self) -> str: ...
    @property
    def meter_id(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def reference(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def result(self) -> str: ...
    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...


@attrs.frozen
class StreamTick:
    """What changed since the previous tick, handed to every subscriber at once.

    ``meters``: each changed meter once, in its latest state. ``park``/``gateways``: present
    when due (park at most 4 Hz, gateways 1 Hz). ``alarms``/``audit``: every event in order.
    ``taken_s``: ``time.perf_counter()`` when the changes were taken (latency accounting).
    """

    meters: Sequence[MeterView]
    park: ParkView | None
    gateways: Sequence[GatewayView]
    alarms: Sequence[AlarmView]
    audit: Sequence[AuditRecord]
    ts_ms: int
    taken_s: float


class StreamSubscriber(Protocol):
    def on_tick(self, tick: StreamTick) -> None:
        """Called on the trio thread once per tick with changes; must never block."""


class ParkState(Protocol):
    """What a subscriber may read between ticks (snapshots): the state as of the last tick."""

    def current(self) -> Mapping[str, MeterView]: ...

    def park_view(self) -> ParkView: ...

    def gateway_views(self) -> Sequence[GatewayView]: ...

    def active_alarms(self, meter_ids: frozenset[str] | None = None) -> Sequence[AlarmView]:
        """Active alarms of ``meter_ids`` (all meters when None), then park alarms."""
        ...
