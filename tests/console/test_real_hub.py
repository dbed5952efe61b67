"""The terminal console against the real server: ``wattkeeper sim`` + ``wattkeeper serve``.

Both run as subprocesses on free ports in a temporary data directory; the console runs
headless (textual's pilot) in the test's asyncio loop. Plain ``def`` tests with
``asyncio.run`` (pytest-trio's trio_mode would run an ``async def`` under trio).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from textual.pilot import Pilot

from protocols.console.app import AskScreen, ConsoleApp
from protocols.console.client import Backoff, ConnectionState, ConsoleClient
from protocols.console.session import ConsoleSession
from tests.console.test_app import SIZE, until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
METERS = 4
START_S = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _park(data_dir: Path, gateway_port: int, hub_port: int) -> str:
    meters = "\n".join(f"""
[[meters]]
id = "M-{n}"
tenant = "{'acme' if n % 2 else 'bolt'}"
gateway = "gw1"
unit = {n}
profile = "sdm630"
relay_coil = 0
tariff = "flat"
opening_balance = "100.00"
alarm_levels = ["50.00", "20.00"]
""" for n in range(1, METERS + 1))
    return f"""
[server]
data_dir = "{data_dir}"
currency = "CNY"

[hub]
listen = "127.0.0.1:{hub_port}"

[http]
listen = "127.0.0.1:{_free_port()}"

[opcua]
endpoint = "opc.tcp://127.0.0.1:{_free_port()}/wattkeeper/"
security = "none"

[[users]]
name = "op"
password = "op-secret"
role = "operator"

[[users]]
name = "view"
password = "view-secret"
role = "viewer"

[tariffs.flat]
kind = "flat"
price = "1.00"

[[gateways]]
id = "gw1"
host = "127.0.0.1"
port = {gateway_port}
poll_interval = "1s"
{meters}
"""


@attrs.define
class Server:
    config: Path
    url: str
    hub_port: int
    processes: dict[str, subprocess.Popen[bytes]]

    def start(self, name: str, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with (self.config.parent / f"{name}.err").open("ab") as errors:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "server.cli", *args, "--config", str(self.config)],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=errors)

    def wait_for_hub(self) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.processes["serve"].poll() is not None:
                errors = (self.config.parent / "serve.err").read_text()
                raise AssertionError(f"wattkeeper serve stopped: {errors}")
            try:
                socket.create_connection(("127.0.0.1", self.hub_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the hub did not start listening")

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    gateway_port, hub_port = _free_port(), _free_port()
    config = tmp_path / "park.toml"
    config.write_text(_park(tmp_path / "data", gateway_port, hub_port))
    running = Server(config, f"ws://127.0.0.1:{hub_port}", hub_port, {})
    try:
        running.start("sim", "sim")
        running.start("serve", "serve")
        running.wait_for_hub()
        yield running
    finally:
        for name in list(running.processes):
            running.stop(name)


def _run(server: Server, user: str, password: str, body: object) -> None:
    async def main() -> None:
        session = ConsoleSession(server.url, ConsoleClient(user, password),
                                 backoff=Backoff(initial_s=0.2, max_s=1.0))
        await session.login()
        app = ConsoleApp(session)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.meters_table.row_count == METERS,
                        "the park's meters in the table", timeout_s=START_S)
            await body(app, pilot)  # type: ignore[operator]

    asyncio.run(main())


def _balance(app: ConsoleApp, meter: str) -> Decimal:
    return Decimal(app.meters_table.cell_text(meter, "balance"))


def test_operator_logs_in_filters_tops_up_and_survives_a_server_restart(server: Server) -> None:
    async def body(app: ConsoleApp, pilot: Pilot[None]) -> None:
        table = app.meters_table
        await until(pilot, lambda: app.client.model.park is not None, "the park's totals")
        app.apply_filter("tenant:acme")
        assert table.order == ["M-1", "M-3"]
        app.apply_filter("")
        # Top up through the dialog; the balance in the table goes up by the amount
        # (less whatever the meter consumed meanwhile: a few hundredths at most).
        table.move_to("M-2")
        before = _balance(app, "M-2")
        await pilot.press("t")
        assert isinstance(app.screen, AskScreen)
        await pilot.press(*"25.00", "enter")
        await until(pilot, lambda: any("applied" in m for m in app.messages), "the ack",
                    timeout_s=20)
        assert before + Decimal("24") < _balance(app, "M-2") <= before + Decimal("25.00")
        # An unknown meter's refusal comes back in the server's words.
        app._send(lambda: app.client.reset_lockout("M-404"))
        await until(pilot, lambda: any("refused" in m for m in app.messages), "the refusal",
                    timeout_s=20)
        assert "(unknown_meter)" in app.messages[-1]
        # The server restarts: the console notices, reconnects (its token died with the
        # server: the password is used again) and the park is back, with the top-up.
        after_top_up = _balance(app, "M-2")
        server.stop("serve")
        await until(pilot, lambda: app.session.status.state is not ConnectionState.LIVE,
                    "the console to notice the restart", timeout_s=20)
        server.start("serve", "serve")
        await until(pilot, lambda: app.session.status.state is ConnectionState.LIVE,
                    "the reconnect", timeout_s=START_S)
        assert app.session.connections >= 2
        assert "live" in app.status_text()
        await until(pilot, lambda: table.row_count == METERS, "the meters after the restart")
        assert _balance(app, "M-2") > after_top_up - Decimal("1")

    _run(server, "op", "op-secret", body)


def test_a_viewer_cannot_command_and_the_hub_refuses_too(server: Server) -> None:
    async def body(app: ConsoleApp, pilot: Pilot[None]) -> None:
        assert "read-only" in app.status_text()
        await pilot.press("t")
        assert not isinstance(app.screen, AskScreen)
        # Past the console's own check (as a modified client would be), the hub says no.
        app.client.role = "operator"
        app._send(lambda: app.client.top_up("M-1", "10.00"))
        await until(pilot, lambda: any("refused" in m for m in app.messages), "the refusal",
                    timeout_s=20)
        assert "(forbidden)" in app.messages[-1]
        assert _balance(app, "M-1") <= Decimal("100.00")

    _run(server, "view", "view-secret", body)
