"""The park's two clocks: the wall clock labels, the control clock orders and measures.

Theory of operation
-------------------
The wall clock (``time.time``) is what people read: history buckets, tariff bands, friendly
periods and alarm times are labelled with it. It can step: NTP corrects it, an operator sets
it, a VM resumes. If readings were ordered by it, a reading stamped in the future would make
every later one look stale (nothing charged, no overload tripped), and a step back would do
the same for its length. So every decision that depends on *order or elapsed time* — which
reading is newer, how much energy a meter could have delivered since the last one, overload
delays, reclose, anti-chatter, restart intensity — uses the **control clock** instead:

    mono_ms() = trio's monotonic clock (ms) + an anchor

The anchor is fixed once per run (:meth:`ParkClock.anchor`), after recovery, so that the
control clock starts at the later of the wall clock and just past the highest control time
stored in any recovered state. It therefore continues across restarts (a snapshot's times
stay in its past), it measures a downtime by the wall clock (the only witness there is), and
within a run no wall-clock step reaches it. Tests drive it with trio's fake clock and step the
wall clock with :meth:`step_wall`; the chaos benchmark steps a running server's wall clock the
same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio


def system_wall_ms() -> int:
    """Milliseconds since the Unix epoch, from the system's wall clock."""
    return time.time_ns() // 1_000_000


class ParkClock:
    """See the module docstring. Construct anywhere; :meth:`anchor` inside ``trio.run``."""

    def __init__(self, wall_ms: Callable[[], int] = system_wall_ms) -> None:
        self._wall = wall_ms
        self._wall_offset_ms = 0
        self._anchor_ms: int | None = None

    def wall_ms(self) -> int:
        """The wall clock (labels): the source given, plus any :meth:`step_wall`."""
        return self._wall() + self._wall_offset_ms

    def step_wall(self, delta_ms: int) -> None:
        """Step the wall clock as NTP or an operator would (tests, the chaos benchmark)."""
        self._wall_offset_ms += delta_ms

    def anchor(self, not_before_ms: int = -1) -> None:
        """Start the control clock at max(wall clock, ``not_before_ms`` + 1)."""
        start = max(self.wall_ms(), not_before_ms + 1)
        self._anchor_ms = start - _trio_ms()

    @property
    def anchored(self) -> bool:
        return self._anchor_ms is not None

    def mono_ms(self) -> int:
        """The control clock (order and delays); call :meth:`anchor` first."""
        if self._anchor_ms is None:
            raise RuntimeError("the control clock is not anchored yet (ParkClock.anchor)")
        return _trio_ms() + self._anchor_ms


def _trio_ms() -> int:
    return int(trio.current_time() * 1000)
