"""``wattkeeper console`` on the command line: the password, and failures in words on stderr."""

from __future__ import annotations

import asyncio
import getpass
import socket
import threading
from collections.abc import Iterator

import pytest

from server.cli import PASSWORD_ENV, main
from tests.console.fake_hub import FakeHub, meter_message


@pytest.fixture
def hub_url() -> Iterator[str]:
    """A fake hub in a thread of its own (``main`` runs its own event loop)."""
    loop = asyncio.new_event_loop()
    hub = FakeHub([meter_message("M-1")])
    started = threading.Event()
    stop: asyncio.Future[None] | None = None

    async def serve() -> None:
        nonlocal stop
        await hub.start()
        stop = loop.create_future()
        started.set()
        await stop
        await hub.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield hub.url
    assert stop is not None
    loop.call_soon_threadsafe(stop.set_result, None)
    thread.join(10)
    loop.close()


def test_cannot_connect(monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(PASSWORD_ENV, "op-secret")
    assert main(["console", "--url", f"ws://127.0.0.1:{port}", "--user", "op"]) == 1
    assert capsys.readouterr().err == (
        f"wattkeeper console: cannot connect to ws://127.0.0.1:{port}: connection refused (is "
        "the server running, and is this its [hub] listen address?)\n"
    )


def test_bad_login(hub_url: str, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not-it")
    assert main(["console", "--url", hub_url, "--user", "op"]) == 1
    assert capsys.readouterr().err == (
        f"wattkeeper console: login refused for user 'op' at {hub_url}: wrong user name or "
        "password (check the user name and password)\n"
    )


def test_the_password_is_prompted_for_when_not_in_the_environment(
        hub_url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    prompts: list[str] = []

    def fake_getpass(prompt: str) -> str:
        prompts.append(prompt)
        return "op-secret"

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    # The login works; the app then refuses to draw into a pipe (pytest's captured stdout).
    assert main(["console", "--url", hub_url, "--user", "op"]) == 1
    assert prompts == [f"password for op at {hub_url}: "]
    assert capsys.readouterr().err == (
        "wattkeeper console: the console draws in a terminal, and standard output is not one\n"
    )


def test_no_password_at_all(monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)

    def no_input(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr(getpass, "getpass", no_input)
    assert main(["console", "--url", "ws://127.0.0.1:1", "--user", "op"]) == 1
    assert capsys.readouterr().err == (
        f"wattkeeper console: no password given (type it at the prompt, or set {PASSWORD_ENV})\n"
    )


def test_a_missing_ca_file(tmp_path: object, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "x")
    assert main(["console", "--url", "wss://127.0.0.1:1", "--user", "op",
                 "--cafile", "/nonexistent/ca.pem"]) == 1
    assert "cannot read the CA file /nonexistent/ca.pem" in capsys.readouterr().err


def test_help_names_the_password_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["console", "--help"])
    assert exited.value.code == 0
    assert PASSWORD_ENV in capsys.readouterr().out.replace("\n", " ")
