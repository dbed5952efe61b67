"""One simulated meter: what its registers and its relay coil show at a simulated time.

Theory of operation
-------------------
A real Eastron meter refreshes its measurements about once a second; between refreshes every
read returns the same registers. A :class:`SimMeter` does the same with a *quantum* of
``QUANTUM_S`` simulated seconds, shifted by the meter's ``phase_s`` (in ``[0, QUANTUM_S)``):
during quantum ``k`` (``k = floor((t + phase_s) / QUANTUM_S)``, which starts at
``k * QUANTUM_S - phase_s``) it shows

* power ``P(k)``: ``rated_w x curve(seed, index, k * QUANTUM_S - phase_s)`` with the load curve
  of the profile's kind (``simulators.load_profiles.LOAD_CURVES``: machines, water draws,
  gas heating cycles),
  or the injected overload power, or 0 while the relay is open (the relay really cuts the load);
* the import register ``E(k) = E(k0) + sum(P(j) for k0 <= j < k) * QUANTUM_S / 3600`` Wh: the
  register integrates exactly the powers the meter displayed, so a client that multiplies the
  powers it saw by the time can check the register to the last Wh;
* voltage, current, frequency derived from ``P(k)`` with a little hashed, deterministic jitter.

A feeder's main meter (``feeds``: the meters under it, from the park config's ``[[feeders]]``)
has no load curve of its own: it shows the sum of what the meters under it draw, plus
``loss_ratio`` of it (cables and transformer losses, or theft), so the server's loss reports
and alarm have something true to find.

Integration is lazy: nothing runs between polls. A poll in a new quantum first *settles* the
register (adds the quanta since the last settled one), then packs the registers once for the
quantum with :meth:`ValueSpec.pack` into one byte image per Modbus function; every read in the
same quantum is a slice of that image. A meter polled at least every ``EXACT_QUANTA`` quanta is
integrated exactly; after a longer gap (a meter nobody polled for an hour, or a big speed-up)
the gap is integrated from ``EXACT_QUANTA`` evenly spaced samples, so a poll never costs more
than that many load-curve calls. A state change (relay switched, overload injected or ended,
register rolled back) settles the register first with the *old* state, so each quantum is
integrated with the state in force when it was displayed, and the register never goes
backwards except by an explicit :meth:`SimMeter.roll_back`.

Quantities by profile (``protocols.modbus.profiles``): ``total_power`` is ``P``; ``power`` and
``current`` are per phase (``P / 3`` on a three-phase profile, i.e. one that maps
``total_power``); ``flow`` is ``P`` read as litres per hour and shown in the profile's flow unit
(water and gas meters: ``rated_w`` is then a rated flow in L/h); ``import_energy`` is the register
in the profile's energy unit (kWh, Wh, or m3 for litres); ``tamper`` is 1 while the tamper flag
is set. Registers a profile does not map read 0.

Phases: real meters are not synchronised, and a simulator whose meters all refresh at the
same instant does a whole park's refresh work (the load curve, packing: ~50 µs a meter, so ~100 ms
for 2,000 meters) in one burst, delaying every reply behind it. A park gives each meter its own
phase (:func:`stagger_phase_s`, a function of the meter's index: deterministic), so refreshes
are spread evenly over the quantum. ``phase_s`` defaults to 0 (quantum boundaries on whole
seconds) for a meter built alone.

Memory: about 0.5 KB a meter (slots, a few floats and the byte images; the profile and its
register layout are shared), so a process holds tens of thousands.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Mapping
from typing import Final

import attrs

from protocols.modbus.profiles import FLOW_UNITS, Profile, ValueSpec
from simulators.load_profiles import LOAD_CURVES, hash01

__all__ = [
    "EXACT_QUANTA",
    "QUANTUM_S",
    "RegisterLayout",
    "SimMeter",
    "default_rated_w",
    "initial_register_wh",
    "layout_of",
    "stagger_phase_s",
]

QUANTUM_S: Final = 1.0
"""Simulated seconds between register refreshes (Eastron meters refresh about once a second)."""

EXACT_QUANTA: Final = 64
"""Gaps up to this many quanta are integrated quantum by quantum; longer ones are sampled."""

NOMINAL_VOLTAGE: Final = 230.0
NOMINAL_FREQUENCY: Final = 50.0
_VOLTAGE_SALT: Final = 0x5600_0000
_FREQUENCY_SALT: Final = 0x4600_0000
_INITIAL_SALT: Final = 7

_DEFAULT_RATED_W: Final = {"electricity": 10_000.0, "water": 1_500.0, "gas": 1_500.0}


def default_rated_w(profile: Profile) -> float:
    """A plausible rating when none is given: 10 kW for electricity, 1.5 m3/h for water/gas."""
    return _DEFAULT_RATED_W[profile.kind]


_GOLDEN_FRACTION: Final = 0.6180339887498949


def stagger_phase_s(index: int) -> float:
    """Meter ``index``'s refresh phase: consecutive meters fall evenly across the quantum
    (golden-ratio sequence), whatever the park's size."""
    return (index * _GOLDEN_FRACTION) % 1.0 * QUANTUM_S


def initial_register_wh(seed: int, index: int) -> float:
    """A seeded starting register (1,000-10,000 kWh): simulated meters are not brand new."""
    return 1_000_000.0 + 9_000_000.0 * hash01(seed, index, _INITIAL_SALT)


@attrs.frozen
class RegisterLayout:
    """Where a profile's values sit, per function: ``(function, start, end, specs)`` blocks.

    One image per function spans from its first to the end of its last mapped register.
    """

    blocks: tuple[tuple[int, int, int, tuple[ValueSpec, ...]], ...]
    three_phase: bool
    flow_factor: float
    energy_factor: float
    has_tamper: bool


@functools.cache
def layout_of(profile: Profile) -> RegisterLayout:
    """The shared layout of ``profile`` (computed once per profile and process)."""
    blocks = []
    for function in sorted({spec.function for spec in profile.values}):
        specs = tuple(
            sorted((s for s in profile.values if s.function == function), key=lambda s: s.address)
        )
        start = specs[0].address
        end = max(spec.end for spec in specs)
        blocks.append((function, start, end, specs))
    flow = profile.value("flow")
    return RegisterLayout(
        blocks=tuple(blocks),
        three_phase=profile.value("total_power") is not None,
        flow_factor=FLOW_UNITS[flow.unit] if flow is not None else 1.0,
        energy_factor=profile.energy_factor,
        has_tamper=profile.value("tamper") is not None,
    )


class SimMeter:
    """A simulated meter behind a gateway (module docstring). Times are simulated seconds."""

    __slots__ = (
        "_cache_k",
        "_curve",
        "_curve_k",
        "_curve_w",
        "_energy_wh",
        "_garbled",
        "_images",
        "_layout",
        "_settled_k",
        "feeds",
        "index",
        "last_read_s",
        "loss_ratio",
        "meter_id",
        "overload_w",
        "phase_s",
        "profile",
        "rated_w",
        "relay_closed",
        "relay_coil",
        "seed",
        "tamper",
        "unit",
        "utc_offset_s",
    )

    def __init__(
        self,
        profile: Profile,
        *,
        unit: int,
        relay_coil: int = 0,
        rated_w: float | None = None,
        seed: int = 1,
        index: int = 0,
        meter_id: str = "",
        utc_offset_s: int = 0,
        register_wh: float | None = None,
        start_s: float = 0.0,
        phase_s: float = 0.0,
    ) -> None:
        if not 0 <= relay_coil <= 0xFFFF:
            raise ValueError(f"relay coil address {relay_coil} is not a coil address")
        if not 0.0 <= phase_s < QUANTUM_S:
            raise ValueError(f"phase_s must be in [0, {QUANTUM_S:g}), got {phase_s}")
        self.phase_s = float(phase_s)
        self.profile = profile
        self.unit = unit
        self.relay_coil = relay_coil
        self.rated_w = default_rated_w(profile) if rated_w is None else float(rated_w)
        self.seed = seed
        self.index = index
        self.meter_id = meter_id
        self.utc_offset_s = utc_offset_s
        self.relay_closed = True
        self.overload_w: float | None = None
        self.tamper = False
        self.last_read_s = -math.inf
        self._layout = layout_of(profile)
        self._curve = LOAD_CURVES[profile.kind]
        self._energy_wh = initial_register_wh(seed, index) if register_wh is None else register_wh
        self._garbled: float | None = None
        self._settled_k = self._quantum(start_s)
        self._cache_k = -1
        self._curve_k = -1
        self._curve_w = 0.0
        self._images: dict[int, tuple[int, bytes]] = {}
        # A feeder's main meter shows what the meters under it draw, plus its loss.
        self.feeds: tuple[SimMeter, ...] = ()
        self.loss_ratio = 0.0

    def __repr__(self) -> str:
        return (
            f"SimMeter({self.meter_id or self.index!r}, unit={self.unit}, "
            f"profile={self.profile.name}, relay={'closed' if self.relay_closed else 'open'})"
        )

    # --- what the meter shows -----------------------------------------------------------------

    @property
    def has_tamper_register(self) -> bool:
        return self._layout.has_tamper

    def power_w(self, t_s: float) -> float:
        """Total active power (W, or L/h for water/gas) shown at ``t_s``."""
        return self._power_at(self._quantum(t_s))

    def register_wh(self, t_s: float) -> float:
        """The import register at ``t_s`` in Wh (litres for water/gas), before float32 packing."""
        k = self._quantum(t_s)
        self._settle(k)
        return self._energy_wh

    def values(self, t_s: float) -> dict[str, float]:
        """Every quantity the meter shows at ``t_s``, in the profile's units (for tests, tools)."""
        k = self._quantum(t_s)
        self._settle(k)
        return self._values(k)

    def read_registers(self, function: int, address: int, count: int, t_s: float) -> bytes:
        """``count`` registers (big-endian bytes) from ``address`` as read with ``function``."""
        self.last_read_s = t_s
        k = self._quantum(t_s)
        if k != self._cache_k:
            self._refresh(k)
        found = self._images.get(function)
        if found is None:
            return bytes(2 * count)
        start, image = found
        offset = 2 * (address - start)
        size = 2 * count
        if offset >= 0 and offset + size <= len(image):
            return image[offset : offset + size]
        # Partly or wholly outside the mapped span: unmapped registers read 0.
        lead = max(0, -offset)
        middle = image[max(0, offset) : max(0, offset + size)]
        return bytes(lead) + middle + bytes(size - lead - len(middle))

    def read_coils(self, address: int, count: int) -> list[bool]:
        """Coil states from ``address``: the relay coil is its state, other coils read 0."""
        offset = self.relay_coil - address
        bits = [False] * count
        if 0 <= offset < count:
            bits[offset] = self.relay_closed
        return bits

    # --- what changes it ----------------------------------------------------------------------

    def write_coil(self, address: int, on: bool, t_s: float) -> bool:
        """Switch the relay (``on`` = supply connected); False if ``address`` is not the relay."""
        if address != self.relay_coil:
            return False
        if on != self.relay_closed:
            self._change(t_s)
            self.relay_closed = on
        return True

    def set_overload(self, watts: float | None, t_s: float) -> None:
        """Show ``watts`` instead of the load curve (None: back to the curve)."""
        self._change(t_s)
        self.overload_w = None if watts is None else float(watts)

    def set_tamper(self, on: bool, t_s: float) -> None:
        """Set or clear the tamper flag; only meaningful if the profile maps ``tamper``."""
        if not self._layout.has_tamper:
            raise ValueError(f"profile {self.profile.name} has no tamper register")
        self._change(t_s)
        self.tamper = on

    def set_garbled(self, energy: float | None, t_s: float) -> None:
        """Show ``energy`` (in the profile's energy unit) in the import register instead of the
        truth, which goes on integrating underneath (None: show the truth again). A bit error
        or a misaligned read looks like this to a client."""
        self._change(t_s)
        self._garbled = None if energy is None else float(energy)

    def swap(self, add_wh: float, t_s: float) -> tuple[float, float]:
        """The meter was swapped for one whose register is ``add_wh`` higher: returns the
        register (Wh) just before and just after, at the same instant."""
        before = self.register_wh(t_s)
        self.roll_back(before + add_wh, t_s)
        return before, self._energy_wh

    def roll_back(self, register_wh: float, t_s: float) -> None:
        """The meter was replaced or reset: the register restarts at ``register_wh``."""
        if register_wh < 0.0:
            raise ValueError(f"a register cannot restart below 0, got {register_wh} Wh")
        self._change(t_s)
        self._energy_wh = float(register_wh)

    # --- internals ----------------------------------------------------------------------------

    def _quantum(self, t_s: float) -> int:
        return math.floor((t_s + self.phase_s) / QUANTUM_S)

    def _change(self, t_s: float) -> None:
        # Quanta before now are integrated with the state they were displayed with.
        self._settle(self._quantum(t_s))
        self._cache_k = -1

    def _power_at(self, k: int) -> float:
        if not self.relay_closed:
            return 0.0
        if self.overload_w is not None:
            return self.overload_w
        if self.feeds:
            return (1.0 + self.loss_ratio) * sum(child._power_at(k) for child in self.feeds)
        if k != self._curve_k:
            # A curve costs ~18 µs; settling quantum k-1 would otherwise compute it again.
            self._curve_w = self.rated_w * self._curve(
                self.seed, self.index, k * QUANTUM_S - self.phase_s, self.utc_offset_s
            )
            self._curve_k = k
        return self._curve_w

    def _settle(self, k: int) -> None:
        gap = k - self._settled_k
        if gap <= 0:
            return
        if not self.relay_closed:
            added = 0.0
        elif self.overload_w is not None:
            added = self.overload_w * gap
        elif gap <= EXACT_QUANTA:
            first = self._settled_k
            added = math.fsum(self._power_at(j) for j in range(first, k))
        else:
            # Sampled: EXACT_QUANTA samples, each weighted by the quanta it stands for.
            first = self._settled_k
            edges = [first + (gap * i) // EXACT_QUANTA for i in range(EXACT_QUANTA + 1)]
            added = math.fsum(
                self._power_at(edges[i]) * (edges[i + 1] - edges[i]) for i in range(EXACT_QUANTA)
            )
        self._energy_wh += added * QUANTUM_S / 3600.0
        self._settled_k = k

    def _values(self, k: int) -> dict[str, float]:
        layout = self._layout
        power = self._power_at(k)
        seed, index = self.seed, self.index
        voltage = NOMINAL_VOLTAGE * (1.0 + 0.02 * (hash01(seed, index, _VOLTAGE_SALT + k) - 0.5))
        frequency = NOMINAL_FREQUENCY + 0.1 * (hash01(seed, index, _FREQUENCY_SALT + k) - 0.5)
        phase_power = power / 3.0 if layout.three_phase else power
        return {
            "voltage": voltage,
            "current": phase_power / voltage,
            "power": phase_power,
            "total_power": power,
            "frequency": frequency,
            "import_energy": (
                self._energy_wh / layout.energy_factor if self._garbled is None else self._garbled
            ),
            "flow": power / layout.flow_factor,
            "tamper": 1.0 if self.tamper else 0.0,
        }

    def _refresh(self, k: int) -> None:
        self._settle(k)
        values = self._values(k)
        self._images = {
            function: (start, _pack_image(start, end, specs, values))
            for function, start, end, specs in self._layout.blocks
        }
        self._cache_k = k


def _pack_image(
    start: int, end: int, specs: tuple[ValueSpec, ...], values: Mapping[str, float]
) -> bytes:
    image = bytearray(2 * (end - start))
    for spec in specs:
        offset = 2 * (spec.address - start)
        try:
            packed = spec.pack(values[spec.quantity])
        except (struct.error, OverflowError):
            # Out of range for an integer register (e.g. a uint16 counter past 65535 x scale):
            # such a meter would wrap or saturate; showing 0 keeps the frame valid.
            continue
        image[offset : offset + 2 * spec.registers] = packed
    return bytes(image)
