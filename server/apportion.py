"""Posting a period's apportionment: each tenant's share through the ledger, once.

``post_apportionment`` computes the period's pools from the server's own store in a worker
thread (read transactions, as a report does: ``server.reports.apportionment``), then posts each
share as a journaled ``apportionment`` on the tenant's main meter with its reference
``apportion/<pool>/<from>..<to>/<tenant>``. The journal's idempotency does the rest: a share
already posted answers "duplicate" and moves nothing, so an admin may run a period again
after a failure half-way. A share that now computes differently from what was posted (a
late reading changed a month already shared) is not posted again: it answers "conflict" with
both amounts, for the admin to correct by hand if at all.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import attrs
import trio

from persistence.entries import ReferenceConflict
from persistence.store import Store
from policies.money import format_amount
from server.clock import ParkClock
from server.config import ParkConfig
from server.errors import UserError
from server.ledger import BadRequest, Ledger
from server.reports.apportionment import PoolResult, apportion, period_key
from server.reports.books import read_books
from server.reports.period import Period, local_today, parse_period


@attrs.frozen
class Apportioned:
    """The answer: the period and each posting with its status."""

    period: str
    postings: list[dict[str, Any]]
    status: Literal["applied", "duplicate"]


def compute(store: Store, config: ParkConfig, first: str | None,
            end: str | None) -> tuple[Period, list[PoolResult]]:
    timezone = config.calendar.timezone
    period = parse_period(first, end, timezone, local_today(timezone))
    return period, apportion(read_books(store, config), config, period)


async def post_apportionment(store: Store, config: ParkConfig, ledger: Ledger,
                             clock: ParkClock, first: object, end: object) -> Apportioned:
    if not config.pools:
        raise BadRequest("this park has no [[pools]] to apportion")
    if not isinstance(first, str) or not isinstance(end, str):
        raise BadRequest('apportionment needs "from" and "to" dates, e.g. "2026-11-01" and '
                         '"2026-12-01"')
    try:
        period, results = await trio.to_thread.run_sync(functools.partial(
            compute, store, config, first, end))
    except UserError as error:
        raise BadRequest(str(error)) from None
    decimals = config.server.decimals
    postings: list[dict[str, Any]] = []
    for result in results:
        for posting in result.postings:
            row: dict[str, Any] = {
                "pool": posting.pool, "tenant": posting.tenant, "meter": posting.meter,
                "amount": format_amount(posting.minor, decimals),
                "kwh": format_amount(posting.wh, 3), "reference": posting.reference}
            try:
                ack = await ledger.apportion(posting.meter, posting.minor, posting.reference,
                                             clock.wall_ms(), posting.reason)
            except ReferenceConflict as error:
                row.update(status="conflict", message=str(error))
            else:
                row.update(status=ack.status, balance=format_amount(ack.balance, decimals))
            postings.append(row)
    applied = any(row["status"] == "applied" for row in postings)
    return Apportioned(period_key(period), postings, "applied" if applied else "duplicate")
