"""Damaged records for tests: bytes as a bit error, a torn write or another program leaves them."""

from __future__ import annotations

from typing import Any

import msgpack

from persistence.codec import encode_entry, encode_state
from persistence.entries import JournalEntry
from persistence.keys import pack_u64
from persistence.store import Store
from policies.records import MeterState

NOT_MSGPACK = b"\xc1\xc1 not msgpack"  # 0xc1 is never used by msgpack


def tampered(encoded: bytes, index: int, value: object) -> bytes:
    """``encoded`` (a msgpack array) with element ``index`` replaced by ``value``."""
    fields: list[Any] = list(msgpack.unpackb(encoded, use_list=True, raw=False))
    fields[index] = value
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def damaged_snapshots(state: MeterState) -> dict[str, bytes]:
    """One of each kind of unusable snapshot, made from ``state``."""
    good = encode_state(state)
    return {
        "not msgpack": NOT_MSGPACK,
        "cut short": good[: len(good) // 2],
        "not a state": msgpack.packb({"balance": 100}),
        "a string balance": tampered(good, 1, "100.00"),
        "a balance beyond 64 bits": tampered(good, 1, 2**64 - 1),
        "an unknown format": tampered(good, 0, 99),
        "a sub-record that is a number": tampered(good, -2, 7),  # the alarms
    }


def damaged_entries(entry: JournalEntry) -> dict[str, bytes]:
    """Unusable journal entries whose meter can still be read (it is ``entry.meter_id``)."""
    good = encode_entry(entry)
    return {
        "cut in its reference": good[: good.index(entry.reference.encode()) + 2],
        "cut after its reference": good[: good.index(entry.reference.encode())
                                        + len(entry.reference.encode()) + 1],
        "a string amount": tampered(good, 3, "1.00"),
        "an amount beyond 64 bits": tampered(good, 3, 2**64 - 1),
        "an unknown kind": tampered(good, 1, "gift"),
    }


def unattributable_entries(entry: JournalEntry) -> dict[str, bytes]:
    """Unusable journal entries of no meter that can be read."""
    good = encode_entry(entry)
    return {
        "not msgpack": NOT_MSGPACK,
        "a number for a meter id": tampered(good, 2, 42),
        "cut before its meter id": good[:4],
    }


def poke(store: Store, database: str, key: bytes, value: bytes) -> None:
    """Overwrite one record, as damage would (committed, synced)."""
    txn = store.begin_write()
    txn.put(key, value, db=getattr(store, database))
    txn.commit()


def poke_entry(store: Store, seq: int, value: bytes) -> None:
    poke(store, "journal", pack_u64(seq), value)


def delete(store: Store, database: str, key: bytes) -> None:
    txn = store.begin_write()
    txn.delete(key, db=getattr(store, database))  # type: ignore[attr-defined]
    txn.commit()
