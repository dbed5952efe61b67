"""The history checker of ``bench chaos``: what the client saw against what the server kept.

Theory of operation
-------------------
The Jepsen idea: the client records every command and its answer — *acked* (with the balance
and whether it was a duplicate), *refused* (with the error code) or *unknown* (the server died
before answering) — and after the run the final state is checked against that history, not
against what the server says about itself. Pure functions over plain records; the bench feeds
them (``bench.chaos``), the unit tests feed them synthetic histories.

Money (per meter, in minor units, from the data directory after a clean stop):

* ``lost_topups`` — references acknowledged to the client that are not in the journal.
* ``double_applied`` — references journaled more than once, or answered as a fresh
  application (not a duplicate) more than once.
* ``phantom_topups`` — references every attempt of which was refused with a code that
  promises nothing was done (``unavailable``, ...), yet journaled.
* ``server_charged = opening + journaled money - balance``: what the tenant paid for energy.
* ``balance_mismatch_minor = |server_charged - (history intervals + open bucket)|``: the
  balance disagrees with the server's own record of what it charged.
* ``mischarged_minor = |server_charged - expected|``, ``expected = charge(true_wh)`` at the
  flat price, where ``true_wh`` = the last register - the first register the server read
  (both known exactly: the simulator is frozen at both ends) - the jumps of swapped meters
  (``start_wh - final_wh`` of each swap). Charges for garbled registers, swaps, clock steps
  or consumption lost across a restart all show up here.

Protection (``protection_gaps``): for every sustained overload, the time the relay stayed
closed while it lasted, beyond ``overload_delay + one poll`` from the moment it was closed
(the overload began, the relay reclosed, or the server came back from a *planned* stop),
with planned stops cut out of the closed time. A park that falls over by itself gets no
such allowance.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import attrs

from policies.money import charge

Outcome = Literal["acked", "refused", "unknown"]

DEFINITE_REFUSALS = frozenset({
    "bad_request", "unknown_meter", "overloaded", "conflict", "unavailable", "faulted",
})
"""Error codes that promise nothing was done (contract section 3, and ``MeterFaulted``'s "no
money was moved"); any other error leaves the outcome unknown to the client."""


def outcome_of_error(code: str, outcome_known: bool = True) -> Outcome:
    """A refusal, or an unknown outcome. ``unavailable`` also answers a request that was in
    flight when the writer died; then the error says its outcome is not known
    (``StorageUnavailable.outcome_known``)."""
    if code in DEFINITE_REFUSALS and outcome_known:
        return "refused"
    return "unknown"


@attrs.frozen
class Attempt:
    """One money command as the client saw it."""

    reference: str
    meter_id: str
    amount: int
    outcome: Outcome
    code: str = ""
    duplicate: bool = False
    status: str = ""
    balance: int | None = None
    repeat_of_ack: bool = False
    """A deliberate repeat of a reference that had been acknowledged already."""


@attrs.frozen
class JournalRecord:
    seq: int
    kind: str
    meter_id: str
    amount: int
    reference: str


@attrs.frozen
class MeterFinal:
    """A meter's final state as the data directory has it."""

    balance: int
    bucket_minor: int
    register_wh: int


@attrs.frozen
class MeterTruth:
    """What the simulator knows: the first and last register the server read, the swaps."""

    first_wh: int
    final_wh: int
    swaps: tuple[tuple[int, int], ...] = ()
    """``(final_wh of the old meter, start_wh of the new one)`` per swap."""

    @property
    def true_wh(self) -> int:
        return self.final_wh - self.first_wh - sum(start - final for final, start in self.swaps)


MONEY_KINDS = frozenset({"topup", "adjustment", "apportionment"})


@attrs.frozen
class MoneyReport:
    acked_topups: int
    lost_topups: int
    double_applied: int
    phantom_topups: int
    balance_mismatch_minor: int
    mischarged_minor: int
    mismatched_meters: int
    mischarged_meters: int
    unchecked_meters: int
    refused: dict[str, int]
    unknown_topups: int
    pending_topups: int
    examples: tuple[str, ...]
    """The worst offenders, one line each, for the bench's stderr."""


def check_money(
    attempts: Sequence[Attempt],
    journal: Sequence[JournalRecord],
    finals: Mapping[str, MeterFinal],
    history_minor: Mapping[str, int],
    opening: Mapping[str, int],
    truths: Mapping[str, MeterTruth],
    price_units_per_wh: int,
    *,
    examples: int = 5,
) -> MoneyReport:
    """The money figures of the module docstring."""
    by_reference: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        by_reference[attempt.reference].append(attempt)
    journaled: dict[str, list[JournalRecord]] = defaultdict(list)
    money_in: Counter[str] = Counter()
    for record in journal:
        if record.kind in MONEY_KINDS:
            journaled[record.reference].append(record)
            money_in[record.meter_id] += record.amount

    acked = {ref for ref, tries in by_reference.items() if any(a.outcome == "acked" for a in tries)}
    lost = sorted(ref for ref in acked if ref not in journaled)
    doubles = {ref for ref, records in journaled.items() if len(records) > 1}
    for ref, tries in by_reference.items():
        fresh = [a for a in tries if a.outcome == "acked" and not a.duplicate]
        if len(fresh) > 1 or any(a.repeat_of_ack for a in fresh):
            doubles.add(ref)
    phantoms = sorted(
        ref for ref, tries in by_reference.items()
        if ref in journaled and all(
            a.outcome == "refused" and a.code in DEFINITE_REFUSALS for a in tries)
    )
    refused = Counter(a.code for a in attempts if a.outcome == "refused")
    unknown = sum(1 for a in attempts if a.outcome == "unknown")
    pending = sum(1 for a in attempts if a.outcome == "acked" and a.status == "pending")

    mismatch_total = mischarge_total = 0
    mismatched: list[tuple[int, str]] = []
    mischarged: list[tuple[int, str]] = []
    unchecked = 0
    for meter_id, final in finals.items():
        server_charged = opening[meter_id] + money_in[meter_id] - final.balance
        recorded = history_minor.get(meter_id, 0) + final.bucket_minor
        mismatch = abs(server_charged - recorded)
        if mismatch:
            mismatch_total += mismatch
            mismatched.append((mismatch, f"{meter_id}: balance says {server_charged} minor "
                                         f"charged, its history says {recorded}"))
        truth = truths.get(meter_id)
        if truth is None:
            unchecked += 1
            continue
        expected = charge(truth.true_wh, price_units_per_wh, 0)[0] if truth.true_wh > 0 else 0
        wrong = abs(server_charged - expected)
        if wrong:
            mischarge_total += wrong
            mischarged.append((wrong, f"{meter_id}: charged {server_charged} minor for "
                                      f"{truth.true_wh} Wh (expected {expected}); register "
                                      f"{final.register_wh}, truth {truth.final_wh}"))
    lines = [f"lost top-up {ref}" for ref in lost[:examples]]
    lines += [f"double application of {ref}" for ref in sorted(doubles)[:examples]]
    lines += [f"phantom top-up {ref} (refused, yet journaled)" for ref in phantoms[:examples]]
    lines += [text for _, text in sorted(mismatched, reverse=True)[:examples]]
    lines += [text for _, text in sorted(mischarged, reverse=True)[:examples]]
    return MoneyReport(
        acked_topups=len(acked),
        lost_topups=len(lost),
        double_applied=len(doubles),
        phantom_topups=len(phantoms),
        balance_mismatch_minor=mismatch_total,
        mischarged_minor=mischarge_total,
        mismatched_meters=len(mismatched),
        mischarged_meters=len(mischarged),
        unchecked_meters=unchecked,
        refused=dict(sorted(refused.items())),
        unknown_topups=unknown,
        pending_topups=pending,
        examples=tuple(lines),
    )


# --- protection -------------------------------------------------------------------------------


@attrs.frozen
class Overload:
    gateway: str
    unit: int
    applied_ns: int
    end_ns: int


@attrs.frozen
class CoilWrite:
    mono_ns: int
    gateway: str
    unit: int
    on: bool


@attrs.frozen
class ProtectionReport:
    max_gap_ms: float
    overloads: int
    late: int
    """Overloads with any gap above zero."""
    never_tripped: int
    examples: tuple[str, ...]


def _closed_spans(writes: Sequence[CoilWrite], start: int, end: int) -> list[tuple[int, int]]:
    """The spans of ``[start, end]`` in which the relay was closed (coil on)."""
    closed = True  # a relay never written is as the simulator starts it: closed
    spans: list[tuple[int, int]] = []
    since = start
    for write in writes:
        if write.mono_ns <= start:
            closed = write.on
            continue
        if write.mono_ns >= end:
            break
        if closed and not write.on:
            spans.append((since, write.mono_ns))
        elif not closed and write.on:
            since = write.mono_ns
        closed = write.on
    if closed:
        spans.append((since, end))
    return spans


def _cut(span: tuple[int, int], windows: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``span`` minus the planned windows: the pieces in which the server was expected up."""
    pieces = [span]
    for w_start, w_end in windows:
        cut: list[tuple[int, int]] = []
        for p_start, p_end in pieces:
            if w_end <= p_start or w_start >= p_end:
                cut.append((p_start, p_end))
                continue
            if p_start < w_start:
                cut.append((p_start, w_start))
            if w_end < p_end:
                cut.append((w_end, p_end))
        pieces = cut
    return pieces


def protection_gaps(
    overloads: Iterable[Overload],
    writes: Iterable[CoilWrite],
    planned_windows: Sequence[tuple[int, int]],
    allowance_ms: float,
    *,
    examples: int = 5,
) -> ProtectionReport:
    """The protection figures of the module docstring; ``allowance_ms`` = delay + one poll."""
    by_unit: dict[tuple[str, int], list[CoilWrite]] = defaultdict(list)
    for write in sorted(writes, key=lambda w: w.mono_ns):
        by_unit[(write.gateway, write.unit)].append(write)
    windows = sorted(planned_windows)
    allowance_ns = allowance_ms * 1e6
    worst = 0.0
    count = late = never = 0
    found: list[tuple[float, str]] = []
    for overload in overloads:
        count += 1
        unit_writes = by_unit.get((overload.gateway, overload.unit), [])
        if not any(not w.on and overload.applied_ns <= w.mono_ns <= overload.end_ns
                   for w in unit_writes):
            never += 1
        gap = 0.0
        for span in _closed_spans(unit_writes, overload.applied_ns, overload.end_ns):
            for p_start, p_end in _cut(span, windows):
                gap = max(gap, (p_end - p_start - allowance_ns) / 1e6)
        if gap > 0:
            late += 1
            found.append((gap, f"{overload.gateway}/{overload.unit}: closed {gap:.0f} ms past "
                               f"delay + one poll"))
        worst = max(worst, gap)
    return ProtectionReport(
        max_gap_ms=round(worst, 1),
        overloads=count,
        late=late,
        never_tripped=never,
        examples=tuple(text for _, text in sorted(found, reverse=True)[:examples]),
    )
