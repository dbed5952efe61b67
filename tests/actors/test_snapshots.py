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

    def put(chunk: list[tuple[str, bytes]]) -> bool:
        written.extend(chunk)
        return True

    assert await snapshot_dirty(router, encode, put, budget_s=0.0, check_every=8) == 100
    assert [meter_id for meter_id, _ in written] == [meter.meter_id for meter in meters]
    assert router.dirty == []
    meters[3].receive(Reading(T0, 0, 500.0))  # changed after its snapshot: listed again
    assert router.dirty == [meters[3]]


async def test_a_snapshot_cut_short_leaves_every_unwritten_meter_for_next_time() -> None:
    router = EffectRouter()
    meters = actors(router, 40)
    for meter in meters:
        router.mark_dirty(meter)

    def put_fails(chunk: list[tuple[str, bytes]]) -> bool:
        raise OSError("disk gone")

    with pytest.raises(OSError):
        await snapshot_dirty(router, encode, put_fails, budget_s=0.0, check_every=8)
    # The first chunk of 8 was not written: listed again, after the 32 never taken.
    assert router.dirty == meters[8:] + meters[:8]
    written: list[tuple[str, bytes]] = []

    def put(chunk: list[tuple[str, bytes]]) -> bool:
        written.extend(chunk)
        return True

    assert await snapshot_dirty(router, encode, put) == 40


async def test_storage_refusing_a_chunk_ends_the_round_and_relists_the_meters() -> None:
    router = EffectRouter()
    meters = actors(router, 40)
    for meter in meters:
        router.mark_dirty(meter)
    refused: list[int] = []

    def storage_down(chunk: list[tuple[str, bytes]]) -> bool:
        refused.append(len(chunk))
        return False

    assert await snapshot_dirty(router, encode, storage_down, budget_s=0.0, check_every=8) == 0
    assert refused == [8]  # one attempt, then the round ends
    assert sorted(router.dirty, key=meters.index) == meters
    assert all(meter.dirty for meter in meters)


async def test_a_state_that_cannot_be_encoded_costs_that_meter_alone() -> None:
    router = EffectRouter()
    meters = actors(router, 10)
    for meter in meters:
        router.mark_dirty(meter)
    meters[4].faulted = True  # its record must stay as it is on disk
    written: list[str] = []
    failed: list[str] = []

    def fragile(state: MeterState) -> bytes:
        if state is meters[2].state:
            raise OverflowError("int too big to convert")
        return encode(state)

    def put(chunk: list[tuple[str, bytes]]) -> bool:
        written.extend(meter_id for meter_id, _ in chunk)
        return True

    count = await snapshot_dirty(router, fragile, put,
                                 on_encode_error=lambda actor, _: failed.append(actor.meter_id))
    assert failed == [meters[2].meter_id]
    assert written == [m.meter_id for m in meters if m not in (meters[2], meters[4])]
    assert count == 8 and router.dirty == []
