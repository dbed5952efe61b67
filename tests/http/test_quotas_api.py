"""Quota groups and apportionment over the HTTP API (a real hypercorn server on loopback)."""

from __future__ import annotations

import time
from pathlib import Path

import trio

from policies.records import Reading
from tests.http.harness import ADMIN, OPERATOR, VIEWER, open_web_park

HOUR = 3_600_000
MINUTE = 60_000
QUOTA = """
[[quotas]]
id = "line-1"
name = "Line 1"
meters = ["M-0", "M-1"]
budget_kwh = "0.09"
"""
POOL = """
[[feeders]]
id = "tx1"
main = "M-2"
meters = ["M-0", "M-1"]

[[pools]]
id = "loss"
kind = "loss"
feeder = "tx1"
"""


async def test_a_request_and_its_approval_reopen_a_spent_group(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park", extra_toml=QUOTA) as web:
        registry = web.park.registry
        # The group's month is the park clock's (now): readings of the last two minutes.
        t0 = int(time.time() * 1000) - 2 * MINUTE
        for step, register in ((0, 0), (1, 50)):  # 50 Wh a minute each: 3 kW
            for key in (0, 1):
                registry.deliver_reading_nowait(key, Reading(t0 + step * MINUTE, register, 3e3))
        await trio.sleep(0.05)
        listed = (await web.client.get("/api/quotas", auth=VIEWER)).json()["groups"]
        assert [(g["id"], g["used"], g["limit"], g["blocked"]) for g in listed] == [
            ("line-1", "0.100", "0.090", True)]
        assert registry.get("M-0").state.relay.reason == "quota"
        metrics = set((await web.client.get("/metrics")).text.splitlines())
        assert 'wattkeeper_quota_blocked{group="line-1"} 1.0' in metrics
        assert any(line.startswith('wattkeeper_quota_used_ratio{group="line-1",unit="kwh"} 1.1')
                   for line in metrics)

        refused = await web.client.post("/api/quotas/line-1/requests", auth=VIEWER,
                                        json={"id": "r1", "amount": "5", "reason": "rush"})
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
        bad = await web.client.post("/api/quotas/line-1/requests", auth=OPERATOR,
                                    json={"id": "r1", "amount": "-5", "reason": "rush"})
        assert (bad.status_code, bad.json()["error"]) == (400, "bad_request")
        unknown = await web.client.post("/api/quotas/line-9/requests", auth=OPERATOR,
                                        json={"id": "r1", "amount": "5", "reason": "rush"})
        assert unknown.status_code == 400 and "line-9" in unknown.json()["message"]
        asked = await web.client.post("/api/quotas/line-1/requests", auth=OPERATOR,
                                      json={"id": "r1", "amount": "0.1", "reason": "rush"})
        assert asked.status_code == 200 and asked.json()["status"] == "applied"
        [request] = asked.json()["group"]["requests"]
        assert (request["id"], request["amount"], request["requested_by"]) == ("r1", "0.100",
                                                                               "op")

        not_admin = await web.client.post("/api/quotas/line-1/decisions", auth=OPERATOR,
                                          json={"id": "d1", "request": "r1",
                                                "decision": "approve"})
        assert not_admin.status_code == 403
        decided = await web.client.post("/api/quotas/line-1/decisions", auth=ADMIN,
                                        json={"id": "d1", "request": "r1",
                                              "decision": "approve", "note": "ok"})
        assert decided.status_code == 200
        group = decided.json()["group"]
        assert (group["limit"], group["blocked"], group["requests"][0]["status"]) == (
            "0.190", False, "approved")
        await trio.sleep(0.05)
        assert registry.get("M-0").state.relay.closed
        audit = (await web.client.get("/api/audit", auth=ADMIN)).json()["entries"]
        assert {"quota_request", "quota_approve"} <= {entry["command"] for entry in audit}


async def test_an_admin_posts_a_period_once(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park", extra_toml=POOL) as web:
        registry = web.park.registry
        start = 1_794_700_800_000  # 2026-11-15 00:00 UTC
        for key, wh in ((0, 3_000), (1, 1_000), (2, 5_000)):
            registry.deliver_reading_nowait(key, Reading(start, 0, 1e3))
            registry.deliver_reading_nowait(key, Reading(start + 5 * HOUR, wh, 1e3))
        await trio.sleep(0.05)
        await web.park.snapshot_now()
        await trio.sleep(1.2)  # the history flusher writes once a second
        body = {"from": "2026-11-15", "to": "2026-11-16"}
        assert (await web.client.post("/api/apportionment", auth=OPERATOR,
                                      json=body)).status_code == 403
        preview = await web.client.get("/api/reports/apportionment", auth=OPERATOR,
                                       params=body)
        assert preview.status_code == 200 and ",no\n" in preview.text
        posted = await web.client.post("/api/apportionment", auth=ADMIN, json=body)
        assert posted.status_code == 200, posted.text
        # Loss 5 - 4 = 1 kWh at 1.00, by consumption 3 : 1.
        assert [(p["tenant"], p["amount"], p["status"]) for p in posted.json()["postings"]] == [
            ("t0", "0.75", "applied"), ("t1", "0.25", "applied")]
        again = await web.client.post("/api/apportionment", auth=ADMIN, json=body)
        assert again.json()["status"] == "duplicate"
        bad = await web.client.post("/api/apportionment", auth=ADMIN, json={"from": "x"})
        assert bad.status_code == 400


LINE = """
[[lines]]
id = "press"
meters = ["M-0", "M-1"]
output_unit = "parts"
"""


async def test_an_operator_enters_a_days_output(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park", extra_toml=LINE) as web:
        body = {"id": "c1", "date": "2026-11-10", "count": 1200}
        refused = await web.client.post("/api/lines/press/output", auth=VIEWER, json=body)
        assert refused.status_code == 403
        entered = await web.client.post("/api/lines/press/output", auth=OPERATOR, json=body)
        assert entered.status_code == 200
        assert entered.json() == {"id": "c1", "line": "press", "date": "2026-11-10",
                                  "count": 1200, "unit": "parts", "status": "applied"}
        again = await web.client.post("/api/lines/press/output", auth=OPERATOR, json=body)
        assert again.json()["status"] == "duplicate"
        reused = await web.client.post("/api/lines/press/output", auth=OPERATOR,
                                       json={**body, "count": 1300})
        assert (reused.status_code, reused.json()["error"]) == (409, "conflict")
        for bad in ({"id": "c2", "date": "yesterday", "count": 1},
                    {"id": "c3", "date": "2026-11-10", "count": "many"}):
            answer = await web.client.post("/api/lines/press/output", auth=OPERATOR, json=bad)
            assert (answer.status_code, answer.json()["error"]) == (400, "bad_request")
        unknown = await web.client.post("/api/lines/lathe/output", auth=OPERATOR,
                                        json={"id": "c4", "date": "2026-11-10", "count": 1})
        assert unknown.status_code == 400 and "lathe" in unknown.json()["message"]
        report = await web.client.get("/api/reports/output", auth=OPERATOR,
                                      params={"from": "2026-11-10", "to": "2026-11-11"})
        assert report.status_code == 200 and "press,2026-11-10,0.000,1200,parts" in report.text
