"""The simulated meter: registers, energy integration, relay, faults at the model level."""

from __future__ import annotations

import itertools
import math
import struct
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.modbus.codec import float32_at, uint16_at
from protocols.modbus.profiles import load_profile
from simulators.meter_model import EXACT_QUANTA, QUANTUM_S, SimMeter

T0 = 1_700_000_000.0  # a Tuesday, 22:13 UTC
SDM630 = load_profile("sdm630")
WATER = load_profile("water")
GAS = load_profile("gas")


def sdm630(**kwargs: object) -> SimMeter:
    return SimMeter(SDM630, unit=3, seed=1, index=7, start_s=T0, **kwargs)  # type: ignore[arg-type]


def read_block(meter: SimMeter, t_s: float) -> bytes:
    return meter.read_registers(4, 0, 74, t_s)


def test_registers_sit_at_the_documented_addresses() -> None:
    meter = sdm630()
    block = read_block(meter, T0 + 0.5)
    values = meter.values(T0 + 0.5)
    assert len(block) == 148
    assert float32_at(block, 0x00) == pytest.approx(values["voltage"], rel=1e-6)
    assert 225.0 < float32_at(block, 0x00) < 235.0
    assert float32_at(block, 0x06) == pytest.approx(values["current"], rel=1e-6)
    assert float32_at(block, 0x0C) == pytest.approx(values["total_power"] / 3, rel=1e-6)
    assert float32_at(block, 0x34) == pytest.approx(values["total_power"], rel=1e-6)
    assert 49.9 < float32_at(block, 0x46) < 50.1
    assert float32_at(block, 0x48) == pytest.approx(meter.register_wh(T0 + 0.5) / 1000, rel=1e-6)
    # The profile's own decoder reads back what the model shows.
    reading = SDM630.decode([block], 0)
    assert reading.power_w == pytest.approx(values["total_power"], rel=1e-6)
    assert reading.register_wh == round(float32_at(block, 0x48) * 1000)


def test_unmapped_and_out_of_span_registers_read_zero() -> None:
    meter = sdm630()
    block = read_block(meter, T0)
    assert meter.read_registers(4, 0x02, 4, T0) == bytes(8)  # L2/L3 voltage: not mapped
    assert meter.read_registers(4, 0x0100, 10, T0) == bytes(20)  # past the span
    assert meter.read_registers(3, 0x0000, 10, T0) == bytes(20)  # no holding registers
    # A range straddling the end of the span: the mapped part, then zeros.
    assert meter.read_registers(4, 0x48, 4, T0) == block[0x48 * 2 :] + bytes(4)


def test_register_integrates_exactly_the_displayed_powers() -> None:
    meter = sdm630()
    start = meter.register_wh(T0)
    shown = []
    for second in range(30):
        shown.append(meter.power_w(T0 + second * QUANTUM_S))
        read_block(meter, T0 + second * QUANTUM_S + 0.3)
    assert meter.register_wh(T0 + 30 * QUANTUM_S) == pytest.approx(
        start + math.fsum(shown) * QUANTUM_S / 3600, rel=1e-12
    )


def test_registers_only_change_once_a_quantum() -> None:
    meter = sdm630()
    assert read_block(meter, T0 + 0.1) == read_block(meter, T0 + 0.9)
    assert read_block(meter, T0 + 0.9) != read_block(meter, T0 + 1.1)


@given(
    steps=st.lists(
        st.tuples(st.floats(0.0, 200.0), st.sampled_from(["read", "open", "close", "overload"])),
        max_size=30,
    )
)
def test_register_never_goes_backwards(steps: list[tuple[float, str]]) -> None:
    meter = sdm630()
    t = T0
    last = meter.register_wh(t)
    last_float = float32_at(read_block(meter, t), 0x48)
    for dt, action in steps:
        t += dt
        if action == "open":
            meter.write_coil(0, False, t)
        elif action == "close":
            meter.write_coil(0, True, t)
        elif action == "overload":
            meter.set_overload(None if meter.overload_w else 40_000.0, t)
        now = meter.register_wh(t)
        shown = float32_at(read_block(meter, t), 0x48)
        assert now >= last
        assert shown >= last_float  # float32 rounding is monotonic too
        last, last_float = now, shown


def test_open_relay_cuts_the_load_and_stops_the_register() -> None:
    meter = sdm630()
    assert meter.write_coil(0, False, T0 + 10.2)
    frozen = meter.register_wh(T0 + 10.5)
    block = read_block(meter, T0 + 50)
    assert float32_at(block, 0x34) == 0.0
    assert float32_at(block, 0x06) == 0.0
    assert meter.register_wh(T0 + 500) == frozen
    assert meter.read_coils(0, 8) == [False] * 8
    assert meter.write_coil(0, True, T0 + 500)
    assert meter.read_coils(0, 2) == [True, False]
    assert meter.register_wh(T0 + 600) > frozen


def test_only_the_relay_coil_is_writable() -> None:
    meter = sdm630(relay_coil=5)
    assert not meter.write_coil(0, False, T0)
    assert meter.relay_closed
    assert meter.read_coils(0, 8) == [False] * 5 + [True, False, False]


def test_overload_shows_the_injected_power_and_charges_it() -> None:
    meter = sdm630()
    before = meter.register_wh(T0 + 1)
    meter.set_overload(45_000.0, T0 + 1)
    assert float32_at(read_block(meter, T0 + 1.5), 0x34) == 45_000.0
    assert meter.register_wh(T0 + 11) == pytest.approx(before + 45_000.0 * 10 / 3600)
    meter.set_overload(None, T0 + 11)
    assert float32_at(read_block(meter, T0 + 11.5), 0x34) < 13_000.0  # 1.2 x 10 kW rated at most


def test_rollback_restarts_the_register_lower_and_it_counts_on() -> None:
    meter = sdm630()
    meter.roll_back(0.0, T0 + 5)
    assert float32_at(read_block(meter, T0 + 5), 0x48) == 0.0
    assert 0.0 < meter.register_wh(T0 + 65) < 12_000.0 * 60 / 3600 + 1e-9
    with pytest.raises(ValueError, match="below 0"):
        meter.roll_back(-1.0, T0 + 70)


def test_tamper_flag_on_a_profile_with_a_tamper_register() -> None:
    meter = SimMeter(WATER, unit=1, seed=1, index=0, start_s=T0)
    assert meter.has_tamper_register
    assert uint16_at(meter.read_registers(4, 0, 5, T0), 4) == 0
    meter.set_tamper(True, T0 + 1)
    block = meter.read_registers(4, 0, 5, T0 + 1)
    assert uint16_at(block, 4) == 1
    assert WATER.decode([block], 0).tamper
    meter.set_tamper(False, T0 + 2)
    assert not WATER.decode([meter.read_registers(4, 0, 5, T0 + 2)], 0).tamper


def test_tamper_is_refused_without_a_tamper_register() -> None:
    meter = sdm630()
    assert not meter.has_tamper_register
    with pytest.raises(ValueError, match="no tamper register"):
        meter.set_tamper(True, T0)


def test_water_meter_shows_flow_and_volume_in_its_units() -> None:
    meter = SimMeter(WATER, unit=1, seed=1, index=0, start_s=T0, rated_w=1_500.0)
    block = meter.read_registers(4, 0, 5, T0)
    values = meter.values(T0)
    assert float32_at(block, 0) == pytest.approx(values["total_power"] / 1000, rel=1e-6)  # m3/h
    assert float32_at(block, 2) == pytest.approx(meter.register_wh(T0) / 1000, rel=1e-6)  # m3


def test_gas_meter_counts_whole_litres_in_its_index() -> None:
    meter = SimMeter(GAS, unit=1, seed=1, index=0, start_s=T0, register_wh=1_234_567.4)
    meter.set_overload(2_500.0, T0)  # a burner at 2.5 m3/h
    block = meter.read_registers(4, 0, 5, T0 + 36)  # 25 L later
    assert struct.unpack(">I", block[:4]) == (1_234_592,)  # the index: litres, rounded
    assert float32_at(block, 2) == 2.5  # m3/h
    reading = GAS.decode([block], 0)
    assert (reading.register_wh, reading.power_w) == (1_234_592, 2_500.0)


def day_of(meter: SimMeter, start_s: float) -> list[float]:
    """What ``meter`` shows each second of a day from ``start_s``, as a fraction of its rating."""
    return [meter.power_w(start_s + second) / meter.rated_w for second in range(86_400)]


def runs(shown: list[float]) -> list[int]:
    """The lengths of the runs of seconds with a flow."""
    return [len(list(group)) for on, group in itertools.groupby(shown, bool) if on]


def test_water_is_drawn_in_short_bursts() -> None:
    meter = SimMeter(WATER, unit=1, seed=3, index=5, start_s=T0, rated_w=1_500.0)
    shown = day_of(meter, T0)
    draws = runs(shown)
    assert 50 < len(draws) < 600  # a day of taps and showers
    assert max(draws) <= 55 and min(draws) >= 4  # seconds each (a draw is 5-55 s)
    assert all(0.3 <= f <= 0.9 for f in shown if f)
    assert 0.02 < sum(1 for f in shown if f) / len(shown) < 0.3  # mostly no flow


def test_gas_heats_in_cycles_more_in_winter() -> None:
    winter = SimMeter(GAS, unit=1, seed=3, index=5, start_s=T0, rated_w=1_500.0)
    shown = day_of(winter, T0)  # November
    burns = runs(shown)
    assert 50 < len(burns) < 200  # a cycle of 10-20 minutes, on for part of each
    assert all(0.6 <= f <= 0.95 for f in shown if f)
    summer_start = T0 + 200 * 86_400.0  # June
    summer = SimMeter(GAS, unit=1, seed=3, index=5, start_s=summer_start, rated_w=1_500.0)
    assert sum(day_of(summer, summer_start)) < 0.2 * sum(shown)


def test_a_long_gap_is_sampled_close_to_the_exact_integral() -> None:
    exact, sampled = sdm630(), sdm630()
    for second in range(0, 3600, EXACT_QUANTA // 2):
        exact.register_wh(T0 + second)  # settles in exact steps
    gap = 3600 * QUANTUM_S
    exact_added = exact.register_wh(T0 + gap) - exact.register_wh(T0)
    sampled_added = sampled.register_wh(T0 + gap) - sampled.register_wh(T0)
    assert sampled_added == pytest.approx(exact_added, rel=0.05)


def test_same_seed_same_meter_in_any_poll_order() -> None:
    a, b = sdm630(), sdm630()
    for second in range(20):
        a.register_wh(T0 + second)
    assert a.register_wh(T0 + 20) == pytest.approx(b.register_wh(T0 + 20), rel=1e-12)
    assert read_block(a, T0 + 20) == read_block(b, T0 + 20)


def test_memory_per_meter_is_small() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        meters = [SimMeter(SDM630, unit=1 + i % 247, seed=1, index=i, start_s=T0)
                  for i in range(1000)]
        for meter in meters:
            read_block(meter, T0)
        per_meter = (tracemalloc.get_traced_memory()[0] - before) / len(meters)
    finally:
        tracemalloc.stop()
    assert per_meter < 2048


def test_packing_goes_through_the_profiles_value_specs() -> None:
    meter = sdm630()
    spec = SDM630.value("import_energy")
    assert spec is not None
    block = read_block(meter, T0)
    assert block[0x48 * 2 : 0x4A * 2] == spec.pack(meter.register_wh(T0) / 1000)
    assert struct.unpack(">f", spec.pack(1.5)) == (1.5,)


def test_a_phase_shifts_the_refresh_and_keeps_the_integration_exact() -> None:
    meter = sdm630(phase_s=0.25)
    plain = sdm630()
    # Quantum boundaries sit at whole seconds minus the phase.
    assert meter.values(T0 + 0.74) == meter.values(T0 - 0.2)
    assert read_block(meter, T0 + 0.70) == read_block(meter, T0 + 0.74)
    assert read_block(meter, T0 + 0.74) != read_block(meter, T0 + 0.76)
    assert read_block(plain, T0 + 0.74) == read_block(plain, T0 + 0.76)
    meter = sdm630(phase_s=0.25)
    start = meter.register_wh(T0 - 0.25)
    shown = [meter.power_w(T0 - 0.25 + k + 0.5) for k in range(20)]
    assert meter.register_wh(T0 - 0.25 + 20) - start == pytest.approx(sum(shown) / 3600.0)
    with pytest.raises(ValueError, match="phase_s"):
        sdm630(phase_s=QUANTUM_S)


def test_a_park_spreads_its_meters_refreshes_over_the_quantum() -> None:
    from simulators.meter_model import stagger_phase_s

    phases = sorted(stagger_phase_s(index) for index in range(2_000))
    assert all(0.0 <= phase < QUANTUM_S for phase in phases)
    gaps = [b - a for a, b in itertools.pairwise(phases)]
    assert max(gaps) < 5 * QUANTUM_S / 2_000  # no burst: evenly spread
    assert stagger_phase_s(7) == stagger_phase_s(7)  # deterministic


def test_a_feeder_main_meter_shows_its_meters_load_plus_its_loss() -> None:
    profile = load_profile("sdm630")
    children = [SimMeter(profile, unit=n, index=n, phase_s=0.0) for n in (1, 2)]
    main = SimMeter(profile, unit=3, index=3, phase_s=0.0, register_wh=0.0)
    main.feeds, main.loss_ratio = tuple(children), 0.04
    start = [child.register_wh(0.0) for child in children]
    for t in range(0, 601, 60):  # polled once a minute, as a bus would
        main.register_wh(float(t))
        for child in children:
            child.register_wh(float(t))
    used = sum(child.register_wh(600.0) - s for child, s in zip(children, start, strict=True))
    assert used > 0
    assert main.register_wh(600.0) == pytest.approx(1.04 * used, rel=1e-9)
    assert main.power_w(300.0) == pytest.approx(1.04 * sum(c.power_w(300.0) for c in children))
    children[0].write_coil(0, False, 600.0)  # a cut tenant draws nothing through the feeder
    assert main.power_w(601.0) == pytest.approx(1.04 * children[1].power_w(601.0))
