"""Meter profiles: register maps as data (TOML), compiled once into a read plan and a decoder.

Theory of operation
-------------------
A profile says, per *quantity* the server cares about (voltage, current, power, total_power,
frequency, import_energy, flow, tamper), which Modbus function reads it, at which 0-based
register address, as which data type (float32, uint32, int32, uint16, int16), in which word
order (for 32-bit values: "big" = high word first, as Eastron does; "little" = low word first)
and with which scale (raw value x scale = value in the quantity's unit). Adding a meter model
is writing a TOML file, not code (docs/profiles.md).

Loading a profile compiles two things, so that polling costs as little as possible:

* ``read_plan`` — the fewest contiguous blocks (one Modbus read each) covering every value:
  values of one function sorted by address, merged while the gap between them is at most
  ``max_gap`` registers and the block stays within ``max_registers`` (125 is the Modbus limit;
  many meters accept fewer). Reading a few unused registers costs a few bytes; another request
  costs a round trip on a slow RS-485 bus and a whole request's CPU on both sides, so the
  Eastron profiles allow gaps up to 64 and poll in ONE request (0x0000..0x0049).
* ``decode(blocks, ts_ms, mono_ms=-1) -> Reading`` — the conversion at the edge. For each block one
  precompiled ``struct.Struct`` (pad bytes over the gaps) unpacks every value in one C call;
  a small function generated from the profile (as attrs generates ``__init__``) picks the
  values, applies the scales and builds the :class:`~policies.records.Reading`. Measured about
  1 µs per decode of an sdm630 block on the 2-core target (``tests/modbus/test_profiles.py``
  guards a generous upper bound).

Units at the edge: ``Reading.register_wh`` is an integer (charging is exact) =
``round(import_energy x scale x k)`` with k = 1000 for "kWh", 1 for "Wh", and 1000 for "m3":
for water and gas the "Wh" register holds **litres** (1 m3 = 1000 L), and ``power_w`` holds the
flow in litres per hour (the register's unit per hour, as W is Wh per hour), so the same
charging, tariff and overload rules apply unchanged. ``power_w`` comes from "total_power"
when the profile has it (three-phase meters), else "power", else "flow" (x 1000 for m3/h),
else 0.0. A register that is NaN or infinite makes ``decode`` raise ``ValueError`` (the bus
counts it as garbage), never a bogus reading.

The relay (or valve) is a coil: ``relay`` says which functions read and write it; its address
comes from each meter's ``relay_coil`` in the park config, not from the profile.

Limits: ``[limits]`` says what the meter can physically do, for the plausibility checks that
every reading passes before it is charged (``policies.plausibility``): ``max_power_w`` (for
water and gas ``max_flow`` in m3/h), the most it can deliver, and ``max_import``, the largest
value its register shows (in ``import_energy``'s unit). Left out, they default to
``DEFAULT_LIMITS`` for the profile's kind: loose bounds that still refuse the absurd.

Errors: a file is read with the park config's toolkit (``protocols.toml``), so a
:class:`ProfileError` lists every type and key mistake at once, each ``file:line: key: message``
with a "did you mean" for a misspelt key. The rules between values (``_rules_broken``: a shared
register, a unit that does not fit the kind) are the record's own, checked on every
``Profile`` however it is made, and located in the file once its types are right.
"""

from __future__ import annotations

import functools
import math
import struct
import tomllib
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

import attrs

from policies.records import Reading
from protocols.modbus.codec import MAX_READ_REGISTERS
from protocols.toml.limits import TomlNestingError, parse_toml
from protocols.toml.problems import DocumentError, Problem, Problems
from protocols.toml.toolkit import Table
from protocols.toml.values import KeyPath, format_path, show, suggest

__all__ = [
    "DATA_TYPES",
    "DEFAULT_LIMITS",
    "KINDS",
    "QUANTITIES",
    "CoilSpec",
    "Decoder",
    "Limits",
    "Profile",
    "ProfileError",
    "ReadBlock",
    "ValueSpec",
    "builtin_profiles",
    "load_profile",
    "load_profile_file",
    "parse_profile",
]

KINDS: Final = ("electricity", "water", "gas")

QUANTITIES: Final = (
    "voltage",
    "current",
    "power",
    "total_power",
    "frequency",
    "import_energy",
    "flow",
    "tamper",
)
"""Quantities a profile may map; only ``import_energy`` is required."""

DATA_TYPES: Final = {"float32": "f", "uint32": "I", "int32": "i", "uint16": "H", "int16": "h"}
"""Data type -> struct code (big-endian); 32-bit types take two registers."""

WORD_ORDERS: Final = ("big", "little")

ENERGY_UNITS: Final = {"kWh": 1000.0, "Wh": 1.0, "m3": 1000.0}
"""import_energy unit -> factor to the integer register unit (Wh, or litres for m3)."""

FLOW_UNITS: Final = {"m3/h": 1000.0, "L/h": 1.0}
"""flow unit -> factor to litres per hour (what ``Reading.power_w`` holds for water/gas)."""

DEFAULT_LIMITS: Final = {
    # kind: (max rate in register units per hour, max register in the import unit)
    "electricity": (1_000_000.0, 99_999_999.0),  # 1 MW; an 8-digit kWh register
    "water": (100_000.0, 99_999_999.0),  # 100 m3/h in L/h; an 8-digit m3 register
    "gas": (100_000.0, 99_999_999.0),
}
DEFAULT_MAX_GAP: Final = 20
PROFILES_PACKAGE: Final = "protocols.modbus"
PROFILES_DIR: Final = "profiles"

Decoder = Callable[..., Reading]
"""``decode(blocks, ts_ms, mono_ms=-1)``: the wall label and the control-clock time."""


class ProfileError(DocumentError):
    """A profile that cannot be used: every problem, one per line, naming the file, the line
    (when read from one) and the key, as a park config's errors do."""


# --- records --------------------------------------------------------------------------------


@attrs.frozen
class ValueSpec:
    """Where one quantity lives: ``function``/``address`` (0-based), how it is encoded."""

    quantity: str
    function: int
    address: int
    data_type: str = "float32"
    word_order: str = "big"
    scale: float = 1.0
    unit: str = ""

    @property
    def registers(self) -> int:
        """How many 16-bit registers the value occupies."""
        return 2 if self.data_type.endswith("32") else 1

    @property
    def end(self) -> int:
        """The first register after the value."""
        return self.address + self.registers

    def pack(self, value: float) -> bytes:
        """The registers (big-endian bytes) a meter shows for ``value`` (the inverse of decode).

        Integer types are rounded after removing the scale; used by the simulator and tests.
        """
        code = DATA_TYPES[self.data_type]
        raw = value / self.scale if self.scale != 1.0 else value
        data = struct.pack(">" + code, raw if code == "f" else round(raw))
        if self.word_order == "little" and len(data) == 4:
            return data[2:] + data[:2]
        return data


@attrs.frozen
class CoilSpec:
    """How the relay (valve) coil is read and written; the address is per meter (config)."""

    function_read: int = 1
    function_write: int = 5


@attrs.frozen
class Limits:
    """What the meter can physically do (see the module docstring), in register units:
    ``max_rate`` per hour (W, or L/h for water and gas), ``max_register`` (Wh or L)."""

    max_rate: float
    max_register: int


@attrs.frozen
class ReadBlock:
    """One Modbus read of a poll: ``count`` registers from ``address`` with ``function``."""

    function: int
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count


def _not_compiled(blocks: Sequence[bytes], ts_ms: int) -> Reading:  # pragma: no cover
    raise AssertionError("Profile.decode is compiled in __attrs_post_init__")


@attrs.frozen
class Profile:
    """A meter model's register map; ``read_plan`` and ``decode`` are compiled on creation.

    ``decode`` is a plain function stored on the record (not a method) so a poller calling
    ``profile.decode(blocks, ts_ms)`` pays no extra call layer.
    """

    name: str
    kind: str
    values: tuple[ValueSpec, ...]
    relay: CoilSpec = CoilSpec()
    description: str = ""
    max_gap: int = DEFAULT_MAX_GAP
    max_registers: int = MAX_READ_REGISTERS
    max_rate: float | None = None
    """``[limits]`` max_power_w (or max_flow x 1000); None = the kind's default."""
    max_import: float | None = None
    """``[limits]`` max_import in the import unit; None = the kind's default."""
    read_plan: tuple[ReadBlock, ...] = attrs.field(init=False)
    decode: Decoder = attrs.field(init=False, eq=False, repr=False, default=_not_compiled)
    decode_source: str = attrs.field(init=False, eq=False, repr=False, default="")

    def __attrs_post_init__(self) -> None:
        _validate(self)
        plan = plan_reads(self.values, max_gap=self.max_gap, max_registers=self.max_registers)
        decode, source = _compile_decoder(self, plan)
        # Frozen record, computed fields: set once here, like attrs does for its own init.
        object.__setattr__(self, "read_plan", plan)
        object.__setattr__(self, "decode", decode)
        object.__setattr__(self, "decode_source", source)

    def value(self, quantity: str) -> ValueSpec | None:
        for spec in self.values:
            if spec.quantity == quantity:
                return spec
        return None

    @property
    def limits(self) -> Limits:
        rate, top = DEFAULT_LIMITS[self.kind]
        rate = rate if self.max_rate is None else self.max_rate
        top = top if self.max_import is None else self.max_import
        return Limits(rate, round(top * self.energy_factor))

    @property
    def energy_factor(self) -> float:
        """import_energy (in its unit) x this = ``register_wh`` (Wh, or litres)."""
        spec = self.value("import_energy")
        assert spec is not None  # _validate guarantees it
        return ENERGY_UNITS[spec.unit]


# --- the read plan ----------------------------------------------------------------------------


def plan_reads(
    values: Sequence[ValueSpec],
    *,
    max_gap: int = DEFAULT_MAX_GAP,
    max_registers: int = MAX_READ_REGISTERS,
) -> tuple[ReadBlock, ...]:
    """The fewest contiguous blocks covering ``values`` (see the module docstring)."""
    blocks: list[ReadBlock] = []
    for function in sorted({spec.function for spec in values}):
        specs = sorted((s for s in values if s.function == function), key=lambda s: s.address)
        start, end = specs[0].address, specs[0].end
        for spec in specs[1:]:
            new_end = max(end, spec.end)
            if spec.address - end <= max_gap and new_end - start <= max_registers:
                end = new_end
                continue
            blocks.append(ReadBlock(function, start, end - start))
            start, end = spec.address, spec.end
        blocks.append(ReadBlock(function, start, end - start))
    return tuple(blocks)


# --- the decoder ------------------------------------------------------------------------------


def _swapped_words(code: str) -> Callable[[bytes], float | int]:
    """A converter for a low-word-first 32-bit value unpacked as 4 raw bytes."""
    unpack = struct.Struct(">" + code).unpack

    def convert(raw: bytes) -> float | int:
        value: float | int = unpack(raw[2:] + raw[:2])[0]
        return value

    return convert


def _compile_decoder(profile: Profile, plan: tuple[ReadBlock, ...]) -> tuple[Decoder, str]:
    """One ``struct.Struct`` per block and a generated function (module docstring)."""
    namespace: dict[str, Any] = {"Reading": Reading, "isfinite": math.isfinite}
    expressions: dict[str, str] = {}
    lines = ["def decode(blocks, ts_ms, mono_ms=-1):"]
    flat_index = 0
    unpack_terms = []
    for block_number, block in enumerate(plan):
        specs = sorted(
            (
                s
                for s in profile.values
                if s.function == block.function and block.address <= s.address < block.end
            ),
            key=lambda s: s.address,
        )
        fmt = [">"]
        cursor = block.address
        previous = ""
        for spec in specs:
            if spec.address < cursor:  # two values claim the same register: a typo in the map
                raise _InvalidProfile(profile.name, [(
                    ("values", spec.quantity),
                    f"address {spec.address} overlaps values.{previous}",
                )])
            if spec.address > cursor:
                fmt.append(f"{2 * (spec.address - cursor)}x")
            code = DATA_TYPES[spec.data_type]
            term = f"v[{flat_index}]"
            if spec.word_order == "little" and spec.registers == 2:
                fmt.append("4s")
                namespace[f"swap{flat_index}"] = _swapped_words(code)
                term = f"swap{flat_index}({term})"
            else:
                fmt.append(code)
            expressions[spec.quantity] = _scaled(spec, term)
            cursor = spec.end
            previous = spec.quantity
            flat_index += 1
        namespace[f"unpack{block_number}"] = struct.Struct("".join(fmt)).unpack_from
        unpack_terms.append(f"unpack{block_number}(blocks[{block_number}])")
    lines.append(f"    v = {' + '.join(unpack_terms)}")
    energy = expressions["import_energy"]
    lines.append(f"    e = {energy} * {profile.energy_factor!r}")
    rate = "0.0"
    if "total_power" in expressions:
        rate = expressions["total_power"]
    elif "power" in expressions:
        rate = expressions["power"]
    elif "flow" in expressions:
        flow = profile.value("flow")
        assert flow is not None
        rate = f"{expressions['flow']} * {FLOW_UNITS[flow.unit]!r}"
    voltage = expressions.get("voltage", "0.0")
    current = expressions.get("current", "0.0")
    tamper = f"{expressions['tamper']} != 0" if "tamper" in expressions else "False"
    lines.append(f"    p = {rate}")
    # NaN or inf in the charged register or the power is a bad register, never a reading:
    # e + p is non-finite if either is (one C call for both). round(inf) would raise
    # OverflowError, and the bus expects ValueError for undecodable registers.
    lines.append("    if not isfinite(e + p):")
    lines.append("        raise ValueError(f'register values not finite: energy {e}, power {p}')")
    lines.append(
        f"    return Reading(ts_ms, round(e), p, {voltage}, {current}, {tamper}, mono_ms)")
    source = "\n".join(lines) + "\n"
    exec(compile(source, f"<profile {profile.name} decode>", "exec"), namespace)
    decode: Decoder = namespace["decode"]
    return decode, source


def _scaled(spec: ValueSpec, term: str) -> str:
    if spec.quantity == "tamper":
        return term
    if spec.scale == 1.0 and spec.data_type == "float32":
        return term  # already a float: skip a multiplication on the hot path
    return f"({term} * {float(spec.scale)!r})"


# --- validation and loading -----------------------------------------------------------------


class _InvalidProfile(ProfileError):
    """A :class:`Profile` record that breaks a rule. The key paths are kept (``found``) so that
    a file's loader can put each problem on its line; built in code, the profile's name stands
    for the file."""

    def __init__(self, name: str, found: Sequence[tuple[KeyPath, str]]) -> None:
        self.found = tuple(found)
        super().__init__(
            [Problem(name, None, format_path(path), message) for path, message in self.found]
        )


def _validate(profile: Profile) -> None:
    found = _rules_broken(profile)
    if found:
        raise _InvalidProfile(profile.name, found)


def _rules_broken(profile: Profile) -> list[tuple[KeyPath, str]]:
    """What is wrong with ``profile``, each at the key path of its file (docs/profiles.md)."""
    found: list[tuple[KeyPath, str]] = []
    if profile.kind not in KINDS:
        found.append((("kind",), f"must be one of {', '.join(KINDS)}; got "
                                 f"{show(profile.kind)}{suggest(profile.kind, KINDS)}"))
    plan_ok = 1 <= profile.max_registers <= MAX_READ_REGISTERS
    if not plan_ok:
        found.append((("read_plan", "max_registers"),
                      f"must be 1..{MAX_READ_REGISTERS}, got {profile.max_registers}"))
    if profile.max_gap < 0:
        found.append((("read_plan", "max_gap"), f"must be >= 0, got {profile.max_gap}"))
    seen: set[str] = set()
    for spec in profile.values:
        at: KeyPath = ("values", spec.quantity)
        if spec.quantity not in QUANTITIES:
            found.append((at, f"unknown quantity{suggest(spec.quantity, QUANTITIES)} "
                              f"(known: {', '.join(QUANTITIES)})"))
            continue
        if spec.quantity in seen:
            found.append((at, "mapped twice"))
            continue
        seen.add(spec.quantity)
        if spec.function not in (3, 4):
            found.append(((*at, "function"),
                          f"must be 3 (holding) or 4 (input), got {spec.function}"))
        last = 0xFFFF - spec.registers + 1
        if not 0 <= spec.address <= last:
            found.append(((*at, "address"), f"{spec.address} is not a register address "
                                             f"(0..{last} for {spec.registers} registers)"))
        if spec.data_type not in DATA_TYPES:
            found.append(((*at, "type"), f"must be one of {', '.join(DATA_TYPES)}; got "
                                         f"{show(spec.data_type)}"
                                         f"{suggest(spec.data_type, DATA_TYPES)}"))
        if spec.word_order not in WORD_ORDERS:
            found.append(((*at, "word_order"), f"must be big or little, got "
                                               f"{show(spec.word_order)}"))
        if not (math.isfinite(spec.scale) and spec.scale != 0.0):
            found.append(((*at, "scale"), f"must be a finite non-zero number, got {spec.scale}"))
        if plan_ok and spec.registers > profile.max_registers:
            found.append((at, f"does not fit in max_registers ({spec.registers} registers, "
                              f"max_registers = {profile.max_registers})"))
    energy = profile.value("import_energy")
    if energy is None:
        found.append((("values", "import_energy"), "is required (the register charged)"))
    elif profile.kind in KINDS:
        allowed = ("kWh", "Wh") if profile.kind == "electricity" else ("m3",)
        if energy.unit not in allowed:
            found.append((("values", "import_energy", "unit"),
                          f"must be {' or '.join(allowed)} for {profile.kind}, got "
                          f"{show(energy.unit)}"))
    flow = profile.value("flow")
    if flow is not None and flow.unit not in FLOW_UNITS:
        found.append((("values", "flow", "unit"),
                      f"must be one of {', '.join(FLOW_UNITS)}, got {show(flow.unit)}"))
    if profile.relay.function_read not in (1, 2):
        found.append((("relay", "function_read"), "must be 1 or 2 (read coils or discrete "
                                                  f"inputs), got {profile.relay.function_read}"))
    if profile.relay.function_write != 5:
        found.append((("relay", "function_write"), "must be 5 (write single coil), got "
                                                   f"{profile.relay.function_write}"))
    rate_key = "max_power_w" if profile.kind == "electricity" else "max_flow"
    for key, value in ((rate_key, profile.max_rate), ("max_import", profile.max_import)):
        if value is not None and not (math.isfinite(value) and 0 < value <= 1e12):
            found.append((("limits", key), "must be a positive number up to 1e12"))
    return found


_LIMIT_KEYS: Final = {
    "electricity": ("max_power_w", "max_import"),
    "water": ("max_flow", "max_import"),
    "gas": ("max_flow", "max_import"),
}


def parse_profile(
    data: Mapping[str, Any], *, source: str = "<profile>", text: str | None = None
) -> Profile:
    """A :class:`Profile` from a parsed TOML document. Every problem is reported at once in a
    :class:`ProfileError`, each naming ``source``, the key path and (given the ``text`` the
    document was parsed from) the line; an unknown key gets a "did you mean"."""
    problems = Problems()
    root = Table(problems, (), data)
    name = root.string("name")
    kind = root.string("kind")
    description = root.string("description", "")
    plan = root.table("read_plan")
    max_gap = plan.integer("max_gap", DEFAULT_MAX_GAP)
    max_registers = plan.integer("max_registers", MAX_READ_REGISTERS)
    relay = root.table("relay")
    coil = CoilSpec(relay.integer("function_read", 1), relay.integer("function_write", 5))
    limits = root.table("limits")
    max_rate, max_import = _read_limits(limits, kind)
    mapped = root.table("values")
    values = []
    for quantity in mapped.data:
        table = mapped.table(quantity)
        if quantity not in mapped.failed:  # not a table: said so, nothing in it to read
            values.append(_read_value(table, quantity))
    for table in (plan, relay, limits, root):
        table.finish()
    if not problems.items:
        try:
            return Profile(
                name=name,
                kind=kind,
                values=tuple(values),
                relay=coil,
                description=description,
                max_gap=max_gap,
                max_registers=max_registers,
                max_rate=max_rate,
                max_import=max_import,
            )
        except _InvalidProfile as error:
            for path, message in error.found:
                problems.add(path, message)
    raise ProfileError(problems.located(text, source))


def _read_value(t: Table, quantity: str) -> ValueSpec:
    spec = ValueSpec(
        quantity=quantity,
        function=t.integer("function", 4),
        address=t.integer("address"),
        data_type=t.string("type", "float32"),
        word_order=t.string("word_order", "big"),
        scale=t.number("scale", 1.0, low=-math.inf),  # the sign and zero: _rules_broken
        unit=t.string("unit", ""),
    )
    t.finish()
    return spec


def _read_limits(t: Table, kind: str) -> tuple[float | None, float | None]:
    """``[limits]``: (max_rate in W or L/h, max_import), None where left out."""
    if kind not in _LIMIT_KEYS:  # a wrong kind is its own problem; its limits cannot be judged
        t.asked.update(t.data)
        return None, None
    rate_key, import_key = _LIMIT_KEYS[kind]
    max_rate = max_import = None
    if t.has(rate_key):
        max_rate = t.number(rate_key, low=-math.inf)
        if rate_key == "max_flow":  # m3/h -> L/h, the unit power_w carries for water and gas
            max_rate *= 1000.0
    if t.has(import_key):
        max_import = t.number(import_key, low=-math.inf)
    return max_rate, max_import


MAX_PROFILE_FILE_BYTES: Final = 1 << 20
"""The largest profile file read (1 MiB; a register map is a few hundred bytes)."""


def load_profile_file(path: Path | str) -> Profile:
    """A user profile from a TOML file (at most ``MAX_PROFILE_FILE_BYTES``, nested at most
    ``protocols.toml.limits.MAX_NESTING`` deep); problems name the file, the line and the key."""
    path = Path(path)

    def refused(message: str, line: int | None = None) -> ProfileError:
        return ProfileError([Problem(str(path), line, "", message)])

    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_FILE_BYTES:
            raise refused(
                f"the file is {size:,} bytes, more than the "
                f"{MAX_PROFILE_FILE_BYTES:,} a profile may have (is it a profile?)"
            )
        text = path.read_text(encoding="utf-8")
        data = parse_toml(text)
    except OSError as error:
        raise refused(f"cannot read profile: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise refused(f"not UTF-8 text (byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise refused(f"not valid TOML: {error}") from None
    except TomlNestingError as error:
        raise refused(str(error), error.line) from None
    return parse_profile(data, source=str(path), text=text)


def builtin_profiles() -> dict[str, Profile]:
    """Every profile shipped in the package, by name (a fresh dict; profiles are shared)."""
    return dict(_builtin_profiles())


@functools.cache
def _builtin_profiles() -> dict[str, Profile]:
    # Compiled once per process: profiles are immutable values.
    folder = resources.files(PROFILES_PACKAGE).joinpath(PROFILES_DIR)
    found: dict[str, Profile] = {}
    files: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".toml"):
            source = f"{PROFILES_DIR}/{entry.name}"
            text = entry.read_text(encoding="utf-8")
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as error:
                raise ProfileError(f"{source}: not valid TOML: {error}") from None
            profile = parse_profile(data, source=source, text=text)
            if profile.name in found:  # one file silently shadowing another is a wrong meter map
                raise ProfileError(
                    f"{source}: name {profile.name!r} is already used by {files[profile.name]}"
                )
            found[profile.name] = profile
            files[profile.name] = source
    return found


def load_profile(name: str) -> Profile:
    """A built-in profile by name ("sdm630", "sdm120", "water", "gas")."""
    known = _builtin_profiles()
    try:
        return known[name]
    except KeyError:
        raise ProfileError(
            f"unknown profile {name!r} (built in: {', '.join(sorted(known))})"
        ) from None
