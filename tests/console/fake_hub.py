"""A small websocket hub for the console's tests, speaking the protocol of docs/protocol.md.

Not the server's hub (tests/console/test_real_hub.py runs against that): this one lets a test
set any meter's state, refuse a command with any error, and drop every connection at will,
without a park behind it. It runs on the websockets asyncio server, in the test's event loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from policies.money import format_amount, parse_amount

# Its connection-open/closed lines are noise in the tests' captured stderr.
LOG = logging.getLogger("tests.console.fake_hub")
LOG.setLevel(logging.WARNING)

USERS = {"op": ("op-secret", "operator"), "view": ("view-secret", "viewer"),
         "boss": ("boss-secret", "admin")}


def meter_message(meter: str, *, tenant: str = "acme", gateway: str = "gw1",
                  balance: str = "100.00", power_w: float = 1000.0, relay: str = "closed",
                  relay_reason: str | None = None, alarm: str = "none",
                  online: bool = True) -> dict[str, Any]:
    return {"type": "meter", "meter": meter, "tenant": tenant, "gateway": gateway,
            "balance": balance, "power_w": power_w, "energy_kwh": 12.5, "relay": relay,
            "relay_reason": relay_reason, "alarm": alarm, "online": online, "faulted": False,
            "ts": "2026-11-22T10:15:00.123Z"}


class FakeHub:
    def __init__(self, meters: Iterable[dict[str, Any]] = ()) -> None:
        self.meters: dict[str, dict[str, Any]] = {m["meter"]: m for m in meters}
        self.alarms: dict[str, dict[str, Any]] = {}
        self.gateways: dict[str, dict[str, Any]] = {
            "gw1": {"type": "gateway", "gateway": "gw1", "online": True, "meters": 0,
                    "polls": 10, "failures": 0, "ts": "2026-11-22T10:15:00.000Z"},
        }
        self.tokens: dict[str, tuple[str, str]] = {}
        self.received: list[dict[str, Any]] = []     # every frame from every client
        self.hellos: list[dict[str, Any]] = []
        self.refusals: dict[str, tuple[str, str]] = {}   # command type -> (code, message)
        self.answers: dict[str, dict[str, Any]] = {}     # command id -> first answer
        self.hold_answers = False  # commands are recorded but not answered (a lost answer)
        self._subscribed: set[ServerConnection] = set()
        self._connections: set[ServerConnection] = set()
        self._server: Server | None = None
        self.url = ""

    async def start(self) -> str:
        self._server = await serve(self._handle, "127.0.0.1", 0, logger=LOG)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def drop_all(self) -> None:
        """Close every client connection, as a server restart would."""
        for connection in list(self._connections):
            await connection.close(1012, "restarting")

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # --- the park, as a test changes it ----------------------------------------------------

    def park_message(self) -> dict[str, Any]:
        meters = list(self.meters.values())
        total = sum(parse_amount(m["balance"]) for m in meters)
        return {"type": "park", "meters": len(meters),
                "meters_on": sum(1 for m in meters if m["relay"] == "closed"),
                "meters_off": sum(1 for m in meters if m["relay"] == "open"),
                "meters_offline": sum(1 for m in meters if not m["online"]),
                "load_w": sum(m["power_w"] for m in meters),
                "balance_sum": format_amount(total),
                "alarms_active": sum(1 for a in self.alarms.values() if a["state"] != "cleared"),
                "gateways": len(self.gateways),
                "gateways_online": sum(1 for g in self.gateways.values() if g["online"]),
                "ts": "2026-11-22T10:15:00.500Z"}

    async def set_meter(self, meter: str, **fields: Any) -> None:
        self.meters[meter] = {**self.meters[meter], **fields}
        await self.push([self.meters[meter], self.park_message()])

    async def raise_alarm(self, meter: str, kind: str, level: int = 2) -> str:
        alarm_id = f"{meter}/{len(self.alarms) + 1}"
        self.alarms[alarm_id] = {"type": "alarm", "alarm": alarm_id, "meter": meter,
                                 "kind": kind, "level": level, "state": "active",
                                 "acknowledged": False, "detail": f"{kind} on {meter}",
                                 "ts": "2026-11-22T10:16:00.000Z"}
        await self.push([self.alarms[alarm_id]])
        return alarm_id

    async def push(self, messages: list[dict[str, Any]]) -> None:
        frame = json.dumps({"type": "batch", "messages": messages})
        for connection in list(self._subscribed):
            try:
                await connection.send(frame)
            except ConnectionClosed:
                self._subscribed.discard(connection)

    # --- the protocol ----------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        self._connections.add(connection)
        caller: tuple[str, str] | None = None
        try:
            async for text in connection:
                try:
                    frame = json.loads(text)
                except ValueError:
                    await self._send(connection, _error(None, "bad_request", "not JSON"))
                    continue
                self.received.append(frame)
                kind = frame.get("type")
                if kind == "hello":
                    self.hellos.append(frame)
                    caller = self._login(frame)
                    if caller is None:
                        await self._send(connection, _error(None, "unauthorized",
                                                            "wrong user name or password"))
                        continue
                    token = secrets.token_hex(8)
                    self.tokens[token] = caller
                    await self._send(connection, {"type": "welcome", "user": caller[0],
                                                  "role": caller[1], "token": token,
                                                  "expires": "2026-11-23T10:15:00Z"})
                elif caller is None:
                    await self._send(connection, _error(frame.get("id"), "unauthorized",
                                                        "say hello first"))
                elif kind == "subscribe":
                    await self._snapshot(connection, frame)
                else:
                    await self._command(connection, caller, frame)
        except ConnectionClosed:
            pass  # dropped by a test (code 1012), or the client went away
        finally:
            self._connections.discard(connection)
            self._subscribed.discard(connection)

    def _login(self, hello: dict[str, Any]) -> tuple[str, str] | None:
        if "token" in hello:
            return self.tokens.get(hello["token"])
        known = USERS.get(hello.get("user", ""))
        if known is None or known[0] != hello.get("password"):
            return None
        return hello["user"], known[1]

    async def _snapshot(self, connection: ServerConnection, frame: dict[str, Any]) -> None:
        self._subscribed.discard(connection)
        messages: list[dict[str, Any]] = list(self.meters.values())
        messages += [a for a in self.alarms.values() if a["state"] != "cleared"]
        messages += [self.park_message(), *self.gateways.values()]
        # Several batch frames, as the real hub sends a big snapshot.
        for start in range(0, len(messages), 500):
            await self._send(connection, {"type": "batch",
                                          "messages": messages[start:start + 500]})
        await self._send(connection, {"type": "snapshot_done", "id": frame.get("id")})
        self._subscribed.add(connection)

    async def _command(self, connection: ServerConnection, caller: tuple[str, str],
                       frame: dict[str, Any]) -> None:
        kind, command_id = frame.get("type"), frame.get("id")
        if kind == "ping":
            await self._send(connection, {"type": "pong", "id": command_id})
            return
        if kind not in ("topup", "relay", "reset_lockout", "ack_alarm"):
            await self._send(connection, _error(command_id, "bad_request",
                                                f"unknown message type {kind!r}"))
            return
        if caller[1] == "viewer":
            await self._send(connection, _error(command_id, "forbidden",
                                                f"{caller[0]} is a viewer: viewers cannot "
                                                f"{kind}"))
            return
        if kind in self.refusals:
            code, message = self.refusals[kind]
            await self._send(connection, _error(command_id, code, message))
            return
        if command_id in self.answers:  # a repeat: the first answer, nothing applied again
            if not self.hold_answers:
                await self._send(connection, {**self.answers[command_id], "status": "duplicate"})
            return
        answer = await self._apply(kind, frame)
        if answer["type"] == "ack":
            self.answers[command_id] = answer
        if not self.hold_answers:
            await self._send(connection, answer)

    async def _apply(self, kind: str, frame: dict[str, Any]) -> dict[str, Any]:
        command_id = frame["id"]
        if kind == "ack_alarm":
            alarm = self.alarms.get(frame.get("alarm", ""))
            if alarm is None:
                return _error(command_id, "bad_request", "no such alarm")
            alarm.update(state="acknowledged", acknowledged=True)
            await self.push([alarm])
            return {"type": "ack", "id": command_id, "meter": alarm["meter"],
                    "status": "applied"}
        meter = self.meters.get(frame.get("meter", ""))
        if meter is None:
            return _error(command_id, "unknown_meter", f"no meter {frame.get('meter')!r}")
        if kind == "topup":
            try:
                amount = parse_amount(frame.get("amount"))
            except ValueError as error:
                return _error(command_id, "bad_request", str(error))
            if amount <= 0:
                return _error(command_id, "bad_request", "amount must be > 0")
            meter["balance"] = format_amount(parse_amount(meter["balance"]) + amount)
        elif kind == "relay":
            if frame.get("action") == "open":
                meter.update(relay="open", relay_reason="manual")
            else:
                meter.update(relay="closed", relay_reason=None)
        await self.push([meter, self.park_message()])
        return {"type": "ack", "id": command_id, "meter": meter["meter"], "status": "applied",
                "balance": meter["balance"], "relay": meter["relay"],
                "relay_reason": meter["relay_reason"]}

    async def _send(self, connection: ServerConnection, message: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await connection.send(json.dumps(message))


def _error(command_id: object, code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "id": command_id, "code": code, "message": message}
