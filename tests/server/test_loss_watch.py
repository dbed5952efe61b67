"""The live loss alarm: a feeder losing more than its threshold raises ``park/loss:<feeder>``,
a normal window clears it, and a window with an unread meter proves nothing."""

from __future__ import annotations

from pathlib import Path

import trio

from actors.effects import AlarmEvent
from policies.records import Reading
from server.app import open_park
from server.config import ParkConfig
from server.loss_watch import LossWatch
from tests.server.parks import park_toml

T0 = 1_795_000_000_000
HOUR = 3_600_000
FEEDER = """
[[feeders]]
id = "tx1"
main = "M-0"
meters = ["M-1", "M-2"]
loss_alarm_percent = "5"
"""


async def test_a_high_loss_raises_the_alarm_and_a_normal_window_clears_it(tmp_path: Path
                                                                          ) -> None:
    config = ParkConfig.from_toml_text(park_toml(tmp_path / "park", 3) + FEEDER, "loss.toml")
    alarms: list[AlarmEvent] = []
    async with open_park(config, with_field=False, alarm_sinks=(alarms.append,)) as park:
        watch = LossWatch(config.feeders[0], park.registry, park.router, lambda: T0)

        async def hour(n: int, main: int, subs: tuple[int, int], meters: tuple[int, ...] = (
                0, 1, 2)) -> None:
            for key, wh in zip((0, 1, 2), (main, *subs), strict=True):
                if key in meters:
                    park.registry.deliver_reading_nowait(key, Reading(T0 + n * HOUR, wh, 1e3))
            while park.dispatcher.queue_depth:
                await trio.sleep(0.001)

        await hour(0, 0, (0, 0))
        assert watch.sample() is None  # the first sample has nothing to compare with
        await hour(1, 10_000, (5_000, 4_400))  # 600 Wh lost of 10 kWh: 6 %
        loss = watch.sample()
        assert loss is not None and (loss.loss_wh, round(loss.ratio, 3)) == (600, 0.06)
        assert [(a.alarm_id, a.kind, a.state) for a in alarms if not a.meter_id] == [
            ("park/loss:tx1", "loss", "active")]
        await hour(2, 20_000, (9_000, 8_000), meters=(0, 1))  # M-2 not read: no verdict
        assert watch.sample() is None and watch.active
        # M-2's two hours count in one window: 10 kWh in, 5 + 5.6 kWh under it: no loss.
        await hour(3, 30_000, (14_000, 10_000))
        loss = watch.sample()
        assert loss is not None and loss.loss_wh == -600 and not watch.active
        assert [a.state for a in alarms if a.alarm_id == "park/loss:tx1"] == ["active",
                                                                               "cleared"]
