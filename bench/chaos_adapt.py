"""Where ``bench chaos`` meets the server's APIs: one place to fix when they change.

Theory of operation
-------------------
Everything the bench's server worker and its checker need from the server goes through this
module: opening the park on a steppable clock, money commands and how their errors map to the
contract's codes, the writer's pid, faulted meters, a live snapshot restore, and reading the
data directory back once the server has stopped. Where an API of issue 10 may not be on the
tree yet (``persistence.readonly``, ``persistence.check``), the fallback says what it stands
in for, so the bench runs (and reports violations) on any tree in between.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs

from bench.chaos_check import JournalRecord
from persistence.codec import decode_entry, decode_interval
from persistence.keys import split_meter_key, unpack_u64
from persistence.recovery import recover_states
from persistence.store import Store, open_store
from policies.meter import step
from policies.records import MeterState
from server.app import Park, open_park
from server.clock import ParkClock
from server.config import ParkConfig
from server.ledger import MoneyAck


def error_code(error: BaseException) -> str:
    """The contract's code for an error from the ledger (its ``code`` attribute); anything
    without one is not a refusal the server meant, so it is named by its class."""
    code = getattr(error, "code", None)
    if isinstance(code, str) and code:
        return code
    return f"error:{type(error).__name__}"


# --- the park and its money commands -----------------------------------------------------------


@asynccontextmanager
async def open_bench_park(config: ParkConfig, clock: ParkClock) -> AsyncIterator[Park]:
    """``open_park`` with the field and a clock whose wall the bench can step."""
    async with open_park(config, clock=clock, with_field=True) as park:
        yield park


def ack_fields(ack: MoneyAck) -> dict[str, Any]:
    """A ``MoneyAck`` as the worker's answer: balance, duplicate, status."""
    return {"ok": True, "balance": ack.balance, "duplicate": ack.duplicate,
            "status": ack.status}


async def replace_meter(park: Park, meter_id: str, reference: str, ts_ms: int, *,
                        start_wh: int, final_wh: int) -> dict[str, Any]:
    ack = await park.ledger.replace_meter(meter_id, reference, ts_ms, start_wh=start_wh,
                                          final_wh=final_wh, reason="bench chaos: meter swap")
    return ack_fields(ack)


# --- what the worker reports -------------------------------------------------------------------


def writer_pid(park: Park) -> int:
    """The journal writer process's pid (0 if there is none right now)."""
    return park.journal.writer_pid


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
