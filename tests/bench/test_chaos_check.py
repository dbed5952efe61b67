"""The chaos bench's history checker finds what it claims to find, on synthetic histories.

A checker that reports zero for everything would make every run look perfect, so each
violation it names is planted here once, alone, and must be found (and nothing else).
"""

from __future__ import annotations

from bench.chaos_check import (
    Attempt,
    CoilWrite,
    JournalRecord,
    MeterFinal,
    MeterTruth,
    Overload,
    check_money,
    outcome_of_error,
    protection_gaps,
)
from policies.money import parse_price

PRICE = parse_price("1.00")  # 10 Wh per minor unit
OPENING = {"M-1": 10_000, "M-2": 10_000}


def _consistent() -> tuple[list[Attempt], list[JournalRecord], dict[str, MeterFinal],
                           dict[str, int], dict[str, MeterTruth]]:
    """A history with nothing wrong: two top-ups (one retried after an unknown outcome, one
    repeated after its ack), one refusal, and consumption charged exactly."""
    attempts = [
        Attempt("r1", "M-1", 500, "unknown", "gone"),
        Attempt("r1", "M-1", 500, "acked", duplicate=True, status="duplicate", balance=10_400),
        Attempt("r2", "M-2", 300, "acked", status="applied", balance=10_250),
        Attempt("r2", "M-2", 300, "acked", duplicate=True, status="duplicate", balance=10_250,
                repeat_of_ack=True),
        Attempt("r3", "M-2", 700, "refused", "unavailable"),
    ]
    journal = [JournalRecord(1, "topup", "M-1", 500, "r1"),
               JournalRecord(2, "topup", "M-2", 300, "r2")]
    # M-1 used 1,005 Wh (100 minor: the rounding carries 5 Wh), M-2 used 500 Wh (50 minor),
    # of which 200 were before a swap that added 5,000 kWh to its register.
    truths = {
        "M-1": MeterTruth(first_wh=1_000_000, final_wh=1_001_005),
        "M-2": MeterTruth(first_wh=2_000_000, final_wh=7_000_500,
                          swaps=((2_000_200, 7_000_200),)),
    }
    finals = {"M-1": MeterFinal(10_400, bucket_minor=30, register_wh=1_001_005),
              "M-2": MeterFinal(10_250, bucket_minor=50, register_wh=7_000_500)}
    history = {"M-1": 70}  # M-1: 70 minor in closed intervals + 30 in the open one
    return attempts, journal, finals, history, truths


def test_a_consistent_history_has_no_violations() -> None:
    attempts, journal, finals, history, truths = _consistent()
    report = check_money(attempts, journal, finals, history, OPENING, truths, PRICE)
    assert (report.lost_topups, report.double_applied, report.phantom_topups) == (0, 0, 0)
    assert (report.balance_mismatch_minor, report.mischarged_minor) == (0, 0)
    assert report.acked_topups == 2
    assert report.refused == {"unavailable": 1}
    assert report.unknown_topups == 1
    assert report.examples == ()


def test_an_acknowledged_top_up_missing_from_the_journal_is_lost() -> None:
    attempts, journal, finals, history, truths = _consistent()
    journal = [record for record in journal if record.reference != "r2"]
    # The balance never got it either: money and history still agree, only the ack lied.
    finals["M-2"] = MeterFinal(9_950, bucket_minor=50, register_wh=7_000_500)
    report = check_money(attempts, journal, finals, history, OPENING, truths, PRICE)
    assert report.lost_topups == 1
    assert (report.double_applied, report.balance_mismatch_minor, report.mischarged_minor) == (
        0, 0, 0)
    assert "lost top-up r2" in report.examples


def test_a_reference_journaled_twice_is_a_double_application() -> None:
    attempts, journal, finals, history, truths = _consistent()
    journal.append(JournalRecord(3, "topup", "M-1", 500, "r1"))
    finals["M-1"] = MeterFinal(10_900, bucket_minor=30, register_wh=1_001_005)
    report = check_money(attempts, journal, finals, history, OPENING, truths, PRICE)
    assert report.double_applied == 1
    assert (report.lost_topups, report.balance_mismatch_minor, report.mischarged_minor) == (
        0, 0, 0)


def test_a_repeat_answered_as_a_fresh_application_is_a_double_application() -> None:
    attempts, journal, finals, history, truths = _consistent()
    attempts[3] = Attempt("r2", "M-2", 300, "acked", status="applied", balance=10_550,
                          repeat_of_ack=True)
    report = check_money(attempts, journal, finals, history, OPENING, truths, PRICE)
    assert report.double_applied == 1


def test_a_refused_top_up_that_was_journaled_is_a_phantom() -> None:
    attempts, journal, finals, history, truths = _consistent()
    journal.append(JournalRecord(3, "topup", "M-2", 700, "r3"))
    finals["M-2"] = MeterFinal(10_950, bucket_minor=50, register_wh=7_000_500)
    report = check_money(attempts, journal, finals, history, OPENING, truths, PRICE)
    assert report.phantom_topups == 1
    assert report.lost_topups == report.double_applied == report.mischarged_minor == 0


def test_a_charge_for_a_garbled_register_is_a_mischarge() -> None:
    attempts, journal, finals, history, truths = _consistent()
    # The server charged 3,000 minor more than the 100 M-1 used, and its history agrees.
    finals["M-1"] = MeterFinal(7_400, bucket_minor=3_030, register_wh=1_001_005)
    report = check_money(attempts, journal, finals, history, OPENING, truths, PRICE)
    assert report.mischarged_minor == 3_000
    assert report.mischarged_meters == 1
    assert report.balance_mismatch_minor == 0


def test_a_swap_charged_as_consumption_is_a_mischarge() -> None:
    attempts, journal, finals, history, truths = _consistent()
    finals["M-2"] = MeterFinal(10_250 - 500_000, bucket_minor=500_050, register_wh=7_000_500)
    report = check_money(attempts, journal, finals, history, OPENING, truths, PRICE)
    assert report.mischarged_minor == 500_000


def test_a_balance_that_disagrees_with_its_history_is_a_mismatch() -> None:
    attempts, journal, finals, history, truths = _consistent()
    history["M-1"] = 75  # the history says 5 minor more was charged than the balance lost
    report = check_money(attempts, journal, finals, history, OPENING, truths, PRICE)
    assert report.balance_mismatch_minor == 5
    assert report.mismatched_meters == 1
    assert report.mischarged_minor == 0


def test_a_meter_without_truth_is_counted_unchecked() -> None:
    attempts, journal, finals, history, truths = _consistent()
    del truths["M-2"]
    report = check_money(attempts, journal, finals, history, OPENING, truths, PRICE)
    assert report.unchecked_meters == 1
    assert report.mischarged_minor == 0


MS = 1_000_000


def test_a_trip_within_delay_and_one_poll_is_no_gap() -> None:
    overload = Overload("gw1", 3, applied_ns=0, end_ns=5_000 * MS)
    writes = [CoilWrite(1_400 * MS, "gw1", 3, on=False)]
    report = protection_gaps([overload], writes, [], allowance_ms=1_500)
    assert (report.max_gap_ms, report.late, report.never_tripped) == (0.0, 0, 0)


def test_a_late_trip_is_a_gap_of_its_lateness() -> None:
    overload = Overload("gw1", 3, applied_ns=0, end_ns=5_000 * MS)
    writes = [CoilWrite(2_300 * MS, "gw1", 3, on=False)]
    report = protection_gaps([overload], writes, [], allowance_ms=1_500)
    assert report.max_gap_ms == 800.0
    assert report.late == 1


def test_an_overload_never_tripped_is_a_gap_of_its_whole_length() -> None:
    overload = Overload("gw1", 3, applied_ns=0, end_ns=5_000 * MS)
    writes = [CoilWrite(1_000 * MS, "gw1", 4, on=False)]  # another unit's trip
    report = protection_gaps([overload], writes, [], allowance_ms=1_500)
    assert report.max_gap_ms == 3_500.0
    assert report.never_tripped == 1


def test_a_reclose_during_the_overload_starts_a_new_allowance() -> None:
    overload = Overload("gw1", 3, applied_ns=0, end_ns=10_000 * MS)
    writes = [CoilWrite(1_400 * MS, "gw1", 3, on=False),   # tripped in time
              CoilWrite(3_000 * MS, "gw1", 3, on=True),    # reclosed while still overloaded
              CoilWrite(6_000 * MS, "gw1", 3, on=False)]   # tripped again 3 s later
    report = protection_gaps([overload], writes, [], allowance_ms=1_500)
    assert report.max_gap_ms == 1_500.0


def test_a_planned_server_stop_is_cut_out_and_restarts_the_allowance() -> None:
    overload = Overload("gw1", 3, applied_ns=0, end_ns=10_000 * MS)
    # Killed at 1 s (before the trip was due), back at 4 s, tripped 1.2 s later: no gap.
    writes = [CoilWrite(5_200 * MS, "gw1", 3, on=False)]
    report = protection_gaps([overload], writes, [(1_000 * MS, 4_000 * MS)], allowance_ms=1_500)
    assert report.max_gap_ms == 0.0
    # Without the planned window (the park fell over by itself) the same trip is 3.7 s late.
    report = protection_gaps([overload], writes, [], allowance_ms=1_500)
    assert report.max_gap_ms == 3_700.0


def test_only_errors_that_promise_nothing_was_done_are_refusals() -> None:
    assert outcome_of_error("unavailable") == "refused"
    assert outcome_of_error("conflict") == "refused"
    # The writer died with the request in flight: same code, but nobody knows what happened.
    assert outcome_of_error("unavailable", outcome_known=False) == "unknown"
    assert outcome_of_error("error:RuntimeError") == "unknown"
