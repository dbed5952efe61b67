"""Reconciliation: every balance explained by the journal and the interval history, to the
minor unit, or an error naming the meters that are not.

For each meter, as of its last snapshot (the state the server last wrote, with the journal
sequence number it had applied and its open history bucket)::

    opening + top-ups + adjustments - charges  ==  balance + debt

* ``opening``: the config's ``opening_balance`` (a meter's state before any event);
* ``top-ups``, ``adjustments``: the journal's entries of the meter up to the snapshot's
  sequence number (adjustments include apportionments and arrears);
* ``charges``: the history's money of the meter's closed intervals before the snapshot's
  open bucket (the day records' sums, and the slots of the bucket's own day before it), plus
  that bucket's money so far;
* ``debt``: arrears still owed (an "arrears" adjustment adds to the debt, not the balance; a
  share of each later top-up pays it off), so the balance plus the debt is what the
  identity counts.

A meter that has no snapshot yet is at its opening. Totals per tenant and for the park are
sums of the meters. Any difference makes the report an error (:class:`Unbalanced`) that names
each meter and its difference: an unbalanced book is never printed as if fine.
"""

from __future__ import annotations

from collections import defaultdict

from policies.money import format_amount
from policies.records import NO_READING, MeterState
from server.errors import UserError
from server.reports.books import Books
from server.reports.table import Cell, Report

COLUMNS = ("level", "meter", "tenant", "opening", "topups", "adjustments", "charges",
           "expected", "balance", "debt", "difference")

class Unbalanced(UserError):
    """The books do not balance (the message names the meters and the differences)."""

    code = "unbalanced"

    def __init__(self, message: str, meters: dict[str, int]) -> None:
        super().__init__(message)
        self.meters = meters


def reconcile(books: Books, decimals: int) -> Report:
    charged = {}
    for meter_id in books.meters:
        state = books.snapshots.get(meter_id)
        if state is not None and state.bucket_start_ms != NO_READING:
            charged[meter_id] = books.history.charged_before(meter_id, state.bucket_start_ms)
    topups: dict[str, int] = defaultdict(int)
    adjustments: dict[str, int] = defaultdict(int)
    for seq, entry in books.entries:
        state = books.snapshots.get(entry.meter_id)
        if state is None or seq > state.journal_seq:
            continue  # not in the snapshot yet (the next one has it)
        if entry.kind == "topup":
            topups[entry.meter_id] += entry.amount
        else:
            adjustments[entry.meter_id] += entry.amount
    rows: list[tuple[Cell, ...]] = []
    by_tenant: dict[str, list[int]] = {}
    park = [0] * 8
    wrong: dict[str, int] = {}
    for meter_id, info in books.meters.items():
        state = books.snapshots.get(meter_id) or MeterState.opening(info.opening)
        charges = charged.get(meter_id, (0, 0))[1] + state.bucket_minor
        expected = info.opening + topups[meter_id] + adjustments[meter_id] - charges
        actual = state.balance + state.credit.debt
        if actual != expected:
            wrong[meter_id] = actual - expected
        figures = [info.opening, topups[meter_id], adjustments[meter_id], charges, expected,
                   state.balance, state.credit.debt, actual - expected]
        tenant = by_tenant.setdefault(info.tenant, [0] * 8)
        for index, value in enumerate(figures):
            tenant[index] += value
            park[index] += value
        rows.append(("meter", meter_id, info.tenant, *_money(figures, decimals)))
    if wrong:
        shown = ", ".join(f"{meter} {format_amount(diff, decimals)}"
                          for meter, diff in sorted(wrong.items())[:20])
        more = f" and {len(wrong) - 20} more" if len(wrong) > 20 else ""
        raise Unbalanced(
            f"the books do not balance for {len(wrong)} meter(s): {shown}{more} (balance + "
            "debt minus what the journal and the history explain); run `wattkeeper check`, "
            "and see docs/operations.md", wrong)
    for tenant_name in sorted(by_tenant):
        rows.append(("tenant", "", tenant_name, *_money(by_tenant[tenant_name], decimals)))
    return Report("reconciliation", "Reconciliation: opening + top-ups + adjustments - "
                  "charges = balance + debt", ("", ""), COLUMNS, tuple(rows),
                  ("park", "", "", *_money(park, decimals)),
                  notes=("as of each meter's last snapshot",))


def _money(values: list[int], decimals: int) -> list[str]:
    return [format_amount(value, decimals) for value in values]
