"""Local receivers for tenant notices, for the tests and ``bench notify``: a webhook receiver
that checks every signature, and an SMTP server (aiosmtpd, in a thread of its own).

Both record what arrived with the time it arrived, so a test can check the words and a bench
can measure the time from the notice's raising (its ``ts``) to its arrival, and count repeats by
notice id.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, Final

import attrs
import h11
import trio

MAX_BODY: Final = 1 << 20


@attrs.define
class Received:
    notice_id: str
    at_s: float
    """Wall time it arrived (``time.time()``)."""
    body: dict[str, Any] | EmailMessage
    raw: bytes = b""


def notice_ts_s(body: dict[str, Any]) -> float:
    """A webhook notice's ``ts`` as wall seconds."""
    return dt.datetime.fromisoformat(str(body["ts"]).replace("Z", "+00:00")).timestamp()


class WebhookSink:
    """An HTTP/1.1 server (h11 over trio) that accepts signed notices.

    ``answer`` decides the status for each notice (200 by default); a body whose signature does
    not verify gets 401 and is recorded in ``bad_signatures``, not in ``received``."""

    def __init__(self, secret: str,
                 answer: Callable[[dict[str, Any]], int] = lambda body: 200) -> None:
        self._secret = secret.encode()
        self.answer = answer
        self.received: list[Received] = []
        self.bad_signatures = 0
        self.port = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._request(stream, connection)
                if request is None:
                    return
                status = self._handle(request, body)
                await stream.send_all(connection.send(h11.Response(
                    status_code=status, headers=[("content-length", "2"),
                                                 ("content-type", "application/json")])))
                await stream.send_all(connection.send(h11.Data(data=b"{}")))
                await stream.send_all(connection.send(h11.EndOfMessage()))
                if connection.our_state is h11.MUST_CLOSE:
                    return
                connection.start_next_cycle()
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return
        finally:
            await stream.aclose()

    async def _request(self, stream: trio.SocketStream,
                       connection: h11.Connection) -> tuple[h11.Request | None, bytes]:
        request = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return None, b""
                connection.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    return None, b""
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    def _handle(self, request: h11.Request, body: bytes) -> int:
        headers = {name.decode().lower(): value.decode() for name, value in request.headers}
        timestamp = headers.get("x-timestamp", "")
        expected = hmac.new(self._secret, timestamp.encode() + b"." + body,
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("x-signature", "")):
            self.bad_signatures += 1
            return 401
        payload = json.loads(body)
        status = self.answer(payload)
        if 200 <= status < 300:
            self.received.append(Received(str(payload["id"]), time.time(), payload, body))
        return status


class SmtpSink:
    """An aiosmtpd server on a free loopback port, in a thread; messages land in ``received``.

    ``refuse`` names recipients answered ``550`` (a mailbox that does not exist)."""

    def __init__(self, *, refuse: frozenset[str] = frozenset()) -> None:
        self.received: list[Received] = []
        self.refuse = refuse
        self.port = 0
        self._controller: Any = None
        self._lock = threading.Lock()

    def start(self) -> int:
        from aiosmtpd.controller import Controller  # (tests and benches only)

        sink = self

        class Handler:
            async def handle_RCPT(self, server: Any, session: Any, envelope: Any,
                                  address: str, options: Any) -> str:
                if address in sink.refuse:
                    return "550 5.1.1 no such mailbox"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any,
                                  envelope: Any) -> str:
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                assert isinstance(message, EmailMessage)
                with sink._lock:
                    sink.received.append(Received(str(message["X-Notice-Id"]), time.time(),
                                                  message, envelope.content))
                return "250 OK"

        with socket.socket() as probe:  # (aiosmtpd's readiness check needs the port up front)
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        # aiosmtpd logs every connection at INFO: at a bench's rates that is the sink's work
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        controller.start()
        self._controller = controller
        self.port = port
        return port

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self.received)
