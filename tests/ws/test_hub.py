"""The hub over loopback, driven by a plain websocket client (websocket-client in threads)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
import trio
import websocket

from tests.ws.client import HubClient, Message, connect_and_login
from tests.ws.parks import eventually, feed, hub_park, open_hub, settle


async def test_login_welcome_token_reconnect_and_bad_token(tmp_path: Path) -> None:
    async with open_hub(hub_park(tmp_path / "park")) as (_park, services):
        assert services.hub_url.startswith("ws://127.0.0.1:")
        first = await HubClient.connect(services.hub_url)
        welcome = await first.login("op", "op-secret")
        assert (welcome["user"], welcome["role"]) == ("op", "operator")
        assert welcome["expires"].endswith("Z") and len(welcome["token"]) >= 32
        await first.close()

        again = await HubClient.connect(services.hub_url)
        await again.send({"type": "hello", "token": welcome["token"]})
        resumed, _ = await again.expect("welcome")
        assert (resumed["user"], resumed["role"], resumed["token"]) == (
            "op", "operator", welcome["token"])
        _, done = await again.subscribe(topics=["park"])
        assert done["id"] == "sub"

        stranger = await HubClient.connect(services.hub_url)
        await stranger.send({"type": "hello", "token": "not-a-token"})
        refused, _ = await stranger.expect("error")
        assert refused["code"] == "unauthorized"
        await stranger.send({"type": "ping", "id": 1})
        assert (await stranger.expect("error"))[0]["code"] == "unauthorized"


async def test_wrong_password_is_refused_and_repeats_are_slowed(tmp_path: Path) -> None:
    async with open_hub(hub_park(tmp_path / "park")) as (_park, services):
        client = await HubClient.connect(services.hub_url)
        times = []
        for attempt in range(3):
            started = time.monotonic()
            await client.send({"type": "hello", "id": attempt, "user": "op",
                               "password": "guess"})
            error, _ = await client.expect("error")
            times.append(time.monotonic() - started)
            assert (error["id"], error["code"]) == (attempt, "unauthorized")
            assert "wrong user name or password" in error["message"]
        # The throttle waits 0.25 s before the second answer, 0.5 s before the third.
        assert times[1] >= 0.24 and times[2] >= 0.48, times
        # An unknown user is refused the same way; the right password then still works.
        await client.send({"type": "hello", "user": "nobody", "password": "x"})
        assert (await client.expect("error"))[0]["code"] == "unauthorized"
        welcome = await client.login("op", "op-secret")
        assert welcome["role"] == "operator"
        await eventually(lambda: services.hub.statistics().failed_logins == 4)


async def test_nothing_but_hello_before_welcome(tmp_path: Path) -> None:
    async with open_hub(hub_park(tmp_path / "park")) as (park, services):
        client = await HubClient.connect(services.hub_url)
        for frame in ({"type": "ping", "id": "p"},
                      {"type": "subscribe", "id": "s", "topics": ["meters"]},
                      {"type": "topup", "id": "t", "meter": "M-0", "amount": "1.00"},
                      {"type": "relay", "id": "r", "meter": "M-0", "action": "open"},
                      {"type": "audit", "id": "a"}):
            error, _ = await client.ask(frame)
            assert (error["type"], error["code"]) == ("error", "unauthorized"), error
        assert park.registry.get("M-0").state.balance == 100_00
        assert park.registry.get("M-0").state.relay.closed
        await client.login("op", "op-secret")
        error, _ = await client.ask({"type": "hello", "id": "h2", "user": "op",
                                     "password": "op-secret"})
        assert error["code"] == "bad_request" and "already logged in" in error["message"]


async def test_malformed_unknown_and_oversized_frames(tmp_path: Path) -> None:
    async with open_hub(hub_park(tmp_path / "park"), max_frame_bytes=2048) as (_park, services):
        client = await connect_and_login(services.hub_url, "op", "op-secret")
        cases: list[tuple[str | bytes, object, str]] = [
            ("{not json", None, "not JSON"),
            ("[1, 2]", None, "JSON object"),
            ('"hello"', None, "JSON object"),
            ('{"id": "x1"}', "x1", '"type"'),
            ('{"type": "launch", "id": "x2"}', "x2", "unknown message type"),
            ('{"type": "topup", "id": "x3", "meter": "M-0"}', "x3", '"amount"'),
            ('{"type": "topup", "id": "x4", "meter": "M-0", "amount": 100}', "x4", "decimal"),
            ('{"type": "topup", "id": "x5", "meter": "M-0", "amount": "1.001"}', "x5",
             "decimal places"),
            ('{"type": "topup", "meter": "M-0", "amount": "1.00"}', None, '"id"'),
            ('{"type": "subscribe", "id": "x6", "topics": ["weather"]}', "x6", "topic"),
            ('{"type": "audit", "id": "x7", "limit": 0}', "x7", "limit"),
            (b"\x00\x01binary", None, "binary"),
            ('{"type": "ping", "id": "' + "x" * 3000 + '"}', None, "larger than the limit"),
        ]
        for frame, frame_id, words in cases:
            await client.send(frame)
            error, skipped = await client.expect("error")
            assert not [m for m in skipped if m["type"] != "error"]
            assert (error["code"], error["id"]) == ("bad_request", frame_id), (frame, error)
            assert words in error["message"], (frame, error)
        # The connection goes on after each of them.
        pong, _ = await client.ask({"type": "ping", "id": "still-here"})
        assert pong == {"type": "pong", "id": "still-here"}
        # Beyond four times the limit the frame is not even read: closed with 1009.
        await client.send('{"type": "ping", "id": "' + "y" * 9000 + '"}')
        assert await client.close_code() == 1009


async def test_viewer_watches_but_may_not_command(tmp_path: Path) -> None:
    async with open_hub(hub_park(tmp_path / "park")) as (park, services):
        viewer = await connect_and_login(services.hub_url, "eve", "eve-secret")
        snapshot, _ = await viewer.subscribe(topics=["meters"], meters=["M-0"])
        assert [m["meter"] for m in snapshot] == ["M-0"]
        for frame in ({"type": "topup", "id": "v1", "meter": "M-0", "amount": "5.00"},
                      {"type": "relay", "id": "v2", "meter": "M-0", "action": "open"},
                      {"type": "reset_lockout", "id": "v3", "meter": "M-0"},
                      {"type": "audit", "id": "v4"}):
            error, _ = await viewer.ask(frame)
            assert error["code"] == "forbidden", error
        await viewer.send({"type": "subscribe", "id": "v5", "topics": ["audit"]})
        assert (await viewer.expect("error"))[0]["code"] == "forbidden"
        assert park.registry.get("M-0").state.balance == 100_00


async def test_snapshot_then_deltas_filtered_by_ids_tenant_and_gateway(tmp_path: Path) -> None:
    async with open_hub(hub_park(tmp_path / "park")) as (park, services):
        url = services.hub_url
        by_ids = await connect_and_login(url, "eve", "eve-secret")
        by_tenant = await connect_and_login(url, "eve", "eve-secret")
        by_gateway = await connect_and_login(url, "eve", "eve-secret")
        everything = await connect_and_login(url, "eve", "eve-secret")
        snapshots = {
            "ids": await by_ids.subscribe(topics=["meters"], meters=["M-0", "M-3"]),
            "tenant": await by_tenant.subscribe(topics=["meters"], tenant="gamma"),
            "gateway": await by_gateway.subscribe(topics=["meters", "gateways"],
                                                  gateway="gw1"),
            "all": await everything.subscribe(topics=["meters", "alarms", "park", "gateways"],
                                              batch=True),
        }
        meters = {name: sorted(m["meter"] for m in snap if m["type"] == "meter")
                  for name, (snap, _) in snapshots.items()}
        assert meters == {"ids": ["M-0", "M-3"], "tenant": ["M-4", "M-5"],
                          "gateway": ["M-0", "M-1", "M-2"],
                          "all": ["M-0", "M-1", "M-2", "M-3", "M-4", "M-5"]}
        gateway_snapshot = [m["gateway"] for m in snapshots["gateway"][0]
                            if m["type"] == "gateway"]
        assert gateway_snapshot == ["gw1"]
        all_snapshot = snapshots["all"][0]
        assert [m["type"] for m in all_snapshot][-3:] == ["park", "gateway", "gateway"]
        park_message = next(m for m in all_snapshot if m["type"] == "park")
        assert (park_message["meters"], park_message["meters_on"],
                park_message["balance_sum"], park_message["gateways"]) == (6, 6, "600.00", 2)
        first = next(m for m in all_snapshot if m["meter"] == "M-0")
        assert first["balance"] == "100.00" and first["relay"] == "closed"
        assert any(frame.startswith('{"type":"batch"') for frame in everything.frames)

        feed(park, "M-0", 1_000, 500.0)
        feed(park, "M-4", 2_000, 750.0)
        await settle(park)
        expected = {"ids": (by_ids, ["M-0"]), "tenant": (by_tenant, ["M-4"]),
                    "gateway": (by_gateway, ["M-0"]), "all": (everything, ["M-0", "M-4"])}
        for name, (client, wanted) in expected.items():
            got: dict[str, dict[str, object]] = {}
            while set(got) != set(wanted):
                message, _ = await client.expect("meter")
                assert message["meter"] in wanted, (name, message)
                if message["energy_kwh"] > 0:
                    got[str(message["meter"])] = message
            for message in await client.drain():
                assert message["type"] != "meter" or message["meter"] in wanted, (name, message)
        assert got["M-4"]["power_w"] == 750.0 and got["M-4"]["energy_kwh"] == 2.0

        await by_ids.send({"type": "subscribe", "id": "bad", "meters": ["M-0", "M-404"]})
        error, _ = await by_ids.expect("error")
        assert (error["code"], error["id"]) == ("unknown_meter", "bad")
        assert "M-404" in error["message"]


async def test_a_repeated_topup_credits_once_with_the_same_ack(tmp_path: Path) -> None:
    async with open_hub(hub_park(tmp_path / "park")) as (park, services):
        client = await connect_and_login(services.hub_url, "op", "op-secret")
        await client.subscribe(topics=["meters"], meters=["M-0"])
        topup = {"type": "topup", "id": "pay-1", "meter": "M-0", "amount": "50.00"}
        first, before_first = await client.ask(topup)
        again, before_again = await client.ask(topup)
        assert first == {"type": "ack", "id": "pay-1", "meter": "M-0", "status": "applied",
                         "balance": "150.00", "relay": "closed", "relay_reason": None}
        assert again == {**first, "status": "duplicate"}
        assert park.registry.get("M-0").state.balance == 150_00

        def credited(m: Message) -> bool:
            return m["type"] == "meter" and m["balance"] == "150.00"

        # The meter's update may come before the ack or after it, but it comes.
        if not any(credited(m) for m in before_first + before_again):
            update, _ = await client.expect(credited)
            assert update["meter"] == "M-0"
        conflict, _ = await client.ask({**topup, "amount": "60.00"})
        assert conflict["code"] == "conflict"
        for amount in ("-1.00", "0.00"):
            error, _ = await client.ask({**topup, "id": f"neg{amount}", "amount": amount})
            assert (error["code"], error["message"]) == ("bad_request", "amount must be > 0")
        unknown, _ = await client.ask({**topup, "id": "pay-2", "meter": "M-404"})
        assert unknown["code"] == "unknown_meter"
        assert park.registry.get("M-0").state.balance == 150_00


async def test_relay_open_and_auto_survive_a_park_restart(tmp_path: Path) -> None:
    config = hub_park(tmp_path / "park")
    async with open_hub(config) as (park, services):
        client = await connect_and_login(services.hub_url, "op", "op-secret")
        ack, _ = await client.ask({"type": "relay", "id": "r1", "meter": "M-1",
                                   "action": "open", "reason": "maintenance"})
        assert (ack["type"], ack["relay"], ack["relay_reason"]) == ("ack", "open", "manual")
    async with open_hub(config) as (park, services):
        client = await connect_and_login(services.hub_url, "op", "op-secret")
        snapshot, _ = await client.subscribe(topics=["meters"], meters=["M-1"])
        assert (snapshot[0]["relay"], snapshot[0]["relay_reason"]) == ("open", "manual")
        ack, _ = await client.ask({"type": "relay", "id": "r2", "meter": "M-1",
                                   "action": "auto"})
        assert (ack["relay"], ack["relay_reason"]) == ("closed", None)
        update, _ = await client.expect(lambda m: m["type"] == "meter"
                                        and m["relay"] == "closed")
        assert update["meter"] == "M-1"
        bad, _ = await client.ask({"type": "relay", "id": "r3", "meter": "M-1",
                                   "action": "shut"})
        assert bad["code"] == "bad_request"
    async with open_hub(config) as (park, services):
        assert park.registry.get("M-1").state.relay.closed


async def test_alarm_events_and_acknowledgement(tmp_path: Path) -> None:
    config = hub_park(tmp_path / "park")
    async with open_hub(config) as (park, services):
        client = await connect_and_login(services.hub_url, "op", "op-secret")
        await client.subscribe(topics=["alarms", "park"], meters=["M-2"])
        await park.ledger.adjust("M-2", -60_00, "adj-1", park.clock.wall_ms(), "test")
        alarm, _ = await client.expect("alarm")
        assert (alarm["meter"], alarm["kind"], alarm["level"], alarm["state"],
                alarm["acknowledged"]) == ("M-2", "low_balance", 1, "active", False)
        ack, _ = await client.ask({"type": "ack_alarm", "id": "a1", "alarm": alarm["alarm"]})
        assert (ack["type"], ack["alarm"], ack["meter"]) == ("ack", alarm["alarm"], "M-2")
        seen, _ = await client.expect("alarm")
        assert (seen["alarm"], seen["state"], seen["acknowledged"]) == (
            alarm["alarm"], "acknowledged", True)
        park_alarm, _ = await client.ask({"type": "ack_alarm", "id": "a2",
                                          "alarm": "park/storage"})
        assert park_alarm["code"] == "bad_request"
    async with open_hub(config) as (park, services):
        client = await connect_and_login(services.hub_url, "op", "op-secret")
        snapshot, _ = await client.subscribe(topics=["alarms"])
        (active,) = [m for m in snapshot if m["type"] == "alarm"]
        assert (active["alarm"], active["state"], active["acknowledged"]) == (
            alarm["alarm"], "active", True)


async def test_overload_lockout_reset(tmp_path: Path) -> None:
    async with open_hub(hub_park(tmp_path / "park")) as (park, services):
        client = await connect_and_login(services.hub_url, "op", "op-secret")
        await client.subscribe(topics=["meters", "alarms"], meters=["M-5"])
        actor = park.registry.get("M-5")
        register = 1_000
        with trio.fail_after(10):
            while not actor.state.relay.locked_out:
                register += 1
                feed(park, "M-5", register, 9_000.0)
                await trio.sleep(0.05)
        tripped, _ = await client.expect(lambda m: m["type"] == "meter"
                                         and m["relay"] == "open")
        assert tripped["relay_reason"] == "overload" and tripped["alarm"] == "overload"
        feed(park, "M-5", register + 1, 100.0)
        await settle(park)
        ack, _ = await client.ask({"type": "reset_lockout", "id": "reset-1", "meter": "M-5"})
        assert (ack["type"], ack["relay"]) == ("ack", "closed"), ack
        assert not actor.state.relay.locked_out
        again, _ = await client.ask({"type": "reset_lockout", "id": "reset-1", "meter": "M-5"})
        assert again["status"] == "duplicate"


async def test_every_command_is_audited_and_admins_read_it(tmp_path: Path) -> None:
    async with open_hub(hub_park(tmp_path / "park")) as (park, services):
        url = services.hub_url
        admin = await connect_and_login(url, "root", "root-secret")
        await admin.subscribe(topics=["audit"])
        op = await connect_and_login(url, "op", "op-secret")
        viewer = await connect_and_login(url, "eve", "eve-secret")
        await op.ask({"type": "topup", "id": "c1", "meter": "M-0", "amount": "10.00"})
        await op.ask({"type": "relay", "id": "c2", "meter": "M-0", "action": "open",
                      "reason": "drill"})
        await op.ask({"type": "reset_lockout", "id": "c3", "meter": "M-0"})
        await park.ledger.adjust("M-2", -60_00, "adj-1", park.clock.wall_ms(), "test")
        alarm_id = f"M-2/{park.registry.get('M-2').state.alarms.active[0].alarm_id}"
        await op.ask({"type": "ack_alarm", "id": "c4", "alarm": alarm_id})
        await viewer.ask({"type": "topup", "id": "c5", "meter": "M-0", "amount": "1.00"})
        live = []
        while len(live) < 5:
            message, _ = await admin.expect("audit")
            live.append(message["entry"])
        assert [(e["reference"], e["command"], e["user"], e["result"], e["code"])
                for e in live] == [
            ("c1", "topup", "op", "accepted", ""), ("c2", "relay", "op", "accepted", ""),
            ("c3", "reset_lockout", "op", "accepted", ""),
            ("c4", "ack_alarm", "op", "accepted", ""),
            ("c5", "topup", "eve", "refused", "forbidden")]
        assert live[0]["channel"] == "hub" and live[0]["address"].startswith("127.0.0.1:")
        assert live[0]["detail"] == "amount 10.00" and live[3]["target"] == alarm_id
        assert live[0]["ts"].endswith("Z")

        page, _ = await admin.ask({"type": "audit", "id": "q1", "limit": 3})
        assert [e["reference"] for e in page["entries"]] == ["c5", "c4", "c3"]
        older, _ = await admin.ask({"type": "audit", "id": "q2", "before": page["next"]})
        assert [e["reference"] for e in older["entries"]] == ["c2", "c1"]
        assert older["next"] is None
        refused, _ = await op.ask({"type": "audit", "id": "q3"})
        assert refused["code"] == "forbidden"


async def test_a_stalled_client_is_dropped_while_others_keep_receiving(tmp_path: Path) -> None:
    config = hub_park(tmp_path / "park", extra_meters=300)
    async with open_hub(config, stall_timeout_s=0.5) as (park, services):
        url = services.hub_url
        # A tiny receive buffer, and then it stops reading: the server's writes block soon.
        stalled = await connect_and_login(
            url, "eve", "eve-secret", sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
        await stalled.send({"type": "subscribe", "id": "s", "topics": ["meters"]})
        healthy = await connect_and_login(url, "eve", "eve-secret")
        await healthy.subscribe(topics=["meters"], meters=["M-0"], batch=True)
        meter_ids = [actor.meter_id for actor in park.registry]
        register = 1_000
        received = 0
        with trio.fail_after(30):
            while services.hub.statistics().dropped_stalled == 0 or received < 20:
                register += 1
                for meter_id in meter_ids:
                    feed(park, meter_id, register, 1_000.0)
                await trio.sleep(0.05)
                # The healthy client reads on; it sees every change of M-0 (coalesced).
                message, _ = await healthy.expect("meter")
                assert message["meter"] == "M-0"
                received += 1
        await eventually(lambda: services.hub.statistics().clients == 1)
        statistics = services.hub.statistics()
        assert statistics.dropped_stalled == 1 and statistics.coalesced_updates > 0
        await stalled.close()


async def test_max_clients_refuses_the_next_connection(tmp_path: Path) -> None:
    async with open_hub(hub_park(tmp_path / "park"), max_clients=1) as (_park, services):
        first = await connect_and_login(services.hub_url, "op", "op-secret")
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            await HubClient.connect(services.hub_url)
        assert refused.value.status_code == 503
        await first.close()
        await eventually(lambda: services.hub.statistics().rejected_clients == 1)
        await eventually(lambda: services.hub.statistics().clients == 0)
        await connect_and_login(services.hub_url, "op", "op-secret")


async def test_wss_with_a_configured_certificate(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "hub.crt", tmp_path / "hub.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    # Relative paths, as a config next to its certificate has them: the hub's own process
    # must find them from the server's directory, not from its own.
    monkeypatch.chdir(tmp_path)
    config = hub_park(tmp_path / "park", hub_keys='tls_cert = "hub.crt"\ntls_key = "hub.key"')
    async with open_hub(config) as (_park, services):
        assert services.hub_url.startswith("wss://127.0.0.1:")
        client = await connect_and_login(services.hub_url, "op", "op-secret",
                                         sslopt={"ca_certs": str(cert)})
        snapshot, _ = await client.subscribe(topics=["meters"], meters=["M-0"])
        assert snapshot[0]["balance"] == "100.00"
        with pytest.raises((websocket.WebSocketException, ConnectionError)):
            await HubClient.connect(services.hub_url.replace("wss://", "ws://"), timeout=1)
        # The hub goes on serving after a client that does not speak TLS.
        await connect_and_login(services.hub_url, "eve", "eve-secret",
                                sslopt={"ca_certs": str(cert)})
