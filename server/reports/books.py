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
from persistence.entries import QUOTA_KINDS, JournalEntry
from persistence.history import DaySource
from persistence.readonly import open_store_readonly
from persistence.recovery import load_snapshots, raw_entries_after
from persistence.store import Store
from policies.records import MeterState
from server.config import ParkConfig
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


@attrs.frozen
class Books:
    meters: dict[str, MeterInfo]  # config order
    snapshots: dict[str, MeterState]
    entries: tuple[tuple[int, JournalEntry], ...]  # money entries, in journal order
    history: DaySource


def meter_infos(config: ParkConfig) -> dict[str, MeterInfo]:
    return {m.id: MeterInfo(m.id, m.tenant, m.gateway, m.opening_balance, m.tariff)
            for m in config.meters}


def net_change(entry: JournalEntry) -> int:
    """What a money entry does to its meter's net position (balance less arrears owed): an
    "arrears" adjustment is money owed; top-ups and other adjustments change the balance."""
    if entry.kind == "adjustment" and entry.detail == "arrears":
        return -entry.amount
    return entry.amount


def open_books_store(config: ParkConfig) -> Store:
    return open_store_readonly(Path(config.server.data_dir))


def read_books(store: Store, config: ParkConfig) -> Books:
    return Books(meter_infos(config), load_snapshots(store), tuple(_money_entries(store)),
                 DaySource(store, config.calendar.timezone))


def _money_entries(store: Store) -> Iterator[tuple[int, JournalEntry]]:
    for seq, raw in raw_entries_after(store, 0):
        entry = read_entry(seq, raw)
        if isinstance(entry, Damage):
            raise DamagedBooks(f"journal entry {seq} is damaged ({entry}); the books cannot "
                               "be read past it: run `wattkeeper check`")
        if entry.amount != 0 and entry.kind not in QUOTA_KINDS:  # budgets are not money
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
