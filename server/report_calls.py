"""A report asked for by one of the park's clients (``GET /api/reports/KIND``, the hub's
``report`` message): the role check, then the same ``make_report`` as ``wattkeeper report``,
in a worker thread over the server's own store (read transactions: the park never waits)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import trio

from server.app import Park
from server.auth import Caller
from server.errors import UserError
from server.operations import Forbidden
from server.reports import KINDS, Unbalanced, make_report, render_report, statement_page

CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json",
                 "html": "text/html; charset=utf-8"}


class UnknownReport(LookupError):
    code = "not_found"


class BadReportRequest(ValueError):
    code = "bad_request"


async def run_report(park: Park, caller: Caller, kind: str,
                     query: Mapping[str, str]) -> tuple[str, str]:
    """``(body, format)`` of the report ``kind`` with the request's ``from``, ``to``, ``by``,
    ``tenant``, ``tariff``, ``meter_kind``, ``shift`` and ``format`` (csv, the default; json;
    html for a statement). Operators and admins only; an unbalanced book raises ``Unbalanced``."""
    if not caller.may("operator"):
        raise Forbidden("reports are for operators and admins")
    if kind not in KINDS:
        raise UnknownReport(f"no report {kind!r}: the reports are {', '.join(KINDS)}")
    form = query.get("format", "csv")
    try:
        if form == "html" and kind == "statement":
            page = await trio.to_thread.run_sync(functools.partial(
                statement_page, park.store, park.config, query.get("tenant"),
                first=query.get("from"), end=query.get("to")))
            return page, form
        report = await trio.to_thread.run_sync(functools.partial(
            make_report, kind, park.store, park.config, first=query.get("from"),
            end=query.get("to"), by=query.get("by", "meter"), tenant=query.get("tenant"),
            tariff=query.get("tariff"), meter_kind=query.get("meter_kind", "electricity"),
            shift=query.get("shift")))
        return render_report(report, form), form
    except Unbalanced:
        raise
    except UserError as error:
        raise BadReportRequest(str(error)) from None
