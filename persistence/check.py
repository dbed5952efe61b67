"""Verifying a data directory: every record decodes, and the indexes agree with the journal.

Theory of operation
-------------------
``check_store`` reads every database of an open store (normally opened read-only next to a
running server, ``persistence.readonly``) inside **one** read transaction: the indexes are
compared with the journal as of one committed moment, so a top-up committed meanwhile cannot
look like a missing index key. It writes nothing and returns findings; printing them is the
command's job (``server.check``).

What is checked, database by database (layout in ``persistence/store.py``):

* ``meta``: the schema version is the one this version reads (if not, nothing else is read:
  the records could only be misread); the index watermark *W* is a sequence number within the
  journal.
* ``journal``: every key is a sequence number and every entry decodes and is usable
  (``persistence.damage``); every entry up to *W* has its ``meter_journal`` key and its ``refs``
  key, pointing back at it (``persistence.index``). A damaged entry is expected under what can
  still be read of it, as the writer indexes it.
* ``meter_journal`` and ``refs``: no key more than the journal explains. Each expected key was
  looked up above, so when every key of the database was one of those found, the sets are
  equal; only when there are more keys is the index walked to name those that are not
  explained (past *W*, pointing at a missing entry, or at another meter's or reference's entry).
* ``outcomes``: each is a balance, stored for an entry that exists.
* ``snapshots``: each decodes and is usable, its ``journal_seq`` is not past the journal's end,
  and (a note, not an error) its meter is in the config.
* ``history``: each key is a meter id and an interval start, each value ``(wh, minor, band)``.
* ``days``: once complete (``persistence.days``), the day records are exactly what the
  history's intervals make, no more and no fewer: reports read them, so an interval changed
  or removed behind the writer's back shows here (while they are being built: a note).
* ``audit``: each key is an audit number and each entry decodes and is usable
  (``persistence.audit.decode_audit``). A directory no server has opened since the audit log
  was added has no ``audit`` database yet: a note, not an error (the next start creates it).

Each record costs one decode and a few lookups; 100k snapshots and 200k journal entries check
in a few seconds. The read transaction is held for that long: the server keeps writing, but the
pages it frees meanwhile are reused only after the check, so ``data.mdb`` may grow a little.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import attrs

from persistence.audit import read_record
from persistence.codec import CodecError, decode_interval, decode_outcome
from persistence.damage import (
    Damage,
    checked_state,
    describe,
    quote,
    read_entry,
    show_key,
    usable_meter_id,
)
from persistence.days import (
    DAYS_KEY,
    DaysState,
    DayUpdates,
    LocalDays,
    day_slots,
    day_totals,
    usable_interval,
)
from persistence.index import INDEXED_KEY, indexed_owner
from persistence.keys import SEPARATOR, meter_key, split_meter_key, unpack_u64
from persistence.lmdb_types import Txn
from persistence.store import SCHEMA_VERSION, Store

ERROR = "error"
NOTE = "note"
SCHEMA_KEY = b"schema"
CHECKED = ("journal", "outcomes", "refs", "meter_journal", "snapshots", "history", "audit",
           "days")


@attrs.frozen
class Finding:
    """One thing wrong (``error``) or worth knowing (``note``), at one key of one database."""

    severity: str
    database: str
    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.database}[{self.key}]: {self.problem}"


@attrs.frozen
class CheckReport:
    path: str
    schema: int | None
    """The stored schema version (None when missing or unreadable)."""
    counts: Mapping[str, int]
    """Records per database (``CHECKED``)."""
    last_seq: int
    indexed: int
    """*W*: the index watermark (``persistence.index``)."""
    findings: tuple[Finding, ...]
    """The first ``max_findings`` found; the totals are below."""
    error_count: int
    note_count: int

    @property
    def clean(self) -> bool:
        return self.error_count == 0

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == ERROR)

    @property
    def notes(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == NOTE)


class _Findings:
    def __init__(self, limit: int) -> None:
        self.kept: list[Finding] = []
        self.limit = limit
        self.errors = 0
        self.notes = 0

    def error(self, database: str, key: str, problem: str) -> None:
        self.errors += 1
        self._keep(Finding(ERROR, database, key, problem))

    def note(self, database: str, key: str, problem: str) -> None:
        self.notes += 1
        self._keep(Finding(NOTE, database, key, problem))

    def _keep(self, finding: Finding) -> None:
        if len(self.kept) < self.limit:
            self.kept.append(finding)


def check_store(
    store: Store, configured: Collection[str] | None = None, *, max_findings: int = 1000
) -> CheckReport:
    """Check every record of ``store`` (see the module docstring). ``configured`` are the meter
    ids of the park config; snapshots of other meters are noted. Reads only."""
    found = _Findings(max_findings)
    counts = dict.fromkeys(CHECKED, 0)
    with store.read() as txn:
        schema = _check_schema(txn, store, found)
        last_seq = indexed = 0
        if schema == SCHEMA_VERSION:
            last_seq = _last_seq(txn, store)
            indexed = _check_watermark(txn, store, last_seq, found)
            matched_refs, matched_index = _check_journal(txn, store, indexed, configured,
                                                        counts, found)
            _check_index(txn, store, indexed, matched_index, counts, found)
            _check_refs(txn, store, indexed, matched_refs, counts, found)
            _check_outcomes(txn, store, counts, found)
            _check_snapshots(txn, store, last_seq, configured, counts, found)
            _check_history(txn, store, counts, found)
            _check_audit(txn, store, counts, found)
            _check_days(txn, store, counts, found)
    return CheckReport(str(store.path), schema, counts, last_seq, indexed, tuple(found.kept),
                       found.errors, found.notes)


def _check_schema(txn: Txn, store: Store, found: _Findings) -> int | None:
    raw = txn.get(SCHEMA_KEY, db=store.meta)
    if raw is None:
        found.error("meta", quote("schema"), "no schema version: not written by wattkeeper, or "
                    "damaged; nothing else was checked")
        return None
    if len(raw) != 8:
        found.error("meta", quote("schema"), f"{show_key(raw)} is not a schema version; nothing "
                    f"else was checked")
        return None
    schema = unpack_u64(raw)
    if schema != SCHEMA_VERSION:
        found.error("meta", quote("schema"), f"schema version {schema}, but this wattkeeper "
                    f"reads version {SCHEMA_VERSION}; nothing else was checked (run the "
                    f"matching wattkeeper version)")
    return schema


def _check_watermark(txn: Txn, store: Store, last_seq: int, found: _Findings) -> int:
    raw = txn.get(INDEXED_KEY, db=store.meta)
    if raw is None:
        return 0
    if len(raw) != 8:
        found.error("meta", quote("indexed"), f"{show_key(raw)} is not a sequence number")
        return 0
    indexed = unpack_u64(raw)
    if indexed > last_seq:
        found.error("meta", quote("indexed"), f"the indexes claim entries up to seq {indexed}, "
                    f"but the journal ends at seq {last_seq}")
    return indexed


def _check_journal(
    txn: Txn, store: Store, indexed: int, configured: Collection[str] | None,
    counts: dict[str, int], found: _Findings,
) -> tuple[int, int]:
    """Check every entry; returns how many ``refs`` and ``meter_journal`` keys were found as the
    entries up to the watermark expect them."""
    get, refs, index = txn.get, store.refs, store.meter_journal
    matched_refs = matched_index = 0
    for key, value in txn.cursor(db=store.journal).iternext():
        counts["journal"] += 1
        if len(key) != 8:
            found.error("journal", show_key(key), "the key is not a sequence number")
            continue
        seq = unpack_u64(key)
        entry = read_entry(seq, value)
        if isinstance(entry, Damage):
            if not entry.meter_id and seq <= indexed and configured:
                indexed_under = indexed_owner(txn, store, configured, seq)
                entry = attrs.evolve(entry, meter_id=indexed_under)
            owner = f"meter {entry.meter_id}" if entry.meter_id else "its meter cannot be read"
            found.error("journal", entry.key, f"{entry.problem} ({owner})")
        if seq > indexed:
            continue
        if entry.meter_id:
            if get(meter_key(entry.meter_id, seq), db=index) is None:
                found.error("meter_journal", f"{quote(entry.meter_id)} seq {seq}",
                            f"missing: journal entry seq {seq} is up to the index watermark "
                            f"(seq {indexed}) but not indexed")
            else:
                matched_index += 1
        if entry.reference:
            pointed = get(entry.reference.encode(), db=refs)
            if pointed is None:
                found.error("refs", quote(entry.reference),
                            f"missing: journal entry seq {seq} is up to the index watermark "
                            f"(seq {indexed}) but its reference is not indexed")
            elif pointed != key:
                found.error("refs", quote(entry.reference),
                            f"points at {_seq_text(pointed)}, but journal entry seq {seq} has "
                            f"this reference too (one reference, two money events)")
            else:
                matched_refs += 1
    return matched_refs, matched_index


def _check_index(
    txn: Txn, store: Store, indexed: int, matched: int, counts: dict[str, int],
    found: _Findings,
) -> None:
    counts["meter_journal"] = txn.stat(store.meter_journal)["entries"]
    if counts["meter_journal"] == matched:
        return  # every key is one the journal expects (module docstring)
    for key, _ in txn.cursor(db=store.meter_journal).iternext():
        if len(key) < 10 or key[-9:-8] != SEPARATOR:
            found.error("meter_journal", show_key(key), "not a meter id and sequence number")
            continue
        try:
            meter_id = key[:-9].decode()
        except UnicodeDecodeError:
            found.error("meter_journal", show_key(key), "the meter id is not UTF-8")
            continue
        seq = unpack_u64(key[-8:])
        shown = f"{quote(meter_id)} seq {seq}"
        if seq > indexed:
            found.error("meter_journal", shown, f"indexed past the watermark (seq {indexed})")
            continue
        raw = txn.get(key[-8:], db=store.journal)
        if raw is None:
            found.error("meter_journal", shown, f"points at journal entry seq {seq}, which does "
                        f"not exist")
            continue
        owner = read_entry(seq, raw).meter_id
        if owner != meter_id:
            found.error("meter_journal", shown, f"points at journal entry seq {seq}, which is "
                        f"{'meter ' + owner if owner else 'a damaged entry'}'s")


def _check_refs(
    txn: Txn, store: Store, indexed: int, matched: int, counts: dict[str, int],
    found: _Findings,
) -> None:
    counts["refs"] = txn.stat(store.refs)["entries"]
    if counts["refs"] == matched:
        return
    for key, value in txn.cursor(db=store.refs).iternext():
        reference = key.decode(errors="replace")
        shown = quote(reference)
        if len(value) != 8:
            found.error("refs", shown, f"{show_key(value)} is not a sequence number")
            continue
        seq = unpack_u64(value)
        if seq > indexed:
            found.error("refs", shown, f"indexed past the watermark (seq {indexed})")
            continue
        raw = txn.get(value, db=store.journal)
        if raw is None:
            found.error("refs", shown, f"points at journal entry seq {seq}, which does not exist")
            continue
        actual = read_entry(seq, raw).reference
        if actual != reference:
            found.error("refs", shown, f"points at journal entry seq {seq}, whose reference is "
                        f"{quote(actual) if actual else 'unreadable'}")


def _check_outcomes(txn: Txn, store: Store, counts: dict[str, int], found: _Findings) -> None:
    for key, value in txn.cursor(db=store.outcomes).iternext():
        counts["outcomes"] += 1
        if len(key) != 8:
            found.error("outcomes", show_key(key), "the key is not a sequence number")
            continue
        shown = f"seq {unpack_u64(key)}"
        try:
            decode_outcome(value)
        except Exception as error:
            found.error("outcomes", shown, describe(error))
            continue
        if txn.get(key, db=store.journal) is None:
            found.error("outcomes", shown, "an outcome of a journal entry that does not exist")


def _check_snapshots(
    txn: Txn, store: Store, last_seq: int, configured: Collection[str] | None,
    counts: dict[str, int], found: _Findings,
) -> None:
    for key, value in txn.cursor(db=store.snapshots).iternext():
        counts["snapshots"] += 1
        try:
            meter_id = key.decode()
        except UnicodeDecodeError:
            found.error("snapshots", show_key(key), "the key is not a meter id (not UTF-8)")
            continue
        shown = quote(meter_id)
        if not usable_meter_id(meter_id):
            found.error("snapshots", shown, "the key is not a usable meter id")
            continue
        try:
            state = checked_state(value)
        except CodecError as error:
            found.error("snapshots", shown, str(error))
            continue
        if state.journal_seq > last_seq:
            found.error("snapshots", shown, f"includes journal entries up to seq "
                        f"{state.journal_seq}, but the journal ends at seq {last_seq}")
        if configured is not None and meter_id not in configured:
            found.note("snapshots", shown, "a snapshot of a meter that is not in the config "
                       "(kept; harmless, used again if the meter is configured again)")


def _check_history(txn: Txn, store: Store, counts: dict[str, int], found: _Findings) -> None:
    for key, value in txn.cursor(db=store.history).iternext():
        counts["history"] += 1
        if len(key) < 10 or key[-9:-8] != SEPARATOR:
            found.error("history", show_key(key), "not a meter id and interval start")
            continue
        meter_id = key[:-9].decode(errors="replace")
        shown = f"{quote(meter_id)} {unpack_u64(key[-8:])}"
        try:
            wh, minor, band = decode_interval(value)
            if type(wh) is not int or type(minor) is not int or type(band) is not str:
                raise CodecError(f"({wh!r}, {minor!r}, {band!r}) is not (Wh, minor units, band)")
        except Exception as error:
            found.error("history", shown, f"not a history interval: {describe(error)}")


def _check_days(txn: Txn, store: Store, counts: dict[str, int], found: _Findings) -> None:
    days_db = store.days
    state = None if days_db is None else DaysState.decode(txn.get(DAYS_KEY, db=store.meta))
    if days_db is None or state is None or not state.complete:
        found.note("days", "-", "the day records are not complete yet (the journal writer "
                   "builds them from the history); reports read the intervals meanwhile")
        return
    counts["days"] = txn.stat(days_db)["entries"]
    local_days = LocalDays(state.zone)
    made_keys: set[bytes] = set()

    def compare(made: DayUpdates) -> None:
        for key, value in made.encoded():
            made_keys.add(key)
            stored = txn.get(key, db=days_db)
            meter_id, day_ms = split_meter_key(key)
            shown = f"{quote(meter_id)} day {day_ms}"
            if stored is None:
                found.error("days", shown, "missing: the history has intervals that day")
            elif _day_figures(stored) != _day_figures(value):
                found.error("days", shown, "differs from the day's intervals in the history "
                            "(an interval changed or removed behind the writer's back?)")

    current = b""
    made = DayUpdates(local_days, lambda key: None)
    for key, value in txn.cursor(db=store.history).iternext():
        try:
            meter_id, start_ms = split_meter_key(key)
            wh, minor, band = decode_interval(value)
        except Exception:
            continue  # named by the history check
        if not usable_interval(start_ms, wh, minor, band):
            continue  # the writer leaves those out of the day records
        prefix = key[:-8]
        if prefix != current:
            compare(made)
            made = DayUpdates(local_days, lambda key: None)
            current = prefix
        made.add(meter_id, start_ms, wh, minor, band)
    compare(made)
    if counts["days"] > len(made_keys):
        for key, _ in txn.cursor(db=days_db).iternext():
            if key not in made_keys:
                meter_id, day_ms = split_meter_key(key)
                found.error("days", f"{quote(meter_id)} day {day_ms}", "a day record for "
                            "which the history has no intervals")


def _day_figures(value: bytes) -> object:
    try:
        offsets, bands, wh, minor = day_slots(value)
        return sorted(day_totals(value)), list(offsets), bands, list(wh), list(minor)
    except Exception as error:
        return f"unreadable: {describe(error)}"


def _check_audit(txn: Txn, store: Store, counts: dict[str, int], found: _Findings) -> None:
    if store.audit is None:
        found.note("audit", "-", "no audit database yet: this directory was last opened by a "
                   "wattkeeper without the audit log; the next server start creates it")
        return
    for key, value in txn.cursor(db=store.audit).iternext():
        counts["audit"] += 1
        _, record = read_record(key, value)
        if isinstance(record, Damage):
            found.error("audit", record.key, record.problem)


def _last_seq(txn: Txn, store: Store) -> int:
    """The highest sequence number in the journal, past any key that is not one."""
    cursor = txn.cursor(db=store.journal)
    if not cursor.last():
        return 0
    key = cursor.key()
    if len(key) == 8:
        return unpack_u64(key)
    return max((unpack_u64(key) for key, _ in cursor.iternext() if len(key) == 8),
               default=0) if cursor.first() else 0


def _seq_text(raw: bytes) -> str:
    return f"journal entry seq {unpack_u64(raw)}" if len(raw) == 8 else show_key(raw)

