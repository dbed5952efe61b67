"""Screenshots of the console for the docs: ``python -m tests.browser.screenshots``.

Runs a 200-meter park (simulator + server, as ``wattkeeper demo`` does, on free ports), signs
in as the operator in headless Chromium, lets the load chart fill for ``--seconds`` and writes
``docs/console-overview.png`` and ``docs/console-meters.png``; then a 12-meter park with
three days of history (``tests.browser.test_console_reports``) for
``docs/console-reports.png``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.browser.live import LOGINS, REPO, live_park
from tests.browser.test_console_reports import days_back, write_history


def sign_in(page: Page, url: str) -> None:
    page.goto(url + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.fill("#login-user", "op")
    page.fill("#login-password", LOGINS["op"])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=40.0,
                        help="how long the load chart fills before the shot (default 40)")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
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
        browser.close()
    print("wrote console-overview.png, console-meters.png and console-reports.png in", args.out)


if __name__ == "__main__":
    main()
