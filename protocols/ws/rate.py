"""At most ``[hub] meter_rate_hz`` updates a second per meter, for every client at once.

The hub asks :meth:`MeterRate.admit` which of a tick's changed meters may go out now. A meter
sent less than an interval ago is held (latest view wins) and goes when its interval is up
(:meth:`MeterRate.release_due`, called by the next tick or by the hub's timer). The limit is
kept once per meter for the whole hub rather than per client: each client then gets every
admitted change at the next tick, instead of waiting for a pacing window of its own (which
cost the clients that follow every meter up to 100 ms on each update), and the bookkeeping is
one entry per meter, not one per meter per client. Pure: the caller passes the time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from protocols.stream.views import MeterView

SLACK_S: Final = 0.001
"""Ticks come every 50 ms, give or take the scheduler: a meter changing on every tick is due
again at the second tick after it was sent, not at the third for a jitter of 0.1 ms."""


class MeterRate:
    def __init__(self, rate_hz: float) -> None:
        self.interval_s = 1.0 / rate_hz
        self._last: dict[str, float] = {}
        self.held: dict[str, MeterView] = {}

    def admit(self, views: Iterable[MeterView], now: float) -> list[MeterView]:
        """The views that may go now: each changed meter whose interval is up, then the held
        ones that became due. The others are held."""
        last, held = self._last, self.held
        since = now - self.interval_s + SLACK_S
        ready: list[MeterView] = []
        for view in views:
            meter_id = view.meter_id
            if last.get(meter_id, -math.inf) <= since:
                last[meter_id] = now
                ready.append(view)
                if held:
                    held.pop(meter_id, None)
            else:
                held[meter_id] = view
        if held:
            ready.extend(self.release_due(now))
        return ready

    def release_due(self, now: float) -> list[MeterView]:
        """The held views whose interval is up."""
        last, held = self._last, self.held
        since = now - self.interval_s + SLACK_S
        due = [view for meter_id, view in held.items() if last[meter_id] <= since]
        for view in due:
            del held[view.meter_id]
            last[view.meter_id] = now
        return due
