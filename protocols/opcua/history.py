"""``HistoryRead`` (raw) of ``EnergyKWh``, ``PowerW`` and ``Balance`` from the park's own
interval history in LMDB (``persistence.history``): no second store, no historian.

Each closed interval of a meter gives one value per variable, stamped with the interval's
end: the import register there (``EnergyKWh``), the average power over the interval
(``PowerW``: its energy over its length) and the balance after its charges (``Balance``).
The history is the one the reports use, so its resolution is ``[server] interval`` (15
minutes by default); the live value is the variable itself.

The OPC UA process opens the data directory read-only (as ``wattkeeper check`` does: an LMDB
reader next to the running server, which never waits for it), and reads in a worker thread so
a long request does not hold up data-change notifications. asyncua's continuation point is a
timestamp: a page ends at the start of the next interval, which is unique per meter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from asyncua import ua
from asyncua.server.history import HistoryStorageInterface

from protocols.opcua.model import wall_time

MAX_VALUES_PER_PAGE: Final = 10_000
_EPOCH_1601: Final = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)

# variable -> value of (wh, register_wh, balance, interval_ms, scale)
READERS: Final[dict[str, Callable[[int, int, int, int, int], float]]] = {
    "EnergyKWh": lambda wh, register, balance, interval, scale: register / 1000,
    "PowerW": lambda wh, register, balance, interval, scale: wh * 3_600_000 / interval,
    "Balance": lambda wh, register, balance, interval, scale: balance / scale,
}


class HistorySource(Protocol):
    """The interval history, read-only (``server.opcua_worker`` gives one over LMDB)."""

    def interval_ends(self, meter_id: str, from_ms: int, to_ms: int
                      ) -> Iterable[tuple[int, int, int, int]]:
        """``(start_ms, wh, register_wh, balance)`` of the intervals starting in
        ``[from_ms, to_ms)``, in time order."""
        ...

    def close(self) -> None: ...


def _ms(when: dt.datetime | None, default: int) -> int:
    if when is None or when <= _EPOCH_1601:
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def history_target(node_id: ua.NodeId, ns: int) -> tuple[str, str] | None:
    """``(meter_id, variable)`` of a historized meter variable's node id, else None."""
    identifier = node_id.Identifier
    if node_id.NamespaceIndex != ns or not isinstance(identifier, str):
        return None
    kind, _, meter_id = identifier.partition(":")
    what, _, name = kind.partition(".")
    if what != "meter" or name not in READERS or not meter_id:
        return None
    return meter_id, name


class IntervalHistory(HistoryStorageInterface):  # type: ignore[misc]  # (asyncua's base)
    """asyncua's history storage, read-only, over the interval history."""

    def __init__(self, store: HistorySource | None, *, interval_ms: int, scale: int) -> None:
        super().__init__(max_history_data_response_size=MAX_VALUES_PER_PAGE)
        self._store = store
        self._interval_ms = interval_ms
        self._scale = scale
        self.ns = -1
        """The park's namespace index, set once the model registered it (asyncua wants the
        storage before its namespaces exist)."""

    async def init(self) -> None:
        pass

    async def stop(self) -> None:
        if self._store is not None:
            self._store.close()

    async def new_historized_node(self, node_id: Any, period: Any, count: int = 0) -> None:
        pass  # values are historized by the park itself

    async def save_node_value(self, node_id: Any, datavalue: Any) -> None:
        pass

    async def new_historized_event(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def save_event(self, event: Any) -> None:
        pass

    async def read_event_history(self, *args: Any, **kwargs: Any) -> tuple[list[Any], None]:
        return [], None

    async def read_node_history(self, node_id: ua.NodeId, start: dt.datetime | None,
                                end: dt.datetime | None, nb_values: int
                                ) -> tuple[list[ua.DataValue], dt.datetime | None]:
        target = history_target(node_id, self.ns)
        if target is None or self._store is None:
            return [], None
        limit = min(nb_values, MAX_VALUES_PER_PAGE) if nb_values else MAX_VALUES_PER_PAGE
        return await asyncio.to_thread(self._read, *target, start, end, limit)

    def _read(self, meter_id: str, name: str, start: dt.datetime | None,
              end: dt.datetime | None, limit: int
              ) -> tuple[list[ua.DataValue], dt.datetime | None]:
        assert self._store is not None
        interval = self._interval_ms
        # Values are stamped with their interval's end: [start, end] of ends is
        # [start - interval, end - interval] of interval starts.
        from_ms = _ms(start, 0) - interval
        to_ms = _ms(end, 2**62) - interval + 1
        reader = READERS[name]
        scale = self._scale
        values: list[ua.DataValue] = []
        for start_ms, wh, register, balance in self._store.interval_ends(
                meter_id, max(from_ms, 0), to_ms):
            stamp = wall_time(start_ms + interval)
            if len(values) == limit:
                return values, stamp  # the next page starts at this value
            values.append(ua.DataValue(
                ua.Variant(reader(wh, register, balance, interval, scale), ua.VariantType.Double),
                SourceTimestamp=stamp, ServerTimestamp=stamp))
        return values, None
