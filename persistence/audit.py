"""The audit log's records: who asked for what, when, from where, and what came of it.

Every operator or money command, accepted or refused, becomes one :class:`AuditEntry`
(``server.operations`` writes them). Entries are append-only and read newest first, a page at
a time (:class:`AuditPage`, with an opaque cursor for the next, older page).
"""

from __future__ import annotations

from typing import Final, Literal, Protocol

import attrs

Result = Literal["accepted", "duplicate", "pending", "refused"]
MAX_PAGE: Final = 200


@attrs.frozen
class AuditEntry:
    ts_ms: int
    user: str
    role: str
    channel: str
    address: str
    command: str  # "topup" | "relay" | "reset_lockout" | "ack_alarm" | "replace_meter" | ...
    meter_id: str
    target: str  # the alarm id for ack_alarm, else ""
    reference: str  # the client's id
    detail: str  # "amount 100.00", "open: maintenance", ...
    result: Result
    code: str = ""  # the error code when refused
    message: str = ""


@attrs.frozen
class AuditPage:
    entries: tuple[AuditEntry, ...]
    next: str | None  # cursor of the next (older) page; None at the oldest entry


class AuditLog(Protocol):
    def append_nowait(self, entry: AuditEntry) -> None: ...

    def page(self, before: str | None, limit: int) -> AuditPage: ...


class MemoryAuditLog:
    """An audit log held in memory, newest last (tools and tests; the park keeps its log in
    LMDB). ``keep`` bounds it: the oldest entries go first."""

    def __init__(self, keep: int = 100_000) -> None:
        self._keep = keep
        self._entries: list[AuditEntry] = []
        self._first = 0  # number of the oldest entry still held

    def append_nowait(self, entry: AuditEntry) -> None:
        self._entries.append(entry)
        if len(self._entries) > self._keep:
            drop = len(self._entries) - self._keep
            del self._entries[:drop]
            self._first += drop

    def page(self, before: str | None, limit: int) -> AuditPage:
        end = self._first + len(self._entries)
        if before is not None:
            try:
                end = min(end, int(before))
            except ValueError:
                raise ValueError(f"not an audit cursor: {before!r}") from None
        start = max(self._first, end - max(1, min(limit, MAX_PAGE)))
        chosen = self._entries[start - self._first:end - self._first]
        return AuditPage(tuple(reversed(chosen)), str(start) if start > self._first else None)
