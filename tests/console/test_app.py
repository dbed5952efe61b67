"""The terminal console, headless (textual's pilot), against the fake hub.

Plain ``def`` tests that call ``asyncio.run``: textual runs on asyncio, and pytest-trio's
trio_mode would run an ``async def`` test under trio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from protocols.console.app import AskScreen, ConsoleApp
from protocols.console.client import Backoff, ConnectionState, ConsoleClient
from protocols.console.session import ConsoleSession
from protocols.console.table import MeterTable
from tests.console.fake_hub import USERS, FakeHub, meter_message

SIZE = (140, 40)


def _park(count: int = 30) -> list[dict[str, Any]]:
    return [
        meter_message(f"M-{n:04d}", tenant="acme" if n % 3 else "bolt", gateway=f"gw{n % 2 + 1}",
                      balance=f"{n * 10}.00", power_w=100.0 * n)
        for n in range(1, count + 1)
    ]


async def until(pilot: Pilot[None], condition: Callable[[], bool], what: str,
                timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def meters_table(app: ConsoleApp) -> MeterTable:
    return app.meters_table


def cell(app: ConsoleApp, meter: str, column: str) -> str:
    """What the meter table shows for a meter (drawn from the model it holds)."""
    return meters_table(app).cell_text(meter, column)


def run_app(hub: FakeHub, user: str, password: str,
            body: Callable[[ConsoleApp, Pilot[None]], Awaitable[None]]) -> None:
    async def main() -> None:
        url = await hub.start()
        try:
            session = ConsoleSession(url, ConsoleClient(user, password),
                                     backoff=Backoff(initial_s=0.1, max_s=0.5))
            await session.login()
            app = ConsoleApp(session)
            async with app.run_test(size=SIZE) as pilot:
                await until(pilot, lambda: meters_table(app).row_count == len(hub.meters),
                            "the first screen of meters")
                await body(app, pilot)
        finally:
            await hub.stop()

    asyncio.run(main())


def screen_lines(table: MeterTable) -> list[str]:
    """The table's lines as drawn (header first)."""
    return [table.render_line(y).text for y in range(table.size.height)]


def test_log_in_and_see_the_meters_and_the_park() -> None:
    async def body(app: ConsoleApp, pilot: Pilot[None]) -> None:
        lines = screen_lines(meters_table(app))
        assert lines[0].split()[:4] == ["Meter", "▲", "Tenant", "Gateway"]
        assert lines[3].split()[:4] == ["M-0003", "bolt", "gw2", "30.00"]
        assert "closed" in lines[3] and "online" in lines[3]
        assert cell(app, "M-0003", "balance") == "30.00"
        assert cell(app, "M-0003", "tenant") == "bolt"
        status = str(app.query_one("#status", Static).render())
        assert "live" in status and "op (operator)" in status
        await pilot.press("1")
        await until(pilot, lambda: "Total load" in str(app.query_one("#park", Static).render()),
                    "the overview")
        overview = str(app.query_one("#park", Static).render())
        assert "46.5 kW" in overview  # 100 W * (1 + ... + 30)
        assert "4650.00" in overview
        assert app.query_one("#gateways", DataTable).row_count == 1

    run_app(FakeHub(_park()), "op", "op-secret", body)


def test_filter_by_text_tenant_gateway_relay_and_sort() -> None:
    hub = FakeHub(_park())
    hub.meters["M-0005"].update(relay="open", relay_reason="zero_balance", alarm="zero_balance")

    async def body(app: ConsoleApp, pilot: Pilot[None]) -> None:
        table = meters_table(app)
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"tenant:bolt gw:gw2", "enter")
        # bolt: multiples of 3; gw2: odd numbers -> 3, 9, 15, 21, 27
        assert table.order == ["M-0003", "M-0009", "M-0015", "M-0021",
                                                      "M-0027"]
        app.apply_filter("relay:open")
        assert table.row_count == 1 and cell(app, "M-0005", "alarm") == "zero_balance"
        app.apply_filter("M-001")
        assert table.row_count == 10
        app.apply_filter("colour:red")
        assert "unknown filter" in str(app.query_one("#filter-error").render())
        assert table.row_count == 10  # the last good filter stays
        app.apply_filter("")
        app.sort_by("balance", reverse=True)
        assert table.order[0] == "M-0030"
        # A meter that starts matching the filter appears without the operator doing anything.
        app.apply_filter("alarm:any")
        assert table.row_count == 1
        await hub.set_meter("M-0007", alarm="low_balance")
        await until(pilot, lambda: table.row_count == 2, "M-0007 to join the filtered table")

    run_app(hub, "op", "op-secret", body)


def test_top_up_and_see_the_balance_change() -> None:
    hub = FakeHub(_park())

    async def body(app: ConsoleApp, pilot: Pilot[None]) -> None:
        table = meters_table(app)
        table.move_to("M-0002")
        await pilot.press("t")
        assert isinstance(app.screen, AskScreen)
        await pilot.press(*"abc", "enter")  # not an amount: the dialog says so and stays
        assert isinstance(app.screen, AskScreen)
        assert "not a number" in str(app.screen.query_one("#ask-error").render())
        app.screen.query_one("#ask-input", Input).value = ""
        await pilot.press(*"100.50", "enter")
        await until(pilot, lambda: cell(app, "M-0002", "balance") == "120.50",
                    "the new balance in the table")
        await until(pilot, lambda: any("applied" in m for m in app.messages), "the ack")
        topups = [f for f in hub.received if f["type"] == "topup"]
        assert [(f["meter"], f["amount"]) for f in topups] == [("M-0002", "100.50")]
        # Relay open for maintenance, then back to automatic.
        await pilot.press("o")
        await pilot.press("enter")  # the reason field's default, "maintenance"
        await until(pilot, lambda: cell(app, "M-0002", "relay") == "open (manual)",
                    "the relay open")
        await pilot.press("a")
        await pilot.press("enter")  # confirm
        await until(pilot, lambda: cell(app, "M-0002", "relay") == "closed", "relay auto")
        relays = [(f["action"], f.get("reason")) for f in hub.received if f["type"] == "relay"]
        assert relays == [("open", "maintenance"), ("auto", None)]

    run_app(hub, "op", "op-secret", body)


def test_the_servers_error_message_is_shown() -> None:
    hub = FakeHub(_park())
    hub.refusals["reset_lockout"] = ("unavailable", "storage is down: nothing was done")

    async def body(app: ConsoleApp, pilot: Pilot[None]) -> None:
        await pilot.press("l", "enter")
        await until(pilot, lambda: any("storage is down" in m for m in app.messages),
                    "the refusal")
        assert "(unavailable)" in app.messages[-1]
        assert not app.client.pending

    run_app(hub, "op", "op-secret", body)


def test_acknowledge_an_alarm() -> None:
    hub = FakeHub(_park())

    async def body(app: ConsoleApp, pilot: Pilot[None]) -> None:
        alarm = await hub.raise_alarm("M-0004", "low_balance")
        alarms = app.query_one("#alarms-table", DataTable)
        await until(pilot, lambda: alarms.row_count == 1, "the alarm in the list")
        await pilot.press("3")
        assert str(alarms.get_cell(alarm, "state")) == "active"
        await pilot.press("k", "enter")
        await until(pilot, lambda: str(alarms.get_cell(alarm, "state")) == "acknowledged",
                    "the alarm acknowledged")
        assert [f["alarm"] for f in hub.received if f["type"] == "ack_alarm"] == [alarm]

    run_app(hub, "op", "op-secret", body)


def test_a_viewer_has_no_command_keys_and_sends_nothing() -> None:
    hub = FakeHub(_park())

    async def body(app: ConsoleApp, pilot: Pilot[None]) -> None:
        assert "read-only" in str(app.query_one("#status", Static).render())
        for key in ("t", "o", "a", "l"):
            await pilot.press(key)
            assert not isinstance(app.screen, AskScreen), key
        footer_actions = {binding.action for _, binding, enabled, _ in app.active_bindings.values()
                          if enabled}
        assert not footer_actions & {"top_up", "open_relay", "auto_relay", "reset_lockout"}
        # Even if the app were asked directly, the client refuses before sending.
        app._send(lambda: app.client.top_up("M-0001", "10.00"))
        assert "viewers cannot command" in app.messages[-1]
        await pilot.pause(0.2)
        commands = [f for f in hub.received if f["type"] not in ("hello", "subscribe")]
        assert commands == []

    run_app(hub, "view", "view-secret", body)


def test_reconnect_after_the_server_drops_the_connection() -> None:
    hub = FakeHub(_park())

    async def body(app: ConsoleApp, pilot: Pilot[None]) -> None:
        status = app.query_one("#status", Static)
        await hub.drop_all()
        await until(pilot, lambda: app.session.status.state is not ConnectionState.LIVE,
                    "the console to notice")
        # While it is away a meter changes; the resubscribed snapshot brings it.
        hub.meters["M-0001"]["balance"] = "999.00"
        await until(pilot, lambda: app.session.status.state is ConnectionState.LIVE
                    and cell(app, "M-0001", "balance") == "999.00", "the reconnect")
        await until(pilot, lambda: "live" in str(status.render()), "the status bar")
        assert app.session.connections == 2
        # The second hello used the session token, not the password.
        assert "token" in hub.hellos[-1] and "password" not in hub.hellos[-1]
        subscribes = [f for f in hub.received if f["type"] == "subscribe"]
        assert len(subscribes) == 2 and all(f["batch"] is True for f in subscribes)
        # Deltas flow again on the new connection.
        await hub.set_meter("M-0001", balance="5.00")
        await until(pilot, lambda: cell(app, "M-0001", "balance") == "5.00", "a new delta")

    run_app(hub, "op", "op-secret", body)


def test_offline_status_says_why_and_when_it_retries() -> None:
    hub = FakeHub(_park())

    async def body(app: ConsoleApp, pilot: Pilot[None]) -> None:
        await hub.stop()   # no server at all now: reconnects fail until it is back
        await hub.drop_all()
        await until(pilot, lambda: "reconnecting in" in app.status_text(), "the offline status")
        assert "offline" in app.status_text()
        # A command now is refused locally, with a reason.
        app._send(lambda: app.client.top_up("M-0001", "10.00"))
        assert "not connected" in app.messages[-1]

    run_app(hub, "op", "op-secret", body)


def test_a_command_whose_answer_was_lost_is_sent_again_with_the_same_id() -> None:
    hub = FakeHub(_park())

    async def body(app: ConsoleApp, pilot: Pilot[None]) -> None:
        hub.hold_answers = True
        app._send(lambda: app.client.top_up("M-0001", "5.00"))
        await until(pilot, lambda: any(f["type"] == "topup" for f in hub.received),
                    "the top-up at the hub")
        hub.hold_answers = False
        await hub.drop_all()
        await until(pilot, lambda: not app.client.pending, "the answer after the reconnect")
        topups = [f for f in hub.received if f["type"] == "topup"]
        assert len(topups) == 2 and topups[0]["id"] == topups[1]["id"]
        assert hub.meters["M-0001"]["balance"] == "15.00"  # applied once
        await until(pilot, lambda: any("duplicate" in m for m in app.messages),
                    "the repeat's answer shown")
        assert any("sent 1 unanswered command" in m for m in app.messages)

    run_app(hub, "op", "op-secret", body)


def test_the_meter_table_scrolls_keeps_its_cursor_and_sorts_by_a_header_click() -> None:
    hub = FakeHub(_park(300))

    async def body(app: ConsoleApp, pilot: Pilot[None]) -> None:
        table = meters_table(app)
        await pilot.press("end")
        await pilot.pause()
        assert table.cursor_meter == "M-0300"
        lines = screen_lines(table)
        assert lines[-1].startswith("M-0300") and lines[0].startswith("Meter")  # header stays
        await pilot.press("home", "down", "down", "pagedown")
        rows_per_page = table.size.height - 2
        assert table.cursor_meter == f"M-{3 + rows_per_page:04d}"
        # A re-sort keeps the cursor on its meter.
        chosen = table.cursor_meter
        app.sort_by("balance", reverse=True)
        assert table.cursor_meter == chosen and table.order[0] == "M-0300"
        assert chosen is not None and screen_lines(table)[1:].count(
            next(line for line in screen_lines(table) if line.startswith(chosen))) == 1
        # Clicking the Tenant header sorts by tenant.
        await pilot.click(MeterTable, offset=(14, 0))
        assert app.sort_column == "tenant" and table.order[:2] == ["M-0001", "M-0002"]
        assert "Tenant ▲" in screen_lines(table)[0]
        # A click on a row moves the cursor there (line 3: the third row in view).
        top = int(table.scroll_y)
        await pilot.click(MeterTable, offset=(2, 3))
        assert table.cursor == top + 2

    run_app(hub, "op", "op-secret", body)


def test_run_console_logs_in_and_runs_the_app_until_it_quits() -> None:
    from protocols.console.app import run_console

    hub = FakeHub(_park(5))
    seen: list[int] = []

    async def serve_and_run() -> None:
        url = await hub.start()

        def hook(app: ConsoleApp) -> None:
            async def quit_when_live() -> None:
                while app.meters_table.row_count < 5:
                    await asyncio.sleep(0.05)
                seen.append(app.meters_table.row_count)
                app.exit()

            app.call_later(lambda: asyncio.ensure_future(quit_when_live()))

        loop = asyncio.get_running_loop()
        # run_console runs its own event loop: in a thread, next to the hub's.
        await loop.run_in_executor(None, lambda: run_console(url, "op", "op-secret",
                                                             app_hook=hook, headless=True))
        await hub.stop()

    asyncio.run(serve_and_run())
    assert seen == [5]


def test_a_password_refused_on_reconnect_stops_the_console_trying() -> None:
    hub = FakeHub(_park(3))

    async def body(app: ConsoleApp, pilot: Pilot[None]) -> None:
        hub.tokens.clear()                                # the server forgot the session...
        hub_users = dict(USERS)
        USERS["op"] = ("changed", "operator")             # ...and the password changed
        try:
            await hub.drop_all()
            await until(pilot, lambda: app.session.status.state is ConnectionState.REFUSED,
                        "the refusal")
            await until(pilot, lambda: "login refused: wrong user name or password"
                        in app.status_text(), "the status bar")
            connections = app.session.connections
            await pilot.pause(0.5)
            assert app.session.connections == connections   # no more attempts
            assert app.meters_table.row_count == 3            # the last state stays on screen
        finally:
            USERS.update(hub_users)

    run_app(hub, "op", "op-secret", body)
