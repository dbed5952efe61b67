"""A report as a table, and its two forms: CSV (for spreadsheets) and JSON (for programs).

Both forms are byte-for-byte reproducible: the same data directory and period give the same
bytes (rows in a fixed order, no timestamps of the run, money as decimal strings).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import attrs

Cell = str | int | float | bool | None


@attrs.frozen
class Report:
    kind: str
    title: str
    period: tuple[str, str]  # ("2026-11-01", "2026-12-01"), "" when the report has none
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    totals: tuple[Cell, ...] | None = None
    notes: tuple[str, ...] = ()

    def as_dicts(self) -> list[dict[str, Cell]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def to_json(report: Report) -> str:
    body: dict[str, Any] = {
        "report": report.kind, "title": report.title,
        "from": report.period[0], "to": report.period[1],
        "columns": list(report.columns), "rows": report.as_dicts(),
    }
    if report.totals is not None:
        body["totals"] = dict(zip(report.columns, report.totals, strict=True))
    if report.notes:
        body["notes"] = list(report.notes)
    return json.dumps(body, ensure_ascii=False, indent=1) + "\n"


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow(_cells(row))
    if report.totals is not None:
        writer.writerow(_cells(report.totals))
    return out.getvalue()


def _cells(row: Sequence[Cell]) -> list[str]:
    return ["" if cell is None else str(cell).lower() if isinstance(cell, bool) else str(cell)
            for cell in row]
