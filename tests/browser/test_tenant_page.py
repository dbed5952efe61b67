"""The tenants' self-service page in headless Chromium at a phone's viewport (390 x 844, a
touch screen), against a real server and simulator whose data directory already holds three
days of history by band: balances, the 30-day chart, the Top up redirect to the payment
provider, the language switch, and a revoked link refused."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import trio
from playwright.sync_api import Browser, Page, Route, expect

from persistence.codec import HistoryItem
from persistence.journal import open_journal
from persistence.store import open_store
from server.config import ParkConfig
from tests.browser.live import LivePark, live_park

ZONE = "Asia/Shanghai"  # the live park's [calendar] timezone
QUARTER = 900_000
PAY = "https://pay.example"
PHONE = {"width": 390, "height": 844}
PAGE_TOML = f"""
[tenant_page]
topup_url = "{PAY}/checkout?tenant={{tenant}}&meter={{meter}}&amount={{amount}}&return={{return}}"

[tenants.tenant-001]
name = "ACME Tools Ltd"
language = "zh-CN"
"""


def days_back(n: int) -> dt.date:
    return dt.datetime.now(ZoneInfo(ZONE)).date() - dt.timedelta(days=n)


def with_tenant_page(config_file: Path) -> None:
    """The page's section, and three whole local days before today for tenant-001's meters:
    the night's 32 quarters in band valley, the other 64 flat."""
    config_file.write_text(config_file.read_text() + PAGE_TOML)
    config = ParkConfig.from_toml_text(config_file.read_text(), str(config_file))

    async def write() -> None:
        with open_store(config.server.data_dir) as store:
            async with open_journal(store, days_zone=ZONE) as journal:
                items: list[HistoryItem] = []
                for back in (3, 2, 1):
                    date = days_back(back)
                    start = int(dt.datetime(date.year, date.month, date.day,
                                            tzinfo=ZoneInfo(ZONE)).timestamp() * 1000)
                    for meter in ("M-0001", "M-0002"):
                        items += [(meter, start + k * QUARTER, 20 * back, 2 * back,
                                   "valley" if k < 32 else "flat") for k in range(96)]
                journal.put_history_nowait(items)
                await journal.flush()

    trio.run(write)


@pytest.fixture(scope="module")
def page_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePark]:
    with live_park(tmp_path_factory.mktemp("tenant"), meters=4,
                   prepare=with_tenant_page) as park:
        yield park


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                  device_scale_factor=3, locale="en-US")
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def new_link(park: LivePark, tenant: str = "tenant-001") -> str:
    with park.api("admin") as client:
        answer = client.post(f"/api/tenants/{tenant}/links")
        answer.raise_for_status()
        url: str = answer.json()["url"]
    assert url.startswith(park.http_url + "/t/")  # no base_url: the host the admin asked
    return url


def test_the_page_shows_balances_and_charts_the_last_30_days(phone: Page,
                                                             page_live: LivePark) -> None:
    phone.goto(new_link(page_live))
    expect(phone.locator("body")).to_have_attribute("data-ready", "true")
    cards = phone.locator(".meter")
    expect(cards).to_have_count(2)  # tenant-001 has M-0001 and M-0002
    for meter in ("M-0001", "M-0002"):
        card = phone.locator(f'.meter[data-meter="{meter}"]')
        balance = card.locator(".balance")
        expect(balance).to_have_text(re.compile(r"^-?\d+\.\d\d CNY$"))
        shown = float(balance.inner_text().split()[0])
        assert abs(shown - float(page_live.meter(meter)["balance"])) < 1.0  # (it is used live)
        # The three days of history (today's bar too once a quarter has closed).
        expect(card.locator("canvas.chart")).to_have_attribute("data-bars",
                                                               re.compile(r"^[34]$"))
        expect(card.locator(".chart-empty")).to_be_hidden()
        # The 7 days before today: 96 quarters x (2 + 4 + 6) minor units = 11.52.
        expect(card.locator(".spend")).to_contain_text("11.52 CNY")
        expect(card.locator(".days-left")).to_have_text(re.compile(r"^\d+\.\d (days|天)$"))
    box = phone.locator(".meter canvas.chart").first.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] >= 180
    # Nothing wider than the phone: no sideways scrolling.
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    expect(phone.locator("#statements a").first).to_have_attribute(
        "href", re.compile(r"^/t/[^/]+/statement\?month=\d{4}-\d\d$"))


def test_the_page_starts_in_the_tenants_language_and_the_switch_is_kept(
        phone: Page, page_live: LivePark) -> None:
    url = new_link(page_live)
    phone.goto(url)
    expect(phone.locator("html")).to_have_attribute("lang", "zh-CN")  # [tenants] language
    card = phone.locator('.meter[data-meter="M-0001"]')
    expect(card.locator("button[type=submit]")).to_have_text("充值")
    expect(phone.locator("#topups-title")).to_have_text("最近充值")
    expect(phone.locator('[data-lang="zh-CN"]')).to_have_attribute("aria-pressed", "true")

    phone.click('[data-lang="en"]')
    expect(phone.locator("html")).to_have_attribute("lang", "en")
    expect(card.locator("button[type=submit]")).to_have_text("Top up")
    expect(phone.locator("#topups-title")).to_have_text("Recent top-ups")
    expect(card.locator(".meter-title")).to_have_text("Electricity · Meter M-0001")
    expect(card.locator(".days-left")).to_contain_text("days")

    phone.reload()  # the choice is kept on this phone
    expect(phone.locator("body")).to_have_attribute("data-ready", "true")
    expect(phone.locator("html")).to_have_attribute("lang", "en")
    expect(card.locator("button[type=submit]")).to_have_text("Top up")
    phone.click('[data-lang="zh-CN"]')
    expect(card.locator(".meter-title")).to_have_text("电 · 表计 M-0001")


def test_top_up_hands_the_tenant_to_the_payment_provider(phone: Page,
                                                         page_live: LivePark) -> None:
    url = new_link(page_live)
    before = page_live.meter("M-0002")["balance"]
    asked: list[str] = []

    def provider(route: Route) -> None:
        asked.append(route.request.url)
        route.fulfill(status=200, content_type="text/html",
                      body="<!doctype html><title>Pay</title><h1 id=pay>Payment</h1>")

    phone.route(f"{PAY}/**", provider)
    phone.goto(url)
    card = phone.locator('.meter[data-meter="M-0002"]')
    amount = card.locator("input[name=amount]")
    amount.fill("12.345")  # more decimals than the currency has: refused in the page
    card.locator("button[type=submit]").tap()
    expect(card.locator(".error")).to_be_visible()
    assert not asked
    amount.fill("50")
    card.locator("button[type=submit]").tap()
    expect(phone.locator("#pay")).to_have_text("Payment")
    [went] = asked
    target = urlsplit(went)
    assert (target.scheme, target.netloc, target.path) == ("https", "pay.example", "/checkout")
    assert parse_qs(target.query) == {"tenant": ["tenant-001"], "meter": ["M-0002"],
                                      "amount": ["50.00"], "return": [url]}
    # No money moves through the page: only the provider's notification would move it.
    assert float(page_live.meter("M-0002")["balance"]) <= float(before)


def test_a_revoked_link_is_refused(phone: Page, page_live: LivePark) -> None:
    url = new_link(page_live, "tenant-002")
    phone.goto(url)
    expect(phone.locator(".meter")).to_have_count(2)
    with page_live.api("admin") as client:
        answer = client.post("/api/tenants/tenant-002/links/revoke", json={"id": "lost-phone"})
        assert answer.json()["status"] == "applied"
    phone.goto(url)
    refused = phone.locator("#refused")
    expect(refused).to_have_attribute("data-code", "revoked")
    expect(refused).to_contain_text("withdrawn by the park office")
    expect(refused).to_contain_text("撤销")
    expect(phone.locator(".meter")).to_have_count(0)
    fresh = new_link(page_live, "tenant-002")  # a new link works again
    phone.goto(fresh)
    expect(phone.locator(".meter")).to_have_count(2)
