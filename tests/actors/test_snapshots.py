"""Change tracking (EffectRouter) and the sliced snapshotter that consumes it."""

from __future__ import annotations

import pytest

from actors.effects import EffectRouter
from actors.meter import MeterActor
from actors.snapshots import snapshot_dirty
from policies.meter_policy import MeterPolicy
from policies.records import MeterState, Reading
from policies.tariff_records import Tariff

T0 = 1_795_000_000_000


def actors(router: EffectRouter, count: int) -> list[MeterActor]:
    policy = MeterPolicy(tariff=Tariff.flat("flat", 1000))
    return [MeterActor(f"M-{key}", key, policy, MeterState.opening(10**6), router)
            for key in range(count)]


def encode(state: MeterState) -> bytes:
    return str(state.balance).encode()


def test_a_meter_is_listed_once_however_often_it_changes() -> None:
    router = EffectRouter()
    (meter,) = actors(router, 1)
    for step in range(5):
        meter.receive(Reading(T0 + step * 1000, 100 * step, 500.0))
    assert router.dirty == [meter] and router.changed == [meter]
    assert router.take_changed() == [meter] and router.changed == []
    router.clear_changed(meter)
    meter.receive(Reading(T0 + 9000, 900, 500.0))
    assert router.changed == [meter] and router.dirty == [meter]


async def test_the_snapshotter_writes_each_dirty_meter_once_and_relists_later_changes() -> None:
    router = EffectRouter()
    meters = actors(router, 100)
    for meter in meters:
        router.mark_dirty(meter)
    written: list[tuple[str, bytes]] = []

    def put(chunk: list[tuple[str, bytes]]) -> None:
        written.extend(chunk)

    assert await snapshot_dirty(router, encode, put, budget_s=0.0, check_every=8) == 100
    assert [meter_id for meter_id, _ in written] == [meter.meter_id for meter in meters]
    assert router.dirty == []
    meters[3].receive(Reading(T0, 0, 500.0))  # changed after its snapshot: listed again
    assert router.dirty == [meters[3]]


async def test_a_snapshot_cut_short_leaves_the_rest_for_next_time() -> None:
    router = EffectRouter()
    meters = actors(router, 40)
    for meter in meters:
        router.mark_dirty(meter)

    def put_fails(chunk: list[tuple[str, bytes]]) -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError):
        await snapshot_dirty(router, encode, put_fails, budget_s=0.0, check_every=8)
    # The first chunk of 8 was taken (and lost with the failed put); the other 32 wait.
    assert router.dirty == meters[8:]
    written: list[tuple[str, bytes]] = []
    assert await snapshot_dirty(router, encode, written.extend) == 32
