"""Meter profiles (protocols/modbus/profiles.py): loading, read plans, decoding, errors.

Registers are built with ``ValueSpec.pack`` (or by hand, as a manual shows them) and decoded by
the compiled ``Profile.decode``; expectations go through ``struct`` on their own.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import struct
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.records import Reading
from protocols.modbus import profiles as profiles_module
from protocols.modbus.codec import encode_read, encode_registers_response
from protocols.modbus.profiles import (
    QUANTITIES,
    Profile,
    ProfileError,
    ReadBlock,
    ValueSpec,
    builtin_profiles,
    load_profile,
    load_profile_file,
    parse_profile,
    plan_reads,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "profiles.md"
TS = 1_795_000_000_000

float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)


def f32(value: float) -> float:
    """``value`` as a float32 register holds it."""
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


def registers(profile: Profile, values: Mapping[str, float]) -> list[bytes]:
    """One poll's reply payloads (in plan order) for a meter showing ``values``; 0 elsewhere."""
    blocks = []
    for block in profile.read_plan:
        image = bytearray(2 * block.count)
        for spec in profile.values:
            if spec.function == block.function and block.address <= spec.address < block.end:
                offset = 2 * (spec.address - block.address)
                image[offset : offset + 2 * spec.registers] = spec.pack(
                    values.get(spec.quantity, 0)
                )
        blocks.append(bytes(image))
    return blocks


def minimal(**values: object) -> dict[str, object]:
    """A parsed profile document with ``values`` (import_energy at 0x0048 unless given)."""
    mapped: dict[str, object] = {"import_energy": {"address": 0x0048, "unit": "kWh"}}
    mapped.update(values)
    return {"name": "test", "kind": "electricity", "values": mapped}


# --- the shipped profiles -------------------------------------------------------------------------

# CONTRACT.md section 5 and docs/profiles.md: (quantity, address, unit).
EASTRON = {
    "sdm630": [
        ("voltage", 0x0000, "V"),
        ("current", 0x0006, "A"),
        ("power", 0x000C, "W"),
        ("total_power", 0x0034, "W"),
        ("frequency", 0x0046, "Hz"),
        ("import_energy", 0x0048, "kWh"),
    ],
    "sdm120": [
        ("voltage", 0x0000, "V"),
        ("current", 0x0006, "A"),
        ("power", 0x000C, "W"),
        ("frequency", 0x0046, "Hz"),
        ("import_energy", 0x0048, "kWh"),
    ],
}


def test_the_shipped_profiles_load() -> None:
    shipped = builtin_profiles()
    assert set(shipped) >= {"sdm630", "sdm120", "water", "gas"}
    for name in ("sdm630", "sdm120", "water", "gas"):
        assert load_profile(name) is shipped[name]  # compiled once, shared
        assert shipped[name].name == name


def test_builtin_profiles_is_a_fresh_dict() -> None:
    builtin_profiles().clear()
    assert "sdm630" in builtin_profiles()


@pytest.mark.parametrize("name", sorted(EASTRON))
def test_eastron_profiles_follow_the_published_map(name: str) -> None:
    profile = load_profile(name)
    assert profile.kind == "electricity"
    assert [(s.quantity, s.address, s.unit) for s in profile.values] == EASTRON[name]
    for spec in profile.values:
        assert (spec.function, spec.data_type, spec.word_order, spec.scale) == (
            4,
            "float32",
            "big",
            1.0,
        )
    assert (profile.relay.function_read, profile.relay.function_write) == (1, 5)
    # One request per poll, within Eastron's 80 registers.
    assert profile.read_plan == (ReadBlock(4, 0x0000, 0x004A),)
    assert profile.max_registers == 80


def test_water_profile_map() -> None:
    water = load_profile("water")
    assert water.kind == "water"
    mapped = {s.quantity: (s.function, s.address, s.data_type, s.unit) for s in water.values}
    assert mapped == {
        "flow": (4, 0x0000, "float32", "m3/h"),
        "import_energy": (4, 0x0002, "float32", "m3"),
        "tamper": (4, 0x0004, "uint16", ""),
    }
    assert water.read_plan == (ReadBlock(4, 0, 5),)
    assert water.energy_factor == 1000.0  # m3 -> litres


def test_gas_profile_map() -> None:
    gas = load_profile("gas")
    assert gas.kind == "gas"
    mapped = {s.quantity: (s.function, s.address, s.data_type, s.scale, s.unit)
              for s in gas.values}
    assert mapped == {
        "import_energy": (4, 0x0000, "uint32", 0.001, "m3"),  # whole litres
        "flow": (4, 0x0002, "float32", 1.0, "m3/h"),
        "tamper": (4, 0x0004, "uint16", 1.0, ""),
    }
    assert gas.read_plan == (ReadBlock(4, 0, 5),)
    assert (gas.relay.function_read, gas.relay.function_write) == (1, 5)  # the valve
    # A G6 diaphragm meter: Qmax 10 m3/h; a 99999.999 m3 index.
    assert (gas.limits.max_rate, gas.limits.max_register) == (10_000.0, 99_999_999)
    reading = gas.decode([struct.pack(">IfH", 12_345_678, 2.5, 4)], TS)
    assert (reading.register_wh, reading.power_w, reading.tamper) == (12_345_678, 2500.0, True)


def test_unknown_profile_names_the_built_in_ones() -> None:
    with pytest.raises(ProfileError, match=r"unknown profile 'sdm999' \(built in: .*sdm630"):
        load_profile("sdm999")


def test_wire_cost_of_one_poll_as_documented() -> None:
    # docs/profiles.md "What one poll costs on the wire": Modbus TCP request + reply bytes.
    for name, tcp in (("sdm630", 12 + 157), ("sdm120", 12 + 157), ("water", 12 + 19),
                      ("gas", 12 + 19)):
        (block,) = load_profile(name).read_plan
        request = encode_read(1, 1, block.function, block.address, block.count)
        reply = encode_registers_response(1, 1, block.function, bytes(2 * block.count))
        assert len(request) + len(reply) == tcp
    # ... and with the default max_gap the SDM630 would take two requests: 14 + 22 registers.
    split = plan_reads(load_profile("sdm630").values, max_gap=20, max_registers=80)
    assert split == (ReadBlock(4, 0x0000, 14), ReadBlock(4, 0x0034, 22))


# --- read plans -----------------------------------------------------------------------------------


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[ValueSpec], int, int]:
    """Non-overlapping values on functions 3/4, and plan limits every value fits in."""
    max_registers = draw(st.integers(2, 125))
    max_gap = draw(st.integers(0, 40))
    specs = []
    for function in draw(st.sets(st.sampled_from([3, 4]), min_size=1)):
        address = draw(st.integers(0, 50))
        for index in range(draw(st.integers(1, 12))):
            data_type = draw(st.sampled_from(["float32", "uint16"]))
            specs.append(ValueSpec(f"q{function}_{index}", function, address, data_type))
            address = specs[-1].end + draw(st.integers(0, 60))
    return specs, max_gap, max_registers


def fewest_blocks(specs: list[ValueSpec], max_gap: int, max_registers: int) -> int:
    """By brute force: a block is a run of consecutive values; minimise the number of runs."""
    total = 0
    for function in {s.function for s in specs}:
        run = sorted((s for s in specs if s.function == function), key=lambda s: s.address)
        best = [0] + [math.inf] * len(run)  # best[j]: fewest blocks for the first j values
        for j in range(1, len(run) + 1):
            for i in range(j):
                gaps_ok = all(run[k + 1].address - run[k].end <= max_gap for k in range(i, j - 1))
                if gaps_ok and run[j - 1].end - run[i].address <= max_registers:
                    best[j] = min(best[j], best[i] + 1)
        total += int(best[-1])
    return total


@settings(max_examples=100)
@given(layout=layouts())
def test_read_plan_is_minimal_and_within_limits(layout: tuple[list[ValueSpec], int, int]) -> None:
    specs, max_gap, max_registers = layout
    plan = plan_reads(specs, max_gap=max_gap, max_registers=max_registers)
    assert len(plan) == fewest_blocks(specs, max_gap, max_registers)
    for block in plan:
        assert 1 <= block.count <= max_registers
        inside = [s for s in specs if s.function == block.function and block.address <= s.address]
        inside = [s for s in inside if s.end <= block.end]
        # A block starts at a value and ends at one: no register read for nothing at the edges.
        assert block.address == min(s.address for s in inside)
        assert block.end == max(s.end for s in inside)
    for spec in specs:  # every value in exactly one block, whole
        homes = [b for b in plan if b.function == spec.function and b.address <= spec.address]
        assert len([b for b in homes if spec.end <= b.end]) == 1
    assert [b.function for b in plan] == sorted(b.function for b in plan)


def test_max_gap_and_max_registers_split_blocks() -> None:
    specs = [ValueSpec("a", 4, 0), ValueSpec("b", 4, 10), ValueSpec("c", 4, 30)]
    # Gaps: 8 registers between a and b, 18 between b and c.
    assert plan_reads(specs, max_gap=7) == tuple(ReadBlock(4, a, 2) for a in (0, 10, 30))
    assert plan_reads(specs, max_gap=8) == (ReadBlock(4, 0, 12), ReadBlock(4, 30, 2))
    assert plan_reads(specs, max_gap=18) == (ReadBlock(4, 0, 32),)
    assert plan_reads(specs, max_gap=18, max_registers=20) == (
        ReadBlock(4, 0, 12),
        ReadBlock(4, 30, 2),
    )
    assert plan_reads(specs, max_gap=0) == tuple(ReadBlock(4, a, 2) for a in (0, 10, 30))


# --- decoding -------------------------------------------------------------------------------------


@settings(max_examples=100)
@given(
    voltage=float32s,
    current=float32s,
    l1_power=float32s,
    total_power=float32s,
    frequency=float32s,
    energy_kwh=float32s,
)
def test_sdm630_decode(
    voltage: float,
    current: float,
    l1_power: float,
    total_power: float,
    frequency: float,
    energy_kwh: float,
) -> None:
    sdm630 = load_profile("sdm630")
    shown = {
        "voltage": voltage,
        "current": current,
        "power": l1_power,
        "total_power": total_power,
        "frequency": frequency,
        "import_energy": energy_kwh,
    }
    reading = sdm630.decode(registers(sdm630, shown), TS)
    assert reading == Reading(
        TS, round(f32(energy_kwh) * 1000.0), f32(total_power), f32(voltage), f32(current), False
    )


@settings(max_examples=100)
@given(power=float32s, energy_kwh=st.floats(0, 1e6, width=32))
def test_sdm120_power_is_the_active_power(power: float, energy_kwh: float) -> None:
    sdm120 = load_profile("sdm120")
    shown = {"voltage": 230.0, "current": 1.5, "power": power, "import_energy": energy_kwh}
    reading = sdm120.decode(registers(sdm120, shown), TS)
    assert reading == Reading(TS, round(f32(energy_kwh) * 1000), f32(power), 230.0, 1.5, False)


@settings(max_examples=100)
@given(flow_m3h=float32s, volume_m3=float32s, status=st.integers(0, 0xFFFF))
def test_water_decode_in_litres(flow_m3h: float, volume_m3: float, status: int) -> None:
    water = load_profile("water")
    shown = {"flow": flow_m3h, "import_energy": volume_m3, "tamper": status}
    reading = water.decode(registers(water, shown), TS)
    assert reading == Reading(
        TS, round(f32(volume_m3) * 1000), f32(flow_m3h) * 1000, 0.0, 0.0, status != 0
    )


def test_known_sdm630_registers() -> None:
    # 1234.5678 kWh -> 1234568 Wh (docs/profiles.md); 230.5 V is 0x43668000.
    sdm630 = load_profile("sdm630")
    blocks = registers(
        sdm630, {"voltage": 230.5, "total_power": 3000.0, "import_energy": 1234.5678}
    )
    assert blocks[0][0:4] == bytes.fromhex("43668000")
    assert sdm630.decode(blocks, TS) == Reading(TS, 1234568, 3000.0, 230.5, 0.0, False)


@pytest.mark.parametrize(
    ("profile_name", "quantity"),
    [
        ("sdm630", "import_energy"),
        ("sdm630", "total_power"),
        ("sdm120", "import_energy"),
        ("sdm120", "power"),
        ("water", "import_energy"),
        ("water", "flow"),
    ],
)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_energy_or_power_is_refused(
    profile_name: str, quantity: str, bad: float
) -> None:
    profile = load_profile(profile_name)
    with pytest.raises(ValueError, match="not finite"):
        profile.decode(registers(profile, {quantity: bad}), TS)


def test_non_finite_values_not_charged_pass_through() -> None:
    # L1 power is not power_w on a three-phase meter; voltage/current are for display only.
    sdm630 = load_profile("sdm630")
    shown = {"power": math.nan, "voltage": math.nan, "current": math.inf, "import_energy": 1.0}
    reading = sdm630.decode(registers(sdm630, shown), TS)
    assert (reading.register_wh, reading.power_w, reading.current_a) == (1000, 0.0, math.inf)
    assert math.isnan(reading.voltage_v)


def test_decode_refuses_short_payloads() -> None:
    sdm630 = load_profile("sdm630")
    with pytest.raises(struct.error):
        sdm630.decode([bytes(2 * 0x48)], TS)


def test_decode_is_fast() -> None:
    # The module docstring says about 1 µs per sdm630 decode; guard a generous 50 µs.
    sdm630 = load_profile("sdm630")
    blocks = registers(sdm630, {"import_energy": 12.5, "total_power": 1.0})
    decode = sdm630.decode
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(2_000):
            decode(blocks, TS)
        best = min(best, (time.perf_counter() - start) / 2_000)
    assert best < 50e-6


INTEGER_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
}


@st.composite
def integer_registers(draw: st.DrawFn) -> tuple[str, int]:
    data_type = draw(st.sampled_from(sorted(INTEGER_RANGES)))
    return data_type, draw(st.integers(*INTEGER_RANGES[data_type]))


@settings(max_examples=100)
@given(
    typed_raw=integer_registers(),
    scale=st.sampled_from([1.0, 0.1, 0.01, 0.001, 0.5, 10.0]),
    word_order=st.sampled_from(["big", "little"]),
)
def test_value_spec_pack_is_what_decode_reads(
    typed_raw: tuple[str, int], scale: float, word_order: str
) -> None:
    data_type, raw = typed_raw
    spec = ValueSpec("import_energy", 3, 0, data_type, word_order, scale, "Wh")
    packed = spec.pack(raw * scale)
    code = ">" + profiles_module.DATA_TYPES[data_type]
    swapped = len(packed) == 4 and word_order == "little"
    packed_big = packed[2:] + packed[:2] if swapped else packed
    assert struct.unpack(code, packed_big)[0] == raw  # pack removes the scale exactly
    reading = Profile("p", "electricity", (spec,)).decode([packed], TS)
    assert reading.register_wh == round(raw * scale)


@settings(max_examples=100)
@given(value=float32s, word_order=st.sampled_from(["big", "little"]))
def test_value_spec_pack_float32(value: float, word_order: str) -> None:
    spec = ValueSpec("power", 4, 0, "float32", word_order, 1.0, "W")
    packed = spec.pack(value)
    big = packed if word_order == "big" else packed[2:] + packed[:2]
    assert big == struct.pack(">f", value)
    energy = ValueSpec("import_energy", 4, 2, "float32", word_order, 1.0, "kWh")
    profile = Profile("p", "electricity", (spec, energy))
    assert profile.decode([packed + energy.pack(1.0)], TS) == Reading(TS, 1000, f32(value))


# --- a custom profile -----------------------------------------------------------------------------

CUSTOM = """\
name = "custom"
kind = "electricity"

[read_plan]
max_gap = 4

[values.import_energy]   # holding registers, int32 low word first, 0.01 kWh
function = 3
address = 0x0100
type = "int32"
word_order = "little"
scale = 0.01
unit = "kWh"

[values.power]           # input register, int16, 0.5 W
function = 4
address = 0x0010
type = "int16"
scale = 0.5
unit = "W"

[values.voltage]         # holding register far from the energy: its own request
function = 3
address = 0x0000
type = "uint16"
scale = 0.1
unit = "V"
"""


def test_custom_profile_little_word_order_int32_scale_and_function_3(tmp_path: Path) -> None:
    path = tmp_path / "custom.toml"
    path.write_text(CUSTOM, encoding="utf-8")
    profile = load_profile_file(path)
    assert profile.read_plan == (
        ReadBlock(3, 0x0000, 1),
        ReadBlock(3, 0x0100, 2),
        ReadBlock(4, 0x0010, 1),
    )
    # 12345678 = 0x00BC614E: the low word 0x614E comes first on the wire.
    blocks = [bytes.fromhex("0901"), bytes.fromhex("614e00bc"), struct.pack(">h", -2000)]
    reading = profile.decode(blocks, TS)
    assert reading.register_wh == 123_456_780
    assert reading.power_w == -1000.0
    assert reading.voltage_v == pytest.approx(230.5)
    # A negative register (a reset meter) is decoded as such: charging raises the alarm.
    negative = struct.pack(">i", -5)
    assert profile.decode([blocks[0], negative[2:] + negative[:2], blocks[2]], TS).register_wh == (
        -50
    )


@settings(max_examples=100)
@given(energy_raw=st.integers(-(2**31), 2**31 - 1), power_raw=st.integers(-(2**15), 2**15 - 1))
def test_custom_profile_decodes_what_pack_encodes(energy_raw: int, power_raw: int) -> None:
    profile = parse_profile(tomllib.loads(CUSTOM))
    energy_kwh, power_w = energy_raw * 0.01, power_raw * 0.5
    reading = profile.decode(
        registers(profile, {"import_energy": energy_kwh, "power": power_w}), TS
    )
    assert reading.register_wh == round(energy_raw * 0.01 * 1000.0)
    assert reading.power_w == power_raw * 0.5


def test_wh_profile_and_flow_in_litres() -> None:
    wh = parse_profile(minimal(import_energy={"address": 0, "type": "uint32", "unit": "Wh"}))
    assert wh.decode([struct.pack(">I", 4_000_000_000)], TS).register_wh == 4_000_000_000
    gas = parse_profile(
        {
            "name": "gas",
            "kind": "gas",
            "values": {
                "import_energy": {"address": 0, "type": "uint32", "scale": 0.001, "unit": "m3"},
                "flow": {"address": 2, "type": "uint16", "unit": "L/h"},
            },
        }
    )
    reading = gas.decode([struct.pack(">IH", 12_345, 600)], TS)
    assert (reading.register_wh, reading.power_w) == (12_345, 600.0)


def test_profile_without_power_reports_zero() -> None:
    only_energy = parse_profile(minimal())
    assert only_energy.read_plan == (ReadBlock(4, 0x0048, 2),)
    assert only_energy.decode([struct.pack(">f", 2.0)], TS) == Reading(TS, 2000, 0.0)


# --- the documented walkthrough -------------------------------------------------------------------


def fenced_block(text: str, first_line: str) -> str:
    """The fenced code block of docs/profiles.md whose first line is ``first_line``."""
    match = re.search(r"```\w*\n(" + re.escape(first_line) + r"\n.*?)```", text, re.DOTALL)
    assert match is not None, f"docs/profiles.md has no code block starting {first_line!r}"
    return match.group(1)


def test_the_documented_walkthrough_runs_as_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = DOC.read_text(encoding="utf-8")
    toml_text = fenced_block(doc, "# acme-pm100.toml")
    script = fenced_block(doc, "# check_profile.py  (run: .venv/bin/python check_profile.py)")
    after_script = doc[doc.index(script) + len(script) :]
    expected = fenced_block(after_script, "ReadBlock(function=3, address=0, count=18)")
    (tmp_path / "acme-pm100.toml").write_text(toml_text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(script, "check_profile.py", "exec"), {"__name__": "__main__"})
    assert output.getvalue() == expected


@contextlib.contextmanager
def profiles_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in for protocols/modbus/profiles/ that ``load_profile`` reads instead."""
    package = f"wk_profiles_{tmp_path.name.replace('-', '_')}"
    folder = tmp_path / package / "profiles"
    folder.mkdir(parents=True)
    (tmp_path / package / "__init__.py").write_text("", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(profiles_module, "PROFILES_PACKAGE", package)
    profiles_module._builtin_profiles.cache_clear()
    try:
        yield folder
    finally:
        monkeypatch.undo()
        sys.modules.pop(package, None)
        profiles_module._builtin_profiles.cache_clear()


def test_a_file_dropped_in_the_profiles_folder_is_known_by_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = DOC.read_text(encoding="utf-8")
    with profiles_folder(tmp_path, monkeypatch) as folder:
        (folder / "whatever-file-name.toml").write_text(
            fenced_block(doc, "# acme-pm100.toml"), encoding="utf-8"
        )
        (folder / "notes.txt").write_text("not a profile", encoding="utf-8")
        assert set(builtin_profiles()) == {"acme-pm100"}
        assert load_profile("acme-pm100").read_plan[1] == ReadBlock(3, 0x0100, 2)
    assert load_profile("sdm630").name == "sdm630"  # the real folder again


def test_two_files_with_one_name_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with profiles_folder(tmp_path, monkeypatch) as folder:
        text = 'name = "m"\nkind = "water"\n[values.import_energy]\naddress = 0\nunit = "m3"\n'
        (folder / "a.toml").write_text(text, encoding="utf-8")
        (folder / "b.toml").write_text(text, encoding="utf-8")
        with pytest.raises(ProfileError, match=r"profiles/b.toml: name 'm' .* profiles/a.toml"):
            load_profile("m")


def test_a_broken_file_in_the_profiles_folder_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with profiles_folder(tmp_path, monkeypatch) as folder:
        (folder / "broken.toml").write_text("name = \n", encoding="utf-8")
        with pytest.raises(ProfileError, match=r"profiles/broken.toml: not valid TOML"):
            load_profile("sdm630")


# --- errors ---------------------------------------------------------------------------------------

IE = {"address": 0x0048, "unit": "kWh"}

# case -> (document, the key the message must name, more text it must contain)
BAD_PROFILES: dict[str, tuple[dict[str, object], str, str]] = {
    "bad type": (
        minimal(voltage={"address": 0, "type": "float64"}),
        "values.voltage.type",
        "must be one of float32",
    ),
    "missing import_energy": (
        {"name": "t", "kind": "electricity", "values": {"voltage": {"address": 0}}},
        "values.import_energy",
        "is required",
    ),
    "no values at all": ({"name": "t", "kind": "electricity"}, "values.import_energy", "required"),
    "overlapping values": (
        minimal(voltage={"address": 0}, current={"address": 1}),
        "values.current",
        "overlaps values.voltage",
    ),
    "overlapping across a max_registers split": (
        {
            **minimal(voltage={"address": 0}, current={"address": 1}),
            "read_plan": {"max_registers": 2},
        },
        "values.current",
        "overlaps values.voltage",
    ),
    "unknown key in a value": (
        minimal(voltage={"address": 0, "scael": 0.1}),
        "values.voltage.scael",
        'unknown key (did you mean "scale"?)',
    ),
    "unknown top-level key": ({**minimal(), "descripton": "x"}, "test.toml:", "descripton"),
    "unknown read_plan key": (
        {**minimal(), "read_plan": {"max_gaps": 64}},
        "read_plan.max_gaps",
        'unknown key (did you mean "max_gap"?)',
    ),
    "unknown relay key": (
        {**minimal(), "relay": {"coil": 3}},
        "relay.coil",
        "unknown key",
    ),
    "unknown quantity": (minimal(energy={"address": 0}), "values.energy", "unknown quantity"),
    "value not a table": (minimal(voltage=3), "values.voltage", "expected a table"),
    "values not a table": ({**minimal(), "values": [1]}, "values", "expected a table"),
    "read_plan not a table": ({**minimal(), "read_plan": 5}, "read_plan", "expected a table"),
    "function 5": (minimal(voltage={"address": 0, "function": 5}), "values.voltage.function", "3"),
    "function as a string": (
        minimal(voltage={"address": 0, "function": "4"}),
        "values.voltage.function",
        "expected an integer",
    ),
    "boolean function": (
        minimal(voltage={"address": 0, "function": True}),
        "values.voltage.function",
        "expected an integer",
    ),
    "missing address": (
        minimal(voltage={"unit": "V"}),
        "values.voltage",
        'missing required key "address"',
    ),
    "address as a string": (
        minimal(voltage={"address": "0x0000"}),
        "values.voltage.address",
        "expected an integer",
    ),
    "negative address": (minimal(voltage={"address": -1}), "values.voltage.address", "-1"),
    "32-bit value past the last register": (
        minimal(voltage={"address": 0xFFFF}),
        "values.voltage.address",
        "65535",
    ),
    "bad word order": (
        minimal(voltage={"address": 0, "word_order": "middle"}),
        "values.voltage.word_order",
        "big or little",
    ),
    "zero scale": (minimal(voltage={"address": 0, "scale": 0}), "values.voltage.scale", "non-zero"),
    "scale as a string": (
        minimal(voltage={"address": 0, "scale": "0.1"}),
        "values.voltage.scale",
        "expected a number",
    ),
    "infinite scale": (
        minimal(voltage={"address": 0, "scale": math.inf}),
        "values.voltage.scale",
        "finite",
    ),
    "missing name": (
        {"kind": "electricity", "values": {"import_energy": IE}},
        "name",
        'missing required key "name"',
    ),
    "name not a string": ({**minimal(), "name": 7}, "name", "expected a string, got an integer 7"),
    "bad kind": ({**minimal(), "kind": "steam"}, "kind", "electricity, water, gas"),
    "energy unit for the kind": (
        minimal(import_energy={"address": 0, "unit": "m3"}),
        "values.import_energy.unit",
        "kWh or Wh",
    ),
    "water energy in kWh": (
        {"name": "w", "kind": "water", "values": {"import_energy": IE}},
        "values.import_energy.unit",
        "m3",
    ),
    "missing energy unit": (
        minimal(import_energy={"address": 0}),
        "values.import_energy.unit",
        'got ""',
    ),
    "bad flow unit": (
        {
            "name": "w",
            "kind": "water",
            "values": {
                "import_energy": {"address": 0, "unit": "m3"},
                "flow": {"address": 2, "unit": "gal/min"},
            },
        },
        "values.flow.unit",
        "m3/h, L/h",
    ),
    "relay read with function 3": ({**minimal(), "relay": {"function_read": 3}}, "relay", "1 or 2"),
    "relay write with function 15": ({**minimal(), "relay": {"function_write": 15}}, "relay", "5"),
    "max_registers 126": (
        {**minimal(), "read_plan": {"max_registers": 126}},
        "read_plan.max_registers",
        "1..125",
    ),
    "max_registers 0": (
        {**minimal(), "read_plan": {"max_registers": 0}},
        "read_plan.max_registers",
        "1..125",
    ),
    "negative max_gap": ({**minimal(), "read_plan": {"max_gap": -1}}, "read_plan.max_gap", ">= 0"),
    "max_gap as a float": (
        {**minimal(), "read_plan": {"max_gap": 2.5}},
        "read_plan.max_gap",
        "expected an integer",
    ),
    "value larger than max_registers": (
        {**minimal(), "read_plan": {"max_registers": 1}},
        "values.import_energy",
        "max_registers",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_profile_errors_name_the_file_and_the_key(case: str) -> None:
    document, key, detail = BAD_PROFILES[case]
    with pytest.raises(ProfileError) as caught:
        parse_profile(document, source="meters/test.toml")
    message = str(caught.value)
    assert message.startswith("meters/test.toml: "), message
    assert key in message, message
    assert detail in message, message


def test_profile_file_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ProfileError, match=rf"^{re.escape(str(missing))}: cannot read profile"):
        load_profile_file(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\nkind = \n', encoding="utf-8")
    with pytest.raises(ProfileError, match=rf"^{re.escape(str(broken))}: not valid TOML"):
        load_profile_file(broken)
    typo = tmp_path / "typo.toml"
    typo.write_text(CUSTOM.replace("scale = 0.5", "scael = 0.5"), encoding="utf-8")
    with pytest.raises(ProfileError, match=rf"^{re.escape(str(typo))}:19: values.power.scael: "):
        load_profile_file(typo)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ProfileError, match=rf"^{re.escape(str(binary))}: not UTF-8 text"):
        load_profile_file(binary)


def test_a_profile_file_names_every_problem_with_its_line_and_suggests_the_key(
    tmp_path: Path,
) -> None:
    """The park config's toolkit (protocols.toml): file:line: key: message, all at once."""
    text = (
        CUSTOM.replace("max_gap = 4", "max_gaps = 4")
        .replace("scale = 0.5", "scael = 0.5")
        .replace('type = "uint16"', "type = 16")
    )
    path = tmp_path / "typo.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as caught:
        load_profile_file(path)
    assert str(caught.value).splitlines() == [
        f'{path}:5: read_plan.max_gaps: unknown key (did you mean "max_gap"?)',
        f'{path}:19: values.power.scael: unknown key (did you mean "scale"?)',
        f"{path}:25: values.voltage.type: expected a string, got an integer 16",
    ]
    assert [problem.line for problem in caught.value.problems] == [5, 19, 25]


def test_a_rule_a_profile_breaks_is_on_its_line(tmp_path: Path) -> None:
    path = tmp_path / "flt64.toml"
    path.write_text(CUSTOM.replace('type = "int16"', 'type = "int61"'), encoding="utf-8")
    with pytest.raises(ProfileError) as caught:
        load_profile_file(path)
    assert str(caught.value) == (
        f"{path}:18: values.power.type: must be one of float32, uint32, int32, uint16, int16; "
        'got "int61" (did you mean "int16"?)'
    )


def test_a_profile_built_in_code_names_itself_and_the_key() -> None:
    with pytest.raises(ProfileError) as caught:
        Profile("mine", "electricity", (ValueSpec("import_energy", 4, 0, unit="kW"),))
    assert str(caught.value) == (
        'mine: values.import_energy.unit: must be kWh or Wh for electricity, got "kW"'
    )


def test_quantities_are_the_documented_ones() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for quantity in QUANTITIES:
        assert f"| `{quantity}` |" in doc
