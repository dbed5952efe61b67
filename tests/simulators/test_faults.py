"""Fault specs: the compact text form, good and bad."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.toml.values import parse_duration_ms
from simulators.faults import FAULT_KINDS, Fault, FaultSpecError, parse_duration, parse_fault


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gw1/3:overload:power=45000,for=5s",
         Fault("overload", "gw1", 3, power_w=45_000.0, for_s=5.0)),
        ("gw1/3:overload:power=45kW,at=2s,for=1.5s",
         Fault("overload", "gw1", 3, at_s=2.0, for_s=1.5, power_w=45_000.0)),
        ("gw1/3:silent", Fault("silent", "gw1", 3)),
        ("gw1:down,for=10s", Fault("down", "gw1", None, for_s=10.0)),
        ("gw1:down:for=10s", Fault("down", "gw1", None, for_s=10.0)),
        ("gw1/3:slow:delay=800ms", Fault("slow", "gw1", 3, delay_s=0.8)),
        ("gw1/3:garbage:at=1m", Fault("garbage", "gw1", 3, at_s=60.0)),
        ("gw1/3:rollback:to=0", Fault("rollback", "gw1", 3, to_kwh=0.0)),
        ("gw1/3:rollback", Fault("rollback", "gw1", 3, to_kwh=0.0)),
        ("gw1/3:rollback:to=12.5", Fault("rollback", "gw1", 3, to_kwh=12.5)),
        ("gw1/3:tamper:for=1h", Fault("tamper", "gw1", 3, for_s=3600.0)),
        ("  north-2/247:silent  ", Fault("silent", "north-2", 247)),
    ],
)
def test_good_specs(spec: str, expected: Fault) -> None:
    assert parse_fault(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("gw1/3", "no fault kind"),
        ("gw1/3:explode", "unknown fault kind 'explode'"),
        ("gw1/3:overload", "overload needs power"),
        ("gw1/3:overload:power=lots", "power='lots' is not a power"),
        ("gw1/3:overload:power=-5", "is not a power"),
        ("gw1/3:slow:delay=800", r'delay: expected a duration .*, got "800": add a unit'),
        ("gw1/3:slow", "slow needs delay"),
        ("gw1/3:slow:delay=0ms", "delay='0ms' must be longer than 0"),
        ("gw1/3:silent:for=0s", "for='0s' must be longer than 0"),
        ("gw1/3:silent:for", "is not KEY=VALUE"),
        ("gw1/3:silent:for=1s,for=2s", "given twice"),
        ("gw1/3:silent:power=5", "silent does not take power"),
        ("gw1/3:rollback:for=5s", "rollback does not take for"),
        ("gw1/3:rollback:to=zero", "to='zero' is not a number"),
        ("gw1/3:down", "down is a gateway fault"),
        ("gw1:silent", "silent is a meter fault: the target needs a unit"),
        ("gw1/x:silent", "the unit must be a number 0..255"),
        ("gw1/300:silent", "the unit must be a number 0..255"),
        ("/3:silent", "expected GATEWAY/UNIT"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message) as caught:
        parse_fault(spec)
    assert str(caught.value).startswith(f"fault {spec!r}: ")


def test_durations() -> None:
    assert parse_duration("800ms") == pytest.approx(0.8)
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("2m") == 120.0
    assert parse_duration("1h") == 3600.0
    with pytest.raises(FaultSpecError, match="expected a duration"):
        parse_duration("soon")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("800ms", 0.8), ("5s", 5.0), ("1.5s", 1.5), (".5s", 0.5), ("5.s", 5.0), ("2 m", 120.0),
     (" 1h ", 3600.0), ("0.5ms", 0.0005), ("51ms", 0.051)],
)
def test_fault_durations_are_the_config_grammar(text: str, seconds: float) -> None:
    """One grammar (protocols.toml.values) for the park config, profiles, scenarios and specs;
    a spec keeps sub-millisecond precision, which the config (whole ms) refuses."""
    assert parse_fault(f"gw1/3:silent:for={text}").for_s == seconds
    if seconds * 1000 == int(seconds * 1000):
        assert parse_duration_ms(text) == round(seconds * 1000)


@pytest.mark.parametrize("text", ["5", "5 sec", "-1s", "1d", "1e3ms"])
def test_a_bad_fault_duration_has_the_config_words(text: str) -> None:
    with pytest.raises(ValueError) as config_error:
        parse_duration_ms(text)
    with pytest.raises(FaultSpecError) as spec_error:
        parse_fault(f"gw1/3:silent:for={text}")
    assert str(spec_error.value) == f"fault 'gw1/3:silent:for={text}': for: {config_error.value}"


faults = st.builds(
    Fault,
    kind=st.sampled_from([k for k in FAULT_KINDS if k != "down"]),
    gateway=st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True),
    unit=st.integers(0, 255),
    at_s=st.integers(0, 100_000).map(lambda ms: ms / 1000),
    for_s=st.none() | st.integers(1, 100_000).map(lambda ms: ms / 1000),
)


@given(faults)
def test_spec_round_trips(fault: Fault) -> None:
    # Fill in the parameters each kind needs, as parse_fault would.
    import attrs

    if fault.kind == "overload":
        fault = attrs.evolve(fault, power_w=45_000.0)
    if fault.kind == "slow":
        fault = attrs.evolve(fault, delay_s=0.25)
    if fault.kind == "rollback":
        fault = attrs.evolve(fault, for_s=None, to_kwh=3.0)
    if fault.kind == "garble":
        fault = attrs.evolve(fault, value_kwh=-3e38)
    if fault.kind == "swap":
        fault = attrs.evolve(fault, for_s=None, add_kwh=5000.0)
    assert parse_fault(fault.spec()) == fault
