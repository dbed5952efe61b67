"""Quota groups over the hub, across its process boundary: the list, a request by an operator
and the decision by an admin, with the roles and errors of ``park.operations``."""

from __future__ import annotations

from pathlib import Path

from server.config import ParkConfig
from tests.ws.client import connect_and_login
from tests.ws.parks import feed, hub_park_toml, open_hub, settle

QUOTA = """
[[quotas]]
id = "press"
name = "Press shop"
meters = ["M-0", "M-1"]
budget = "50.00"

[[lines]]
id = "press"
meters = ["M-0", "M-1"]
output_unit = "parts"
"""


async def test_requests_and_decisions_over_the_hub(tmp_path: Path) -> None:
    config = ParkConfig.from_toml_text(hub_park_toml(tmp_path / "park") + QUOTA, "hub.toml")
    async with open_hub(config) as (park, _services):
        services = _services
        feed(park, "M-0", 1_000, 10.0)
        await settle(park)
        operator = await connect_and_login(services.hub_url, "op", "op-secret")
        listed, _ = await operator.ask({"type": "quotas", "id": "q1"})
        assert listed["type"] == "quotas"
        [group] = listed["groups"]
        assert (group["id"], group["unit"], group["budget"], group["blocked"]) == (
            "press", "money", "50.00", False)

        asked, _ = await operator.ask({"type": "quota_request", "id": "ask-1", "group": "press",
                                       "amount": "25.00", "reason": "night shift"})
        assert (asked["type"], asked["status"]) == ("quota", "applied"), asked
        assert asked["group"]["requests"][0]["status"] == "pending"
        again, _ = await operator.ask({"type": "quota_request", "id": "ask-1",
                                       "group": "press", "amount": "25.00",
                                       "reason": "night shift"})
        assert again["status"] == "duplicate"

        refused, _ = await operator.ask({"type": "quota_decide", "id": "d1", "group": "press",
                                         "request": "ask-1", "decision": "approve"})
        assert (refused["type"], refused["code"]) == ("error", "forbidden")
        admin = await connect_and_login(services.hub_url, "root", "root-secret")
        decided, _ = await admin.ask({"type": "quota_decide", "id": "d1", "group": "press",
                                      "request": "ask-1", "decision": "approve",
                                      "note": "ok for this month"})
        assert decided["status"] == "applied", decided
        assert (decided["group"]["limit"], decided["group"]["requests"][0]["decided_by"]) == (
            "75.00", "root")

        for bad, words in [
            ({"type": "quota_decide", "id": "d2", "group": "press", "request": "ask-1",
              "decision": "maybe"}, "approve"),
            ({"type": "quota_request", "id": "a2", "group": "nope", "amount": "1.00",
              "reason": "x"}, "unknown quota group"),
            ({"type": "quota_request", "id": "a3", "group": "press", "amount": "1.005",
              "reason": "x"}, "decimal places"),
            ({"type": "quota_request", "group": "press", "amount": "1.00", "reason": "x"},
             '"id"'),
        ]:
            error, _ = await admin.ask(bad)
            assert (error["type"], error["code"]) == ("error", "bad_request"), (bad, error)
            assert words in error["message"], (bad, error)
        viewer = await connect_and_login(services.hub_url, "eve", "eve-secret")
        seen, _ = await viewer.ask({"type": "quotas", "id": "v1"})
        assert seen["groups"][0]["extension"] == "25.00"


async def test_a_production_count_over_the_hub(tmp_path: Path) -> None:
    config = ParkConfig.from_toml_text(hub_park_toml(tmp_path / "park") + QUOTA, "hub.toml")
    async with open_hub(config) as (_park, services):
        operator = await connect_and_login(services.hub_url, "op", "op-secret")
        entered, _ = await operator.ask({"type": "output", "id": "c1", "line": "press",
                                         "date": "2026-11-10", "count": 700})
        assert entered == {"type": "output", "id": "c1", "status": "applied", "line": "press",
                           "date": "2026-11-10", "count": 700, "unit": "parts"}
        bad, _ = await operator.ask({"type": "output", "id": "c2", "line": "press",
                                     "date": "2026-11-10", "count": 1.5})
        assert (bad["type"], bad["code"]) == ("error", "bad_request")
        viewer = await connect_and_login(services.hub_url, "eve", "eve-secret")
        refused, _ = await viewer.ask({"type": "output", "id": "c3", "line": "press",
                                       "date": "2026-11-10", "count": 1})
        assert refused["code"] == "forbidden"
