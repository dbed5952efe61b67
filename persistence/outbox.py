"""The notice outbox: tenant notices in the park's LMDB environment, written by the journal
writer.

Theory of operation
-------------------
A notice (``policies.notices.Notice``) is queued by the server like history or a snapshot
(``Journal.put_notices_nowait``) and written by the journal's writer process, in its group
commit, into two databases:

========== ============================ ====================================================
database   key                          value
========== ============================ ====================================================
outbox     notice id (UTF-8)            msgpack ``(seq, kind, tenant, meter, ts_ms, fields)``
outbox_seq seq (u64 BE), 1, 2, ...      the notice id
========== ============================ ====================================================

A notice whose id is in ``outbox`` already is not written again: ids are made from what
caused the notice (``policies.notices``), so a notice raised a second time after a crash, or
by the start-up catch-up of top-up receipts, is the same notice and is kept once. New notices
take the next ``seq``, so the delivery process (``server.notify_worker``) reads them in order
from its own cursor and never scans the whole outbox.

``meta[b"receipts"]`` is the highest journal seq whose top-up receipt is in the outbox, written
in the same transaction as the receipts. After a crash the server raises receipts for the
top-ups committed after it (``server.notices``), so a receipt is never lost between the
journal's commit and the outbox's.

Both databases were added without a schema change, like ``audit`` and ``days``
(``persistence.store``): a read-only reader of a directory no new server has opened finds none
and sees an empty outbox.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import msgpack

from persistence.keys import pack_u64, unpack_u64
from persistence.lmdb_types import Db, Txn
from policies.notices import Notice

RECEIPTS_KEY: Final = b"receipts"
LAST_KEY: Final = b"outbox_last"

NoticeItem = tuple[bytes, bytes]
"""``(id in UTF-8, encoded notice)`` as the writer receives it."""


class OutboxError(ValueError):
    """A stored notice that cannot be read (damaged)."""


def encode_notice(notice: Notice) -> NoticeItem:
    body = msgpack.packb((notice.kind, notice.tenant, notice.meter, notice.ts_ms,
                          dict(notice.fields)), use_bin_type=True)
    return notice.notice_id.encode(), body


def receipts_item(seq: int) -> NoticeItem:
    """A marker riding with the notices: receipts are in the outbox up to journal ``seq``."""
    return b"", pack_u64(seq)


def decode_notice(notice_id: str, value: bytes) -> tuple[int, Notice]:
    """``(outbox seq, notice)`` from a stored value."""
    try:
        seq, kind, tenant, meter, ts_ms, fields = msgpack.unpackb(value, raw=False,
                                                                  use_list=False)
        return int(seq), Notice(notice_id, str(kind), str(tenant), str(meter), int(ts_ms),
                                {str(k): str(v) for k, v in dict(fields).items()})
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise OutboxError(f"outbox notice {notice_id!r} is damaged: {error}") from error


def put_notices(txn: Txn, outbox: Db, order: Db, meta: Db,
                items: Sequence[NoticeItem]) -> int:
    """Write new notices (inside the writer's transaction); returns how many were new."""
    stored = txn.get(LAST_KEY, db=meta)
    last = unpack_u64(stored) if stored is not None else 0
    receipts = -1
    added = 0
    for key, body in items:
        if not key:
            receipts = max(receipts, unpack_u64(body))
            continue
        if txn.get(key, db=outbox) is not None:
            continue
        last += 1
        kind, tenant, meter, ts_ms, fields = msgpack.unpackb(body, raw=False, use_list=False)
        value = msgpack.packb((last, kind, tenant, meter, ts_ms, fields), use_bin_type=True)
        txn.put(key, value, db=outbox)
        txn.put(pack_u64(last), key, db=order)
        added += 1
    if added:
        txn.put(LAST_KEY, pack_u64(last), db=meta)
    if receipts >= 0:
        before = txn.get(RECEIPTS_KEY, db=meta)
        if before is None or unpack_u64(before) < receipts:
            txn.put(RECEIPTS_KEY, pack_u64(receipts), db=meta)
    return added


def receipts_through(txn: Txn, meta: Db) -> int:
    stored = txn.get(RECEIPTS_KEY, db=meta)
    return unpack_u64(stored) if stored is not None else 0


def last_seq(txn: Txn, meta: Db) -> int:
    stored = txn.get(LAST_KEY, db=meta)
    return unpack_u64(stored) if stored is not None else 0


def notices_after(txn: Txn, outbox: Db, order: Db, seq: int,
                  limit: int) -> Iterator[tuple[int, Notice]]:
    """Up to ``limit`` notices with an outbox seq above ``seq``, in order."""
    cursor = txn.cursor(db=order)
    if not cursor.set_range(pack_u64(seq + 1)):
        return
    for count, (key, notice_key) in enumerate(cursor.iternext()):
        if count >= limit:
            return
        value = txn.get(bytes(notice_key), db=outbox)
        if value is None:
            continue
        notice_id = bytes(notice_key).decode()
        yield unpack_u64(bytes(key)), decode_notice(notice_id, bytes(value))[1]


def find_notice(txn: Txn, outbox: Db, notice_id: str) -> Notice | None:
    value = txn.get(notice_id.encode(), db=outbox)
    return None if value is None else decode_notice(notice_id, bytes(value))[1]


def notice_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """Template values as the outbox keeps them: strings only."""
    return {str(key): str(value) for key, value in fields.items()}
