"""The meter table: a virtual table that draws only the rows on screen, for 10,000 meters.

Theory of operation
-------------------
textual's ``DataTable`` keeps a copy of every cell and, on every change, walks every row
(its row order and line offsets are cached per change count) and measures every new row's
cells: with 10,000 meters updating at 1 Hz that is 10,000 rows walked on every frame and a
full second of measuring after each filter. Measured in this console: 5.9 s to a full first
table, 3.4 s for the first jump to the end after a re-sort, and the event loop falling behind
the hub (14 s to take 5 s of deltas).

:class:`MeterTable` is a textual Line API widget instead (a ``ScrollView`` that renders line by
line). It holds only the *order*: the ids of the meters shown, as filtered and sorted by the
app. The cells come from the park model when a line is drawn, so a changed meter costs
nothing until it is on screen, and a refresh redraws the forty-odd lines in view. Column
widths are fixed (the widest value each column can reasonably hold), so nothing is measured.
Line 0 is the header and stays put; lines below it show the rows from ``scroll_y`` on.

The cursor is a row index; :attr:`cursor_meter` is the meter under it. Changing the order
keeps the cursor on the same meter when it is still shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar, Final

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from protocols.console.model import MeterRow

__all__ = ["COLUMNS", "COLUMN_KEYS", "MeterTable", "clock_time", "meter_cells"]

# (title, sort key, width, right-aligned)
COLUMNS: Final = (
    ("Meter", "meter", 12, False),
    ("Tenant", "tenant", 14, False),
    ("Gateway", "gateway", 10, False),
    ("Balance", "balance", 12, True),
    ("Power W", "power", 9, True),
    ("Energy kWh", "energy", 12, True),
    ("Relay", "relay", 20, False),
    ("Alarm", "alarm", 13, False),
    ("Online", "online", 8, False),
    ("Updated", "updated", 8, False),
)
COLUMN_KEYS: Final = tuple(key for _, key, _, _ in COLUMNS)
GAP: Final = 1
TOTAL_WIDTH: Final = sum(width + GAP for _, _, width, _ in COLUMNS)

Cells = tuple[str, ...]


def meter_cells(row: MeterRow) -> Cells:
    """A meter's cells as text, in :data:`COLUMNS` order."""
    relay = row.relay + (f" ({row.relay_reason})" if row.relay_reason else "")
    online = "faulted" if row.faulted else ("online" if row.online else "offline")
    power = "-" if math.isnan(row.power_w) else f"{row.power_w:,.0f}"
    return (row.meter, row.tenant, row.gateway, row.balance, power,
            f"{row.energy_kwh:,.3f}", relay, row.alarm, online, clock_time(row.ts))


def clock_time(ts: str) -> str:
    """``2026-11-22T10:15:00.123Z`` -> ``10:15:00`` (the table has no room for the date)."""
    _, _, clock = ts.partition("T")
    return clock[:8] if clock else ts


ALERT: Final = Style(color="red", bold=True)
WARN: Final = Style(color="yellow", bold=True)
DIM_ALERT: Final = Style(color="red")


def _cell_style(column: str, text: str) -> Style | None:
    """What an operator must notice: an open relay, an alarm, a meter not online, debt."""
    if column == "relay" and text.startswith("open"):
        return ALERT
    if column == "alarm" and text != "none":
        return WARN
    if column == "online" and text != "online":
        return DIM_ALERT
    if column == "balance" and text.startswith("-"):
        return DIM_ALERT
    return None


def _fit(text: str, width: int, right: bool) -> str:
    if len(text) > width:
        return text[: width - 1] + "…"
    return text.rjust(width) if right else text.ljust(width)


class MeterTable(ScrollView, can_focus=True):
    """The meters in a given order, drawn from the model (module docstring)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "to(0)", "First", show=False),
        Binding("end", "to(-1)", "Last", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "meter-table--header", "meter-table--cursor", "meter-table--odd",
    }
    DEFAULT_CSS = """
    MeterTable { height: 1fr; }
    MeterTable > .meter-table--header { background: $panel; text-style: bold; }
    MeterTable > .meter-table--cursor { background: $accent 60%; }
    MeterTable > .meter-table--odd { background: $boost; }
    """

    class HeaderClicked(Message):
        def __init__(self, column: str) -> None:
            super().__init__()
            self.column = column

    def __init__(self, meters: Mapping[str, MeterRow], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._meters = meters
        self.order: list[str] = []
        self._index: dict[str, int] = {}
        self.cursor = 0
        self.sort_column = "meter"
        self.sort_reverse = False
        self.virtual_size = Size(TOTAL_WIDTH, 1)

    # --- contents --------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.order)

    @property
    def cursor_meter(self) -> str | None:
        return self.order[self.cursor] if self.order else None

    def set_order(self, order: Sequence[str]) -> None:
        """Show these meters in this order; the cursor stays on its meter if it is shown."""
        keep = self.cursor_meter
        self.order = list(order)
        self._index = {meter: i for i, meter in enumerate(self.order)}
        self.virtual_size = Size(TOTAL_WIDTH, len(self.order) + 1)
        self.cursor = self._index.get(keep or "", min(self.cursor, max(0, len(self.order) - 1)))
        self._scroll_to_cursor()
        self.refresh()

    def shows(self, meter: str) -> bool:
        return meter in self._index

    def move_to(self, meter: str) -> None:
        self.cursor = self._index[meter]
        self._scroll_to_cursor()
        self.refresh()

    def cell_text(self, meter: str, column: str) -> str:
        return meter_cells(self._meters[meter])[COLUMN_KEYS.index(column)]

    def rows_in_view(self) -> range:
        """Indices of the rows on screen now."""
        first = int(self.scroll_y)
        return range(first, min(len(self.order), first + max(0, self.size.height - 1)))

    def refresh_meters(self, meters: frozenset[str]) -> None:
        """Some meters changed: redraw if any of them is on screen."""
        shown = self.rows_in_view()
        if any(shown.start <= self._index.get(m, -1) < shown.stop for m in meters):
            self.refresh()

    # --- drawing ---------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:
            header = self.get_component_rich_style("meter-table--header")
            segments = []
            for title, key, column_width, right in COLUMNS:
                if key == self.sort_column:
                    title += " ▼" if self.sort_reverse else " ▲"
                segments.append(Segment(_fit(title, column_width, right) + " " * GAP, header))
            return self._crop(segments, scroll_x, width, header)
        index = scroll_y + y - 1
        if index >= len(self.order):
            return Strip.blank(width, self.rich_style)
        row = self._meters.get(self.order[index])
        if index == self.cursor:
            base = self.get_component_rich_style("meter-table--cursor")
        elif index % 2:
            base = self.get_component_rich_style("meter-table--odd")
        else:
            base = self.rich_style
        if row is None:  # left the park since the order was made; the next rebuild drops it
            return self._crop([Segment(_fit(self.order[index], TOTAL_WIDTH, False), base)],
                              scroll_x, width, base)
        segments = []
        for (_, key, column_width, right), text in zip(COLUMNS, meter_cells(row), strict=True):
            style = _cell_style(key, text)
            segments.append(Segment(_fit(text, column_width, right),
                                    base + style if style is not None else base))
            segments.append(Segment(" " * GAP, base))
        return self._crop(segments, scroll_x, width, base)

    @staticmethod
    def _crop(segments: list[Segment], scroll_x: int, width: int, style: Style) -> Strip:
        return Strip(segments).crop(scroll_x, scroll_x + width).extend_cell_length(width, style)

    # --- moving ----------------------------------------------------------------------------

    def _scroll_to_cursor(self) -> None:
        rows_in_view = max(1, self.size.height - 1)
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True,
                           force=True)
        elif self.cursor >= top + rows_in_view:
            self.scroll_to(y=self.cursor - rows_in_view + 1, animate=False, immediate=True,
                           force=True)

    def _move(self, cursor: int) -> None:
        if not self.order:
            return
        self.cursor = max(0, min(len(self.order) - 1, cursor))
        self._scroll_to_cursor()
        self.refresh()

    def action_cursor(self, step: int) -> None:
        self._move(self.cursor + step)

    def action_page(self, direction: int) -> None:
        self._move(self.cursor + direction * max(1, self.size.height - 2))

    def action_to(self, index: int) -> None:
        self._move(index if index >= 0 else len(self.order) - 1)

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            x = event.x + int(self.scroll_x)
            for _, key, column_width, _ in COLUMNS:
                if x < column_width + GAP:
                    self.post_message(self.HeaderClicked(key))
                    return
                x -= column_width + GAP
            return
        self._move(int(self.scroll_y) + event.y - 1)
