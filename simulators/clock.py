"""Simulated time for a park: wall time by default, optionally sped up.

Theory of operation
-------------------
Every simulated meter derives its power and its energy register from *simulated* seconds
since the Unix epoch (``simulators.load_profiles`` reads the time of day from it). A
:class:`SimClock` maps a monotonic source (``time.monotonic`` unless a test passes its own) to
simulated time::

    now() = start_s + (source() - source_at_start) * speed

so with ``speed = 1`` a simulated park follows the wall clock (a 06:00 shift start happens at
06:00 local time), and with ``speed = 60`` one wall second is a simulated minute (a day of load
curves in 24 minutes). The clock is a plain object, not trio's clock: the gateway serves real
sockets, and the coil log stamps writes with ``time.monotonic_ns()`` so that other processes
(benchmarks) can compare the stamps with their own.

Fault and scenario timings (``at=``, ``for=``, ``within``) are *wall* seconds whatever the
speed: the system under test polls and trips on wall time, so a 5 s overload must look like
5 s to it. The speed-up only compresses the load curves and the energy they integrate to.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["SimClock"]


class SimClock:
    """Simulated seconds since the epoch; ``speed`` simulated seconds per source second."""

    __slots__ = ("_origin", "_source", "speed", "start_s")

    def __init__(
        self,
        *,
        speed: float = 1.0,
        start_s: float | None = None,
        source: Callable[[], float] = time.monotonic,
    ) -> None:
        if not speed > 0.0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self.start_s = time.time() if start_s is None else start_s
        self._source = source
        self._origin = source()

    def now(self) -> float:
        """The current simulated time (seconds since the Unix epoch, UTC)."""
        return self.start_s + (self._source() - self._origin) * self.speed
