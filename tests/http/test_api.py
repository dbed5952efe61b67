"""The HTTP API over a real hypercorn server on loopback, with a park behind it."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import pytest
import trio

from policies.records import Reading
from tests.http.harness import ADMIN, OPERATOR, VIEWER, open_web_park

T0 = 1_790_000_000_000


async def test_the_console_and_its_files_are_served_with_safe_headers(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park") as web:
        page = await web.client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<script" in page.text and "console.js" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        script = await web.client.get("/static/js/console.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        for language in ("en", "zh-CN"):
            strings = await web.client.get(f"/static/i18n/{language}.json")
            assert strings.status_code == 200 and "login.title" in strings.json()
        assert (await web.client.get("/static/nope.js")).status_code == 404
        console = (await web.client.get("/api/console")).json()
        assert console == {"hub": "ws://127.0.0.1:18765", "languages": ["en", "zh-CN"]}


async def test_health_and_metrics_read_the_live_park(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park") as web:
        health = await web.client.get("/healthz")
        assert health.status_code == 200
        body = health.json()
        assert (body["status"], body["journal"], body["meters"], body["faulted"]) == (
            "ok", "available", 3, 0)
        assert body["uptime_s"] >= 0
        actor = web.park.registry.get("M-1")
        web.park.registry.deliver_reading_nowait(actor.key, Reading(T0, 1_000, 250.0))
        ack = await web.client.post("/api/topups", auth=OPERATOR,
                                    json={"id": "m1", "meter": "M-1", "amount": "1.00"})
        assert ack.status_code == 200
        await web.client.post("/api/topups", auth=VIEWER,
                              json={"id": "m2", "meter": "M-1", "amount": "1.00"})
        metrics = await web.client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        lines = set(metrics.text.splitlines())
        assert 'wattkeeper_meters{state="configured"} 3.0' in lines
        assert 'wattkeeper_commands_total{command="topup",result="accepted"} 1.0' in lines
        assert 'wattkeeper_commands_total{command="topup",result="refused"} 1.0' in lines
        assert "wattkeeper_journal_available 1.0" in lines
        assert any(line.startswith("wattkeeper_actor_messages_total ") and
                   float(line.split()[1]) >= 1 for line in lines)
        for name in ("dispatcher_queue_depth", "loop_stall_seconds", "relay_commands_total",
                     "journal_commit_seconds_average", "dispatcher_longest_slice_seconds",
                     "process_resident_memory_bytes"):
            assert any(line.startswith(("wattkeeper_" + name, name)) for line in lines), name


async def test_meters_need_a_user_and_answer_in_the_hub_shape(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park") as web:
        client = web.client
        anonymous = await client.get("/api/meters")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"] == "unauthorized"
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        wrong = await client.get("/api/meters", auth=("viewer", "nope"))
        assert (wrong.status_code, wrong.json()["error"]) == (401, "unauthorized")
        garbled = await client.get("/api/meters", headers={"Authorization": "Basic !!!"})
        assert garbled.status_code == 401

        actor = web.park.registry.get("M-2")
        web.park.registry.deliver_reading_nowait(actor.key, Reading(T0, 12_345, 1234.5))
        await trio.sleep(0.05)
        listing = await client.get("/api/meters", auth=VIEWER)
        assert listing.status_code == 200
        assert [m["meter"] for m in listing.json()["meters"]] == ["M-0", "M-1", "M-2"]
        one = (await client.get("/api/meters/M-2", auth=VIEWER)).json()
        assert one == {
            "type": "meter", "meter": "M-2", "tenant": "t2", "gateway": "gw1",
            "balance": "100.00", "power_w": 1234.5, "energy_kwh": 12.345, "relay": "closed",
            "relay_reason": None, "alarm": "none", "online": True, "faulted": False,
            "ts": "2026-09-21T14:13:20.000Z"}
        by_tenant = (await client.get("/api/meters", params={"tenant": "t1"}, auth=VIEWER))
        assert [m["meter"] for m in by_tenant.json()["meters"]] == ["M-1"]
        missing = await client.get("/api/meters/M-404", auth=VIEWER)
        assert (missing.status_code, missing.json()["error"]) == (404, "unknown_meter")


async def test_a_top_up_is_applied_once_and_refusals_use_the_contract_codes(
        tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park") as web:
        client = web.client

        async def top_up(body: object, auth: tuple[str, str] = OPERATOR) -> httpx.Response:
            return await client.post("/api/topups", json=body, auth=auth)

        first = await top_up({"id": "pay-1", "meter": "M-0", "amount": "25.50"})
        assert first.status_code == 200
        assert first.json() == {"id": "pay-1", "meter": "M-0", "balance": "125.50",
                                "status": "applied"}
        again = await top_up({"id": "pay-1", "meter": "M-0", "amount": "25.50"})
        assert again.status_code == 200
        assert again.json()["balance"] == "125.50" and again.json()["status"] == "duplicate"
        assert web.park.registry.get("M-0").state.balance == 125_50

        refusals = [
            ({"id": "pay-1", "meter": "M-0", "amount": "30.00"}, OPERATOR, 409, "conflict"),
            ({"id": "v-1", "meter": "M-0", "amount": "1.00"}, VIEWER, 403, "forbidden"),
            ({"id": "b-1", "meter": "M-0", "amount": 5}, OPERATOR, 400, "bad_request"),
            ({"id": "b-2", "meter": "M-0", "amount": "1.001"}, OPERATOR, 400, "bad_request"),
            ({"id": "b-3", "meter": "M-0", "amount": "-1.00"}, OPERATOR, 400, "bad_request"),
            ({"meter": "M-0", "amount": "1.00"}, OPERATOR, 400, "bad_request"),
            ({"id": "b-4", "amount": "1.00"}, OPERATOR, 400, "bad_request"),
            ({"id": "u-1", "meter": "M-404", "amount": "1.00"}, OPERATOR, 404, "unknown_meter"),
            (["not", "an", "object"], OPERATOR, 400, "bad_request"),
        ]
        for body, auth, status, code in refusals:
            answer = await top_up(body, auth)
            assert (answer.status_code, answer.json()["error"]) == (status, code), body
            assert answer.json()["message"]
        not_json = await client.post("/api/topups", content=b"{nope", auth=OPERATOR)
        assert (not_json.status_code, not_json.json()["error"]) == (400, "bad_request")
        huge = await client.post("/api/topups", content=b" " * 20_000, auth=OPERATOR)
        assert huge.status_code == 413
        wrong_method = await client.get("/api/topups", auth=OPERATOR)
        assert (wrong_method.status_code, wrong_method.json()["error"]) == (
            405, "method_not_allowed")
        assert web.park.registry.get("M-0").state.balance == 125_50  # nothing else moved


async def test_admins_page_through_the_audit_log(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park") as web:
        client = web.client
        for n in range(3):
            answer = await client.post("/api/topups", auth=OPERATOR,
                                       json={"id": f"a-{n}", "meter": "M-1", "amount": "1.00"})
            assert answer.status_code == 200
        await client.post("/api/topups", auth=VIEWER,
                          json={"id": "v-1", "meter": "M-1", "amount": "1.00"})
        denied = await client.get("/api/audit", auth=OPERATOR)
        assert (denied.status_code, denied.json()["error"]) == (403, "forbidden")

        page = (await client.get("/api/audit", params={"limit": 2}, auth=ADMIN)).json()
        assert [e["reference"] for e in page["entries"]] == ["v-1", "a-2"]
        refused = page["entries"][0]
        assert (refused["user"], refused["role"], refused["channel"], refused["result"],
                refused["code"], refused["command"], refused["meter_id"]) == (
            "viewer", "viewer", "http", "refused", "forbidden", "topup", "M-1")
        assert refused["address"].startswith("127.0.0.1:")
        assert refused["ts"].endswith("Z")
        older = (await client.get("/api/audit", params={"limit": 2, "before": page["next"]},
                                  auth=ADMIN)).json()
        assert [e["reference"] for e in older["entries"]] == ["a-1", "a-0"]
        assert older["next"] is None
        for limit in ("0", "201", "many"):
            bad = await client.get("/api/audit", params={"limit": limit}, auth=ADMIN)
            assert (bad.status_code, bad.json()["error"]) == (400, "bad_request"), limit
        bad_cursor = await client.get("/api/audit", params={"before": "x"}, auth=ADMIN)
        assert bad_cursor.status_code == 400


async def test_repeated_wrong_passwords_are_slowed_down(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park") as web:
        client = web.client
        for _ in range(2):
            assert (await client.get("/api/meters", auth=("op", "guess"))).status_code == 401
        started = time.perf_counter()
        assert (await client.get("/api/meters", auth=("op", "guess"))).status_code == 401
        assert time.perf_counter() - started >= 0.45  # the third waits 0.5 s
        # The right password still works (after the wait), and resets the host.
        assert (await client.get("/api/meters", auth=OPERATOR)).status_code == 200
        started = time.perf_counter()
        assert (await client.get("/api/meters", auth=("op", "guess"))).status_code == 401
        assert time.perf_counter() - started < 0.25


def test_basic_credentials_are_parsed_strictly() -> None:
    from protocols.http.basic_auth import BadCredentials, parse_basic

    def header(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert parse_basic(None) is None
    assert parse_basic(header("op:pa:ss")) == ("op", "pa:ss")
    assert parse_basic(header("名字:密码")) == ("名字", "密码")
    for bad in ("Bearer abc", "Basic", header("no-colon"), header(":empty-user"), "Basic ***"):
        with pytest.raises(BadCredentials):
            parse_basic(bad)
