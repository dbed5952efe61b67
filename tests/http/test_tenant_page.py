"""The tenants' self-service page over HTTP: signed links (made, checked, refused, revoked
across a restart), and the page's figures against a small park whose day records and top-ups
are known, worked out by hand below."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit
from zoneinfo import ZoneInfo

import pytest
import trio

from persistence.codec import HistoryItem
from persistence.entries import JournalEntry
from persistence.journal import open_journal
from persistence.store import open_store
from protocols.http.tenant_links import LinkRefused, check_link, read_link, sign_link
from protocols.http.tenant_page import STATEMENT_CSP
from server.config import ConfigError, ParkConfig
from server.reports import statement_page
from server.tenant_links import SECRET_FILE, data_dir_secret
from server.tenant_page import INSIGHT_KEYS, days_left
from tests.http.harness import (
    ADMIN,
    OPERATOR,
    USERS_TOML,
    VIEWER,
    open_web_park,
    park_with_users,
)
from tests.http.test_openapi import check_answer
from tests.server.parks import park_toml

ZONE = "Asia/Shanghai"
SECRET = b"s" * 32
BASE = "https://park.example"
TOPUP = ("https://pay.example/checkout?tenant={tenant}&meter={meter}&amount={amount}"
         "&return={return}")
PAGE = f"""
[calendar]
timezone = "{ZONE}"

[tenant_page]
base_url = "{BASE}/"
topup_url = "{TOPUP}"
link_days = 30

[tenants.t0]
name = "ACME Tools Ltd"
language = "zh-CN"
"""


# --- the token itself ---------------------------------------------------------------------


def test_a_link_is_good_for_its_tenant_until_it_expires() -> None:
    token = sign_link(SECRET, "acme", 2, 1_000)
    assert read_link(SECRET, token).tenant == "acme"
    assert check_link(SECRET, token, 999.9, {"acme": 2}.get) == "acme"
    with pytest.raises(LinkRefused) as refused:
        check_link(SECRET, token, 1_000, {"acme": 2}.get)
    assert refused.value.code == "expired"


@pytest.mark.parametrize("current", [None, 1, 3])
def test_a_link_of_another_generation_or_tenant_is_revoked(current: int | None) -> None:
    token = sign_link(SECRET, "acme", 2, 10**10)
    known = {} if current is None else {"acme": current}
    with pytest.raises(LinkRefused) as refused:
        check_link(SECRET, token, 0, known.get)
    assert refused.value.code == "revoked"


def test_an_altered_or_foreign_link_has_a_bad_signature() -> None:
    token = sign_link(SECRET, "acme", 0, 10**10)
    payload, mac = token.split(".")
    other = sign_link(SECRET, "beta", 0, 10**10).split(".")[0]
    for bad in (other + "." + mac,                      # another tenant under acme's MAC
                payload + "." + mac[:-2] + "AA",        # a MAC changed
                sign_link(b"t" * 32, "acme", 0, 10**10),  # another park's secret
                payload, "", "..", "x" * 600, "%%%.%%%"):
        with pytest.raises(LinkRefused) as refused:
            check_link(SECRET, bad, 0, {"acme": 0, "beta": 0}.get)
        assert refused.value.code == "bad_signature", bad
    # The signature is checked before anything else: a forged link learns nothing more.
    with pytest.raises(LinkRefused) as refused:
        check_link(b"t" * 32, sign_link(SECRET, "gone", 9, 0), 5, {}.get)
    assert refused.value.code == "bad_signature"


def test_the_data_directory_secret_is_made_once_and_private(tmp_path: Path) -> None:
    first = data_dir_secret(tmp_path)
    assert len(first) == 32
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600
    assert data_dir_secret(tmp_path) == first
    (tmp_path / SECRET_FILE).write_text("not hex\n")
    with pytest.raises(ValueError, match="delete it"):
        data_dir_secret(tmp_path)


@pytest.mark.parametrize(("balance", "spend", "expected"), [
    (17_000, 380, 313.1),   # 170.00 at 3.80 a week: 313.157... days, a tenth down
    (100, 700, 1.0),        # 1.00 at 1.00 a day
    (99, 700, 0.9),
    (0, 700, 0.0), (-500, 700, 0.0),
    (17_000, 0, None),      # nothing spent: no rate to project
])
def test_days_left(balance: int, spend: int, expected: float | None) -> None:
    assert days_left(balance, spend) == expected


# --- links over HTTP ----------------------------------------------------------------------


def _token(url: str) -> str:
    path = urlsplit(url).path
    assert path.startswith("/t/")
    return path[len("/t/"):]


async def test_links_are_made_refused_and_revoked_and_the_revocation_survives_a_restart(
        tmp_path: Path) -> None:
    data = tmp_path / "park"
    async with open_web_park(data, extra_toml=PAGE) as web:
        c = web.client
        made = await c.post("/api/tenants/t0/links", auth=ADMIN)
        check_answer("post", "/api/tenants/{tenant}/links", made)
        link = made.json()
        assert made.status_code == 200 and link["url"].startswith(BASE + "/t/")
        assert (link["tenant"], link["generation"], link["path"]) == (
            "t0", 0, urlsplit(link["url"]).path)
        expires = dt.datetime.fromisoformat(link["expires"].replace("Z", "+00:00"))
        assert abs((expires - dt.datetime.now(dt.UTC)) - dt.timedelta(days=30)) < \
            dt.timedelta(minutes=1)
        old = _token(link["url"])
        assert stat.S_IMODE((data / SECRET_FILE).stat().st_mode) == 0o600

        short = await c.post("/api/tenants/t1/links", auth=ADMIN, json={"days": 2})
        assert short.status_code == 200 and short.json()["tenant"] == "t1"
        for refused, status, error in (
                (await c.post("/api/tenants/t0/links", auth=OPERATOR), 403, "forbidden"),
                (await c.post("/api/tenants/t0/links", auth=VIEWER), 403, "forbidden"),
                (await c.post("/api/tenants/t0/links"), 401, "unauthorized"),
                (await c.post("/api/tenants/nobody/links", auth=ADMIN), 404, "unknown_tenant"),
                (await c.post("/api/tenants/t0/links", auth=ADMIN, json={"days": 0}), 400,
                 "bad_request"),
                (await c.post("/api/tenants/t0/links/revoke", auth=ADMIN, json={}), 400,
                 "bad_request"),
                (await c.post("/api/tenants/t0/links/revoke", auth=OPERATOR,
                              json={"id": "r1"}), 403, "forbidden")):
            assert (refused.status_code, refused.json()["error"]) == (status, error)
            path = refused.request.url.path.replace("t0", "{tenant}").replace(
                "nobody", "{tenant}")
            check_answer("post", path, refused)

        page = await c.get(f"/t/{old}")
        assert page.status_code == 200 and 'src="/static/js/tenant.js"' in page.text
        assert page.headers["cache-control"] == "no-store"
        summary = await c.get(f"/t/{old}/api/summary")
        check_answer("get", "/t/{token}/api/summary", summary)
        assert summary.json()["tenant"] == "t0"

        revoked = await c.post("/api/tenants/t0/links/revoke", auth=ADMIN, json={"id": "r1"})
        check_answer("post", "/api/tenants/{tenant}/links/revoke", revoked)
        assert revoked.json() == {"id": "r1", "tenant": "t0", "generation": 1,
                                  "status": "applied"}
        again = await c.post("/api/tenants/t0/links/revoke", auth=ADMIN, json={"id": "r1"})
        assert again.json() == {"id": "r1", "tenant": "t0", "generation": 1,
                                "status": "duplicate"}
        answer = await c.get(f"/t/{old}/api/summary")
        check_answer("get", "/t/{token}/api/summary", answer)
        assert (answer.status_code, answer.json()["error"]) == (401, "revoked")
        assert not answer.headers["www-authenticate"].startswith("Basic")
        refused_page = await c.get(f"/t/{old}")
        assert refused_page.status_code == 401 and 'data-code="revoked"' in refused_page.text
        assert "withdrawn" in refused_page.text and "撤销" in refused_page.text
        for path in (f"/t/{old}/statement?month=2026-11", f"/t/{old}/topup?meter=M-0&amount=1"):
            assert (await c.get(path)).status_code == 401
        fresh = _token((await c.post("/api/tenants/t0/links", auth=ADMIN)).json()["url"])
        assert (await c.get(f"/t/{fresh}/api/summary")).status_code == 200
        other_tenant = _token(short.json()["url"])  # t1's links were not revoked
        assert (await c.get(f"/t/{other_tenant}/api/summary")).status_code == 200

        audited = (await c.get("/api/audit", auth=ADMIN)).json()["entries"]
        mine = [(e["command"], e["target"], e["user"], e["result"], e["reference"])
                for e in audited if e["command"].startswith("tenant_link")]
        assert ("tenant_links_revoke", "t0", "admin", "accepted", "r1") in mine
        assert ("tenant_links_revoke", "t0", "admin", "duplicate", "r1") in mine
        assert ("tenant_links_revoke", "t0", "op", "refused", "r1") in mine
        assert ("tenant_link", "t0", "op", "refused", "") in mine
        assert sum(1 for m in mine if m[:2] == ("tenant_link", "t0") and m[3] == "accepted") == 2
        assert not any(old in str(entry) or fresh in str(entry) for entry in audited)

    async with open_web_park(data, extra_toml=PAGE) as web:
        c = web.client
        old_answer = await c.get(f"/t/{old}/api/summary")
        assert (old_answer.status_code, old_answer.json()["error"]) == (401, "revoked")
        assert (await c.get(f"/t/{fresh}/api/summary")).status_code == 200
        # the secret is the same one (it was kept in the data directory)...
        assert (await c.get(f"/t/{other_tenant}/api/summary")).status_code == 200
        # ... and a second revocation counts on from the replayed generation
        second = await c.post("/api/tenants/t0/links/revoke", auth=ADMIN, json={"id": "r2"})
        assert second.json()["generation"] == 2
        assert (await c.get(f"/t/{fresh}/api/summary")).json()["error"] == "revoked"

        secret = (data / SECRET_FILE).read_text().strip()
        expired = sign_link(bytes.fromhex(secret), "t1", 0, 1)  # (1970)
        for token, code in ((expired, "expired"), (fresh[:-3] + "abc", "bad_signature"),
                            (sign_link(b"x" * 32, "t1", 0, 10**10), "bad_signature")):
            answer = await c.get(f"/t/{token}/api/summary")
            check_answer("get", "/t/{token}/api/summary", answer)
            assert (answer.status_code, answer.json()["error"]) == (401, code)
            page = await c.get(f"/t/{token}")
            assert page.status_code == 401 and f'data-code="{code}"' in page.text


async def test_a_configured_secret_signs_the_links(tmp_path: Path) -> None:
    configured = PAGE.replace("[tenant_page]", f'[tenant_page]\nsecret = "{"k" * 32}"')
    async with open_web_park(tmp_path / "park", extra_toml=configured) as web:
        link = (await web.client.post("/api/tenants/t2/links", auth=ADMIN)).json()
        assert check_link(b"k" * 32, _token(link["url"]), 0, {"t2": 0}.get) == "t2"
        assert not (tmp_path / "park" / SECRET_FILE).exists()


# --- the figures --------------------------------------------------------------------------

def _local_start(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(ZONE)).timestamp()
               * 1000)


def _today() -> dt.date:
    return dt.datetime.now(ZoneInfo(ZONE)).date()


QUARTER = 900_000


def _history(today: dt.date) -> list[HistoryItem]:
    """M-0: yesterday 4 valley quarters of 1000 Wh at 0.40 and 2 peak ones of 500 Wh at 0.60
    (5.000 kWh, 2.80); three days ago 10 flat quarters of 100 Wh at 0.10 (1.000 kWh, 1.00);
    ten days ago one flat 2000 Wh at 2.00; forty days ago one flat 100 Wh at 0.10. M-1: none.
    M-2 (another tenant's): yesterday 1000 Wh."""
    items: list[HistoryItem] = []
    yesterday = _local_start(today - dt.timedelta(days=1))
    items += [("M-0", yesterday + k * QUARTER, 1000, 40, "valley") for k in range(4)]
    items += [("M-0", yesterday + (72 + k) * QUARTER, 500, 60, "peak") for k in range(2)]
    three = _local_start(today - dt.timedelta(days=3))
    items += [("M-0", three + (40 + k) * QUARTER, 100, 10, "flat") for k in range(10)]
    items.append(("M-0", _local_start(today - dt.timedelta(days=10)) + 40 * QUARTER, 2000, 200,
                  "flat"))
    items.append(("M-0", _local_start(today - dt.timedelta(days=40)) + 40 * QUARTER, 100, 10,
                  "flat"))
    items.append(("M-2", yesterday + 40 * QUARTER, 1000, 100, "flat"))
    return items


async def _prepare(data: Path, today: dt.date) -> None:
    config = park_with_users(data, 3, PAGE)
    with open_store(config.server.data_dir) as store:
        async with open_journal(store, days_zone=ZONE) as journal:
            journal.put_history_nowait(_history(today))
            five_days_ago = _local_start(today - dt.timedelta(days=5)) + 12 * 3_600_000
            await journal.record(JournalEntry("topup", "M-0", 5_000, "wechat:old-1",
                                              five_days_ago))
            await journal.record(JournalEntry("topup", "M-2", 7_000, "other-tenant",
                                              five_days_ago))
            await journal.flush()


@pytest.fixture
def two_meter_park(monkeypatch: pytest.MonkeyPatch) -> None:
    """M-1 belongs to t0 as M-0 does (the harness gives each meter a tenant of its own)."""
    import tests.http.harness as harness

    original = harness.park_toml

    def shared(data_dir: Path, meters: int = 3) -> str:
        return original(data_dir, meters).replace('tenant = "t1"', 'tenant = "t0"')

    monkeypatch.setattr(harness, "park_toml", shared)


@pytest.mark.usefixtures("two_meter_park")
async def test_the_summary_of_a_tenant_with_two_meters(tmp_path: Path) -> None:
    data = tmp_path / "park"
    today = _today()
    await _prepare(data, today)
    async with open_web_park(data, extra_toml=PAGE) as web:
        c = web.client
        topped = await c.post("/api/topups", auth=OPERATOR,
                              json={"id": "now-1", "meter": "M-0", "amount": "20.00"})
        assert topped.json()["balance"] == "170.00"  # 100.00 opening + 50.00 + 20.00
        token = _token((await c.post("/api/tenants/t0/links", auth=ADMIN)).json()["url"])
        answer = await c.get(f"/t/{token}/api/summary")
        check_answer("get", "/t/{token}/api/summary", answer)
        summary = answer.json()

        assert (summary["tenant"], summary["name"], summary["language"], summary["currency"],
                summary["decimals"], summary["today"], summary["topup"]) == (
            "t0", "ACME Tools Ltd", "zh-CN", "CNY", 2, today.isoformat(), True)
        days = [(today - dt.timedelta(days=n)).isoformat() for n in range(29, -1, -1)]
        assert summary["days"] == days
        # This month's insights (server.reports.insights, tested by hand there): the page's items.
        assert [item["key"] for item in summary["insights"]][-1] == "saving"
        assert {item["key"] for item in summary["insights"]} <= set(INSIGHT_KEYS)
        m0, m1 = summary["meters"]
        assert (m0["meter"], m0["kind"], m0["unit"], m0["balance"], m0["relay"],
                m0["relay_reason"]) == ("M-0", "electricity", "kWh", "170.00", "closed", None)
        # The 7 days before today: yesterday's 2.80 and three days ago's 1.00.
        assert m0["spend_7d"] == "3.80"
        assert m0["days_left"] == 313.1  # 170.00 / (3.80 / 7) = 313.157..., a tenth down
        by_day = {day["date"]: day for day in m0["consumption"]}
        assert list(by_day) == days
        yesterday = (today - dt.timedelta(days=1)).isoformat()
        assert by_day[yesterday] == {"date": yesterday,
                                     "bands": {"valley": "4.000", "peak": "1.000"},
                                     "cost": "2.80"}
        three = (today - dt.timedelta(days=3)).isoformat()
        assert by_day[three] == {"date": three, "bands": {"flat": "1.000"}, "cost": "1.00"}
        ten = (today - dt.timedelta(days=10)).isoformat()
        assert by_day[ten] == {"date": ten, "bands": {"flat": "2.000"}, "cost": "2.00"}
        assert by_day[today.isoformat()] == {"date": today.isoformat(), "bands": {},
                                             "cost": "0.00"}
        assert sum(1 for day in m0["consumption"] if day["bands"]) == 3  # day -40 is older
        assert (m1["meter"], m1["balance"], m1["spend_7d"], m1["days_left"]) == (
            "M-1", "100.00", "0.00", None)
        assert all(day == {"date": day["date"], "bands": {}, "cost": "0.00"}
                   for day in m1["consumption"])

        assert [(t["meter"], t["amount"], t["date"]) for t in summary["topups"]] == [
            ("M-0", "20.00", today.isoformat()),
            ("M-0", "50.00", (today - dt.timedelta(days=5)).isoformat())]  # not M-2's

        # A statement per month from the first record (forty days ago) to this one.
        months = sorted({(today - dt.timedelta(days=n)).strftime("%Y-%m") for n in range(41)},
                        reverse=True)
        assert summary["statements"] == [
            {"month": month, "url": f"/t/{token}/statement?month={month}"}
            for month in months]

        # The statement is the reports' printable page, from the tenant's own records only.
        month = yesterday[:7]
        first = dt.date.fromisoformat(month + "-01")
        end = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        page = await c.get(f"/t/{token}/statement?month={month}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        expected = await trio.to_thread.run_sync(lambda: statement_page(
            web.park.store, web.park.config, "t0", first=first.isoformat(),
            end=end.isoformat()))
        assert page.text == expected
        assert "Statement: t0" in page.text
        assert page.headers.get_list("content-security-policy") == [STATEMENT_CSP]
        assert "script-src" not in STATEMENT_CSP  # (default-src 'none': no script at all)
        for bad in ("2026-13", "26-11", "x", ""):
            assert (await c.get(f"/t/{token}/statement?month={bad}")).status_code == 400

        # Top up: a 303 to the provider's page, every placeholder filled and URL-encoded.
        go = await c.get(f"/t/{token}/topup", params={"meter": "M-1", "amount": "50"})
        assert go.status_code == 303
        location = urlsplit(go.headers["location"])
        assert (location.scheme, location.netloc, location.path) == ("https", "pay.example",
                                                                     "/checkout")
        assert parse_qs(location.query) == {"tenant": ["t0"], "meter": ["M-1"],
                                            "amount": ["50.00"],
                                            "return": [f"{BASE}/t/{token}"]}
        assert quote(f"{BASE}/t/{token}", safe="") in go.headers["location"]
        for meter, amount in (("M-2", "5"), ("M-0", "0"), ("M-0", "1.234"), ("M-0", "-5"),
                              ("M-0", "x"), ("", "5")):
            refused = await c.get(f"/t/{token}/topup", params={"meter": meter,
                                                               "amount": amount})
            assert refused.status_code == 400, (meter, amount)
        # No money moved through the page.
        assert (await c.get("/api/meters/M-1", auth=VIEWER)).json()["balance"] == "100.00"


async def test_without_a_topup_url_the_page_has_no_button(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park",
                             extra_toml=PAGE.replace(f'topup_url = "{TOPUP}"', "")) as web:
        c = web.client
        token = _token((await c.post("/api/tenants/t2/links", auth=ADMIN)).json()["url"])
        summary = (await c.get(f"/t/{token}/api/summary")).json()
        assert summary["topup"] is False and summary["language"] == "en"
        assert (await c.get(f"/t/{token}/topup?meter=M-2&amount=5")).status_code == 400


def test_a_meter_may_not_take_the_id_a_tenants_links_are_kept_under(tmp_path: Path) -> None:
    text = park_toml(tmp_path, 3).replace('id = "M-2"', 'id = "tenant:t0"') + USERS_TOML
    with pytest.raises(ConfigError) as refused:
        ParkConfig.from_toml_text(text, "park.toml")
    assert "page links" in str(refused.value) and "tenant:t0" in str(refused.value)
