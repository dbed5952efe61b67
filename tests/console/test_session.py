"""The console's connection: first login, its failures in words, reconnects (fake hub)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from protocols.console.client import Backoff, ConnectionState, ConsoleClient, LoginRefused
from protocols.console.session import ConsoleError, ConsoleSession
from tests.console.fake_hub import FakeHub, meter_message


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.02)
    try:
        await asyncio.wait_for(wait(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_login_then_live_then_reconnect_with_the_token() -> None:
    async def body() -> None:
        hub = FakeHub([meter_message("M-1")])
        url = await hub.start()
        session = ConsoleSession(url, ConsoleClient("op", "op-secret"),
                                 backoff=Backoff(initial_s=0.05, max_s=0.2))
        await session.login()
        assert session.client.role == "operator"
        runner = asyncio.create_task(session.run())
        await _until(lambda: session.status.state is ConnectionState.LIVE, "live")
        assert "M-1" in session.client.model.meters
        token = session.client.token
        await hub.drop_all()
        await _until(lambda: session.connections == 2
                     and session.status.state is ConnectionState.LIVE, "the reconnect")
        assert hub.hellos[-1] == {"type": "hello", "token": token}
        runner.cancel()
        await session.close()
        await hub.stop()

    _run(body)


def test_the_server_gone_for_a_while_is_retried_with_backoff_and_the_status_says_why() -> None:
    async def body() -> None:
        hub = FakeHub([meter_message("M-1")])
        url = await hub.start()
        session = ConsoleSession(url, ConsoleClient("op", "op-secret"),
                                 backoff=Backoff(initial_s=0.05, max_s=0.1))
        await session.login()
        runner = asyncio.create_task(session.run())
        await _until(lambda: session.status.state is ConnectionState.LIVE, "live")
        await hub.stop()
        await hub.drop_all()
        await _until(lambda: session.status.attempt >= 3, "several attempts")
        assert session.status.state is ConnectionState.OFFLINE
        assert "connection refused" in session.status.detail
        assert session.status.retry_at is not None
        runner.cancel()
        await session.close()

    _run(body)


@pytest.mark.parametrize(("user", "password"), [("op", "wrong"), ("nobody", "op-secret")])
def test_a_bad_login_is_an_error_in_words(user: str, password: str) -> None:
    async def body() -> None:
        hub = FakeHub()
        url = await hub.start()
        session = ConsoleSession(url, ConsoleClient(user, password))
        with pytest.raises(ConsoleError) as caught:
            await session.login()
        assert str(caught.value) == (
            f"login refused for user {user!r} at {url}: wrong user name or password (check the "
            "user name and password)"
        )
        assert isinstance(session.take_events()[-1], LoginRefused)
        await hub.stop()

    _run(body)


def test_nothing_listening_is_an_error_in_words() -> None:
    async def body() -> None:
        url = f"ws://127.0.0.1:{_closed_port()}"
        with pytest.raises(ConsoleError, match=r"cannot connect to .*: connection refused \(is "
                                               r"the server running"):
            await ConsoleSession(url, ConsoleClient("op", "x")).login()

    _run(body)


def test_a_plain_http_server_is_not_taken_for_the_hub() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def body() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ConsoleError, match=r"answered HTTP 404 instead of opening a "
                                               r"websocket: is this the hub's address"):
            await ConsoleSession(f"ws://127.0.0.1:{port}", ConsoleClient("op", "x")).login()
        server.close()
        await server.wait_closed()

    _run(body)


def test_a_server_that_never_answers_the_login_times_out_in_words() -> None:
    async def body() -> None:
        from websockets.asyncio.server import ServerConnection, serve

        async def silent(connection: ServerConnection) -> None:
            await connection.wait_closed()

        async with serve(silent, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            session = ConsoleSession(f"ws://127.0.0.1:{port}", ConsoleClient("op", "x"),
                                     open_timeout_s=0.3)
            with pytest.raises(ConsoleError, match=r"did not answer the login within 0.3 s"):
                await session.login()

    _run(body)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "127.0.0.1:8765", "ws//x"])
def test_a_url_that_is_not_a_websocket_address(url: str) -> None:
    async def body() -> None:
        with pytest.raises(ConsoleError, match="is not a websocket address: use ws://HOST:PORT"):
            await ConsoleSession(url, ConsoleClient("op", "x")).login()

    _run(body)
