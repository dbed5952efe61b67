"""The hub's messages on its pipe to the server (``server.edge_link`` carries them).

Besides the messages every helper process sends (``server.edge_link``), the hub's pipe
carries :data:`LOGIN_FAILED` both ways, so that one login throttle covers the hub and HTTP, as
it does when the hub runs in the server's process: guessing passwords over one does not reset
the delay of the other. :data:`~server.edge_link.STATS` carries :class:`HubStatistics`.

The records that cross (who is calling, a command's answer, an audit page, the hub's
statistics) travel as tuples in field order; the helpers here turn them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs

from protocols.stream.feed import AuditLine
from protocols.stream.views import AuditRecord
from protocols.ws.hub import HubStatistics
from protocols.ws.protocol import AckInfo

LOGIN_FAILED: Final = "L"


def ack_row(ack: AckInfo) -> tuple[Any, ...]:
    return (ack.meter_id, ack.status, ack.balance, ack.relay_closed, ack.relay_reason)


def audit_rows(entries: Sequence[AuditRecord]) -> list[tuple[Any, ...]]:
    names = [field.name for field in attrs.fields(AuditLine)]
    return [tuple(getattr(entry, name) for name in names) for entry in entries]


@attrs.frozen
class AuditPageLine:
    """An audit page as the hub's process receives it."""

    entries: tuple[AuditLine, ...]
    next: str | None


def audit_page_of(payload: Sequence[Any]) -> AuditPageLine:
    rows, after = payload
    return AuditPageLine(tuple(AuditLine(*row) for row in rows), after)


def statistics_row(statistics: HubStatistics) -> tuple[Any, ...]:
    return attrs.astuple(statistics)


def statistics_of(row: Sequence[Any]) -> HubStatistics:
    return HubStatistics(*row)
