"""The app against a backend of fakes: what it answers when the park says storage is down,
and the hub address it gives the console."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from protocols.http.backend import Health, HttpBackend
from protocols.http.metrics import HubFigures, ParkStatistics
from protocols.http.server import open_http
from server.auth import LoginThrottle, Users
from server.config import ParkConfig
from tests.http.harness import USERS_TOML
from tests.server.parks import park_toml

STATISTICS = ParkStatistics(
    meters=2, meters_online=1, meters_relay_open=1, meters_faulted=0, messages=10,
    readings_dropped=0, actor_failures=0, actor_restarts=0, queue_depth=3,
    longest_slice_ms=1.5, relay_commands=4, alarm_events=2, alarms_raised={"overload": 1},
    commands={("topup", "accepted"): 5}, journal_available=False, journal_commits=7,
    journal_entries=9, journal_duplicates=0, journal_pending=2,
    journal_average_commit_ms=2.0, journal_longest_commit_ms=9.0, journal_writer_restarts=1,
    loop_lateness_ms=0.5, loop_worst_lateness_ms=12.0, hub=HubFigures(3, 1, 2), uptime_s=5.0)


class NoOperations:
    async def top_up(self, caller: Any, meter_id: str, amount: int, reference: str) -> Any:
        raise AssertionError("not called")

    def audit_page(self, caller: Any, *, before: str | None = None, limit: int = 50) -> Any:
        raise AssertionError("not called")


@asynccontextmanager
async def serving(hub_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = ParkConfig.from_toml_text(park_toml(tmp_path) + USERS_TOML, "fake.toml")
    backend = HttpBackend(
        operations=NoOperations(), users=Users(config.users), throttle=LoginThrottle(),
        caller=lambda user, role, address: (user, role, address), meters=dict,
        health=lambda: Health(False, 2, 0, 5.0), statistics=lambda: STATISTICS,
        clock_ms=lambda: 0, hub_url=hub_url)
    async with open_http(backend, "127.0.0.1", 0) as server, \
            httpx.AsyncClient(base_url=server.url) as client:
        yield client


async def test_health_is_503_while_storage_is_down_and_metrics_say_why(tmp_path: Path) -> None:
    async with serving("ws://127.0.0.1:8765", tmp_path) as client:
        health = await client.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "unavailable", "journal": "unavailable",
                                 "meters": 2, "faulted": 0, "uptime_s": 5.0}
        lines = set((await client.get("/metrics")).text.splitlines())
        for line in ("wattkeeper_journal_available 0.0", "wattkeeper_hub_clients 3.0",
                     "wattkeeper_hub_dropped_clients_total 1.0",
                     "wattkeeper_hub_restarts_total 2.0",
                     "wattkeeper_dispatcher_queue_depth 3.0", "wattkeeper_loop_stall_seconds 0.012",
                     'wattkeeper_alarms_raised_total{kind="overload"} 1.0',
                     'wattkeeper_commands_total{command="topup",result="accepted"} 5.0',
                     "wattkeeper_journal_commit_seconds_longest 0.009",
                     'wattkeeper_meters{state="relay_open"} 1.0'):
            assert line in lines, line


@pytest.mark.parametrize(("hub_url", "asked", "told"), [
    ("ws://0.0.0.0:8765", "127.0.0.1", "ws://127.0.0.1:8765"),
    ("wss://[::]:8765", "localhost", "wss://localhost:8765"),
    ("wss://park.example.com/hub", "10.0.0.5", "wss://park.example.com/hub"),
])
async def test_the_console_is_told_a_hub_address_it_can_reach(
        hub_url: str, asked: str, told: str, tmp_path: Path) -> None:
    async with serving(hub_url, tmp_path) as client:
        answer = await client.get("/api/console", headers={"Host": f"{asked}:8080"})
        assert answer.json()["hub"] == told


def test_http_hub_url_is_read_and_checked(tmp_path: Path) -> None:
    base = park_toml(tmp_path)
    config = ParkConfig.from_toml_text(
        base.replace("[http]\n", '[http]\nhub_url = "wss://park.example.com/hub"\n'), "p.toml")
    assert config.http.hub_url == "wss://park.example.com/hub"
    assert ParkConfig.from_toml_text(base, "p.toml").http.hub_url == ""
    with pytest.raises(ValueError, match=r"http\.hub_url: expected a websocket URL"):
        ParkConfig.from_toml_text(base.replace("[http]\n", '[http]\nhub_url = "http://x"\n'),
                                  "p.toml")
