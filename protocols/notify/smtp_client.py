"""An SMTP client connection on trio (RFC 5321), with STARTTLS (RFC 3207), AUTH PLAIN / LOGIN
(RFC 4954) and PIPELINING (RFC 2920) when the relay offers it.

Why not ``smtplib``: it blocks, so every message needs a worker thread, and profiled under a
burst of notices it cost about 0.7 ms of CPU a message with four threads contending for the
GIL. Here a message is one write of ``MAIL FROM``, ``RCPT TO`` and ``DATA`` (pipelined), the
replies read back in one go, then the dot-stuffed body: a few hundred microseconds, no thread.

Reply parsing is the protocol's one rule: lines ``NNN-text`` continue, ``NNN text`` ends the
reply. A reply that is not that is :class:`SmtpFailure` and the connection is not used again.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
from collections.abc import Sequence
from typing import Final

import attrs
import trio

RECEIVE_BYTES: Final = 65536
MAX_REPLY_BYTES: Final = 64 << 10


class SmtpFailure(Exception):
    """The connection failed or the server did not speak SMTP: nothing more on it."""


@attrs.frozen
class Reply:
    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400


class SmtpConnection:
    """One session with a relay. Use :func:`open_smtp`; one message at a time."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self.extensions: dict[str, str] = {}

    async def _reply(self) -> Reply:
        lines: list[str] = []
        while True:
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > MAX_REPLY_BYTES:
                    raise SmtpFailure("an SMTP reply longer than 64 KiB")
                data = await self._stream.receive_some(RECEIVE_BYTES)
                if not data:
                    raise SmtpFailure("the relay closed the connection")
                self._buffer += data
                continue
            line = bytes(self._buffer[:end]).decode("utf-8", "replace")
            del self._buffer[: end + 2]
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                raise SmtpFailure(f"not an SMTP reply: {line[:80]!r}")
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(int(line[:3]), "\n".join(lines))

    async def _command(self, line: str) -> Reply:
        await self._stream.send_all(line.encode() + b"\r\n")
        return await self._reply()

    async def greet(self, name: str) -> None:
        greeting = await self._reply()
        if greeting.code != 220:
            raise SmtpFailure(f"the relay's greeting was {greeting.code} {greeting.text}")
        await self.hello(name)

    async def hello(self, name: str) -> None:
        reply = await self._command(f"EHLO {name}")
        if reply.code != 250:
            raise SmtpFailure(f"EHLO refused: {reply.code} {reply.text}")
        self.extensions = {}
        for line in reply.text.split("\n")[1:]:
            keyword, _, rest = line.partition(" ")
            self.extensions[keyword.upper()] = rest

    async def starttls(self, context: ssl.SSLContext, host: str, name: str) -> None:
        if "STARTTLS" not in self.extensions:
            raise SmtpFailure("the relay does not offer STARTTLS (starttls = true)")
        reply = await self._command("STARTTLS")
        if reply.code != 220:
            raise SmtpFailure(f"STARTTLS refused: {reply.code} {reply.text}")
        tls = trio.SSLStream(self._stream, context, server_hostname=host)
        await tls.do_handshake()
        self._stream = tls
        await self.hello(name)

    async def login(self, username: str, password: str) -> Reply:
        """AUTH PLAIN if offered, else LOGIN; the relay's reply (235 is success)."""
        methods = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in methods or not methods:
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            return await self._command(f"AUTH PLAIN {token}")
        reply = await self._command("AUTH LOGIN")
        for value in (username, password):
            if reply.code != 334:
                return reply
            reply = await self._command(base64.b64encode(value.encode()).decode())
        return reply

    async def send(self, sender: str, recipients: Sequence[str], message: bytes) -> Reply:
        """One message: the first refusal (a :class:`Reply` that is not ``ok``), or the reply
        to its end of data. After a refusal the transaction is reset, so the connection goes
        on; a broken connection raises :class:`SmtpFailure`."""
        commands = [f"MAIL FROM:<{sender}>", *(f"RCPT TO:<{to}>" for to in recipients), "DATA"]
        if "PIPELINING" in self.extensions:
            await self._stream.send_all("".join(c + "\r\n" for c in commands).encode())
            replies = [await self._reply() for _ in commands]
        else:
            replies = []
            for command in commands:
                replies.append(await self._command(command))
                if not replies[-1].ok:
                    break
        for reply in replies:
            if not reply.ok:
                if replies[-1].code == 354:  # pipelined DATA was accepted: end it empty
                    await self._command(".")
                await self._command("RSET")
                return reply
        await self._stream.send_all(_dot_stuffed(message) + b".\r\n")
        return await self._reply()

    async def aclose(self) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            with contextlib.suppress(SmtpFailure, OSError, trio.BrokenResourceError):
                await self._command("QUIT")
            with contextlib.suppress(OSError, trio.BrokenResourceError):
                await self._stream.aclose()


def _dot_stuffed(message: bytes) -> bytes:
    """CRLF line ends, a leading dot doubled (RFC 5321 4.5.2), ending with CRLF."""
    text = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if text.startswith(b"."):
        text = b"." + text
    text = text.replace(b"\r\n.", b"\r\n..")
    return text if text.endswith(b"\r\n") else text + b"\r\n"


async def open_smtp(host: str, port: int, *, name: str, starttls: bool,
                    context: ssl.SSLContext) -> SmtpConnection:
    """A connection greeted (and secured with STARTTLS when asked); raises SmtpFailure."""
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as error:
        raise SmtpFailure(f"cannot connect to {host}:{port}: {error}") from None
    connection = SmtpConnection(stream)
    try:
        await connection.greet(name)
        if starttls:
            await connection.starttls(context, host, name)
    except (OSError, trio.BrokenResourceError, ssl.SSLError) as error:
        await connection.aclose()
        raise SmtpFailure(f"{type(error).__name__}: {error}") from None
    except SmtpFailure:
        await connection.aclose()
        raise
    return connection
