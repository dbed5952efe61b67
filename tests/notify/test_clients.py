"""The webhook HTTP client and the SMTP client against real local servers: kept-alive
connections, a server that closed an idle one, a timeout; pipelining, dot-stuffing, login."""

from __future__ import annotations

import email
import socket
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from bench.notify_sinks import WebhookSink
from protocols.notify.channel import Message
from protocols.notify.http_client import HttpClient, HttpFailure
from protocols.notify.smtp import SmtpChannel
from protocols.notify.smtp_client import _dot_stuffed, open_smtp

SECRET = "client-test-secret-32-bytes-long!!"


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookSink]:
    sink = WebhookSink(SECRET)
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run)
        yield sink
        nursery.cancel_scope.cancel()


def signed(body: bytes) -> list[tuple[str, str]]:
    from protocols.http.payments import signature

    timestamp = str(int(time.time()))
    return [("X-Timestamp", timestamp), ("X-Signature", signature(SECRET.encode(), timestamp,
                                                                  body))]


async def test_posts_reuse_one_kept_alive_connection(webhook: WebhookSink) -> None:
    async with HttpClient() as client:
        for n in range(3):
            body = b'{"id": "n%d", "ts": "2026-11-18T12:06:40.000Z"}' % n
            answer = await client.post(webhook.url(), body, signed(body), 5)
            assert answer.status == 200 and answer.body == b"{}"
        assert len(client._idle) == 1 and len(next(iter(client._idle.values()))) == 1
    assert [r.notice_id for r in webhook.received] == ["n0", "n1", "n2"]


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    """A server that answers each request and then closes the connection without saying so
    (as an idle timeout does): the next request goes once more, on a new connection."""
    served: list[int] = []

    async def answer_once_then_close(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            data += await stream.receive_some(65536)
        served.append(len(served))
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await trio.sleep(0.05)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, answer_once_then_close, 0)
        port = listeners[0].socket.getsockname()[1]
        async with HttpClient() as client:
            for _ in range(2):
                answer = await client.post(f"http://localhost:{port}/", b"{}", [], 5)
                assert answer.status == 200
                await trio.sleep(0.2)  # the server has closed the kept-alive connection
        nursery.cancel_scope.cancel()
    assert served == [0, 1]


async def test_a_server_that_does_not_answer_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        async with HttpClient() as client:
            started = trio.current_time()
            with pytest.raises(HttpFailure, match=r"no answer within 0\.3 s"):
                await client.post(f"http://127.0.0.1:{port}/", b"{}", [], 0.3)
            assert trio.current_time() - started < 2


async def test_nobody_listening_is_a_failure_not_a_crash() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with HttpClient() as client:
        with pytest.raises(HttpFailure, match="cannot connect"):
            await client.post(f"http://127.0.0.1:{port}/", b"{}", [], 2)


def test_dot_stuffing_and_line_ends() -> None:
    assert _dot_stuffed(b".start\nmiddle\n.dot\r\nend") == b"..start\r\nmiddle\r\n..dot\r\nend\r\n"
    assert _dot_stuffed(b"plain\r\n") == b"plain\r\n"


class _Relay:
    """aiosmtpd with a login, for the client's AUTH (no TLS on loopback)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.port = 0
        self._controller: Any = None

    def start(self) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        relay = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                relay.messages.append(envelope.content)
                return "250 OK"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                          data: Any) -> Any:
            return AuthResult(success=(data.login, data.password) == (b"park", b"secret"))

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                      authenticator=authenticator, auth_require_tls=False)
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


@pytest.fixture
def relay() -> Any:
    server = _Relay()
    server.start()
    yield server
    server.stop()


def mail(notice_id: str) -> Message:
    return Message(notice_id, "low_balance", "email", "t@acme.example", "en",
                   "Low balance", ".a line that starts with a dot\nCNY 45.00", {}, "t0", "M-0",
                   1_795_000_000_000)


async def test_the_relay_gets_the_exact_message_on_one_connection(relay: _Relay) -> None:
    connection = await open_smtp("127.0.0.1", relay.port, name="wattkeeper", starttls=False,
                                 context=ssl.create_default_context())
    # aiosmtpd offers no PIPELINING: the client then waits for each reply in turn
    assert "PIPELINING" not in connection.extensions and "AUTH" in connection.extensions
    await connection.aclose()
    channel = SmtpChannel("127.0.0.1", relay.port, "park@example.com", username="park",
                          password="secret")
    outcome = await channel.send(mail("M-0/low_balance/1/0"))
    assert outcome.kind == "delivered"
    outcome = await channel.send(mail("M-0/low_balance/2/0"))  # on the same connection
    assert outcome.kind == "delivered"
    await channel.aclose()
    [first, second] = relay.messages
    body = email.message_from_bytes(first).get_payload(decode=True)
    assert body == b".a line that starts with a dot\r\nCNY 45.00"  # un-stuffed by the relay
    assert b"Message-ID: <M-0.low_balance.1.0@wattkeeper>" in first
    assert b"X-Notice-Id: M-0/low_balance/2/0" in second


def test_an_e_mail_is_what_the_email_package_reads_back() -> None:
    from email.policy import default

    channel = SmtpChannel("127.0.0.1", 25, "park@example.com")
    subject = "电表 M-0001 余额不足：CNY 45.00，请及时充值，余额为零时将停止供电" * 2
    raw = channel.build(Message("M-1/low_balance/1/0", "low_balance", "email", "t@x.example",
                                "zh-CN", subject, "第一行\n.第二行", {}, "t", "M-1", 0))
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    parsed = email.message_from_bytes(raw, policy=default)
    assert parsed["Subject"] == subject
    assert parsed.get_content() == "第一行\r\n.第二行"
    assert parsed["Content-Language"] == "zh-CN" and parsed["To"] == "t@x.example"
    ascii_only = channel.build(Message("n", "low_balance", "email", "t@x.example", "en",
                                       "Low balance", "x", {}, "t", "m", 0))
    assert b"\r\nSubject: Low balance\r\n" in ascii_only
