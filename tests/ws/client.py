"""A plain websocket client for the hub tests: websocket-client (not the server's own library)
in worker threads, so the trio thread keeps running the park and the hub."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import trio
import websocket

Message = dict[str, Any]

OPEN: list[websocket.WebSocket] = []
"""Every client socket a test opened; tests/ws/conftest.py closes them after each test."""


class HubClient:
    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.buffer: deque[Message] = deque()
        self.frames: list[str] = []  # raw frames, in order

    @classmethod
    async def connect(cls, url: str, *, timeout: float = 10.0, **options: Any) -> HubClient:
        ws = await trio.to_thread.run_sync(
            lambda: websocket.create_connection(url, timeout=timeout, **options))
        OPEN.append(ws)
        return cls(ws)

    async def send(self, message: Message | str | bytes) -> None:
        if isinstance(message, bytes):
            await trio.to_thread.run_sync(self.ws.send_binary, message)
            return
        text = message if isinstance(message, str) else json.dumps(message)
        await trio.to_thread.run_sync(self.ws.send, text)

    async def recv(self, timeout: float = 10.0) -> Message:
        """The next message (a ``batch`` frame is unpacked into its messages)."""
        if not self.buffer:
            with trio.fail_after(timeout):
                text = await trio.to_thread.run_sync(self.ws.recv, abandon_on_cancel=True)
            self.frames.append(text)
            message = json.loads(text)
            if message.get("type") == "batch":
                self.buffer.extend(message["messages"])
            else:
                self.buffer.append(message)
        return self.buffer.popleft()

    async def expect(self, match: str | Callable[[Message], bool],
                     timeout: float = 10.0) -> tuple[Message, list[Message]]:
        """The first message matching (a type, or a predicate), and those skipped before."""
        wanted = (lambda m: m.get("type") == match) if isinstance(match, str) else match
        skipped: list[Message] = []
        deadline = time.monotonic() + timeout
        while True:
            message = await self.recv(max(0.01, deadline - time.monotonic()))
            if wanted(message):
                return message, skipped
            skipped.append(message)

    async def ask(self, message: Message, timeout: float = 10.0) -> tuple[Message,
                                                                         list[Message]]:
        """Send a command and wait for its answer (the ack or error with its id)."""
        await self.send(message)
        return await self.expect(
            lambda m: m.get("type") in ("ack", "error", "pong", "audit_page", "report", "welcome",
                                        "quotas", "quota", "output", "notices",
                                        "notice_retry")
            and m.get("id") == message.get("id"), timeout)

    async def login(self, user: str, password: str) -> Message:
        await self.send({"type": "hello", "user": user, "password": password})
        welcome, _ = await self.expect(lambda m: m["type"] in ("welcome", "error"))
        assert welcome["type"] == "welcome", welcome
        return welcome

    async def subscribe(self, **fields: Any) -> tuple[list[Message], Message]:
        """Subscribe; returns the snapshot's messages and ``snapshot_done``."""
        fields.setdefault("id", "sub")
        await self.send({"type": "subscribe", **fields})
        done, snapshot = await self.expect(
            lambda m: m["type"] in ("snapshot_done", "error") and m.get("id") == fields["id"])
        assert done["type"] == "snapshot_done", done
        return snapshot, done

    async def drain(self) -> list[Message]:
        """Everything up to now: what arrives before the answer to a ping sent now."""
        stamp = f"drain-{time.monotonic_ns()}"
        pong, before = await self.ask({"type": "ping", "id": stamp})
        assert pong["type"] == "pong"
        return before

    async def close_code(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; its close code (None when the TCP just ended)."""

        def read() -> int | None:
            while True:
                try:
                    opcode, frame = self.ws.recv_data_frame(True)
                except (websocket.WebSocketConnectionClosedException, ConnectionError):
                    return None
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    data = frame.data
                    return int.from_bytes(data[:2], "big") if len(data) >= 2 else None

        with trio.fail_after(timeout):
            return await trio.to_thread.run_sync(read, abandon_on_cancel=True)

    async def close(self) -> None:
        await trio.to_thread.run_sync(self.ws.close)
        self.ws.shutdown()


async def connect_and_login(url: str, user: str, password: str, **options: Any) -> HubClient:
    client = await HubClient.connect(url, **options)
    await client.login(user, password)
    return client
