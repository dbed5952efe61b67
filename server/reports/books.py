"""What the reports read from a data directory: the park's books.

* the meters' **snapshots** (balance, debt, open history bucket, the last journal entry
  applied: ``journal_seq``);
* the **journal**'s money entries (openings are the config's ``opening_balance``; top-ups,
  adjustments, apportionments carry their amounts);
* the **history**, a meter's local day at a time (``persistence.history.DaySource``: the
  day records, energy and money per tariff band and per interval);
* the **audit log**, for who made each top-up and through which channel (read only by the
  top-ups report: :func:`topup_sources`).

The directory is opened read-only (``persistence.readonly``): a report runs next to the
server as an LMDB reader, in short read transactions, and never waits for it nor makes it wait.
A damaged record is an error naming it (``wattkeeper check`` says more), never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs

from persistence.audit import AuditEntry, read_audit
from persistence.damage import Damage, read_entry
from persistence.entries import NON_METER_KINDS, JournalEntry
from persistence.history import DaySource
from persistence.readonly import open_store_readonly
from persistence.recovery import load_snapshots, raw_entries_after
from persistence.store import Store
from policies.records import MeterState
from server.config import ParkConfig
from server.config.records import METER_KINDS
from server.errors import UserError

PAGE = 4096


class DamagedBooks(UserError):
    """A record the reports cannot read (``wattkeeper check`` lists it)."""


@attrs.frozen
class MeterInfo:
    meter_id: str
    tenant: str
    gateway: str
    opening: int
    tariff: str
    kind: str = "electricity"  # electricity | water | gas: its register counts Wh or litres


@attrs.frozen
class Books:
    meters: dict[str, MeterInfo]  # config order
    snapshots: dict[str, MeterState]
    entries: tuple[tuple[int, JournalEntry], ...]  # money entries, in journal order
    history: DaySource
    production: tuple[tuple[int, JournalEntry], ...] = ()
    """Production lines' counts (``server.production``), in journal order."""


def meter_infos(config: ParkConfig) -> dict[str, MeterInfo]:
    return {m.id: MeterInfo(m.id, m.tenant, m.gateway, m.opening_balance, m.tariff, m.kind)
            for m in config.meters}


def of_kind(books: Books, meter_kind: str) -> Books:
    """The books of one kind of meter only: kWh and m3 are never added together."""
    if meter_kind not in METER_KINDS:
        raise UserError(f"meter_kind must be one of {', '.join(METER_KINDS)}, got "
                        f"{meter_kind!r}")
    return attrs.evolve(books, meters={meter_id: info for meter_id, info in books.meters.items()
                                       if info.kind == meter_kind})


def quantity_column(meter_kind: str) -> str:
    """The column of a report's quantity: ``kwh`` (electricity) or ``m3`` (water, gas: the
    register counts litres, so register / 1000 is m3 as it is kWh)."""
    return "kwh" if meter_kind == "electricity" else "m3"


def other_kinds_note(books: Books, meter_kind: str) -> tuple[str, ...]:
    """A note when the park has meters of other kinds, which this report leaves out."""
    others = sorted({info.kind for info in books.meters.values()} - {meter_kind})
    if not others:
        return ()
    return (f"{meter_kind} meters only; the park's {' and '.join(others)} meters are in the "
            f"same report with meter_kind={others[0]}",)


def net_change(entry: JournalEntry) -> int:
    """What a money entry does to its meter's net position (balance less arrears owed): an
    "arrears" adjustment is money owed; top-ups and other adjustments change the balance."""
    if entry.kind == "adjustment" and entry.detail == "arrears":
        return -entry.amount
    return entry.amount


def open_books_store(config: ParkConfig) -> Store:
    return open_store_readonly(Path(config.server.data_dir))


def read_books(store: Store, config: ParkConfig) -> Books:
    money: list[tuple[int, JournalEntry]] = []
    production: list[tuple[int, JournalEntry]] = []
    for seq, entry in _entries(store):
        if entry.kind == "production":
            production.append((seq, entry))
        elif entry.amount != 0 and entry.kind not in NON_METER_KINDS:  # budgets are no money
            money.append((seq, entry))
    return Books(meter_infos(config), load_snapshots(store), tuple(money),
                 DaySource(store, config.calendar.timezone), tuple(production))


def _entries(store: Store) -> Iterator[tuple[int, JournalEntry]]:
    for seq, raw in raw_entries_after(store, 0):
        entry = read_entry(seq, raw)
        if isinstance(entry, Damage):
            raise DamagedBooks(f"journal entry {seq} is damaged ({entry}); the books cannot "
                               "be read past it: run `wattkeeper check`")
        yield seq, entry


def topup_sources(store: Store) -> dict[str, AuditEntry]:
    """Reference -> the audit entry of the accepted top-up it names."""
    sources: dict[str, AuditEntry] = {}
    before: int | None = None
    while True:
        records, more = read_audit(store, before, PAGE)
        for number, entry in records:
            if isinstance(entry, AuditEntry) and entry.command == "topup" \
                    and entry.result == "accepted":
                sources[entry.reference] = entry
            before = number
        if not more or not records:
            return sources
