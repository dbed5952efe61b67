"""The meter actor's reading path: a batch of readings does exactly what one ``receive`` per
reading does, and one meter's failure stays its own."""

from __future__ import annotations

import pytest

from actors.effects import EffectRouter
from actors.meter import MeterActor, receive_readings
from actors.runtime import Actor
from policies.meter_policy import MeterPolicy
from policies.records import MeterState, Reading
from policies.tariff_records import Tariff

T0 = 1_795_000_000_000
POLICY = MeterPolicy(tariff=Tariff.flat("flat", 100_000))  # 1 kWh = 1.00


def park(balances: list[int]) -> tuple[list[MeterActor], list[tuple[str, bool]]]:
    """Meters with these opening balances, and the relay commands they emit."""
    router = EffectRouter()
    relays: list[tuple[str, bool]] = []
    router.relay_sink = lambda actor, command: relays.append((actor.meter_id, command.closed))
    meters = [MeterActor(f"M-{key}", key, POLICY, MeterState.opening(balance), router)
              for key, balance in enumerate(balances)]
    return meters, relays


def readings_for(round_: int, meters: int) -> list[Reading]:
    # Round 0 is the baseline; later rounds use 1 kWh per meter, so a meter opened with less
    # than a few units of money (1.00 a kWh) trips, and a NaN reading is refused as bad input.
    power = float("nan") if round_ == 3 else 1_000.0
    return [Reading(T0 + round_ * 60_000, 1_000 * round_, power) for _ in range(meters)]


def test_a_batch_does_what_one_receive_per_reading_does() -> None:
    balances = [10**6, 150, 10**6, 1_050, 0]
    one_by_one, relays_single = park(balances)
    batched, relays_batched = park(balances)
    failures: list[tuple[Actor, object, Exception]] = []
    for round_ in range(6):
        readings = readings_for(round_, len(balances))
        for meter, reading in zip(one_by_one, readings, strict=True):
            meter.receive(reading)
        receive_readings(batched, readings,
                         lambda actor, message, error: failures.append((actor, message, error)))
    assert [meter.state for meter in batched] == [meter.state for meter in one_by_one]
    assert relays_batched == relays_single
    assert ("M-1", False) in relays_batched  # the cheap meters tripped on the way
    assert not failures


def test_a_failing_meter_in_a_batch_is_reported_and_the_others_go_on() -> None:
    meters, _ = park([10**6, 10**6, 10**6])
    receive_readings(meters, readings_for(0, 3), lambda *args: None)
    meters[1].state = None  # type: ignore[assignment]  # a bug in that meter's state
    failures: list[tuple[Actor, object, Exception]] = []
    readings = readings_for(1, 3)
    receive_readings(meters, readings,
                     lambda actor, message, error: failures.append((actor, message, error)))
    assert [(actor, message) for actor, message, _ in failures] == [(meters[1], readings[1])]
    assert meters[0].state.register_wh == meters[2].state.register_wh == 1_000
    with pytest.raises(AttributeError):  # one reading alone: the caller's supervisor decides
        meters[1].receive(readings_for(2, 1)[0])


def test_a_faulted_meter_drops_readings() -> None:
    meters, relays = park([10**6, 100])
    receive_readings(meters, readings_for(0, 2), lambda *args: None)
    meters[1].faulted = True
    before = meters[1].state
    receive_readings(meters, readings_for(1, 2), lambda *args: None)
    assert meters[1].state is before and relays == []
    assert meters[0].state.register_wh == 1_000
