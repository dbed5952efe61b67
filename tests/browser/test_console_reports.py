"""The console's reports page in headless Chromium: charts, top consumers, CSV downloads and
a tenant's printable statement, over a server whose data directory already holds three days
of history (written through the journal's writer before it starts)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import trio
from playwright.sync_api import Page, expect

from persistence.codec import HistoryItem
from persistence.journal import open_journal
from persistence.store import open_store
from server.config import ParkConfig
from tests.browser.live import LivePark, live_park
from tests.browser.test_console import sign_in

METERS = 12
ZONE = "Asia/Shanghai"  # the live park's [calendar] timezone
QUARTER = 900_000


def days_back(n: int) -> dt.date:
    return dt.datetime.now(ZoneInfo(ZONE)).date() - dt.timedelta(days=n)


def wh_of(meter: int, day: int) -> int:
    """Each of the day's 96 intervals: meter M-0001 the smallest, M-0012 the largest."""
    return 10 * (meter + 1) * (day + 1)


def opening(meter: int) -> float:
    """The live park's opening balances (``tests.browser.live.park_toml``)."""
    return 0.50 if meter % 7 == 6 else 30.00 if meter % 5 == 4 else 300.00


def write_history(config_file: Path) -> None:
    """Three whole local days before today, on the flat tariff (1.00 a kWh)."""
    config = ParkConfig.from_toml_text(config_file.read_text(), str(config_file))

    async def write() -> None:
        with open_store(config.server.data_dir) as store:
            async with open_journal(store, days_zone=ZONE) as journal:
                items: list[HistoryItem] = []
                for day in range(3):
                    date = days_back(3 - day)
                    start = int(dt.datetime(date.year, date.month, date.day,
                                            tzinfo=ZoneInfo(ZONE)).timestamp() * 1000)
                    for n, meter in enumerate(config.meters):
                        wh = wh_of(n, day)
                        items += [(meter.id, start + k * QUARTER, wh, wh // 10, "flat")
                                  for k in range(96)]
                journal.put_history_nowait(items)
                await journal.flush()

    trio.run(write)


@pytest.fixture(scope="module")
def history_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePark]:
    with live_park(tmp_path_factory.mktemp("reports"), meters=METERS,
                   prepare=write_history) as park:
        yield park


def test_the_reports_page_charts_the_period_and_downloads_its_csv(
        page: Page, history_live: LivePark, tmp_path: Path) -> None:
    sign_in(page, history_live, "op")
    page.click("#tab-reports")
    page.fill("#reports-from", days_back(3).isoformat())
    page.fill("#reports-to", days_back(0).isoformat())
    page.click("#reports-run")
    expect(page.locator("#reports-status")).to_contain_text(days_back(3).isoformat())
    expect(page.locator("#chart-daily-kwh")).to_have_attribute("data-bars", "3")
    expect(page.locator("#chart-daily-cost")).to_have_attribute("data-bars", "3")
    # Tenants have two meters each: tenant-006 (M-0011, M-0012) uses the most. Over the three
    # days a meter n uses 96 * 10 * (n + 1) * (1 + 2 + 3) Wh.
    top = page.locator("#top-table tbody tr").first
    kwh = 96 * 10 * (11 + 12) * 6 / 1000
    expect(top).to_contain_text("tenant-006")
    expect(top).to_contain_text(f"{kwh:.3f}")
    expect(page.locator("#top-table tbody tr")).to_have_count(6)
    # M-0007 opens with 0.50 and is charged 6.72 on the first day: below zero at the end of
    # each of the three days (M-0010 joins it on the third).
    expect(page.locator("#chart-arrears")).to_have_attribute("data-bars", "3")

    with page.expect_download() as download_info:
        page.click('[data-csv="consumption:day"]')
    saved = tmp_path / "daily.csv"
    download_info.value.save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0].startswith("day,kwh,cost")
    total = sum(96 * wh_of(n, 0) for n in range(METERS))
    assert lines[1].startswith(f"{days_back(3).isoformat()},{total / 1000:.3f},")
    assert download_info.value.suggested_filename.startswith("consumption-by-day-")
    with page.expect_download() as arrears_info:
        page.click('[data-csv="arrears:day"]')
    arrears_file = tmp_path / "arrears.csv"
    arrears_info.value.save_as(arrears_file)
    expected = ["day,meters,owed"]
    for day in range(3):  # each meter's opening (live.park_toml) less three days' charges
        positions = [opening(n) - sum(96 * (wh_of(n, d) // 10) for d in range(day + 1)) / 100
                     for n in range(METERS)]
        below = [p for p in positions if p <= 0]
        expected.append(f"{days_back(3 - day).isoformat()},{len(below)},{sum(below):.2f}")
    assert arrears_file.read_text().splitlines() == expected
    assert expected[3].split(",")[1] == "2"  # M-0007 (0.50) and, on the third day, M-0010

    page.select_option("#statement-tenant", "tenant-001")
    with page.expect_popup() as popup_info:
        page.click("#statement-view")
    statement = popup_info.value
    expect(statement.locator("h1")).to_have_text("Statement: tenant-001")
    expect(statement.locator("body")).to_contain_text("Charges by day and tariff band")
    statement.close()


def test_viewers_have_no_reports_page(page: Page, history_live: LivePark) -> None:
    sign_in(page, history_live, "viewer")
    expect(page.locator("#tab-reports")).to_be_hidden()
    page.goto(history_live.http_url + "/#/reports")
    expect(page.locator("#view-overview")).to_be_visible()
