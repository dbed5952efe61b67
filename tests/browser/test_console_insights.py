"""The console's insights page in headless Chromium, over a live server whose data directory
holds one local day of history, computed here by hand.

The live park (``tests.browser.live``: 12 meters, two per tenant, Asia/Shanghai) is put on a
time-of-use tariff (valley 00-08 0.40, flat 08-18 0.80, peak 18-24 1.20) before the server
starts, and tenants 1-3 get the sector "machining" and floor areas. Yesterday, meter n
(0-11) used 10 (n + 1) Wh in each valley quarter hour, 20 (n + 1) in each flat one and
30 (n + 1) in each peak one. Tenant k (0-5) has meters 2k and 2k + 1, so 4k + 3 times that:
1840 (4k + 3) Wh in the day (32 valley, 40 flat and 24 peak quarters).
"""

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

ZONE = "Asia/Shanghai"
QUARTER = 900_000
TOU = """
[tariffs.tou]
kind = "tou"
bands = [
  { name = "valley", start = "00:00", end = "08:00", price = "0.40" },
  { name = "flat",   start = "08:00", end = "18:00", price = "0.80" },
  { name = "peak",   start = "18:00", end = "24:00", price = "1.20" },
]

[tenants.tenant-001]
sector = "machining"
area_m2 = 100

[tenants.tenant-002]
sector = "machining"
area_m2 = 100

[tenants.tenant-003]
sector = "machining"
area_m2 = 200
"""


def days_back(n: int) -> dt.date:
    return dt.datetime.now(ZoneInfo(ZONE)).date() - dt.timedelta(days=n)


def band_of(quarter: int) -> tuple[str, int]:
    """(band, Wh per quarter of meter 0)."""
    hour = quarter // 4
    return ("valley", 10) if hour < 8 else ("flat", 20) if hour < 18 else ("peak", 30)


def prepare(config_file: Path) -> None:
    text = config_file.read_text().replace('tariff = "flat"', 'tariff = "tou"') + TOU
    config_file.write_text(text)
    config = ParkConfig.from_toml_text(text, str(config_file))
    date = days_back(1)
    start = int(dt.datetime(date.year, date.month, date.day, tzinfo=ZoneInfo(ZONE))
                .timestamp() * 1000)

    async def write() -> None:
        with open_store(config.server.data_dir) as store:
            async with open_journal(store, days_zone=ZONE) as journal:
                items: list[HistoryItem] = []
                for n, meter in enumerate(config.meters):
                    for quarter in range(96):
                        band, wh = band_of(quarter)
                        items.append((meter.id, start + quarter * QUARTER, wh * (n + 1), 0,
                                      band, -1, 0))
                journal.put_history_nowait(items)
                await journal.flush()

    trio.run(write)


@pytest.fixture(scope="module")
def insights_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePark]:
    with live_park(tmp_path_factory.mktemp("insights"), meters=12, prepare=prepare) as park:
        yield park


def show(page: Page, shift: str = "10") -> None:
    page.fill("#insights-from", days_back(1).isoformat())
    page.fill("#insights-to", days_back(0).isoformat())
    page.fill("#insights-shift", shift)
    page.click("#insights-run")
    expect(page.locator("#insights-status")).to_contain_text(f"{shift}.00 %")


def test_the_insights_page_shows_each_tenant_beside_its_peers(
        page: Page, insights_live: LivePark, tmp_path: Path) -> None:
    sign_in(page, insights_live, "op")
    page.click("#tab-insights")
    expect(page.locator("#view-insights")).to_be_visible()
    show(page)
    expect(page.locator("#insights-status")).to_contain_text(days_back(1).isoformat())
    expect(page.locator("#chart-insights-bands")).to_have_attribute("data-bars", "6")
    expect(page.locator("#insights-table tbody tr")).to_have_count(6)
    first = page.locator('#insights-table tbody tr[data-tenant="tenant-001"]')
    # 5.520 kWh; peak 720 / 1840 = 39.13 %, flat 43.48 %, valley 17.39 %: to one decimal
    # 39.1 + 43.4 + 17.3 = 99.8 and the two units left go to flat and valley.
    expect(first).to_contain_text("5.520")
    expect(first.locator("td.bands")).to_contain_text("peak 39.1 % · flat 43.5 % · valley 17.4 %")
    expect(first.locator(".band-bar span")).to_have_count(3)
    # Its peak quarter hour: 3 x 30 Wh = 90 Wh, 0.360 kW; load factor 5520 / (96 x 90) =
    # 0.639. Night base: the 20 quarters from 00:00 to 05:00 are 30 Wh, 0.120 kW, which is
    # 30 x 96 / 5520 = 52.2 % of the average power.
    expect(first).to_contain_text("0.360")
    expect(first).to_contain_text("0.639")
    expect(first).to_contain_text("0.120")
    expect(first).to_contain_text("52.2 % of average")
    # Its peers are tenant-002 and -003 (machining): 12.88 kWh / 100 m2 and 20.24 / 200, a
    # median of 0.115 kWh per m2 beside its own 5.52 / 100 = 0.055.
    expect(first).to_contain_text("vs 2 in machining")
    expect(first).to_contain_text("0.055")
    expect(first).to_contain_text("peers 0.115")
    # 10 % of 24 x 90 Wh of peak, 216 Wh, at 1.20 - 0.40 = 0.80 a kWh: 0.1728, so 0.17.
    expect(first).to_contain_text("0.17")
    expect(first).to_contain_text("0.216 kWh moved")
    # Tenants 4-6 have no sector: they compare with the other five of the park.
    expect(page.locator('#insights-table tbody tr[data-tenant="tenant-004"]')).to_contain_text(
        "vs 5 in the park")
    # The park: 1840 x (3 + 7 + 11 + 15 + 19 + 23) = 143.520 kWh; the savings 5.76 (4k + 3)
    # minor units each, rounded down: 17 + 40 + 63 + 86 + 109 + 132 = 4.47.
    total = page.locator("#insights-table tfoot tr")
    expect(total).to_contain_text("Park")
    expect(total).to_contain_text("143.520")
    expect(total).to_contain_text("4.47")

    show(page, "50")  # half of the peak: 1080 Wh x 0.80 = 0.864
    expect(first).to_contain_text("0.86")
    expect(first).to_contain_text("1.080 kWh moved")

    with page.expect_download() as download_info:
        page.click("#insights-csv")
    saved = tmp_path / "insights.csv"
    download_info.value.save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0].startswith("tenant,sector,meters,kwh,pct_peak,pct_flat,pct_valley,peak_kw")
    assert lines[1].startswith("tenant-001,machining,2,5.520,39.1,43.5,17.4,0.360,")
    assert download_info.value.suggested_filename.startswith("insights-")

    page.select_option("#lang", "zh-CN")
    expect(page.locator("#tab-insights")).to_have_text("用能分析")
    expect(first.locator("td.bands")).to_contain_text("峰 39.1 % · 平 43.5 % · 谷 17.4 %")
    expect(first).to_contain_text("对比machining 2 家")
    expect(total).to_contain_text("园区合计")
    expect(page.locator("#insights-status")).to_contain_text("移峰 50.00 %")
    page.select_option("#lang", "en")


def test_viewers_have_no_insights_page(page: Page, insights_live: LivePark) -> None:
    sign_in(page, insights_live, "viewer")
    expect(page.locator("#tab-insights")).to_be_hidden()
    page.goto(insights_live.http_url + "/#/insights")
    expect(page.locator("#view-overview")).to_be_visible()
