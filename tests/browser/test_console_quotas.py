"""The console's quotas page in headless Chromium, against a real server and simulator: a
line's tiny budget is spent within seconds and its meters are cut (reason quota); an operator
asks for more, an admin approves it in the page, and the meters are supplied again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.live import LivePark, live_park
from tests.browser.test_console import sign_in

QUOTA = """
[[quotas]]
id = "line-1"
name = "Stamping line 1"
meters = ["M-0001", "M-0002"]
budget_kwh = "0.005"
alarm_percents = [50, 100]

[[lines]]
id = "line-1"
meters = ["M-0001", "M-0002"]
output_unit = "parts"
"""


def with_quota(config_file: Path) -> None:
    config_file.write_text(config_file.read_text() + QUOTA)


@pytest.fixture(scope="module")
def quota_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePark]:
    with live_park(tmp_path_factory.mktemp("quotas"), meters=4, prepare=with_quota) as park:
        yield park


def test_a_spent_line_is_cut_and_an_approved_request_supplies_it_again(
        page: Page, quota_live: LivePark) -> None:
    sign_in(page, quota_live, "op")
    page.click("#tab-quotas")
    card = page.locator('.quota[data-group="line-1"]')
    expect(card).to_have_attribute("data-blocked", "true", timeout=20_000)
    expect(card.locator("h2")).to_contain_text("Stamping line 1")
    assert quota_live.meter("M-0001")["relay_reason"] == "quota"
    assert quota_live.meter("M-0003")["relay"] == "closed"  # not in the group

    card.locator('input[name="amount"]').fill("1000")
    card.locator('input[name="reason"]').fill("rush order for the weekend")
    card.locator('.quota-request button[type="submit"]').click()
    expect(page.locator("#toast")).to_contain_text("admin")
    expect(card.locator('tr[data-status="pending"]')).to_have_count(1)
    expect(card.locator("[data-decide]")).to_have_count(0)  # operators cannot decide

    page.context.clear_cookies()
    page.evaluate("sessionStorage.clear()")
    sign_in(page, quota_live, "admin")
    page.click("#tab-quotas")
    card = page.locator('.quota[data-group="line-1"]')
    card.locator('[data-decide="approve"]').click()
    expect(card).to_have_attribute("data-blocked", "false", timeout=10_000)
    expect(card.locator('tr[data-status="approved"]')).to_have_count(1)
    expect(card.locator(".quota-used")).to_contain_text("1000.005 kWh")
    page.wait_for_function(
        "() => window.wattkeeper.store.meters.get('M-0001')?.relay === 'closed'",
        timeout=10_000)


def test_viewers_see_the_groups_but_ask_for_nothing(page: Page, quota_live: LivePark) -> None:
    sign_in(page, quota_live, "viewer")
    page.click("#tab-quotas")
    card = page.locator('.quota[data-group="line-1"]')
    expect(card).to_be_visible()
    expect(card.locator(".quota-request")).to_have_count(0)


def test_an_operator_enters_a_days_output_and_sees_its_energy_per_unit(
        page: Page, quota_live: LivePark) -> None:
    sign_in(page, quota_live, "op")
    page.click("#tab-quotas")
    expect(page.locator("#output-card")).to_be_visible()
    expect(page.locator("#output-line")).to_have_value("line-1")
    today = page.evaluate("(() => { const d = new Date(); const p = (n) => String(n)"
                          ".padStart(2, '0'); return `${d.getFullYear()}-${p(d.getMonth() + 1)}"
                          "-${p(d.getDate())}`; })()")
    page.fill("#output-date", today)
    page.fill("#output-count", "250")
    page.click('#output-form button[type="submit"]')
    expect(page.locator("#toast")).to_contain_text("250 parts")
    row = page.locator(f'#output-table tr[data-line="line-1"][data-date="{today}"]')
    expect(row).to_contain_text("250 parts")
    expect(row.locator(".output-ratio")).not_to_have_text("—")
