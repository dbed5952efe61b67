"""What admins see of tenant notices and may do about them: the figures, the dead letters,
and "try again".

A dead letter is a delivery the provider refused for good (a mailbox that does not exist, a
phone number the SMS provider rejects) or that failed through the whole retry schedule. The
list is read from the delivery process's environment (``persistence.deliveries``), read-only,
so it shows even while that process is down; "try again" is a message to the process, which
moves the dead deliveries back to pending with their attempts reset.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Final

import attrs

from persistence.deliveries import read_deliveries
from server.ledger import BadRequest
from server.notices import Notifier
from server.notify_process import NotifyProcess

MAX_LISTED: Final = 200


@attrs.frozen
class RetryAnswer:
    reference: str
    notice: str
    status: str  # "accepted"


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(
        timespec="seconds").replace("+00:00", "Z")


class NoticeDesk:
    def __init__(self, data_dir: Path, notifier: Notifier | None,
                 delivery: NotifyProcess | None) -> None:
        self._data_dir = data_dir
        self._notifier = notifier
        self._delivery = delivery

    def view(self) -> dict[str, object]:
        """The figures and up to ``MAX_LISTED`` dead letters (the same object over HTTP and the
        hub)."""
        raised = self._notifier.statistics if self._notifier is not None else None
        figures = self._delivery.figures() if self._delivery is not None else None
        with read_deliveries(self._data_dir) as deliveries:
            dead = deliveries.dead(MAX_LISTED) if deliveries is not None else []
            pending, dead_total = deliveries.counts() if deliveries is not None else (0, 0)
        return {
            "raised": raised.raised if raised else 0,
            "written": raised.written if raised else 0,
            "waiting_for_storage": raised.queued if raised else 0,
            "delivery_running": bool(figures and figures.running),
            "delivered": figures.delivered if figures else 0,
            "retried": figures.retried if figures else 0,
            "pending": pending,
            "dead": dead_total,
            "dead_letters": [
                {"notice": d.notice_id, "channel": d.channel, "address": d.address,
                 "attempts": d.attempts, "error": d.detail, "since": _iso(d.first_ms)}
                for d in dead],
        }

    def retry(self, notice_id: object, reference: str) -> RetryAnswer:
        if not isinstance(notice_id, str):
            raise BadRequest('"notice" must be a notice id, or "" for every dead letter')
        if self._delivery is None:
            raise BadRequest("this server sends no notices (no channel or no tenant contact "
                             "is configured)")
        if not self._delivery.revive(notice_id):
            raise Unavailable("the delivery process is not running; it is being restarted")
        return RetryAnswer(reference, notice_id, "accepted")


class Unavailable(Exception):
    code = "unavailable"
