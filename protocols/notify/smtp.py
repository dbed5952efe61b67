"""E-mail notices through the park's SMTP relay (``[notify.smtp]``): STARTTLS and login when
configured, a few kept-open connections.

Each send takes an idle connection from a small pool (or opens one: greeting, EHLO, STARTTLS,
AUTH) and sends one message on it (``protocols.notify.smtp_client``: pipelined when the relay
offers it). A relay's greeting and TLS handshake cost more than a message, so connections stay
open between messages; one that fails is closed and the next send opens a new one.

Each message carries ``Message-ID: <notice id@wattkeeper>``, so a retry after a crash is
recognisable as the same notice, and ``Content-Language``.

Answers: 250 is delivered. A 5xx to the sender, the recipient or the data (a mailbox that does
not exist, a message refused) is dead; a 4xx (greylisting, a full queue), a dropped connection
or a timeout is retried. A failed login is retried too: it is the park's configuration, which
an operator fixes, not the tenant's message, and the dead-letter list fills up meanwhile if it
lasts.
"""

from __future__ import annotations

import base64
import email.utils
import ssl
from typing import Final

import trio

from protocols.notify.channel import DELIVERED, Message, Outcome
from protocols.notify.smtp_client import Reply, SmtpConnection, SmtpFailure, open_smtp

POOL_SIZE: Final = 8


class SmtpChannel:
    name = "email"

    def __init__(self, host: str, port: int, sender: str, *, username: str = "",
                 password: str = "", starttls: bool = False, timeout_s: float = 10.0,
                 pool_size: int = POOL_SIZE, ssl_context: ssl.SSLContext | None = None,
                 domain: str = "wattkeeper") -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout = timeout_s
        self._context = ssl_context or ssl.create_default_context()
        self._domain = domain
        self._idle: list[SmtpConnection] = []
        self._slots = trio.Semaphore(pool_size)

    def build(self, message: Message) -> bytes:
        """The message as it goes on the wire: plain text in UTF-8, base64 (7-bit safe for
        any relay), the subject as RFC 2047 encoded words when it is not ASCII. Written out
        here rather than by the ``email`` package, whose header folding was a quarter of the
        delivery process's CPU in a burst (profiled); ``tests/notify`` parses what this
        writes with the ``email`` package and a real SMTP server."""
        date = email.utils.formatdate(message.ts_ms / 1000 if message.ts_ms else None,
                                      usegmt=True)
        lines = [
            f"From: {self._sender}",
            f"To: {message.address}",
            f"Subject: {encoded_words(message.subject)}",
            f"Date: {date}",
            f"Message-ID: <{message.notice_id.replace('/', '.')}@{self._domain}>",
            f"X-Notice-Id: {message.notice_id}",
            "MIME-Version: 1.0",
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: base64",
            f"Content-Language: {message.language}",
            "",
        ]
        body = base64.encodebytes(message.body.replace("\n", "\r\n").encode())
        return "\r\n".join(lines).encode() + b"\r\n" + body.replace(b"\n", b"\r\n")

    async def send(self, message: Message) -> Outcome:
        mail = self.build(message)
        async with self._slots:
            connection = self._idle.pop() if self._idle else None
            reply: Reply | Outcome | None = None
            with trio.move_on_after(self._timeout):
                try:
                    if connection is None:
                        opened = await self._connect()
                        if isinstance(opened, Outcome):
                            return opened
                        connection = opened
                    reply = await connection.send(self._sender, [message.address], mail)
                except (SmtpFailure, OSError, trio.BrokenResourceError, ssl.SSLError) as error:
                    reply = Outcome("retry", f"{type(error).__name__}: {error}")
            if not isinstance(reply, Reply):
                if connection is not None:
                    await connection.aclose()
                return reply or Outcome("retry", f"the relay did not answer within "
                                                 f"{self._timeout:g} s")
            assert connection is not None
            self._idle.append(connection)
            return _answer(reply)

    async def _connect(self) -> SmtpConnection | Outcome:
        connection = await open_smtp(self._host, self._port, name=self._domain,
                                     starttls=self._starttls, context=self._context)
        if self._username:
            reply = await connection.login(self._username, self._password)
            if reply.code != 235:
                await connection.aclose()
                return Outcome("retry", f"the relay refused the login: {reply.code} "
                                        f"{reply.text}")
        return connection

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.aclose()


MAX_WORD_BYTES: Final = 39
"""UTF-8 bytes per encoded word: 52 base64 characters, so "Subject: " and the first word fit
in 78 (RFC 5322) and every word in RFC 2047's 75."""


def encoded_words(text: str) -> str:
    """``text`` as a header value: itself when it is printable ASCII, else RFC 2047 ``B``
    encoded words (UTF-8), split between characters and folded one per line."""
    if text.isascii() and text.isprintable():
        return text
    words: list[str] = []
    chunk = b""
    for char in text:
        encoded = char.encode()
        if len(chunk) + len(encoded) > MAX_WORD_BYTES:
            words.append(chunk.decode())
            chunk = b""
        chunk += encoded
    words.append(chunk.decode())
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w.encode()).decode()}?=" for w in words)


def _answer(reply: Reply) -> Outcome:
    if reply.code == 250:
        return DELIVERED
    detail = f"SMTP {reply.code} {reply.text}"
    return Outcome("dead" if 500 <= reply.code < 600 else "retry", detail)
