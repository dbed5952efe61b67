"""The park as a stream: views, incremental totals, bounded ticks, alarms and audit."""

from __future__ import annotations

from pathlib import Path

import trio

from protocols.stream.views import StreamTick
from server.app import open_park
from server.auth import Caller
from server.config import ParkConfig
from server.stream import AlarmInbox, ParkStream
from tests.ws.parks import feed, hub_park, hub_park_toml, settle

OPERATOR = Caller("op", "operator", "hub", "127.0.0.1:5000")


class Recorder:
    def __init__(self) -> None:
        self.ticks: list[StreamTick] = []

    def on_tick(self, tick: StreamTick) -> None:
        self.ticks.append(tick)


async def test_views_and_totals_follow_the_meters(tmp_path: Path) -> None:
    async with open_park(hub_park(tmp_path / "park"), with_field=False) as park:
        stream = ParkStream(park)
        recorder = Recorder()
        stream.subscribe(recorder)
        first = stream.park_view()
        assert (first.meters, first.meters_on, first.meters_off, first.balance_sum,
                first.gateways, first.gateways_online) == (6, 6, 0, 600_00, 2, 2)
        view = stream.current()["M-3"]
        assert (view.tenant, view.gateway, view.balance, view.alarm, view.energy_wh) == (
            "beta", "gw2", 100_00, "none", 0)

        feed(park, "M-3", 5_000, 2_000.0)
        await park.operations.set_relay(OPERATOR, "M-4", "open", "works", "r1")
        await park.ledger.adjust("M-0", -60_00, "adj", park.clock.wall_ms(), "test")
        await settle(park)
        stream._next_park = 0.0  # (due now, whatever the 4 Hz limit says)
        tick = stream.tick()
        assert sorted(v.meter_id for v in tick.meters) == ["M-0", "M-3", "M-4"]
        assert stream.current()["M-3"].energy_wh == 5_000
        assert stream.current()["M-4"].relay_reason == "manual"
        assert tick.park is not None
        assert (tick.park.meters_on, tick.park.meters_off, tick.park.load_w,
                tick.park.balance_sum, tick.park.alarms_active) == (5, 1, 2_000.0, 540_00, 1)
        assert [a.kind for a in stream.active_alarms()] == ["low_balance"]
        assert stream.active_alarms(frozenset({"M-1"})) == []
        assert recorder.ticks == [tick]
        # Nothing changed: no tick is handed out.
        assert stream.tick().meters == [] and len(recorder.ticks) == 1


async def test_the_park_load_counts_no_water_flow(tmp_path: Path) -> None:
    head, tail = hub_park_toml(tmp_path / "park").split('id = "M-3"')
    text = head + 'id = "M-3"' + tail.replace('profile = "sdm630"', 'profile = "water"', 1)
    config = ParkConfig.from_toml_text(text, "hub-park.toml")
    assert [m.kind for m in config.meters] == ["electricity"] * 3 + ["water"] + \
        ["electricity"] * 2
    async with open_park(config, with_field=False) as park:
        stream = ParkStream(park)
        assert stream.park_view().load_w == 0.0
        feed(park, "M-2", 5_000, 2_000.0)
        feed(park, "M-3", 5_000, 900.0)  # 0.9 m3/h, not 900 W
        await settle(park)
        stream._next_park = 0.0
        tick = stream.tick()
        assert stream.current()["M-3"].power_w == 900.0  # the meter's own view keeps it
        assert tick.park is not None and tick.park.load_w == 2_000.0
        stream._resum()
        assert stream.park_view().load_w == 2_000.0


async def test_a_tick_builds_a_bounded_number_of_views(tmp_path: Path) -> None:
    async with open_park(hub_park(tmp_path / "park"), with_field=False) as park:
        stream = ParkStream(park, max_meters_per_tick=4)
        for n, actor in enumerate(park.registry):
            feed(park, actor.meter_id, 1_000 + n, 10.0)
        await settle(park)
        sizes = [len(stream.tick().meters) for _ in range(3)]
        assert sizes == [4, 2, 0]
        assert all(view.energy_wh > 0 for view in stream.current().values())


async def test_alarms_and_audit_pass_through_in_order(tmp_path: Path) -> None:
    inbox = AlarmInbox()
    async with open_park(hub_park(tmp_path / "park"), with_field=False,
                         alarm_sinks=(inbox,)) as park:
        stream = ParkStream(park, inbox=inbox)
        recorder = Recorder()
        stream.subscribe(recorder)
        async with trio.open_nursery() as nursery:
            await nursery.start(stream.run)
            await park.ledger.adjust("M-2", -90_00, "adj", park.clock.wall_ms(), "test")
            await park.operations.top_up(OPERATOR, "M-2", 1_00, "pay-1")
            with trio.fail_after(5):
                while not any(t.audit for t in recorder.ticks):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        alarms = [a for t in recorder.ticks for a in t.alarms]
        assert (alarms[0].kind, alarms[0].level, alarms[0].state) == ("low_balance", 2, "active")
        assert all(a.tenant == "beta" and a.gateway == "gw1" for a in alarms)
        (entry,) = [e for t in recorder.ticks for e in t.audit]
        assert (entry.command, entry.reference, entry.result) == ("topup", "pay-1", "accepted")
        # The stream left the park's lists as it found them.
        assert stream._on_audit not in park.operations.audit_listeners
        assert inbox.forward is None
