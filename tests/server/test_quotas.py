"""Quota groups in a running park: a spent budget opens the group's meters with reason quota,
an approved extension closes them again, and both survive a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.effects import AlarmEvent
from persistence.check import check_store
from persistence.readonly import open_store_readonly
from policies.records import Reading
from server.app import open_park
from server.auth import Caller
from server.config import ParkConfig
from server.ledger import BadRequest
from server.operations import Forbidden
from server.reports import make_report
from tests.server.parks import park_toml

OPERATOR = Caller("op", "operator", "hub", "127.0.0.1:5000")
ADMIN = Caller("root", "admin", "http", "127.0.0.1:5002")
T0 = 1_795_000_000_000  # 2026-11-18 (UTC): mid-month, so no month boundary in the test

QUOTA = """
[[quotas]]
id = "line-1"
name = "Stamping line 1"
meters = ["M-0", "M-1"]
budget_kwh = "10"
alarm_percents = [80, 100]
"""


def quota_park(data_dir: Path) -> ParkConfig:
    return ParkConfig.from_toml_text(park_toml(data_dir, 3) + QUOTA, "quota-park.toml")


async def settle(park: object) -> None:
    dispatcher = park.dispatcher  # type: ignore[attr-defined]
    for _ in range(50):
        await trio.sleep(0.01)
        if not dispatcher.queue_depth:
            return


async def feed(park: object, meter_keys: list[int], register_wh: int, step: int) -> None:
    registry = park.registry  # type: ignore[attr-defined]
    for key in meter_keys:
        registry.deliver_reading_nowait(key, Reading(T0 + step * 3_600_000, register_wh, 3000.0))
    await settle(park)


async def test_a_spent_budget_opens_the_group_and_an_approval_closes_it(tmp_path: Path) -> None:
    config = quota_park(tmp_path / "park")
    alarms: list[AlarmEvent] = []
    async with open_park(config, with_field=False, clock_ms=lambda: T0,
                         alarm_sinks=(alarms.append,)) as park:
        m0, m1, m2 = (park.registry.get(f"M-{n}") for n in range(3))
        await feed(park, [0, 1, 2], 100_000, 0)  # baselines
        await feed(park, [0, 1, 2], 103_000, 1)  # 3 kWh each: the group used 6 of 10
        group = park.quotas.view("line-1")
        assert (group["used"], group["limit"], group["blocked"]) == ("6.000", "10.000", False)
        await feed(park, [0, 1], 104_000, 2)  # 8 kWh: the 80 % alarm
        assert [(a.alarm_id, a.state) for a in alarms if a.kind == "quota"] == [
            ("park/quota:line-1:80", "active")]
        assert m0.state.relay.closed and m1.state.relay.closed
        await feed(park, [0, 1, 2], 105_000, 3)  # 10 kWh: 100 %, cut
        for member in (m0, m1):
            assert (member.state.relay.closed, member.state.relay.reason) == (False, "quota")
            assert "quota" in {a.kind for a in member.state.alarms.active}
        assert m2.state.relay.closed  # not in the group
        assert park.quotas.view("line-1")["blocked"]

        with pytest.raises(Forbidden):
            await park.operations.decide_quota(OPERATOR, "line-1", "ask-1", True, "", "d0")
        answer = await park.operations.request_quota(OPERATOR, "line-1", "5", "rush order",
                                                     "ask-1")
        assert answer.status == "applied"
        assert answer.group["requests"][0]["status"] == "pending"
        again = await park.operations.request_quota(OPERATOR, "line-1", "5", "rush order",
                                                    "ask-1")
        assert again.status == "duplicate" and len(again.group["requests"]) == 1
        assert not m0.state.relay.closed  # a request alone changes nothing

        decided = await park.operations.decide_quota(ADMIN, "line-1", "ask-1", True, "ok",
                                                     "approve-1")
        assert decided.group["limit"] == "15.000" and not decided.group["blocked"]
        await settle(park)
        for member in (m0, m1):
            assert member.state.relay.closed and member.state.relay.reason is None
            assert "quota" not in {a.kind for a in member.state.alarms.active}
        quota_alarms = [(a.alarm_id, a.state) for a in alarms if a.kind == "quota"
                        and not a.meter_id]
        assert sorted(quota_alarms) == [("park/quota:line-1:100", "active"),
                                        ("park/quota:line-1:100", "cleared"),
                                        ("park/quota:line-1:80", "active"),
                                        ("park/quota:line-1:80", "cleared")]
        with pytest.raises(BadRequest, match="approved already"):
            await park.operations.decide_quota(ADMIN, "line-1", "ask-1", False, "", "reject-1")

    # The group's entries move no money: the books balance, and the data directory checks.
    with open_store_readonly(config.server.data_dir) as store:
        make_report("reconciliation", store, config)  # raises Unbalanced if not
        assert check_store(store, [meter.id for meter in config.meters]).clean

    # A restart rebuilds used (from the meters) and the extension (from the journal).
    async with open_park(config, with_field=False, clock_ms=lambda: T0) as park:
        await settle(park)
        group = park.quotas.view("line-1")
        assert (group["used"], group["limit"], group["blocked"]) == ("10.000", "15.000", False)
        assert park.registry.get("M-0").state.relay.closed
        await feed(park, [0, 1], 107_500, 4)  # 15 kWh: spent again
        assert park.registry.get("M-1").state.relay.reason == "quota"

    async with open_park(config, with_field=False, clock_ms=lambda: T0) as park:
        await settle(park)  # blocked before any reading: the group says so at start
        assert park.registry.get("M-0").state.relay.reason == "quota"
        assert park.quotas.view("line-1")["blocked"]


async def test_bad_requests_move_nothing(tmp_path: Path) -> None:
    async with open_park(quota_park(tmp_path / "park"), with_field=False,
                         clock_ms=lambda: T0) as park:
        for amount, reason, message in (("-1", "x", "> 0"), ("abc", "x", "kWh"),
                                        ("5", "", "needs a reason")):
            with pytest.raises(BadRequest, match=message):
                await park.operations.request_quota(OPERATOR, "line-1", amount, reason, "r")
        with pytest.raises(BadRequest, match="unknown quota group"):
            await park.operations.request_quota(OPERATOR, "line-9", "5", "x", "r")
        with pytest.raises(BadRequest, match="no request"):
            await park.operations.decide_quota(ADMIN, "line-1", "nope", True, "", "d")
        assert park.quotas.view("line-1")["requests"] == []
        assert park.journal is not None
