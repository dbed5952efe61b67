"""The browser console in headless Chromium against a running server (sim + serve)."""

from __future__ import annotations

import re
import secrets

from playwright.sync_api import Page, expect

from tests.browser.live import LOGINS, LivePark


def open_console(page: Page, live: LivePark) -> None:
    page.goto(live.http_url + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")  # scripts wired


def sign_in(page: Page, live: LivePark, user: str, password: str | None = None) -> None:
    open_console(page, live)
    page.fill("#login-user", user)
    page.fill("#login-password", LOGINS[user] if password is None else password)
    page.click("#login-submit")
    if password is None:
        expect(page.locator("#conn")).to_have_attribute("data-state", "online")
        expect(page.locator("#view-overview")).to_be_visible()


def balance_of(page: Page) -> float:
    return float(page.locator("#meter-balance").inner_text())


def wait_for_balance_above(page: Page, low: float) -> None:
    # A function, not an expression: the page's CSP forbids eval, which an expression needs.
    page.wait_for_function(
        "low => Number(document.querySelector('#meter-balance').textContent) > low", arg=low)


def test_sign_in_and_watch_live_meters(page: Page, live: LivePark) -> None:
    sign_in(page, live, "op", "not-the-password")
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    expect(page.locator("#view-login")).to_be_visible()

    sign_in(page, live, "op")
    expect(page.locator("#who-role")).to_have_text("operator")
    expect(page.locator("#stat-gateways")).to_have_text("1 / 1")
    expect(page.locator("#stat-on")).to_have_text(str(live.meters))
    expect(page.locator("#stat-load")).to_have_text(re.compile(r"^[1-9][\d,.]* kW$"))

    page.click("a[data-view=meters]")
    expect(page.locator("#meter-count")).to_have_text(f"{live.meters} of {live.meters} meters")
    row = page.locator('.vrow[data-key="M-0001"]')
    expect(row.locator(".c-relay")).to_have_text("On")
    updated = row.locator(".c-ts").inner_text()
    expect(row.locator(".c-ts")).not_to_have_text(updated, timeout=5_000)  # polled each second

    page.fill("#meter-search", "tenant-003")
    expect(page.locator("#meter-count")).to_have_text(f"2 of {live.meters} meters")
    expect(page.locator(".vrow:visible .c-meter")).to_have_text(["M-0005", "M-0006"])
    page.fill("#meter-search", "")
    page.select_option("#filter-alarm", "low_balance")
    expect(page.locator(".vrow:visible .c-meter").first).to_have_text("M-0005")
    page.select_option("#filter-alarm", "")
    page.click('#meter-table [data-sort="balance"]')
    balances = [float(text) for text in
                page.locator(".vrow:visible .c-balance").all_inner_texts()]
    assert balances == sorted(balances) and balances[0] < 1

    page.locator('.vrow[data-key="M-0006"]').click()
    expect(page.locator("#meter-title")).to_have_text("M-0006")
    expect(page.locator("#meter-power")).to_have_text(re.compile(r"^[\d,]+ W$"))
    expect(page.locator("#meter-chart")).to_be_visible()


def test_top_up_through_the_dialog_changes_the_balance(page: Page, live: LivePark) -> None:
    sign_in(page, live, "op")
    page.goto(live.http_url + "/#/meter/M-0002")
    expect(page.locator("#meter-balance")).to_have_text(re.compile(r"^\d+\.\d\d$"))
    before = balance_of(page)
    page.click("#act-topup")
    page.fill("#topup-amount", "12.3")
    page.click("#topup-submit")
    expect(page.locator("#topup-result")).to_contain_text("The balance of M-0002 is now")
    answered = float(page.locator("#topup-result").inner_text().split()[-1].rstrip("."))
    assert before + 12.3 - 1 < answered <= before + 12.3
    page.keyboard.press("Escape")
    wait_for_balance_above(page, before + 11)
    assert float(live.meter("M-0002")["balance"]) > before + 11

    with live.api("admin") as api:
        entries = api.get("/api/audit", params={"limit": 20}).json()["entries"]
    mine = [e for e in entries if e["command"] == "topup" and e["detail"] == "amount 12.30"]
    assert [(e["user"], e["channel"], e["result"]) for e in mine] == [("op", "hub", "accepted")]

    page.click("#act-topup")
    page.fill("#topup-amount", "abc")
    page.click("#topup-submit")
    expect(page.locator("#topup-error")).to_have_text("Enter an amount like 100.00.")


def test_an_alarm_is_seen_and_acknowledged(page: Page, live: LivePark) -> None:
    sign_in(page, live, "op")
    expect(page.locator("#alarm-badge")).to_be_visible()
    page.click("a[data-view=alarms]")
    row = page.locator('#alarm-table tr[data-alarm^="M-0010/"]')
    expect(row.locator("td").nth(2)).to_have_text("Low balance")
    expect(row).to_contain_text("active")
    row.locator("button.ack").click()
    expect(page.locator("#toast")).to_contain_text("acknowledged")
    expect(row).to_contain_text("acknowledged")
    expect(row.locator("button.ack")).to_have_count(0)
    page.check("#alarms-unacked")
    expect(page.locator('#alarm-table tr[data-alarm^="M-0010/"]')).to_have_count(0)
    # It stays acknowledged for everyone: another console sees it so after its own login.
    page.reload()
    page.click("a[data-view=alarms]")
    expect(page.locator('#alarm-table tr[data-alarm^="M-0010/"]')).to_contain_text(
        "acknowledged")


def test_the_language_switches_to_chinese_and_stays(page: Page, live: LivePark) -> None:
    open_console(page, live)
    expect(page.locator("#login-submit")).to_have_text("Sign in")
    page.select_option("#lang", "zh-CN")
    expect(page.locator("#login-submit")).to_have_text("登录")
    sign_in(page, live, "viewer")
    expect(page.locator("a[data-view=meters]")).to_have_text("电表")
    expect(page.locator("#conn-text")).to_have_text("实时")
    expect(page.locator("#who-role")).to_have_text("查看员")
    page.click("a[data-view=meters]")
    expect(page.locator("#meter-count")).to_have_text(
        f"显示 {live.meters} / 共 {live.meters} 块电表")
    expect(page.locator('.vrow[data-key="M-0001"] .c-relay')).to_have_text("通电")
    page.reload()  # the choice and the session both survive a reload
    expect(page.locator("#conn")).to_have_attribute("data-state", "online")
    expect(page.locator("#meter-count")).to_contain_text("块电表")
    page.select_option("#lang", "en")
    expect(page.locator("#meter-count")).to_have_text(f"{live.meters} of {live.meters} meters")


def test_a_lost_connection_is_shown_and_regained_without_losing_a_command(
        page: Page, live: LivePark) -> None:
    sign_in(page, live, "op")
    page.goto(live.http_url + "/#/meter/M-0003")
    expect(page.locator("#meter-balance")).to_have_text(re.compile(r"^\d+\.\d\d$"))
    before = balance_of(page)
    live.proxy.cut()
    try:
        expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
        expect(page.locator("#conn-text")).to_contain_text("Connection lost")
        # Money moves meanwhile (the HTTP API), and an operator's top-up waits to be sent.
        with live.api() as api:
            paid = api.post("/api/topups", json={"id": secrets.token_hex(8), "meter": "M-0003",
                                                 "amount": "100.00"})
        assert paid.status_code == 200
        page.click("#act-topup")
        page.fill("#topup-amount", "7.00")
        page.click("#topup-submit")
        expect(page.locator("#topup-submit")).to_be_disabled()
    finally:
        live.proxy.resume()
    expect(page.locator("#conn")).to_have_attribute("data-state", "online", timeout=15_000)
    expect(page.locator("#topup-result")).to_contain_text("The balance of M-0003 is now")
    page.keyboard.press("Escape")
    wait_for_balance_above(page, before + 105)
    with live.api("admin") as api:
        entries = api.get("/api/audit", params={"limit": 50}).json()["entries"]
    sevens = [e for e in entries if e["meter_id"] == "M-0003" and e["detail"] == "amount 7.00"]
    assert [e["result"] for e in sevens] == ["accepted"]  # sent again, applied once


def test_viewers_see_no_controls_and_admins_read_the_audit_log(
        page: Page, live: LivePark) -> None:
    sign_in(page, live, "viewer")
    page.goto(live.http_url + "/#/meter/M-0005")
    expect(page.locator("#meter-title")).to_have_text("M-0005")
    expect(page.locator("#act-topup")).to_be_hidden()
    expect(page.locator("#act-open")).to_be_hidden()
    expect(page.locator("#tab-audit")).to_be_hidden()
    page.click("a[data-view=alarms]")
    expect(page.locator("#alarm-table tbody tr").first).to_be_visible()
    expect(page.locator("#alarm-table button.ack")).to_have_count(0)
    page.click("#logout")
    expect(page.locator("#view-login")).to_be_visible()

    with live.api() as api:
        assert api.post("/api/topups", json={"id": secrets.token_hex(8), "meter": "M-0001",
                                             "amount": "1.00"}).status_code == 200
    sign_in(page, live, "admin")
    page.click("#tab-audit")
    first = page.locator("#audit-table tbody tr").first
    expect(first).to_contain_text("topup")
    expect(first).to_contain_text("M-0001")
    expect(first).to_contain_text("accepted")
    with live.api() as api:  # a live entry appears at the top while the page is open
        api.post("/api/topups", json={"id": secrets.token_hex(8), "meter": "M-0004",
                                      "amount": "2.00"})
    expect(page.locator("#audit-table tbody tr").first).to_contain_text("M-0004")


def test_the_meter_table_draws_only_the_rows_in_view_of_10000(
        page: Page, live: LivePark) -> None:
    """Virtual scrolling: 10,000 meters (fed to the page's store as the hub would) make a
    few dozen row elements, sorting and scrolling to the end stay fast."""
    sign_in(page, live, "viewer")
    page.click("a[data-view=meters]")
    took_ms = page.evaluate("""() => {
        const messages = [];
        for (let n = 1; n <= 10000; n++) {
            messages.push({type: "meter", meter: `X-${String(n).padStart(5, "0")}`,
                tenant: `t-${n % 977}`, gateway: `gw${n % 20}`, balance: (n / 7).toFixed(2),
                power_w: n % 5000, energy_kwh: n / 10, relay: n % 13 ? "closed" : "open",
                relay_reason: n % 13 ? null : "zero_balance", alarm: "none", online: true,
                faulted: false, ts: new Date().toISOString()});
        }
        const started = performance.now();
        window.wattkeeper.store.apply(messages);
        return performance.now() - started;
    }""")
    expect(page.locator("#meter-count")).to_have_text(
        f"{10_000 + live.meters:,} of {10_000 + live.meters:,} meters")
    assert page.locator(".vrow").count() < 80
    page.fill("#meter-search", "x-")
    expect(page.locator("#meter-count")).to_have_text(f"10,000 of {10_000 + live.meters:,} meters")
    page.click('#meter-table [data-sort="power_w"]')
    page.click('#meter-table [data-sort="power_w"]')  # descending
    expect(page.locator(".vrow:visible .c-power").first).to_have_text("4,999")
    page.locator("#meter-rows").evaluate("body => body.scrollTop = body.scrollHeight")
    expect(page.locator(".vrow:visible .c-power").last).to_have_text("0")
    assert page.locator(".vrow").count() < 80
    page.select_option("#filter-relay", "open")
    expect(page.locator("#meter-count")).to_have_text(f"769 of {10_000 + live.meters:,} meters")
    assert took_ms < 1_000
