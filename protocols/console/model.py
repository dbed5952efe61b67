"""What the terminal console knows of the park: meters, alarms, totals, gateways.

Theory of operation
-------------------
The hub sends the park as messages (``meter``, ``alarm``, ``park``, ``gateway``; see
docs/protocol.md). :class:`ParkModel` turns each into a frozen record and keeps the latest one
per key, latest value wins, exactly as the hub coalesces. It never talks to the network and
never draws: the protocol client (:mod:`protocols.console.client`) feeds it, the textual app
(:mod:`protocols.console.app`) reads it.

The app does not redraw on every message (10,000 meters at 1 Hz would be 10,000 redraws a
second). Instead the model remembers *what changed* since the app last looked: the ids of
changed meters, and whether alarms, totals or gateways changed. The app takes those sets on
a timer (:meth:`ParkModel.take_changes`) and updates only the table rows concerned.

After a reconnect the hub sends a fresh snapshot of everything subscribed. Alarms that cleared
and meters that left the park while the console was away are not in it, so a snapshot is
bracketed (:meth:`begin_snapshot` / :meth:`end_snapshot`) and whatever it did not mention is
dropped at its end.

:class:`MeterQuery` is the meter table's filter, parsed from what the operator types
(``acme relay:open alarm:any``); :func:`sort_key` orders rows by a column.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import attrs

__all__ = [
    "SORT_COLUMNS",
    "AlarmRow",
    "Changes",
    "GatewayRow",
    "MalformedMessage",
    "MeterQuery",
    "MeterRow",
    "ParkModel",
    "ParkSummary",
    "sort_key",
]


class MalformedMessage(ValueError):
    """A server message whose fields are missing or of the wrong type; the message says which."""


@attrs.frozen
class MeterRow:
    """One meter as the hub's ``meter`` message describes it (wire words kept as they are)."""

    meter: str
    tenant: str
    gateway: str
    balance: str          # decimal string, the currency's minor units (as the wire has it)
    power_w: float        # NaN when the hub sent null (no finite reading)
    energy_kwh: float
    relay: str            # "closed" (supply on) | "open"
    relay_reason: str | None
    alarm: str            # "none" or the most severe active alarm's kind
    online: bool
    faulted: bool
    ts: str               # ISO 8601 UTC of the last reading or change

    @property
    def balance_value(self) -> Decimal:
        """The balance as a number, for ordering only (money arithmetic stays on the server)."""
        return _decimal(self.balance)


@attrs.frozen
class AlarmRow:
    alarm: str            # alarm id: "M-0001/3" or "park/storage"
    meter: str            # "" for a park alarm
    kind: str
    level: int
    state: str            # "active" | "acknowledged" ("cleared" ones are dropped)
    acknowledged: bool
    detail: str
    ts: str


@attrs.frozen
class ParkSummary:
    meters: int
    meters_on: int
    meters_off: int
    meters_offline: int
    load_w: float
    balance_sum: str
    alarms_active: int
    gateways: int
    gateways_online: int
    ts: str


@attrs.frozen
class GatewayRow:
    gateway: str
    online: bool
    meters: int
    polls: int
    failures: int
    ts: str


@attrs.frozen
class Changes:
    """What changed since the app last looked (:meth:`ParkModel.take_changes`)."""

    meters: frozenset[str]   # ids whose row changed (or appeared)
    meters_removed: frozenset[str]
    alarms: bool
    park: bool
    gateways: bool

    @property
    def any(self) -> bool:
        return bool(self.meters or self.meters_removed or self.alarms or self.park
                    or self.gateways)


# --- reading wire fields -------------------------------------------------------------------

def _field(message: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = message.get(name)
    # bool is an int in Python: a count must not be `true`.
    if (not isinstance(value, kind)
            or (isinstance(value, bool) and not _wants_bool(kind))):
        raise MalformedMessage(
            f"{message.get('type', 'message')} {name!r} should be {_kind_words(kind)}, "
            f"got {value!r}"
        )
    return value


def _wants_bool(kind: type | tuple[type, ...]) -> bool:
    return bool in (kind if isinstance(kind, tuple) else (kind,))


def _kind_words(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def _number(message: Mapping[str, Any], name: str) -> float:
    return float(_field(message, name, (int, float)))


def _reading(message: Mapping[str, Any], name: str) -> float:
    """A measured value; null when the meter's last value was not a finite number."""
    if message.get(name) is None and name in message:
        return math.nan
    return _number(message, name)


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        return Decimal(0)


def meter_row(message: Mapping[str, Any]) -> MeterRow:
    balance = _field(message, "balance", str)
    try:
        Decimal(balance)
    except InvalidOperation:
        raise MalformedMessage(f"meter 'balance' is not a decimal string: {balance!r}") from None
    return MeterRow(
        meter=_field(message, "meter", str),
        tenant=_field(message, "tenant", str),
        # The contract's own example has no gateway; the hub sends it (docs/protocol.md).
        gateway=str(message.get("gateway") or ""),
        balance=balance,
        power_w=_reading(message, "power_w"),
        energy_kwh=_number(message, "energy_kwh"),
        relay=_field(message, "relay", str),
        relay_reason=_field(message, "relay_reason", (str, type(None))),
        alarm=_field(message, "alarm", str),
        online=_field(message, "online", bool),
        faulted=bool(message.get("faulted", False)),
        ts=str(message.get("ts") or ""),
    )


def alarm_row(message: Mapping[str, Any]) -> AlarmRow:
    state = _field(message, "state", str)
    return AlarmRow(
        alarm=_field(message, "alarm", str),
        meter=_field(message, "meter", str),
        kind=_field(message, "kind", str),
        level=int(_field(message, "level", int)),
        state=state,
        acknowledged=bool(message.get("acknowledged", state == "acknowledged")),
        detail=str(message.get("detail") or ""),
        ts=str(message.get("ts") or ""),
    )


def park_summary(message: Mapping[str, Any]) -> ParkSummary:
    return ParkSummary(
        meters=_field(message, "meters", int),
        meters_on=_field(message, "meters_on", int),
        meters_off=_field(message, "meters_off", int),
        meters_offline=_field(message, "meters_offline", int),
        load_w=_number(message, "load_w"),
        balance_sum=_field(message, "balance_sum", str),
        alarms_active=_field(message, "alarms_active", int),
        gateways=_field(message, "gateways", int),
        gateways_online=_field(message, "gateways_online", int),
        ts=str(message.get("ts") or ""),
    )


def gateway_row(message: Mapping[str, Any]) -> GatewayRow:
    return GatewayRow(
        gateway=_field(message, "gateway", str),
        online=_field(message, "online", bool),
        meters=_field(message, "meters", int),
        polls=_field(message, "polls", int),
        failures=_field(message, "failures", int),
        ts=str(message.get("ts") or ""),
    )


LOAD_HISTORY: Final = 120
"""Park load samples kept for the overview's sparkline (the hub sends ``park`` at 1-4 Hz)."""


class ParkModel:
    """The latest meter, alarm, park and gateway records, and what changed since last asked."""

    def __init__(self) -> None:
        self.meters: dict[str, MeterRow] = {}
        self.alarms: dict[str, AlarmRow] = {}
        self.gateways: dict[str, GatewayRow] = {}
        self.park: ParkSummary | None = None
        self.load_history: list[float] = []
        self._changed_meters: set[str] = set()
        self._removed_meters: set[str] = set()
        self._alarms_changed = False
        self._park_changed = False
        self._gateways_changed = False
        # Keys seen since begin_snapshot(); None outside a snapshot.
        self._snapshot_seen: tuple[set[str], set[str], set[str]] | None = None

    # --- applying messages -----------------------------------------------------------------

    def apply(self, message: Mapping[str, Any]) -> bool:
        """Take one data message; False if its type is not a data message (left to the caller).

        Raises :class:`MalformedMessage` when a data message's fields are wrong; the model is
        unchanged then.
        """
        kind = message.get("type")
        if kind == "meter":
            self.apply_meter(meter_row(message))
        elif kind == "alarm":
            self.apply_alarm(alarm_row(message))
        elif kind == "park":
            summary = park_summary(message)
            self.park = summary
            self.load_history.append(summary.load_w)
            del self.load_history[:-LOAD_HISTORY]
            self._park_changed = True
        elif kind == "gateway":
            row = gateway_row(message)
            self.gateways[row.gateway] = row
            if self._snapshot_seen is not None:
                self._snapshot_seen[2].add(row.gateway)
            self._gateways_changed = True
        else:
            return False
        return True

    def apply_meter(self, row: MeterRow) -> None:
        if self._snapshot_seen is not None:
            self._snapshot_seen[0].add(row.meter)
        if self.meters.get(row.meter) == row:
            return
        self.meters[row.meter] = row
        self._changed_meters.add(row.meter)
        self._removed_meters.discard(row.meter)

    def apply_alarm(self, row: AlarmRow) -> None:
        if self._snapshot_seen is not None:
            self._snapshot_seen[1].add(row.alarm)
        if row.state == "cleared":
            if self.alarms.pop(row.alarm, None) is not None:
                self._alarms_changed = True
            return
        if self.alarms.get(row.alarm) != row:
            self.alarms[row.alarm] = row
            self._alarms_changed = True

    def apply_balance(self, meter: str, balance: str, relay: str | None,
                      relay_reason: str | None) -> None:
        """A command's ``ack`` carries the meter's new balance and relay: show them at once,
        before (or without) the meter's next delta."""
        row = self.meters.get(meter)
        if row is None:
            return
        changed = attrs.evolve(row, balance=balance)
        if relay is not None:
            changed = attrs.evolve(changed, relay=relay, relay_reason=relay_reason)
        self.apply_meter(changed)

    def begin_snapshot(self) -> None:
        self._snapshot_seen = (set(), set(), set())

    def end_snapshot(self) -> None:
        """Forget whatever the snapshot just ended did not mention (gone while we were away)."""
        if self._snapshot_seen is None:
            return
        meters, alarms, gateways = self._snapshot_seen
        self._snapshot_seen = None
        for meter in [m for m in self.meters if m not in meters]:
            del self.meters[meter]
            self._changed_meters.discard(meter)
            self._removed_meters.add(meter)
        for alarm in [a for a in self.alarms if a not in alarms]:
            del self.alarms[alarm]
            self._alarms_changed = True
        for gateway in [g for g in self.gateways if g not in gateways]:
            del self.gateways[gateway]
            self._gateways_changed = True

    def take_changes(self) -> Changes:
        changes = Changes(
            meters=frozenset(self._changed_meters),
            meters_removed=frozenset(self._removed_meters),
            alarms=self._alarms_changed,
            park=self._park_changed,
            gateways=self._gateways_changed,
        )
        self._changed_meters.clear()
        self._removed_meters.clear()
        self._alarms_changed = self._park_changed = self._gateways_changed = False
        return changes

    # --- reading ---------------------------------------------------------------------------

    def active_alarms(self) -> list[AlarmRow]:
        """Unacknowledged first, then by level (most severe first), then newest first."""
        rows = sorted(self.alarms.values(), key=lambda a: a.ts, reverse=True)
        return sorted(rows, key=lambda a: (a.acknowledged, -a.level))

    def tenants(self) -> list[str]:
        return sorted({row.tenant for row in self.meters.values()})


# --- the meter table's filter and order ----------------------------------------------------

RELAY_WORDS: Final = ("open", "closed")
ONLINE_WORDS: Final = {"yes": True, "no": False, "true": True, "false": False,
                       "online": True, "offline": False}
FILTER_KEYS: Final = ("tenant", "gateway", "relay", "alarm", "online", "meter")
KEY_ALIASES: Final = {"gw": "gateway", "t": "tenant", "id": "meter"}


@attrs.frozen
class MeterQuery:
    """A meter table filter: every part must match (an empty query matches every meter).

    ``words`` match anywhere in the meter id, tenant or gateway (case-insensitive);
    ``tenant``/``gateway``/``meter`` match exactly when given with ``key:value`` (``*`` at the
    end: a prefix); ``relay`` is ``open`` or ``closed``; ``alarm`` is ``any`` (some alarm),
    ``none`` or a kind; ``online`` is ``yes`` or ``no``.
    """

    words: tuple[str, ...] = ()
    tenant: str | None = None
    gateway: str | None = None
    meter: str | None = None
    relay: str | None = None
    alarm: str | None = None
    online: bool | None = None

    @classmethod
    def parse(cls, text: str) -> MeterQuery:
        """``"acme relay:open alarm:any"``; raises ValueError with words on a bad part."""
        words: list[str] = []
        fields: dict[str, Any] = {}
        for part in text.split():
            key, colon, value = part.partition(":")
            if not colon:
                words.append(part.casefold())
                continue
            key = KEY_ALIASES.get(key.casefold(), key.casefold())
            if key not in FILTER_KEYS:
                raise ValueError(
                    f"unknown filter {key!r}: use tenant:, gateway:, meter:, relay:, alarm: or "
                    "online: (or plain words)"
                )
            if not value:
                raise ValueError(f"{key}: needs a value, e.g. {_FILTER_EXAMPLES[key]}")
            if key == "relay":
                if value.casefold() not in RELAY_WORDS:
                    raise ValueError(f"relay: is open or closed, not {value!r}")
                fields[key] = value.casefold()
            elif key == "online":
                if value.casefold() not in ONLINE_WORDS:
                    raise ValueError(f"online: is yes or no, not {value!r}")
                fields[key] = ONLINE_WORDS[value.casefold()]
            else:
                fields[key] = value if key in ("tenant", "gateway", "meter") else value.casefold()
        return cls(words=tuple(words), **fields)

    def matches(self, row: MeterRow) -> bool:
        if self.words:
            haystack = f"{row.meter}\n{row.tenant}\n{row.gateway}".casefold()
            if not all(word in haystack for word in self.words):
                return False
        if self.tenant is not None and not _exact(self.tenant, row.tenant):
            return False
        if self.gateway is not None and not _exact(self.gateway, row.gateway):
            return False
        if self.meter is not None and not _exact(self.meter, row.meter):
            return False
        if self.relay is not None and row.relay != self.relay:
            return False
        if self.alarm is not None:
            if self.alarm == "any":
                if row.alarm == "none":
                    return False
            elif row.alarm != self.alarm:
                return False
        return self.online is None or row.online == self.online

    def select(self, rows: Iterable[MeterRow]) -> list[MeterRow]:
        return [row for row in rows if self.matches(row)]


_FILTER_EXAMPLES: Final = {
    "tenant": "tenant:acme", "gateway": "gateway:gw1", "meter": "meter:M-00*",
    "relay": "relay:open", "alarm": "alarm:any", "online": "online:no",
}


def _exact(pattern: str, value: str) -> bool:
    if pattern.endswith("*"):
        return value.casefold().startswith(pattern[:-1].casefold())
    return value.casefold() == pattern.casefold()


SORT_COLUMNS: Final[Mapping[str, Callable[[MeterRow], Any]]] = {
    "meter": lambda row: row.meter,
    "tenant": lambda row: (row.tenant, row.meter),
    "gateway": lambda row: (row.gateway, row.meter),
    "balance": lambda row: (row.balance_value, row.meter),
    "power": lambda row: (math.isnan(row.power_w), 0.0 if math.isnan(row.power_w) else row.power_w,
                          row.meter),
    "energy": lambda row: (row.energy_kwh, row.meter),
    "relay": lambda row: (row.relay, row.relay_reason or "", row.meter),
    "alarm": lambda row: (row.alarm == "none", row.alarm, row.meter),
    "online": lambda row: (row.online and not row.faulted, row.meter),
    "updated": lambda row: (row.ts, row.meter),
}
"""Column key -> sort key of a row; ties go by meter id so the order is stable."""


def sort_key(column: str) -> Callable[[MeterRow], Any]:
    try:
        return SORT_COLUMNS[column]
    except KeyError:
        raise ValueError(f"cannot sort by {column!r}: one of {', '.join(SORT_COLUMNS)}") from None
