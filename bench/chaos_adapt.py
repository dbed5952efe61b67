"""Where ``bench chaos`` meets server APIs that are still landing: one place to fix.

Theory of operation
-------------------
The chaos bench measures behaviour other changes are building (issue 10): the park clock
(``server.clock.ParkClock``), ``Ledger.replace_meter``, ``MoneyAck.status``, error ``code``
attributes, ``StorageUnavailable``. Everything the bench's server worker and checker need from
the server goes through this module, written against the names in the interface notes, with a
fallback for a tree that does not have them yet, so the bench runs (and reports violations)
on any main in between. Each fallback says what it stands in for.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import attrs

from bench.chaos_check import JournalRecord
from persistence.codec import decode_entry, decode_interval
from persistence.keys import split_meter_key, unpack_u64
from persistence.recovery import recover_states
from persistence.store import Store, open_store
from policies.meter import step
from policies.records import MeterState
from server.app import Park, open_park
from server.config import ParkConfig

_CODES_BY_CLASS = {
    "BadRequest": "bad_request",
    "UnknownMeter": "unknown_meter",
    "Overloaded": "overloaded",
    "ReferenceConflict": "conflict",
    "StorageUnavailable": "unavailable",
    "MeterFaulted": "faulted",
    "JournalBroken": "broken",
}


def error_code(error: BaseException) -> str:
    """The contract's code for an error from the ledger (``code`` attribute, else by class)."""
    code = getattr(error, "code", None)
    if isinstance(code, str) and code:
        return code
    for cls in type(error).__mro__:
        if cls.__name__ in _CODES_BY_CLASS:
            return _CODES_BY_CLASS[cls.__name__]
    return f"error:{type(error).__name__}"


# --- the park's clock --------------------------------------------------------------------------


class BenchClock(Protocol):
    def wall_ms(self) -> int: ...
    def step_wall(self, delta_ms: int) -> None: ...


class _SteppedWallClock:
    """Stands in for ``server.clock.ParkClock`` on a tree without it: a wall clock with an
    offset. It cannot give the park a separate control clock; that is the point of the fault."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def step_wall(self, delta_ms: int) -> None:
        self.offset_ms += delta_ms


def make_clock() -> BenchClock:
    try:
        from server.clock import ParkClock  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return _SteppedWallClock()
    clock: BenchClock = ParkClock()
    return clock


@asynccontextmanager
async def open_bench_park(config: ParkConfig, clock: BenchClock) -> AsyncIterator[Park]:
    """``open_park`` with the field and the steppable clock."""
    if isinstance(clock, _SteppedWallClock):
        # Without ParkClock the buses stamp readings with their own default clock; point that
        # default at ours, or a wall-clock step would reach only the supervisor.
        from protocols.modbus.bus import GatewayBus

        defaults = GatewayBus.__init__.__kwdefaults__
        assert defaults is not None
        defaults["clock"] = clock.wall_ms
        async with open_park(config, clock_ms=clock.wall_ms, with_field=True) as park:
            yield park
        return
    opener: Callable[..., Any] = open_park
    async with opener(config, clock=clock, with_field=True) as park:
        yield park


# --- money commands ----------------------------------------------------------------------------


def ack_fields(ack: object) -> dict[str, Any]:
    """A ``MoneyAck`` as the worker's answer: balance, duplicate, status."""
    duplicate = bool(getattr(ack, "duplicate", False))
    status = getattr(ack, "status", "duplicate" if duplicate else "applied")
    return {"ok": True, "balance": getattr(ack, "balance", None), "duplicate": duplicate,
            "status": status}


async def replace_meter(park: Park, meter_id: str, reference: str, ts_ms: int, *,
                        start_wh: int, final_wh: int) -> dict[str, Any]:
    method = getattr(park.ledger, "replace_meter", None)
    if method is None:
        return {"ok": False, "code": "unsupported",
                "message": "this server has no Ledger.replace_meter"}
    ack = await method(meter_id, reference, ts_ms, start_wh=start_wh, final_wh=final_wh,
                       reason="bench chaos: meter swap")
    return ack_fields(ack)


# --- what the worker reports -------------------------------------------------------------------


def writer_pid(park: Park) -> int:
    """The journal writer process's pid (0 if there is none right now)."""
    pid = getattr(park.journal, "writer_pid", 0)
    return int(pid() if callable(pid) else pid or 0)


def faulted_meters(park: Park) -> list[str]:
    return sorted(actor.meter_id for actor in park.registry if actor.faulted)


async def restore_snapshot(park: Park, meter_id: str, raw: bytes) -> dict[str, Any]:
    """The operator's repair without a restart: write the backed-up snapshot through the
    park's own writer, then reset the meter (restart from snapshot + journal)."""
    actor = park.registry.get(meter_id)
    park.journal.put_snapshots_nowait([(meter_id, raw)])
    await park.journal.flush()
    park.supervisor.reset(actor)
    return {"ok": not actor.faulted, "faulted": actor.faulted}


# --- the data directory after the run (read-only) -----------------------------------------------


@attrs.frozen
class FinalState:
    """What the data directory says once the server has stopped."""

    states: dict[str, MeterState]
    journal: list[JournalRecord]
    history_minor: dict[str, int]
    """Per meter: minor units in its closed history intervals."""
    undecodable: list[str]
    """Meters whose stored state could not be read (named with the error)."""


def _replayer(config: ParkConfig) -> dict[str, Callable[[MeterState, object], MeterState]]:
    def one(policy: Any) -> Callable[[MeterState, object], MeterState]:
        return lambda state, message: step(state, message, policy)[0]

    return {meter_id: one(policy) for meter_id, policy in config.policies.items()}


def _open_readonly(data_dir: Path) -> Store:
    """The data directory read-only (``persistence.readonly``), or, on a tree without it,
    with the owner's lock (the server has stopped)."""
    try:
        from persistence.readonly import (  # type: ignore[import-not-found,unused-ignore]
            open_store_readonly,
        )
    except ImportError:
        return open_store(data_dir)
    store: Store = open_store_readonly(data_dir)
    return store


def _recover(store: Store, opening: Mapping[str, int], replay: Any,
             undecodable: list[str]) -> dict[str, MeterState]:
    """``recover_states``, whether it quarantines (``Recovered``) or raises on a bad record."""
    try:
        result: Any = recover_states(store, opening, replay)
    except Exception:  # one bad record: recover the others one by one, name the bad ones
        states: dict[str, MeterState] = {}
        for meter_id, balance in opening.items():
            try:
                states.update(_recover(store, {meter_id: balance}, replay, undecodable))
            except Exception as error:
                undecodable.append(f"{meter_id}: {error!r}")
        return states
    for meter_id, damage in getattr(result, "quarantined", {}).items():
        undecodable.append(f"{meter_id}: {damage}")
    return dict(getattr(result, "states", result))


def check_data_dir(data_dir: Path, config: ParkConfig) -> list[str] | None:
    """What ``wattkeeper check`` finds wrong in the data directory (None: no checker here)."""
    try:
        from persistence.check import check_store  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    with _open_readonly(data_dir) as store:
        report = check_store(store, [meter.id for meter in config.meters])
    return [str(finding) for finding in report.errors]


def read_final_state(data_dir: Path, config: ParkConfig) -> FinalState:
    """Balances (snapshot + newer entries, as the next start would have them), the journal and
    the history sums, through the persistence APIs; nothing is written."""
    opening = {meter.id: meter.opening_balance for meter in config.meters}
    replay = _replayer(config)
    undecodable: list[str] = []
    with _open_readonly(data_dir) as store:
        states = _recover(store, opening, replay, undecodable)
        journal: list[JournalRecord] = []
        history: dict[str, int] = {}
        with store.read() as txn:
            for key, value in txn.cursor(db=store.journal).iternext():
                entry = decode_entry(value)
                journal.append(JournalRecord(unpack_u64(key), entry.kind, entry.meter_id,
                                             entry.amount, entry.reference))
            for key, value in txn.cursor(db=store.history).iternext():
                meter_id, _start = split_meter_key(key)
                with contextlib.suppress(Exception):
                    _wh, minor, _band = decode_interval(value)
                    history[meter_id] = history.get(meter_id, 0) + minor
    return FinalState(states, journal, history, undecodable)


def read_snapshot(data_dir: Path, meter_id: str) -> bytes | None:
    with open_store(data_dir) as store:
        return store.get_snapshot(meter_id)


def write_snapshot(data_dir: Path, meter_id: str, raw: bytes) -> None:
    """Overwrite one meter's stored snapshot (the server must be stopped): the bench's corrupt
    record, and the operator's restore from backup."""
    with open_store(data_dir) as store:
        txn = store.begin_write()
        try:
            txn.put(meter_id.encode(), raw, db=store.snapshots)
        except BaseException:
            txn.abort()
            raise
        txn.commit()
