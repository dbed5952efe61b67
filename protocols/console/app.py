"""The terminal console: a textual app over a :class:`ConsoleSession` (docs/console.md).

Theory of operation
-------------------
Three screens in tabs: the park overview (totals, a load sparkline, gateways), the meter table
and the alarm list; a status bar on top says who is logged in and the connection's state,
including the countdown to the next reconnect attempt.

The app draws on a timer (:data:`REFRESH_S`), never per frame: each tick drains the session's
events (login, answers to commands) and takes the model's changes. The meter table
(:class:`MeterTable`) draws its rows from the model, so a changed meter on screen is simply
redrawn; the table's *order* (filtered and sorted by the model) is rebuilt only when the set of
rows shown must change: a new filter or sort, a meter that starts or stops matching the
filter, a meter that appeared or left. Rebuilds are spaced at least :data:`REBUILD_EVERY_S`
apart, so a park full of meters crossing a filter's boundary costs one rebuild a second, and
rows do not jump under the operator's cursor while values change (``r`` sorts again).

Commands open a small dialog (amount, reason, or a yes/no), go to the client, and the answer
(or the server's error message) comes back as a notification. A viewer gets no command keys:
they are hidden from the footer and refused (:meth:`ConsoleApp.check_action`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Final

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.logging import TextualHandler
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Input,
    Label,
    Sparkline,
    Static,
    TabbedContent,
    TabPane,
)

from protocols.console.client import (
    Answered,
    ClientEvent,
    CommandError,
    ConnectionState,
    ConsoleClient,
    Live,
    LoginRefused,
    PendingCommand,
    Resent,
    ServerNotice,
    Welcomed,
    check_amount,
)
from protocols.console.model import SORT_COLUMNS, AlarmRow, MeterQuery
from protocols.console.session import ConsoleError, ConsoleSession
from protocols.console.table import MeterTable, clock_time

__all__ = ["ConsoleApp", "run_console"]

REFRESH_S: Final = 0.1
REBUILD_EVERY_S: Final = 1.0

ALARM_COLUMNS: Final = (
    ("Alarm", "alarm"), ("Meter", "meter"), ("Kind", "kind"), ("Level", "level"),
    ("State", "state"), ("Since", "ts"), ("Detail", "detail"),
)

Cells = tuple[str, ...]


def alarm_cells(row: AlarmRow) -> Cells:
    state = "acknowledged" if row.acknowledged else row.state
    return (row.alarm, row.meter or "(park)", row.kind, str(row.level), state,
            clock_time(row.ts), row.detail)


# --- dialogs -------------------------------------------------------------------------------

class AskScreen(ModalScreen[str | None]):
    """A question with one text field (amount, reason) or none (a yes/no confirmation)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    AskScreen { align: center middle; }
    AskScreen > Vertical { width: 64; height: auto; border: thick $accent; padding: 1 2;
                           background: $surface; }
    AskScreen Horizontal { height: auto; margin-top: 1; }
    AskScreen Button { margin-right: 2; }
    AskScreen #ask-error { color: $error; height: auto; }
    """

    def __init__(self, question: str, *, field: str | None = None, value: str = "",
                 check: Callable[[str], str] | None = None, ok: str = "OK") -> None:
        super().__init__()
        self.question = question
        self.field = field
        self.value = value
        self.check = check
        self.ok_label = ok

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, id="ask-question")
            if self.field is not None:
                yield Input(value=self.value, placeholder=self.field, id="ask-input")
            yield Label("", id="ask-error")
            with Horizontal():
                yield Button(self.ok_label, variant="primary", id="ask-ok")
                yield Button("Cancel", id="ask-cancel")

    def on_mount(self) -> None:
        if self.field is not None:
            self.query_one("#ask-input", Input).focus()
        else:
            self.query_one("#ask-ok", Button).focus()

    def _submit(self) -> None:
        text = self.query_one("#ask-input", Input).value if self.field is not None else ""
        if self.check is not None:
            try:
                text = self.check(text)
            except ValueError as error:
                self.query_one("#ask-error", Label).update(str(error))
                return
        self.dismiss(text)

    @on(Input.Submitted, "#ask-input")
    def _entered(self, _: Input.Submitted) -> None:
        self._submit()

    @on(Button.Pressed, "#ask-ok")
    def _ok(self, _: Button.Pressed) -> None:
        self._submit()

    @on(Button.Pressed, "#ask-cancel")
    def _cancelled(self, _: Button.Pressed) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


# --- the app -------------------------------------------------------------------------------

COMMAND_ACTIONS: Final = frozenset({"top_up", "open_relay", "auto_relay", "reset_lockout",
                                    "ack_alarm"})


class ConsoleApp(App[None]):
    """The console (module docstring); ``session`` is already logged in, or will log in."""

    TITLE = "wattkeeper console"
    CSS = """
    #status { height: 1; padding: 0 1; background: $primary-background; }
    #status.offline { background: $error 40%; }
    #status.refused { background: $error; }
    #park { height: auto; padding: 1 2; }
    #load { height: 4; margin: 0 2; }
    #load-label { padding: 0 2; color: $text-muted; }
    #filter-row { height: 3; }
    #filter { width: 1fr; }
    #filter-info { width: auto; padding: 1 1 0 1; color: $text-muted; }
    #filter-error { height: auto; color: $error; padding: 0 1; }
    DataTable { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "show_tab('overview')", "Overview"),
        Binding("2", "show_tab('meters')", "Meters"),
        Binding("3", "show_tab('alarms')", "Alarms"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),
        Binding("r", "resort", "Re-sort", show=False),
        Binding("t", "top_up", "Top up"),
        Binding("o", "open_relay", "Open relay"),
        Binding("a", "auto_relay", "Relay auto"),
        Binding("l", "reset_lockout", "Reset lockout"),
        Binding("k", "ack_alarm", "Acknowledge"),
        Binding("ctrl+r", "reconnect", "Reconnect", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, session: ConsoleSession) -> None:
        super().__init__()
        self.session = session
        self.client: ConsoleClient = session.client
        self.query_filter = MeterQuery()
        self.sort_column = "meter"
        self.sort_reverse = False
        self._rebuild_wanted = True
        self._last_rebuild = 0.0
        self._alarm_ids: list[str] = []
        self.messages: list[str] = []          # every notification, oldest first (and tests)
        self._runner: asyncio.Task[None] | None = None
        self._timer: Timer | None = None
        # Created here and kept: App.query_one searches the active screen, which is a dialog
        # while one is open (and nothing while the app shuts down), and the timer still draws.
        self.status_bar = Static("", id="status")
        self.tabs = TabbedContent(initial="meters", id="tabs")
        self.park_view = Static("waiting for the park's totals ...", id="park")
        self.load_chart = Sparkline([], id="load")
        self.gateways_table: DataTable[Any] = DataTable(id="gateways", cursor_type="row",
                                                        zebra_stripes=True)
        self.filter_input = Input(placeholder="filter: words, tenant:acme gateway:gw1 "
                                              "relay:open alarm:any online:no  (Enter)",
                                  id="filter")
        self.filter_info = Label("", id="filter-info")
        self.filter_error = Label("", id="filter-error")
        self.meters_table = MeterTable(session.client.model.meters, id="meters-table")
        self.alarms_table: DataTable[Any] = DataTable(id="alarms-table", cursor_type="row",
                                                      zebra_stripes=True)

    # --- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield self.status_bar
        with self.tabs:
            with TabPane("Overview [1]", id="overview"):
                yield self.park_view
                yield Label("total load, last two minutes", id="load-label")
                yield self.load_chart
                yield self.gateways_table
            with TabPane("Meters [2]", id="meters"):
                with Horizontal(id="filter-row"):
                    yield self.filter_input
                    yield self.filter_info
                yield self.filter_error
                yield self.meters_table
            with TabPane("Alarms [3]", id="alarms"):
                yield self.alarms_table
        yield Footer()

    def on_mount(self) -> None:
        alarms = self.alarms_table
        for label, key in ALARM_COLUMNS:
            alarms.add_column(label, key=key)
        gateways = self.gateways_table
        for label, key in (("Gateway", "gateway"), ("Online", "online"), ("Meters", "meters"),
                           ("Polls", "polls"), ("Failures", "failures")):
            gateways.add_column(label, key=key)
        self.meters_table.focus()
        self._runner = asyncio.create_task(self._run_session())
        self._timer = self.set_interval(REFRESH_S, self.refresh_from_model)
        self.refresh_from_model()

    async def _run_session(self) -> None:
        await self.session.run()
        # Returns only when the login was refused: say so and stay (the data is still there).
        self.refresh_from_model()

    async def on_unmount(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        if self._runner is not None:
            self._runner.cancel()
        await self.session.close()

    # --- drawing ---------------------------------------------------------------------------

    def refresh_from_model(self) -> None:
        for event in self.session.take_events():
            self._event(event)
        changes = self.client.model.take_changes()
        if changes.meters or changes.meters_removed or self._rebuild_wanted:
            self._update_meters(changes.meters, changes.meters_removed)
        if changes.alarms:
            self._update_alarms()
        if changes.park:
            self._update_park()
        if changes.gateways:
            self._update_gateways()
        self._update_status()

    def _update_meters(self, changed: frozenset[str], removed: frozenset[str]) -> None:
        table = self.meters_table
        meters = self.client.model.meters
        if any(table.shows(meter) for meter in removed):
            self._rebuild_wanted = True
        if not self._rebuild_wanted:
            for meter in changed:
                row = meters.get(meter)
                if row is not None and self.query_filter.matches(row) != table.shows(meter):
                    self._rebuild_wanted = True  # it starts or stops matching the filter
                    break
        table.refresh_meters(changed)
        now = time.monotonic()
        if self._rebuild_wanted and now - self._last_rebuild >= REBUILD_EVERY_S:
            self._rebuild_meters()
            self._last_rebuild = now

    def _rebuild_meters(self) -> None:
        self._rebuild_wanted = False
        rows = self.query_filter.select(self.client.model.meters.values())
        rows.sort(key=SORT_COLUMNS[self.sort_column], reverse=self.sort_reverse)
        table = self.meters_table
        table.sort_column, table.sort_reverse = self.sort_column, self.sort_reverse
        table.set_order([row.meter for row in rows])
        arrow = "descending" if self.sort_reverse else "ascending"
        self.filter_info.update(
            f"{len(rows):,} of {len(self.client.model.meters):,} meters, by {self.sort_column} "
            f"{arrow}"
        )

    def _update_alarms(self) -> None:
        table = self.alarms_table
        rows = self.client.model.active_alarms()
        cursor = self.selected_alarm()
        table.clear()
        self._alarm_ids = []
        for row in rows:
            cells = alarm_cells(row)
            styled: list[str | Text] = list(cells)
            if not row.acknowledged:
                styled[4] = Text(cells[4], style="bold red")
            table.add_row(*styled, key=row.alarm)
            self._alarm_ids.append(row.alarm)
        if cursor in self._alarm_ids:
            table.move_cursor(row=self._alarm_ids.index(cursor), animate=False)
        unacknowledged = sum(1 for row in rows if not row.acknowledged)
        self.tabs.get_tab("alarms").label = (
            f"Alarms ({unacknowledged}) [3]" if unacknowledged else "Alarms [3]"
        )

    def _update_park(self) -> None:
        park = self.client.model.park
        if park is None:
            return
        self.park_view.update(
            f"[b]Total load[/b]       {park.load_w / 1000:,.1f} kW\n"
            f"[b]Balance sum[/b]      {park.balance_sum}\n"
            f"[b]Meters[/b]           {park.meters:,}   on {park.meters_on:,}   "
            f"off {park.meters_off:,}   offline {park.meters_offline:,}\n"
            f"[b]Active alarms[/b]    {park.alarms_active:,}\n"
            f"[b]Gateways online[/b]  {park.gateways_online} of {park.gateways}\n"
            f"[dim]as of {park.ts}[/dim]"
        )
        self.load_chart.data = list(self.client.model.load_history)

    def _update_gateways(self) -> None:
        table = self.gateways_table
        table.clear()
        for gateway in sorted(self.client.model.gateways.values(), key=lambda g: g.gateway):
            online = "online" if gateway.online else Text("offline", style="bold red")
            table.add_row(gateway.gateway, online, str(gateway.meters), f"{gateway.polls:,}",
                          f"{gateway.failures:,}", key=gateway.gateway)

    def status_text(self) -> str:
        status = self.session.status
        who = f"{self.client.user} ({self.client.role or '?'})"
        if status.state is ConnectionState.LIVE:
            words = f"● live  {who}  {self.session.url}"
            if not self.client.may_command:
                words += "  read-only"
        elif status.state is ConnectionState.REFUSED:
            words = f"✖ login refused: {status.detail}  (restart the console to log in again)"
        elif status.retry_at is not None:
            wait = max(0.0, status.retry_at - time.monotonic())
            words = (f"○ offline: {status.detail}  reconnecting in {wait:.0f} s "
                     f"(attempt {status.attempt})  ctrl+r: now")
        else:
            words = f"◌ {status.state.value} {self.session.url} ..."
        if self.client.pending:
            words += f"  {len(self.client.pending)} command(s) awaiting an answer"
        return words

    def _update_status(self) -> None:
        bar = self.status_bar
        bar.update(self.status_text())
        state = self.session.status.state
        bar.set_class(state is ConnectionState.OFFLINE, "offline")
        bar.set_class(state is ConnectionState.REFUSED, "refused")

    # --- events from the session -----------------------------------------------------------

    def _event(self, event: ClientEvent) -> None:
        if isinstance(event, Welcomed):
            self.refresh_bindings()
        elif isinstance(event, Live):
            self._rebuild_wanted = True
            self._last_rebuild = 0.0  # the whole snapshot is in: show it now, not in a second
        elif isinstance(event, Answered):
            meter = event.command.description
            if event.ok:
                self.say(f"{meter}: {event.message}")
            else:
                self.say(f"{meter} refused: {event.message or event.code} ({event.code})",
                         error=True)
        elif isinstance(event, Resent):
            self.say(f"reconnected: sent {len(event.commands)} unanswered command(s) again "
                     "(the hub applies each only once)")
        elif isinstance(event, LoginRefused):
            self.say(f"login refused: {event.message}", error=True)
        elif isinstance(event, ServerNotice):
            self.say(f"server: {event.message} ({event.code})", error=True)

    def say(self, message: str, *, error: bool = False) -> None:
        self.messages.append(message)
        self.notify(message, severity="error" if error else "information",
                    timeout=8 if error else 4)

    # --- selection -------------------------------------------------------------------------

    def selected_meter(self) -> str | None:
        return self.meters_table.cursor_meter

    def selected_alarm(self) -> str | None:
        table = self.alarms_table
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return str(key) if key is not None else None

    def _meter_for_command(self) -> str | None:
        """The meter under the cursor: in the meter table, or the alarm's meter."""
        tab = self.tabs.active
        if tab == "alarms":
            alarm = self.client.model.alarms.get(self.selected_alarm() or "")
            meter = alarm.meter if alarm is not None and alarm.meter else None
        else:
            meter = self.selected_meter()
        if meter is None:
            self.say("select a meter first (tab 2, arrow keys)", error=True)
        return meter

    # --- actions ---------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in COMMAND_ACTIONS:
            return self.client.may_command
        if action in ("filter", "sort", "reverse_sort", "resort"):
            return self.tabs.active == "meters" or None
        return True

    def action_show_tab(self, tab: str) -> None:
        self.tabs.active = tab
        {"overview": self.gateways_table, "meters": self.meters_table,
         "alarms": self.alarms_table}[tab].focus()
        self.refresh_bindings()

    @on(TabbedContent.TabActivated)
    def _tab_changed(self, _: TabbedContent.TabActivated) -> None:
        self.refresh_bindings()

    def action_filter(self) -> None:
        self.filter_input.focus()

    @on(Input.Submitted, "#filter")
    def _filter_entered(self, event: Input.Submitted) -> None:
        self.apply_filter(event.value)
        self.meters_table.focus()

    def apply_filter(self, text: str) -> None:
        error = self.filter_error
        try:
            self.query_filter = MeterQuery.parse(text)
        except ValueError as problem:
            error.update(str(problem))
            return
        error.update("")
        self._rebuild_now()

    def _rebuild_now(self) -> None:
        self._rebuild_meters()
        self._last_rebuild = time.monotonic()

    def sort_by(self, column: str, *, reverse: bool | None = None) -> None:
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column = column
        self.sort_reverse = reverse
        self._rebuild_now()

    def action_sort(self) -> None:
        """Next sort column (the same column again, after the last one)."""
        keys = list(SORT_COLUMNS)
        self.sort_by(keys[(keys.index(self.sort_column) + 1) % len(keys)], reverse=False)

    def action_resort(self) -> None:
        """Sort again by the same column (rows keep their places while values change)."""
        self._rebuild_now()

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, reverse=not self.sort_reverse)

    @on(MeterTable.HeaderClicked)
    def _header_clicked(self, event: MeterTable.HeaderClicked) -> None:
        self.sort_by(event.column)

    async def action_reconnect(self) -> None:
        await self.session.drop()

    def _send(self, make: Callable[[], PendingCommand]) -> None:
        try:
            command = make()
        except CommandError as error:
            self.say(str(error), error=True)
            return
        self.session.flush()
        self.say(f"sent: {command.description}")
        self._update_status()

    def action_top_up(self) -> None:
        meter = self._meter_for_command()
        if meter is None:
            return
        row = self.client.model.meters.get(meter)
        balance = f" (balance {row.balance})" if row is not None else ""

        def sent(amount: str | None) -> None:
            if amount:
                self._send(lambda: self.client.top_up(meter, amount))

        self.push_screen(AskScreen(f"Top up {meter}{balance} by:", field="amount, e.g. 100.00",
                                   check=check_amount, ok="Top up"), sent)

    def action_open_relay(self) -> None:
        meter = self._meter_for_command()
        if meter is None:
            return

        def sent(reason: str | None) -> None:
            if reason is not None:
                self._send(lambda: self.client.open_relay(meter, reason))

        self.push_screen(AskScreen(f"Open the relay of {meter} (supply off until 'relay auto'). "
                                   "Reason:", field="reason", value="maintenance",
                                   ok="Open relay"), sent)

    def _confirm(self, question: str, ok: str, make: Callable[[], PendingCommand]) -> None:
        def sent(answer: str | None) -> None:
            if answer is not None:
                self._send(make)

        self.push_screen(AskScreen(question, ok=ok), sent)

    def action_auto_relay(self) -> None:
        meter = self._meter_for_command()
        if meter is not None:
            self._confirm(f"Give the relay of {meter} back to automatic control?", "Relay auto",
                          lambda: self.client.auto_relay(meter))

    def action_reset_lockout(self) -> None:
        meter = self._meter_for_command()
        if meter is not None:
            self._confirm(f"Reset the overload lockout of {meter}?", "Reset lockout",
                          lambda: self.client.reset_lockout(meter))

    def action_ack_alarm(self) -> None:
        alarm = self.selected_alarm()
        if alarm is None or self.tabs.active != "alarms":
            self.say("select an alarm first (tab 3, arrow keys)", error=True)
            return
        self._confirm(f"Acknowledge alarm {alarm}?", "Acknowledge",
                      lambda: self.client.ack_alarm(alarm))


# --- the command ---------------------------------------------------------------------------

def run_console(url: str, user: str, password: str, *, open_timeout_s: float = 10.0,
                ssl_context: ssl.SSLContext | None = None,
                app_hook: Callable[[ConsoleApp], None] | None = None,
                headless: bool = False) -> None:
    """``wattkeeper console``: log in, then take over the terminal until the operator quits.

    Raises :class:`ConsoleError` with words when the hub cannot be reached or refuses the
    login (before the terminal is touched). ``headless`` and ``app_hook`` are for tests.
    """
    asyncio.run(_console(ConsoleSession(url, ConsoleClient(user, password),
                                        open_timeout_s=open_timeout_s, ssl_context=ssl_context),
                         app_hook, headless))


async def _console(session: ConsoleSession, app_hook: Callable[[ConsoleApp], None] | None,
                   headless: bool) -> None:
    await session.login()
    if not headless and not sys.stdout.isatty():
        await session.close()
        raise ConsoleError("the console draws in a terminal, and standard output is not one")
    app = ConsoleApp(session)
    if app_hook is not None:
        app_hook(app)
    with _logs_into_the_app():
        await app.run_async(headless=headless)


@contextlib.contextmanager
def _logs_into_the_app() -> Iterator[None]:
    """While the app owns the terminal, a log line written to stderr would land in the middle
    of the screen: log records go to textual's log (its devtools console) instead."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [TextualHandler(stderr=False)]
    try:
        yield
    finally:
        root.handlers[:] = saved
