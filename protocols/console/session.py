"""The terminal console's connection to the hub: websockets (asyncio), reconnects, backoff.

Theory of operation
-------------------
textual runs on asyncio, so the console's network side does too (the server stays on trio;
the two meet only as websocket frames). :class:`ConsoleSession` owns the socket and nothing
else: frames go to and come from a :class:`ConsoleClient` (the protocol, without I/O), and
what the client reports is queued for the app (:meth:`take_events`), which drains it on its
own timer so that a burst of frames never turns into a burst of redraws.

:meth:`login` makes the first connection and waits for ``welcome``: the command line calls it
before the terminal is taken over, so an unreachable server or a wrong password is a plain
message on stderr (:class:`ConsoleError`), not a full-screen app that cannot do anything.

:meth:`run` then serves that connection and, whenever it drops, reconnects: waits as long as
the client's :class:`Backoff` says (the wait and the reason are in :attr:`status` for the
status bar), opens a new connection, and lets the client say ``hello`` with its session
token and subscribe again. It stops only when the login is refused outright (a password that
no longer works: retrying would only feed the server's login throttle).

The websockets library's keepalive pings (every 20 s, 20 s to answer) notice a connection
that died without a close frame (a cable pulled, a NAT that forgot us).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

import attrs
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from protocols.console.client import (
    Backoff,
    ClientEvent,
    ConnectionState,
    ConsoleClient,
    LoginRefused,
    Welcomed,
)

__all__ = ["ConsoleError", "ConsoleSession", "SessionStatus", "connect_error_words"]

MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
"""A first snapshot of 10,000 meters in batch frames is a few MB; the library's 1 MiB default
would drop the connection on the first big batch."""


class ConsoleError(Exception):
    """The console cannot start (unreachable server, refused login); the message says why."""


@attrs.frozen
class SessionStatus:
    state: ConnectionState
    detail: str = ""                 # why we are offline, or "" when all is well
    retry_at: float | None = None    # time.monotonic() of the next attempt, while waiting
    attempt: int = 0                 # connection attempts since the last welcome


def connect_error_words(url: str, error: BaseException, open_timeout_s: float) -> str:
    """Why a connection attempt failed, in words the operator can act on."""
    host = urlsplit(url).hostname or url
    if isinstance(error, InvalidURI):
        return f"{url!r} is not a websocket address: use ws://HOST:PORT (or wss:// with TLS)"
    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        return (f"{url} answered HTTP {status} instead of opening a websocket: is this the "
                "hub's address ([hub] listen), not the browser console's?")
    if isinstance(error, InvalidHandshake):
        return f"{url} did not open a websocket ({error}): is this the wattkeeper hub?"
    if isinstance(error, TimeoutError):
        return f"cannot connect to {url}: no answer within {open_timeout_s:g} s"
    if isinstance(error, ConnectionRefusedError):
        return (f"cannot connect to {url}: connection refused (is the server running, and is "
                "this its [hub] listen address?)")
    if isinstance(error, socket.gaierror):
        return f"cannot connect to {url}: unknown host {host!r}"
    if isinstance(error, ssl.SSLError):
        return f"cannot connect to {url}: TLS failed ({error.reason or error})"
    if isinstance(error, ConnectionClosed):
        return f"{url} closed the connection ({error})"
    if isinstance(error, OSError):
        return f"cannot connect to {url}: {error.strerror or error}"
    return f"cannot connect to {url}: {error}"


_CONNECT_ERRORS: Final = (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed)


class ConsoleSession:
    """One console user's connection to one hub, kept open across drops (module docstring)."""

    def __init__(self, url: str, client: ConsoleClient, *, backoff: Backoff | None = None,
                 open_timeout_s: float = 10.0, ssl_context: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.client = client
        self.backoff = backoff or Backoff()
        self.open_timeout_s = open_timeout_s
        self._ssl = ssl_context
        self._clock = clock
        self.status = SessionStatus(ConnectionState.OFFLINE)
        self._events: deque[ClientEvent] = deque()
        self._socket: ClientConnection | None = None
        self._wake = asyncio.Event()
        self.connections = 0   # connections opened, for the status bar and the tests

    # --- for the app -----------------------------------------------------------------------

    def take_events(self) -> list[ClientEvent]:
        events = list(self._events)
        self._events.clear()
        return events

    def flush(self) -> None:
        """The client has frames to send (a command): wake the writer."""
        self._wake.set()

    async def close(self) -> None:
        """Close the connection for good (the app is quitting)."""
        if self._socket is not None:
            await self._socket.close()
            self._socket = None

    async def drop(self) -> None:
        """Close the current connection (tests, and the app's "reconnect now" key)."""
        if self._socket is not None:
            await self._socket.close()

    # --- connecting ------------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        try:
            if self._ssl is None:  # wss:// still gets TLS, with the system's trusted CAs
                connection = await connect(self.url, open_timeout=self.open_timeout_s,
                                           max_size=MAX_FRAME_BYTES)
            else:
                connection = await connect(self.url, open_timeout=self.open_timeout_s,
                                           max_size=MAX_FRAME_BYTES, ssl=self._ssl)
        except ValueError as error:  # e.g. a ws:// URL with an ssl context
            raise ConsoleError(f"{self.url}: {error}") from None
        self.connections += 1
        self.client.connected()
        for frame in self.client.data_to_send():
            await connection.send(frame)
        return connection

    async def login(self) -> None:
        """Connect and log in once; raise :class:`ConsoleError` with words if that fails."""
        self.status = SessionStatus(ConnectionState.AUTHENTICATING)
        try:
            connection = await self._open()
        except _CONNECT_ERRORS as error:
            raise ConsoleError(connect_error_words(self.url, error, self.open_timeout_s)) from None
        try:
            while self.client.state is ConnectionState.AUTHENTICATING:
                text = await asyncio.wait_for(connection.recv(), self.open_timeout_s)
                if isinstance(text, bytes):
                    continue
                events = self.client.receive(text)
                self._events.extend(events)
                for frame in self.client.data_to_send():
                    await connection.send(frame)
                refused = [e for e in events if isinstance(e, LoginRefused)]
                if refused:
                    raise ConsoleError(
                        f"login refused for user {self.client.user!r} at {self.url}: "
                        f"{refused[0].message or refused[0].code} (check the user name and "
                        "password)"
                    )
        except TimeoutError:
            await connection.close()
            raise ConsoleError(f"{self.url} did not answer the login within "
                               f"{self.open_timeout_s:g} s: is this the wattkeeper hub?") from None
        except ConnectionClosed as error:
            self.client.connection_lost()
            raise ConsoleError(f"{self.url} closed the connection during the login "
                               f"({error}): is this the wattkeeper hub?") from None
        except ConsoleError:
            await connection.close()
            raise
        self._socket = connection
        self.backoff.reset()
        self.status = SessionStatus(self.client.state)

    # --- serving ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection, reconnecting after every drop; returns only when refused."""
        while True:
            if self._socket is None:
                try:
                    self._socket = await self._open()
                except _CONNECT_ERRORS as error:
                    self.client.connection_lost()
                    await self._wait(connect_error_words(self.url, error, self.open_timeout_s))
                    continue
                self.status = SessionStatus(self.client.state)
            reason = await self._serve(self._socket)
            self._socket = None
            self.client.connection_lost()
            if self.client.state is ConnectionState.REFUSED:
                self.status = SessionStatus(ConnectionState.REFUSED, reason)
                return
            await self._wait(reason)

    async def _wait(self, reason: str) -> None:
        delay = self.backoff.next_delay()
        self.status = SessionStatus(ConnectionState.OFFLINE, reason, self._clock() + delay,
                                    self.backoff.attempt)
        await asyncio.sleep(delay)
        self.status = attrs.evolve(self.status, state=ConnectionState.AUTHENTICATING,
                                   retry_at=None)

    async def _serve(self, connection: ClientConnection) -> str:
        """Read and write until the connection ends; return why it ended, in words."""
        writer = asyncio.create_task(self._write(connection))
        try:
            async for text in connection:
                if isinstance(text, bytes):
                    continue  # the hub speaks text frames only
                events = self.client.receive(text)
                if any(isinstance(event, Welcomed) for event in events):
                    self.backoff.reset()
                self._events.extend(events)
                self.status = attrs.evolve(self.status, state=self.client.state, detail="")
                if self.client.state is ConnectionState.REFUSED:
                    await connection.close()
                    refused = [e for e in events if isinstance(e, LoginRefused)]
                    return refused[0].message if refused else "the login was refused"
                self._wake.set()
            return _close_words(connection)
        except ConnectionClosed as error:
            return f"connection lost ({_closed_words(error)})"
        except OSError as error:
            return f"connection lost ({error.strerror or error})"
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _write(self, connection: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self._wake.wait()
                self._wake.clear()
                for frame in self.client.data_to_send():
                    await connection.send(frame)


def _close_words(connection: ClientConnection) -> str:
    code = connection.close_code
    reason = connection.close_reason
    if code is None:
        return "connection lost"
    return f"the server closed the connection (code {code}{': ' + reason if reason else ''})"


def _closed_words(error: ConnectionClosed) -> str:
    received = error.rcvd
    if received is None:
        return "no close frame"
    return f"code {received.code}{': ' + received.reason if received.reason else ''}"
