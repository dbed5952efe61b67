"""Screenshots of the console for the docs: ``python -m tests.browser.screenshots``.

Runs a 200-meter park (simulator + server, as ``wattkeeper demo`` does, on free ports), signs
in as the operator in headless Chromium, lets the load chart fill for ``--seconds`` and writes
``docs/console-overview.png`` and ``docs/console-meters.png``; then a 12-meter park with
three days of history (``tests.browser.test_console_reports``) for
``docs/console-reports.png``, and the same park with two quota groups (one spent, with a
request waiting) and a production line with three days' counts for ``docs/console-quotas.png``;
a tenant's self-service page on a phone (390 x 844, ``tests.browser.test_tenant_page``'s
park) for ``docs/tenant-page.png``; and the admins' notices page with dead letters (an SMTP
receiver started here refuses two tenants' mailboxes) for ``docs/console-notices.png``.
``--only quotas`` (or ``reports``, ``tenant``, ``notices``) takes that one shot alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

from bench.notify_sinks import SmtpSink
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.browser.live import LOGINS, REPO, live_park
from tests.browser.test_console_reports import days_back, write_history
from tests.browser.test_tenant_page import PHONE, with_tenant_page


def sign_in(page: Page, url: str, user: str = "op") -> None:
    page.goto(url + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.fill("#login-user", user)
    page.fill("#login-password", LOGINS[user])
    page.click("#login-submit")
    expect(page.locator("#conn")).to_have_attribute("data-state", "online")


def reports_shot(browser: Browser, out: Path) -> None:
    with tempfile.TemporaryDirectory() as directory, \
            live_park(Path(directory), meters=12, prepare=write_history) as park:
        page = browser.new_page(viewport={"width": 1360, "height": 900}, locale="en-US")
        sign_in(page, park.http_url)
        page.click("#tab-reports")
        page.fill("#reports-from", days_back(3).isoformat())
        page.fill("#reports-to", days_back(0).isoformat())
        page.click("#reports-run")
        expect(page.locator("#chart-daily-kwh")).to_have_attribute("data-bars", "3")
        time.sleep(0.5)
        page.screenshot(path=str(out / "console-reports.png"))


SHOT_QUOTAS = """
[[quotas]]
id = "stamping-1"
name = "Stamping line 1"
meters = ["M-0001", "M-0002"]
budget_kwh = "0.005"

[[quotas]]
id = "assembly"
name = "Assembly hall"
meters = ["M-0003", "M-0004", "M-0005"]
budget = "5000.00"
alarm_percents = [80, 100]

[[lines]]
id = "stamping-1"
name = "Stamping line 1"
meters = ["M-0001", "M-0002"]
output_unit = "parts"
"""


def with_quotas(config_file: Path) -> None:
    config_file.write_text(config_file.read_text() + SHOT_QUOTAS)
    write_history(config_file)


def quotas_shot(browser: Browser, out: Path) -> None:
    with tempfile.TemporaryDirectory() as directory, \
            live_park(Path(directory), meters=12, prepare=with_quotas) as park:
        page = browser.new_page(viewport={"width": 1360, "height": 900}, locale="en-US")
        sign_in(page, park.http_url)
        for day, count in ((3, 1200), (2, 1350), (1, 1100)):
            page.evaluate("([date, count]) => window.wattkeeper.hub.command('output', "
                          "{line: 'stamping-1', date, count})",
                          [days_back(day).isoformat(), count])
        page.click("#tab-quotas")
        card = page.locator('.quota[data-group="stamping-1"]')
        expect(card).to_have_attribute("data-blocked", "true", timeout=20_000)
        card.locator('input[name="amount"]').fill("800")
        card.locator('input[name="reason"]').fill("weekend shift for the export order")
        card.locator('.quota-request button[type="submit"]').click()
        expect(card.locator('tr[data-status="pending"]')).to_have_count(1)
        expect(page.locator("#output-table tbody tr")).not_to_have_count(0)
        time.sleep(0.5)
        page.screenshot(path=str(out / "console-quotas.png"), full_page=True)


def tenant_shot(browser: Browser, out: Path) -> None:
    with tempfile.TemporaryDirectory() as directory, \
            live_park(Path(directory), meters=4, prepare=with_tenant_page) as park:
        with park.api("admin") as client:
            url = client.post("/api/tenants/tenant-001/links").json()["url"]
        with park.api("op") as client:
            client.post("/api/topups", json={"id": "shot-1", "meter": "M-0001",
                                             "amount": "200.00"})
        context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                      device_scale_factor=2, locale="en-US")
        page = context.new_page()
        page.goto(url)
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        page.click('[data-lang="en"]')
        expect(page.locator(".meter canvas.chart").first).to_have_attribute("data-bars", "3")
        time.sleep(0.5)
        page.screenshot(path=str(out / "tenant-page.png"), full_page=True)
        context.close()


SHOT_REFUSED = frozenset({"billing@tenant-001.example", "accounts@tenant-002.example"})


def with_mailboxes(smtp_port: int) -> Callable[[Path], None]:
    def prepare(config_file: Path) -> None:
        config_file.write_text(config_file.read_text() + f"""
[notify]
per_hour = 0

[notify.smtp]
host = "127.0.0.1"
port = {smtp_port}
from = "park@example.com"

[tenants.tenant-001]
name = "Hongda Machinery"
emails = ["billing@tenant-001.example", "energy@tenant-001.example"]

[tenants.tenant-002]
name = "ACME Tools Ltd"
emails = ["accounts@tenant-002.example"]
""")

    return prepare


def notices_shot(browser: Browser, out: Path) -> None:
    smtp = SmtpSink(refuse=SHOT_REFUSED)
    smtp.start()
    try:
        with tempfile.TemporaryDirectory() as directory, \
                live_park(Path(directory), meters=12,
                          prepare=with_mailboxes(smtp.port)) as park:
            with park.api("op") as client:
                for n, meter in enumerate(("M-0001", "M-0002", "M-0003", "M-0001")):
                    client.post("/api/topups", json={"id": f"pay-2026-{n + 1:04d}",
                                                     "meter": meter, "amount": "200.00"})
            page = browser.new_page(viewport={"width": 1360, "height": 760}, locale="en-US")
            sign_in(page, park.http_url, "admin")
            page.click("#tab-notices")
            expect(page.locator("#notices-table tbody tr")).to_have_count(4, timeout=20_000)
            expect(page.locator("#notices-delivered")).to_have_text("3", timeout=10_000)
            time.sleep(0.5)
            page.screenshot(path=str(out / "console-notices.png"), full_page=True)
    finally:
        smtp.stop()


SHOTS = {"reports": reports_shot, "quotas": quotas_shot, "tenant": tenant_shot,
         "notices": notices_shot}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=40.0,
                        help="how long the load chart fills before the shot (default 40)")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--only", choices=tuple(SHOTS), help="take this one shot alone")
    args = parser.parse_args()
    if args.only:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            SHOTS[args.only](browser, args.out)
            browser.close()
        name = "tenant-page" if args.only == "tenant" else f"console-{args.only}"
        print(f"wrote {name}.png in", args.out)
        return
    with tempfile.TemporaryDirectory() as directory, \
            live_park(Path(directory), meters=200, gateways=4,
                      nearly_empty="0.03") as park, \
            sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 820}, locale="en-US")
        sign_in(page, park.http_url)
        for meter in ("M-0012", "M-0031"):  # two meters opened for maintenance
            page.evaluate("meter => window.wattkeeper.hub.command('relay', {meter, "
                          "action: 'open', reason: 'maintenance'})", meter)
        time.sleep(args.seconds)
        page.screenshot(path=str(args.out / "console-overview.png"))
        page.click("a[data-view=meters]")
        page.locator("#meter-rows").evaluate("body => body.scrollTop = 4 * 30")
        time.sleep(1.5)
        page.screenshot(path=str(args.out / "console-meters.png"))
        reports_shot(browser, args.out)
        quotas_shot(browser, args.out)
        tenant_shot(browser, args.out)
        notices_shot(browser, args.out)
        browser.close()
    print("wrote console-overview.png, console-meters.png, console-reports.png, "
          "console-quotas.png, tenant-page.png and console-notices.png in", args.out)


if __name__ == "__main__":
    main()
