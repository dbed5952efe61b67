"""The console's notices page in headless Chromium, against a real server, its delivery
process and an SMTP receiver started here: a tenant's mailbox is refused, so its top-up
receipts are dead letters; an admin sees them, the mailbox is fixed, and "Try again" (one) and
"Try all again" (the rest) deliver them. Operators have no such page."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from bench.notify_sinks import SmtpSink
from tests.browser.live import REPO, LivePark, live_park
from tests.browser.test_console import sign_in

MAILBOX = "billing@tenant-001.example"
STATIC = REPO / "protocols" / "http" / "static"


def with_notices(smtp_port: int) -> Callable[[Path], None]:
    """A ``live_park`` prepare step: tenant-001 (M-0001, M-0002) has a mailbox, and the
    server mails through ``smtp_port``."""

    def prepare(config_file: Path) -> None:
        config_file.write_text(config_file.read_text() + f"""
[notify]
retry = ["100ms", "200ms"]
per_hour = 0

[notify.smtp]
host = "127.0.0.1"
port = {smtp_port}
from = "park@example.com"

[tenants.tenant-001]
name = "Hongda Machinery"
language = "en"
emails = ["{MAILBOX}"]
""")

    return prepare


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink(refuse=frozenset({MAILBOX}))
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def notices_live(tmp_path_factory: pytest.TempPathFactory,
                 smtp: SmtpSink) -> Iterator[LivePark]:
    with live_park(tmp_path_factory.mktemp("notices"), meters=4,
                   prepare=with_notices(smtp.port)) as park:
        yield park


def delivered(smtp: SmtpSink) -> list[str]:
    return sorted(m.notice_id for m in smtp.messages() if m.body["To"] == MAILBOX)


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_admin_sees_the_dead_letters_and_tries_them_again(
        page: Page, notices_live: LivePark, smtp: SmtpSink) -> None:
    with notices_live.api("op") as client:
        for reference in ("shop-1", "shop-2"):
            answer = client.post("/api/topups", json={"id": reference, "meter": "M-0001",
                                                      "amount": "20.00"})
            assert answer.status_code == 200, answer.text
    sign_in(page, notices_live, "admin")
    expect(page.locator("#tab-notices")).to_be_visible()
    page.click("#tab-notices")
    expect(page).to_have_url(re.compile("#/notices$"))
    rows = page.locator("#notices-table tbody tr")
    expect(rows).to_have_count(2, timeout=15_000)
    first = page.locator('#notices-table tr[data-notice="receipt/shop-1"]')
    expect(first).to_contain_text(MAILBOX)
    expect(first).to_contain_text("e-mail")
    expect(first.locator(".notice-error")).to_contain_text("SMTP 550")
    expect(page.locator("#notices-dead")).to_have_text("2")
    expect(page.locator("#notices-running")).to_have_text("running")
    expect(page.locator("#notices-status")).to_have_text("2 dead letters")
    expect(page.locator("#notices-empty")).to_be_hidden()
    assert delivered(smtp) == []

    smtp.refuse = frozenset()  # the tenant's mailbox exists now
    first.get_by_role("button", name="Try again").click()
    expect(page.locator("#toast")).to_contain_text("receipt/shop-1 is being sent again")
    expect(first).to_have_count(0, timeout=10_000)
    expect(rows).to_have_count(1)
    expect(page.locator('#notices-table tr[data-notice="receipt/shop-2"]')).to_be_visible()
    wait_until(lambda: delivered(smtp) == ["receipt/shop-1"])

    page.click("#notices-retry-all")
    expect(page.locator("#toast")).to_contain_text("Every dead letter is being sent again")
    expect(rows).to_have_count(0, timeout=10_000)
    expect(page.locator("#notices-empty")).to_be_visible()
    expect(page.locator("#notices-dead")).to_have_text("0")
    expect(page.locator("#notices-retry-all")).to_be_disabled()
    wait_until(lambda: delivered(smtp) == ["receipt/shop-1", "receipt/shop-2"])
    expect(page.locator("#notices-delivered")).to_have_text("2", timeout=10_000)

    with notices_live.api("admin") as client:
        audit = client.get("/api/audit").json()["entries"]
    assert [(e["user"], e["channel"], e["detail"], e["result"]) for e in audit
            if e["command"] == "notice_retry"] == [
        ("admin", "hub", "notice ", "accepted"),
        ("admin", "hub", "notice receipt/shop-1", "accepted")]

    page.select_option("#lang", "zh-CN")
    expect(page.locator("#tab-notices")).to_have_text("通知")
    expect(page.locator("#notices-retry-all")).to_have_text("全部重试")


def test_operators_have_no_notices_page(page: Page, notices_live: LivePark) -> None:
    sign_in(page, notices_live, "op")
    expect(page.locator("#tab-quotas")).to_be_visible()
    expect(page.locator("#tab-notices")).to_be_hidden()
    page.evaluate("() => { location.hash = '#/notices'; }")
    expect(page).to_have_url(re.compile("#/overview$"))
    expect(page.locator("#view-notices")).to_be_hidden()
    refused = page.evaluate("() => window.wattkeeper.hub.command('notices', {})"
                            ".then(() => 'answered', (error) => error.code)")
    assert refused == "forbidden"


def test_every_string_of_the_page_is_in_both_languages() -> None:
    english = json.loads((STATIC / "i18n" / "en.json").read_text("utf-8"))
    chinese = json.loads((STATIC / "i18n" / "zh-CN.json").read_text("utf-8"))
    html = (STATIC / "index.html").read_text("utf-8")
    section = html[html.index('<section id="view-notices"'):html.index('<section id="view-audit"')]
    script = (STATIC / "js" / "notices.js").read_text("utf-8")
    used = set(re.findall(r'data-i18n="([^"]+)"', section))
    used |= set(re.findall(r'"(notices\.[a-z_.]+)"', script))
    used |= {f"notices.channel.{c}" for c in ("email", "webhook", "sms", "wechat")}
    used |= {"nav.notices"}
    assert len(used) > 20
    assert used <= english.keys() and used <= chinese.keys(), (used - english.keys(),
                                                               used - chinese.keys())
    assert chinese["nav.notices"] == "通知"
