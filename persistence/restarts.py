"""When to restart the journal writer after it died: exponential backoff, restart intensity.

Theory of operation
-------------------
The writer process can die (killed, an I/O error, a full disk, a bug) and the server restarts
it (``persistence.writer_link``); this module only decides *how soon*. It is a pure record of
the restarts within the last ``period_s``; time comes in as an argument, so the numbers are
tested without waiting.

* The n-th restart within the period waits ``first_delay_s x 2**(n-1)``, capped at
  ``max_delay_s``: a writer killed once is back in a fraction of a second, and one that dies at
  once on every start (a full disk) does not spin a core starting Python processes.
* Past ``intensity`` restarts within the period the writer is restarting *too often*: every
  further attempt waits the cap, and the journal says so in its log and its availability
  detail. Unlike a meter (``actors.supervisor``, which gives up and marks it faulted), the
  writer is never given up on: storage problems are usually fixed from outside (space freed, a
  disk remounted), and the first attempt after that should find it.
* Restarts older than the period are forgotten, so after a quiet period the next death is again
  answered within ``first_delay_s``.

The defaults (0.1 s doubling to 5 s; more than 5 restarts in 60 s is too often) are argued in
docs/decisions.md: the cap bounds how long money stays refused after the cause is gone, and at
one attempt per 5 s a failing start costs about 3 % of a core.
"""

from __future__ import annotations

from collections import deque

import attrs


@attrs.frozen
class RestartPolicy:
    first_delay_s: float = 0.1
    max_delay_s: float = 5.0
    intensity: int = 5
    """Restarts within ``period_s`` before they count as too often."""
    period_s: float = 60.0

    def __attrs_post_init__(self) -> None:
        if not 0 < self.first_delay_s <= self.max_delay_s:
            raise ValueError("need 0 < first_delay_s <= max_delay_s")
        if self.intensity < 1 or self.period_s <= 0:
            raise ValueError("need intensity >= 1 and period_s > 0")


class Restarts:
    """The restarts of one writer; call :meth:`next_delay` each time it died."""

    def __init__(self, policy: RestartPolicy | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self._recent: deque[float] = deque()
        self.total = 0
        """Restarts since the journal was opened."""

    def next_delay(self, now: float) -> float:
        """Seconds to wait before the restart that follows a death at ``now``."""
        policy = self.policy
        recent = self._recent
        while recent and recent[0] <= now - policy.period_s:
            recent.popleft()
        recent.append(now)
        self.total += 1
        if self.too_often:
            return policy.max_delay_s
        return min(policy.first_delay_s * 2.0 ** (len(recent) - 1), policy.max_delay_s)

    @property
    def recent(self) -> int:
        """Restarts within the period, as of the last :meth:`next_delay`."""
        return len(self._recent)

    @property
    def too_often(self) -> bool:
        return len(self._recent) > self.policy.intensity
