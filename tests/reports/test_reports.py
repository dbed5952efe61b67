"""The reports on a small park whose books are computed by hand here (books_park.py)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import trio

from persistence.check import check_store
from persistence.days import DayRecord, LocalDays, day_key, day_slots
from persistence.keys import meter_key
from persistence.readonly import open_store_readonly
from persistence.store import open_store
from server.app import open_park
from server.cli import main as cli_main
from server.errors import UserError
from server.reports import Unbalanced, make_report, render_report, statement_page
from tests.reports.books_park import (
    OPERATOR,
    PAYMENTS,
    at,
    books_config,
    books_toml,
    read,
)


async def run_the_day(data_dir: Path) -> None:
    """M-A1: 07:30 baseline, 07:45 +1 kWh, 08:00 +2 kWh (valley), 08:15 +1 kWh (flat), 18:15
    +5 kWh over 08:15-18:15 (10 hours: 40 flat intervals and one peak), a top-up of 50.00 by
    an operator at 09:00 and one of 30.00 by a payment integration at 19:00 (day 1).
    M-A2: an adjustment of -3.00 at 10:00. M-B1: a reading pair in the peak, 2 kWh."""
    config = books_config(data_dir)
    async with open_park(config, with_field=False) as park:
        await read(park, "M-A1", at(7, 30), 10_000)
        await read(park, "M-A1", at(7, 45), 11_000)
        await read(park, "M-A1", at(8, 0), 13_000)
        await read(park, "M-A1", at(8, 15), 14_000)
        await park.operations.top_up(OPERATOR, "M-A1", 50_00, "pay-op-1")
        await read(park, "M-A1", at(18, 15), 19_000)
        await park.operations.top_up(PAYMENTS, "M-A1", 30_00, "wechat:tx-9")
        await park.ledger.adjust("M-A2", -3_00, "fix-1", at(10), "meter read wrongly")
        await read(park, "M-B1", at(19, 0), 500_000)
        await read(park, "M-B1", at(19, 30), 502_000)
        await trio.sleep(0)


@pytest.fixture
def day_dir(tmp_path: Path) -> Path:
    trio.run(run_the_day, tmp_path / "park")
    return tmp_path / "park"


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def report(data_dir: Path, kind: str, **kwargs: str) -> str:
    config = books_config(data_dir)
    with open_store_readonly(data_dir) as store:
        return render_report(make_report(kind, store, config, **kwargs), "csv")


def test_consumption_by_meter_and_band(day_dir: Path) -> None:
    # M-A1: valley 07:30-08:00 3 kWh (1.20); 08:00-08:15 1 kWh flat (0.80); 08:15-18:15 5 kWh
    # spread evenly over 40 intervals: 08:15-18:00 is 39 of them (4.875 kWh flat, 3.90),
    # 18:00-18:15 0.125 kWh peak (0.15; a reading at an interval's end closes it). M-B1:
    # 19:00-19:30, 2 kWh peak (2.40).
    lines = rows(report(day_dir, "consumption", first="2026-11-10", end="2026-11-11"))
    by_meter = {line["meter"]: line for line in lines}
    a1 = by_meter["M-A1"]
    assert (a1["kwh_valley"], a1["cost_valley"]) == ("3.000", "1.20")
    assert (a1["kwh_flat"], a1["cost_flat"]) == ("5.875", "4.70")
    assert (a1["kwh_peak"], a1["cost_peak"]) == ("0.125", "0.15")
    b1 = by_meter["M-B1"]
    assert (b1["kwh_peak"], b1["cost_peak"]) == ("2.000", "2.40")
    assert by_meter["total"]["kwh"] == "11.000" and by_meter["total"]["cost"] == "8.45"
    tenants = {line["tenant"]: line for line in rows(report(
        day_dir, "consumption", first="2026-11-10", end="2026-11-11", by="tenant"))}
    assert tenants["acme"]["cost"] == "6.05" and tenants["beta"]["cost"] == "2.40"


def test_top_ups_by_day_channel_and_operator(day_dir: Path) -> None:
    # (Top-ups are stamped with the server's clock: the test's run, whenever that is.)
    lines = rows(report(day_dir, "topups", first="2000-01-01", end="2100-01-01"))
    assert [(r["channel"], r["operator"], r["count"], r["amount"]) for r in lines] == [
        ("http", "op", "1", "50.00"), ("payment", "payment:wechat", "1", "30.00"),
        ("", "", "2", "80.00")]
    assert rows(report(day_dir, "topups", first="2000-01-01", end="2000-01-02"))[-1][
        "amount"] == "0.00"


def test_reconciliation_balances_to_the_minor_unit(day_dir: Path) -> None:
    # M-A1: 100.00 + 50.00 + 30.00 - (1.20 + 0.80 + 3.90 + 0.15) = 173.95
    lines = {(r["level"], r["meter"] or r["tenant"]): r for r in rows(report(
        day_dir, "reconciliation"))}
    a1 = lines["meter", "M-A1"]
    assert (a1["opening"], a1["topups"], a1["charges"], a1["balance"], a1["difference"]) == (
        "100.00", "80.00", "6.05", "173.95", "0.00")
    a2 = lines["meter", "M-A2"]
    assert (a2["adjustments"], a2["balance"]) == ("-3.00", "17.00")
    assert lines["meter", "M-B1"]["balance"] == "2.60"  # 5.00 - 2.40
    assert lines["tenant", "acme"]["balance"] == "190.95"
    assert lines["park", ""]["balance"] == "193.55"


def remove_interval(data_dir: Path, meter_id: str, start_ms: int, *,
                    from_day_record: bool = True) -> None:
    """Delete an interval behind the writer's back (and from its day record)."""
    with open_store(data_dir) as store, store.begin_write() as txn:
        assert txn.delete(meter_key(meter_id, start_ms), db=store.history)
        if from_day_record:
            day_ms = LocalDays(books_config(data_dir).calendar.timezone).day_of(start_ms)
            key = day_key(meter_id, day_ms)
            offsets, bands, whs, minors = day_slots(txn.get(key, db=store.days))
            record = DayRecord()
            for offset, band, wh, minor in zip(offsets, bands, whs, minors, strict=True):
                if day_ms + offset != start_ms:
                    record.set_slot(offset, band, wh, minor)
            txn.put(key, record.encode(), db=store.days)


def test_a_charge_removed_behind_the_books_back_is_named(day_dir: Path) -> None:
    remove_interval(day_dir, "M-A1", at(7, 45))
    with pytest.raises(Unbalanced) as unbalanced:
        report(day_dir, "reconciliation")
    # The balance was charged 0.80 (07:45-08:00) that the history no longer explains.
    assert unbalanced.value.meters == {"M-A1": -80}
    assert "M-A1 -0.80" in str(unbalanced.value)


def test_an_interval_removed_only_from_the_history_is_named_by_check(day_dir: Path) -> None:
    remove_interval(day_dir, "M-A1", at(7, 45), from_day_record=False)
    with open_store_readonly(day_dir) as store:
        found = check_store(store)
    assert [(f.database, f.key) for f in found.errors] == [
        ("days", f'"M-A1" day {LocalDays("UTC").day_of(at(7, 45))}')]
    assert "differs from the day's intervals" in found.errors[0].problem


def test_the_same_period_gives_the_same_bytes_and_the_cli_prints_them(
        day_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "park.toml"
    config_file.write_text(books_toml(day_dir))
    outputs = []
    for _ in range(2):
        assert cli_main(["report", "consumption", "--config", str(config_file), "--from",
                         "2026-11-10", "--to", "2026-11-11", "--format", "json"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["totals"]["cost"] == "8.45"


def test_an_unbalanced_book_is_an_error_from_the_cli(
        day_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    remove_interval(day_dir, "M-B1", at(19, 0))
    config_file = tmp_path / "park.toml"
    config_file.write_text(books_toml(day_dir))
    assert cli_main(["report", "reconciliation", "--config", str(config_file)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing printed as if fine
    assert "do not balance for 1 meter(s): M-B1 -1.20" in captured.err


def test_a_tenant_statement_by_hand(day_dir: Path) -> None:
    # acme (M-A1 100.00, M-A2 20.00) on 2026-11-10: M-A2's adjustment -3.00, and M-A1's charges
    # (valley 1.20, flat 4.70, peak 0.15): closing 110.95. The top-ups carry the server's
    # clock (the test's run), so they are in the later period, which ends where the
    # reconciliation does: 190.95.
    lines = rows(report(day_dir, "statement", first="2026-11-10", end="2026-11-11",
                        tenant="acme"))
    assert [(r["item"], r["meter"], r["detail"], r["kwh"], r["amount"]) for r in lines] == [
        ("opening", "", "", "", ""),
        ("adjustment", "M-A2", "meter read wrongly", "", "-3.00"),
        ("charge", "M-A1", "flat", "5.875", "-4.70"),
        ("charge", "M-A1", "peak", "0.125", "-0.15"),
        ("charge", "M-A1", "valley", "3.000", "-1.20"),
        ("closing", "", "", "", ""),
    ]
    assert (lines[0]["balance"], lines[-1]["balance"]) == ("120.00", "110.95")
    later = rows(report(day_dir, "statement", first="2026-11-11", end="2100-01-01",
                        tenant="acme"))
    assert [r["amount"] for r in later if r["item"] == "topup"] == ["50.00", "30.00"]
    assert (later[0]["balance"], later[-1]["balance"]) == ("110.95", "190.95")
    config = books_config(day_dir)
    with open_store_readonly(day_dir) as store:
        page = statement_page(store, config, "acme", first="2026-11-10", end="2026-11-11")
        with pytest.raises(UserError, match="no tenant 'nobody'"):
            statement_page(store, config, "nobody", first="2026-11-10", end="2026-11-11")
    assert "<h1>Statement: acme</h1>" in page and "110.95 CNY" in page
    assert "<script" not in page


def test_what_if_prices_the_period_under_another_tariff(day_dir: Path) -> None:
    # flat 1.00 per kWh: acme 9 kWh -> 9.00 against 6.05 charged; beta 2 kWh -> 2.00 (2.40).
    lines = {r["tenant"]: r for r in rows(report(day_dir, "whatif", first="2026-11-10",
                                                 end="2026-11-11", tariff="flat"))}
    assert (lines["acme"]["charged"], lines["acme"]["whatif"], lines["acme"]["difference"]) == (
        "6.05", "9.00", "2.95")
    assert (lines["beta"]["charged"], lines["beta"]["whatif"]) == ("2.40", "2.00")
    assert lines["total"]["difference"] == "2.55"
    with pytest.raises(UserError, match="no tariff 'cheap'"):
        report(day_dir, "whatif", first="2026-11-10", end="2026-11-11", tariff="cheap")


def test_consumption_by_day_lists_every_day_of_the_period(day_dir: Path) -> None:
    lines = rows(report(day_dir, "consumption", first="2026-11-09", end="2026-11-12",
                        by="day"))
    assert [(r["day"], r["kwh"], r["cost"], r["cost_peak"]) for r in lines] == [
        ("2026-11-09", "0.000", "0.00", "0.00"),
        ("2026-11-10", "11.000", "8.45", "2.55"),  # M-A1 0.15 and M-B1 2.40 in the peak
        ("2026-11-11", "0.000", "0.00", "0.00"),
        ("total", "11.000", "8.45", "2.55"),
    ]


async def run_into_arrears(data_dir: Path) -> None:
    """M-B1 (5.00): 2 kWh in the peak on 2026-11-10 (2.40), 3 kWh in the peak the next day
    (3.60): -1.00 from then on."""
    async with open_park(books_config(data_dir), with_field=False) as park:
        await read(park, "M-B1", at(19, 0), 500_000)
        await read(park, "M-B1", at(19, 30), 502_000)
        await read(park, "M-B1", at(18, 30, day=1), 502_000)
        await read(park, "M-B1", at(19, 30, day=1), 505_000)
        await trio.sleep(0)


def test_arrears_by_day_counts_the_meters_below_zero_at_each_days_end(tmp_path: Path) -> None:
    trio.run(run_into_arrears, tmp_path / "park")
    lines = rows(report(tmp_path / "park", "arrears", first="2026-11-10", end="2026-11-13",
                        by="day"))
    assert [(r["day"], r["meters"], r["owed"]) for r in lines] == [
        ("2026-11-10", "0", "0.00"), ("2026-11-11", "1", "-1.00"), ("2026-11-12", "1", "-1.00")]
    now = {r["meter"]: r for r in rows(report(tmp_path / "park", "arrears"))}
    assert now["M-B1"]["balance"] == "-1.00"
    with pytest.raises(UserError, match="--by for arrears"):
        report(tmp_path / "park", "arrears", by="tenant")
