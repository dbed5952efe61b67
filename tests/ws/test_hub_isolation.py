"""Where the hub runs: its own process (the default) or the server's thread (``inline``).

The rest of tests/ws runs against the default; here: the same session works inline, a killed
hub process comes back on its port while the park goes on, a client command crosses the
pipe with its errors intact, and failed logins count once for the hub and HTTP.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
import trio

from protocols.ws.hub import Hub
from server.auth import SYSTEM
from server.errors import UserError, fatal_reason, leaves
from server.hub_process import HubProcess
from tests.ws.client import HubClient, connect_and_login
from tests.ws.parks import eventually, feed, hub_park, open_hub, settle


async def test_inline_hub_serves_the_same_session(tmp_path: Path) -> None:
    config = hub_park(tmp_path / "park", hub_keys='isolation = "inline"')
    async with open_hub(config) as (_park, services):
        assert isinstance(services.hub, Hub)
        client = await connect_and_login(services.hub_url, "op", "op-secret")
        snapshot, _ = await client.subscribe(topics=["meters"], meters=["M-0"])
        assert [m["meter"] for m in snapshot] == ["M-0"]
        ack, _ = await client.ask({"type": "topup", "id": "t1", "meter": "M-0",
                                   "amount": "5.00"})
        assert (ack["type"], ack["balance"]) == ("ack", "105.00")
        await client.close()


async def test_a_killed_hub_process_restarts_on_its_port_and_the_park_goes_on(
        tmp_path: Path) -> None:
    async with open_hub(hub_park(tmp_path / "park")) as (park, services):
        hub = services.hub
        assert isinstance(hub, HubProcess) and hub.pid is not None
        client = await connect_and_login(services.hub_url, "op", "op-secret")
        await client.subscribe(topics=["meters"], meters=["M-1"])
        os.kill(hub.pid, signal.SIGKILL)
        # The park does not notice: readings and money still go in while the hub is down.
        feed(park, "M-1", 1_000, 100.0)
        await park.operations.top_up(SYSTEM, "M-1", 2_00, "while-the-hub-is-down")
        await settle(park)
        assert park.registry.get("M-1").state.balance == 102_00
        with trio.fail_after(15):
            while hub.restarts == 0 or hub.pid is None:
                await trio.sleep(0.05)
        again = await connect_and_login_retrying(services.hub_url)
        snapshot, _ = await again.subscribe(topics=["meters"], meters=["M-1"])
        assert snapshot[0]["balance"] == "102.00"  # the new process has the current state
        ack, _ = await again.ask({"type": "relay", "id": "r1", "meter": "M-1",
                                  "action": "open", "reason": "maintenance"})
        assert ack["type"] == "ack" and ack["relay"] == "open"
        async with httpx.AsyncClient(base_url=services.http_url) as http:
            metrics = (await http.get("/metrics")).text.splitlines()
        assert "wattkeeper_hub_restarts_total 1.0" in metrics


async def connect_and_login_retrying(url: str) -> HubClient:
    with trio.fail_after(10):
        while True:
            try:
                return await connect_and_login(url, "op", "op-secret")
            except (ConnectionError, OSError):
                await trio.sleep(0.1)


async def test_a_hub_process_that_cannot_start_stops_the_server_with_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HubProcess, "WORKER_MODULE", "server.no_such_worker")
    with pytest.raises(BaseException) as stopped:
        async with open_hub(hub_park(tmp_path / "park")):
            raise AssertionError("the services started without a hub")
    # What `wattkeeper serve` would print as its one line:
    assert [type(leaf) for leaf in leaves(stopped.value)] == [UserError]
    assert fatal_reason(stopped.value).startswith(
        "the hub process did not start: its pipe closed")


async def test_refusals_cross_the_pipe_with_their_codes(tmp_path: Path) -> None:
    async with open_hub(hub_park(tmp_path / "park")) as (_park, services):
        viewer = await connect_and_login(services.hub_url, "eve", "eve-secret")
        refused, _ = await viewer.ask({"type": "topup", "id": "t", "meter": "M-0",
                                       "amount": "1.00"})
        assert refused["code"] == "forbidden" and "operator" in refused["message"]
        op = await connect_and_login(services.hub_url, "op", "op-secret")
        unknown, _ = await op.ask({"type": "relay", "id": "r", "meter": "NOPE",
                                   "action": "open", "reason": "x"})
        assert unknown["code"] == "unknown_meter"
        admin = await connect_and_login(services.hub_url, "root", "root-secret")
        page, _ = await admin.ask({"type": "audit", "id": "q", "limit": 5})
        assert [(e["reference"], e["result"]) for e in page["entries"]] == [
            ("r", "refused"), ("t", "refused")]


async def test_a_bug_in_a_command_is_answered_internal_once_with_the_servers_words(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_hub(hub_park(tmp_path / "park")) as (park, services):
        async def broken(*_args: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(park.operations, "top_up", broken)
        op = await connect_and_login(services.hub_url, "op", "op-secret")
        error, _ = await op.ask({"type": "topup", "id": "t", "meter": "M-0", "amount": "1.00"})
        # The server's answer as it gave it (the hub's process does not wrap it again).
        assert (error["code"], error["message"]) == (
            "internal", "internal error (RuntimeError); see the server log")


async def test_failed_http_logins_slow_the_hubs_logins(tmp_path: Path) -> None:
    async with open_hub(hub_park(tmp_path / "park")) as (_park, services):
        async with httpx.AsyncClient(base_url=services.http_url) as http:
            for _ in range(3):
                answer = await http.get("/api/meters", auth=("op", "wrong"))
                assert answer.status_code == 401
        await trio.sleep(0.3)  # the failures cross the pipe to the hub's process meanwhile
        client = await HubClient.connect(services.hub_url)
        started = trio.current_time()
        await client.login("op", "op-secret")
        # Three failures from this host: the hub waits 1 s before it even checks.
        assert trio.current_time() - started >= 0.9
        await eventually(lambda: services.hub.statistics().authenticated == 1)
