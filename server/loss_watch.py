"""The live loss alarm: each feeder's unexplained loss over the last window, from its meters'
registers, raised as the park alarm ``park/loss:<feeder>`` when above its threshold.

Every ``window`` (per feeder, ``[[feeders]] loss_window``, an hour by default) the watch reads
the import registers of the feeder's main meter and of the meters under it from their actors'
states, and compares them with the previous sample: loss = main's delta - the sum of the
others'. Above ``loss_alarm_percent`` of the main's delta (``policies.apportionment.
loss_ratio_exceeded``, which also ignores a quiet window) the alarm is raised; at or below, it
clears. A window in which a meter of the feeder was offline, not read at all, or had its
register go backwards (a replacement) proves nothing: the alarm keeps its state and the next
window starts from the new sample. The black-hole report shows the same loss hour by hour
from the history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import attrs
import trio

from actors.effects import ALARM_ID_SEPARATOR, PARK_ALARM_PREFIX, AlarmEvent, EffectRouter
from actors.registry import ParkRegistry
from policies.apportionment import FeederLoss, loss_ratio_exceeded
from server.config.records import FeederSection

log = logging.getLogger(__name__)


def loss_alarm_id(feeder_id: str) -> str:
    return f"{PARK_ALARM_PREFIX}{ALARM_ID_SEPARATOR}loss:{feeder_id}"


@attrs.frozen
class _Sample:
    registers: tuple[int, ...]  # main first
    read_ms: tuple[int, ...]


class LossWatch:
    """One feeder's watch (see the module docstring); :meth:`sample` once per window."""

    def __init__(self, feeder: FeederSection, registry: ParkRegistry, router: EffectRouter,
                 label_ms: Callable[[], int]) -> None:
        self.feeder = feeder
        self._actors = [registry.get(feeder.main), *(registry.get(m) for m in feeder.meters)]
        self._router = router
        self._label_ms = label_ms
        self._last: _Sample | None = None
        self.active = False
        self.last_loss: FeederLoss | None = None

    def sample(self) -> FeederLoss | None:
        """Compare with the previous sample; the window's loss, or None if it proves nothing."""
        states = [actor.state for actor in self._actors]
        now = _Sample(tuple(s.register_wh for s in states), tuple(s.reading_ms for s in states))
        before, self._last = self._last, now
        if before is None or not all(s.online for s in states):
            return None
        deltas = [after - earlier for after, earlier in zip(now.registers, before.registers,
                                                            strict=True)]
        unread = any(a == b for a, b in zip(now.read_ms, before.read_ms, strict=True))
        if unread or any(d < 0 for d in deltas) or min(now.registers) < 0:
            return None
        loss = FeederLoss(self.feeder.id, deltas[0], sum(deltas[1:]), 0)
        self.last_loss = loss
        exceeded = loss_ratio_exceeded(loss, self.feeder.loss_alarm_percent)
        if exceeded != self.active:
            self.active = exceeded
            self._publish(loss)
        return loss

    def _publish(self, loss: FeederLoss) -> None:
        limit = self.feeder.loss_alarm_percent / 100
        detail = (f"feeder {self.feeder.id} lost {loss.loss_wh / 1000:.3f} kWh of "
                  f"{loss.main_wh / 1000:.3f} kWh ({100 * loss.ratio:.2f} %, threshold "
                  f"{limit:g} %) in the last window")
        if self.active:
            log.warning("loss alarm: %s", detail)
        self._router.publish_alarm(AlarmEvent(
            alarm_id=loss_alarm_id(self.feeder.id), meter_id="", kind="loss", level=0,
            state="active" if self.active else "cleared", ts_ms=self._label_ms(),
            detail=detail))


async def run_loss_watch(watches: Sequence[LossWatch], *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Sample each feeder at start and then once per its window, forever."""
    async with trio.open_nursery() as nursery:
        for watch in watches:
            nursery.start_soon(_watch_one, watch)
        task_status.started()


async def _watch_one(watch: LossWatch) -> None:
    while True:
        watch.sample()
        await trio.sleep(watch.feeder.loss_window_ms / 1000)
